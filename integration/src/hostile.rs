//! What the hostile-*client* tests share: a server with short timeouts
//! ([`hostile_server`]) serving a router with slow, large and streaming
//! methods ([`hostile_router`]), and a [`Bystander`]: a well-behaved client
//! that must be served correctly while a hostile peer misbehaves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use trpc::frame::{Goaway, GoawayCode};
use trpc::server::{server_streaming, unary, Router, Server};
use trpc::stats::TransportStats;
use trpc::{Client, Request, Response, Status};

use crate::client::endpoint;
use crate::messages::{pattern, Ask, Blob, EchoMsg};
use crate::probe::Probe;
use crate::server::{echo_router, serve_with, TestServer};
use crate::wait::{within, SOON};

/// The handshake timeout of [`hostile_server`].
pub const HANDSHAKE: Duration = Duration::from_millis(500);
/// The frame (slow-loris) timeout of [`hostile_server`].
pub const FRAME: Duration = Duration::from_millis(400);
/// The write timeout of [`hostile_server`].
pub const WRITE: Duration = Duration::from_millis(500);

/// A server builder with short timeouts, so that hostile peers are dealt
/// with quickly, counting into `stats`.
pub fn hostile_server(stats: &Arc<TransportStats>) -> Server {
    Server::builder()
        .handshake_timeout(HANDSHAKE)
        .frame_timeout(FRAME)
        .write_timeout(WRITE)
        .shutdown_grace(Duration::from_secs(2))
        .transport_stats(stats.clone())
}

/// A running hostile-test server with its counters.
#[derive(Debug)]
pub struct Hostile {
    /// The server.
    pub server: TestServer,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its transport counters.
    pub stats: Arc<TransportStats>,
}

/// Starts [`hostile_router`] on `server` (from [`hostile_server`], possibly
/// adjusted) whose counters are `stats`.
pub async fn start(server: Server, stats: Arc<TransportStats>, probe: Probe) -> Hostile {
    let server = serve_with(server, hostile_router(probe)).await;
    Hostile {
        addr: server.addr,
        server,
        stats,
    }
}

/// Starts a default [`hostile_server`].
pub async fn start_default(probe: Probe) -> Hostile {
    let stats = TransportStats::new();
    start(hostile_server(&stats), stats, probe).await
}

/// `echo.Echo/Say` (JSON and protobuf); `h.H/Wait` holds the call (reporting
/// to the probe) until the client goes away or 30 s pass; `h.H/Big` answers
/// `len` bytes (protobuf); `h.H/Flood` streams `len` messages of 64 KiB.
pub fn hostile_router(probe: Probe) -> Router {
    use trpc::codec::Proto;
    echo_router()
        .route(
            "h.H/Wait",
            unary(move |req: Request<EchoMsg>| {
                let probe = probe.clone();
                async move {
                    probe.sleep(Duration::from_secs(30)).await;
                    Ok::<_, Status>(Response::new(req.into_inner()))
                }
            }),
        )
        .route(
            "h.H/Big",
            unary(|req: Request<Ask>| async move {
                let len = req.get_ref().len as usize;
                Ok::<_, Status>(Response::new(Blob { data: pattern(len) }))
            })
            .codec(Proto),
        )
        .route(
            "h.H/Flood",
            server_streaming(|req: Request<Ask>| async move {
                let n = req.get_ref().len;
                let chunk = pattern(64 * 1024);
                let items = stream::iter((0..n).map(move |_| {
                    Ok(Blob {
                        data: chunk.clone(),
                    })
                }));
                Ok::<_, Status>(Response::new(items))
            })
            .codec(Proto),
        )
}

/// Asserts a GOAWAY's code and that its text contains `text`.
pub fn assert_goaway(g: &Goaway, code: GoawayCode, text: &str) {
    assert_eq!(g.code, code, "GOAWAY {g:?}");
    assert!(
        g.message.contains(text),
        "GOAWAY text {:?} should mention {text:?}",
        g.message
    );
}

/// A well-behaved client making echo calls on its own connection for as long
/// as the test runs; every reply must be right.
#[derive(Debug)]
pub struct Bystander {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<u64, String>>,
    addr: SocketAddr,
}

impl Bystander {
    /// Connects and starts calling; the first call has completed when this
    /// returns.
    pub async fn start(addr: SocketAddr) -> Bystander {
        let channel = within(SOON, "bystander connect", endpoint(addr).connect())
            .await
            .expect("bystander connects");
        let mut client = Client::new(channel);
        let (stop, mut stopped) = oneshot::channel();
        // The first call completes before `start` returns: the bystander is
        // known to work before the hostile part begins.
        call_once(&mut client, 0)
            .await
            .expect("bystander's first call");
        let task = tokio::spawn(async move {
            let mut n = 1u64;
            loop {
                call_once(&mut client, n).await?;
                n += 1;
                // Pacing, so the bystander does not hog a 2-core machine.
                tokio::select! {
                    _ = &mut stopped => return Ok(n),
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
        });
        Bystander {
            stop: Some(stop),
            task,
            addr,
        }
    }

    /// Stops the calls; asserts they all succeeded, and that a new client
    /// is served too. Returns how many calls the bystander made.
    pub async fn finish(mut self) -> u64 {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let n = within(SOON, "bystander stops", &mut self.task)
            .await
            .expect("bystander task panicked")
            .unwrap_or_else(|e| panic!("the normal client was not served: {e}"));
        assert!(n >= 1, "the bystander made no call");
        let channel = within(SOON, "fresh client connect", endpoint(self.addr).connect())
            .await
            .expect("a fresh client connects after the hostile peer");
        let mut client = Client::new(channel);
        call_once(&mut client, u64::MAX)
            .await
            .expect("a fresh client is served after the hostile peer");
        n
    }
}

async fn call_once(client: &mut Client<trpc::Channel>, n: u64) -> Result<(), String> {
    let text = format!("bystander call {n}");
    let reply: EchoMsg = tokio::time::timeout(
        SOON,
        client.unary_message("echo.Echo/Say", EchoMsg::new(text.clone())),
    )
    .await
    .map_err(|_| format!("call {n} timed out"))?
    .map_err(|e| format!("call {n} failed: {e}"))?;
    if reply.message != text {
        return Err(format!("call {n}: wrong reply {:?}", reply.message));
    }
    Ok(())
}
