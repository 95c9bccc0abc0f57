//! [`ResponseFuture`]: a balanced call, which reports its outcome (latency,
//! failures, the server's load report) to its endpoint when it completes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;
use trpc::{Body, Code, Request, Response, Status};

use super::node::{self, Node};
use super::Shared;
use crate::load_report::{LoadReport, LOAD_REPORT_KEY};

type Waiting = Pin<Box<dyn Future<Output = Result<Response<Body>, Status>> + Send>>;

/// The future of a [`Balance`](super::Balance) call.
pub struct ResponseFuture {
    state: State,
}

// The large variant is the common one (a call in flight); boxing it would
// cost an allocation per call, boxing the rare one costs nothing.
#[allow(clippy::large_enum_variant)]
enum State {
    Call {
        fut: trpc::client::ResponseFuture,
        guard: CallGuard,
    },
    /// No endpoint yet: waiting for discovery (boxed; off the hot path).
    Waiting(Waiting),
    Done,
}

/// Counts a call in flight on its node; reports how it ended.
struct CallGuard {
    node: Arc<Node>,
    shared: Arc<Shared>,
    start: Instant,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.node.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl CallGuard {
    fn finish(&self, result: &Result<Response<Body>, Status>) {
        let now = Instant::now();
        let node = &self.node;
        node.completed.fetch_add(1, Ordering::Relaxed);
        let config = &self.shared.config;
        let code = match result {
            Ok(resp) => {
                if let Some(report) = resp
                    .metadata()
                    .get(LOAD_REPORT_KEY)
                    .and_then(LoadReport::parse)
                {
                    node.utilization
                        .store(report.utilization.to_bits(), Ordering::Relaxed);
                    node.server_in_flight
                        .store(report.in_flight, Ordering::Relaxed);
                }
                Code::Ok
            }
            Err(status) => status.code(),
        };
        let refused = matches!(result, Err(s) if s.is_refused());
        if !refused {
            node.observe_rtt(
                now.saturating_duration_since(self.start),
                now,
                config.ewma_decay,
            );
        }
        if code == Code::Unavailable {
            // The endpoint may be gone: out of the first tier until a
            // connection is up again.
            node.up.store(false, Ordering::Relaxed);
            node::spawn_connect(node, config.connect_timeout);
            node.instance.report_failure();
        }
        if let Some(outlier) = &config.outlier {
            let failed = outlier.is_failure(code);
            let allowed = failed && self.shared.may_eject(outlier);
            if node.observe_outcome(failed, now, outlier, || allowed) {
                tracing::warn!(
                    addr = node.addr(),
                    "endpoint ejected: its calls keep failing"
                );
            }
        }
    }
}

impl ResponseFuture {
    pub(super) fn start(shared: &Arc<Shared>, node: Arc<Node>, req: Request<Body>) -> Self {
        node.in_flight.fetch_add(1, Ordering::Relaxed);
        let mut channel = node.channel.clone();
        let fut = channel.call(req);
        ResponseFuture {
            state: State::Call {
                fut,
                guard: CallGuard {
                    node,
                    shared: shared.clone(),
                    start: Instant::now(),
                },
            },
        }
    }

    pub(super) fn wait(shared: Arc<Shared>, req: Request<Body>) -> Self {
        ResponseFuture {
            state: State::Waiting(Box::pin(wait_for_endpoint(shared, req))),
        }
    }
}

async fn wait_for_endpoint(
    shared: Arc<Shared>,
    req: Request<Body>,
) -> Result<Response<Body>, Status> {
    let mut until = Instant::now() + shared.config.discovery_wait;
    if let Some(d) = req.deadline() {
        until = until.min(d);
    }
    loop {
        let notified = shared.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(node) = shared.pick(&req) {
            return ResponseFuture::start(&shared, node, req).await;
        }
        if Instant::now() >= until {
            return Err(Status::unavailable(
                "no endpoints: discovery has found no instance of the service",
            ));
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(until) => {}
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Body>, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let out = match &mut this.state {
            State::Call { fut, guard } => match Pin::new(fut).poll(cx) {
                Poll::Ready(r) => {
                    guard.finish(&r);
                    r
                }
                Poll::Pending => return Poll::Pending,
            },
            State::Waiting(fut) => match fut.as_mut().poll(cx) {
                Poll::Ready(r) => r,
                Poll::Pending => return Poll::Pending,
            },
            State::Done => Err(Status::internal("polled after completion")),
        };
        this.state = State::Done;
        Poll::Ready(out)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Call { guard, .. } => guard.node.addr(),
            State::Waiting(_) => "waiting for an endpoint",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
