//! Handler probes: a handler reports that it started, finished, or was
//! dropped before finishing (cancelled), and the test awaits those events.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use trpc_integration::probe::{Event, Probe};
//! use trpc_integration::SOON;
//! let (probe, mut events) = Probe::new();
//! let guard = probe.enter(); // at the top of a handler
//! drop(guard); // the handler future was dropped
//! events.expect(Event::Started, SOON).await;
//! events.expect(Event::Dropped, SOON).await;
//! # }
//! ```

use std::time::Duration;

use tokio::sync::mpsc;
use trpc::codec::{Json, Proto};
use trpc::server::{client_streaming, unary, Router};
use trpc::{Request, Response, Status, Streaming};

use crate::messages::{EchoMsg, Num};
use crate::wait::within;

/// What a probed handler did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The handler started running.
    Started,
    /// The handler ran to completion.
    Finished,
    /// The handler future was dropped before completion (cancelled).
    Dropped,
}

/// Reports handler lifecycle events to the test (clone it into handlers).
#[derive(Clone, Debug)]
pub struct Probe(mpsc::UnboundedSender<Event>);

/// Lives inside a handler future: reports `Dropped` unless finished.
#[derive(Debug)]
pub struct ProbeGuard {
    tx: mpsc::UnboundedSender<Event>,
    finished: bool,
}

/// The test's side of a [`Probe`].
#[derive(Debug)]
pub struct Events(mpsc::UnboundedReceiver<Event>);

impl Probe {
    /// A probe and the events it reports.
    pub fn new() -> (Probe, Events) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Probe(tx), Events(rx))
    }

    /// Reports `Started`; keep the guard alive for the rest of the handler.
    pub fn enter(&self) -> ProbeGuard {
        let _ = self.0.send(Event::Started);
        ProbeGuard {
            tx: self.0.clone(),
            finished: false,
        }
    }
}

impl Probe {
    /// The body of a slow handler: reports `Started`, sleeps `d`, reports
    /// `Finished` (or `Dropped` if the handler is cancelled first).
    pub async fn sleep(&self, d: Duration) {
        let guard = self.enter();
        tokio::time::sleep(d).await;
        guard.finish();
    }
}

/// A router with `slow.Slow/Sleep`: takes an [`EchoMsg`], sleeps 30 s
/// under `probe` ([`Probe::sleep`]) and answers `"slept"`; a call that
/// lasts shows its handler's fate as probe events.
pub fn sleep_router(probe: Probe) -> Router {
    Router::new().route(
        "slow.Slow/Sleep",
        unary(move |_req: Request<EchoMsg>| {
            let probe = probe.clone();
            async move {
                probe.sleep(Duration::from_secs(30)).await;
                Ok::<_, Status>(Response::new(EchoMsg::new("slept")))
            }
        }),
    )
}

/// A router with a client-streaming `method` that counts the messages of
/// its request stream ([`Num`]s, JSON or protobuf) and answers the count,
/// under `probe`: `Started`, then `Finished`, or `Dropped` if the call ends
/// any other way (cancelled, timed out, a broken request stream).
pub fn count_router(probe: Probe, method: &str) -> Router {
    Router::new().route(
        method,
        client_streaming(move |req: Request<Streaming<Num>>| {
            let probe = probe.clone();
            async move {
                let guard = probe.enter();
                let mut s = req.into_inner();
                let mut n = 0;
                while s.message().await?.is_some() {
                    n += 1;
                }
                guard.finish();
                Ok::<_, Status>(Response::new(Num { n }))
            }
        })
        .codec((Json, Proto)),
    )
}

impl ProbeGuard {
    /// Reports `Finished`.
    pub fn finish(mut self) {
        self.finished = true;
        let _ = self.tx.send(Event::Finished);
    }
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.tx.send(Event::Dropped);
        }
    }
}

impl Events {
    /// The next event, waiting at most `limit`.
    pub async fn next_within(&mut self, limit: Duration) -> Event {
        within(limit, "handler event", self.0.recv())
            .await
            .expect("probe senders gone")
    }

    /// An event already reported, if any (does not wait).
    pub fn try_next(&mut self) -> Option<Event> {
        self.0.try_recv().ok()
    }

    /// Waits for the next event and checks it is `expected`.
    pub async fn expect(&mut self, expected: Event, limit: Duration) {
        let got = self.next_within(limit).await;
        assert_eq!(got, expected, "handler event");
    }
}
