//! Prometheus metrics: [`MetricsLayer`] counts calls, latency, in-flight calls,
//! bytes and messages; [`TransportCollector`] exports connection and wire-byte
//! counters. The [`admin`](crate::admin) module serves them on `/metrics`.
//!
//! Families (prefix `trpc_client_` or `trpc_server_`, with a configurable
//! namespace instead of `trpc`):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `calls_total` | counter | `method`, `protocol`, `code` |
//! | `call_duration_seconds` | histogram | `method`, `protocol` |
//! | `calls_in_flight` | gauge | `method`, `protocol` |
//! | `request_bytes_total`, `response_bytes_total` | counter | `method`, `protocol` |
//! | `request_messages_total`, `response_messages_total` | counter | `method`, `protocol` |
//!
//! `protocol` is the wire protocol of the call ([`Request::protocol`]:
//! `trpc`, `grpc` or `http` on a server; `trpc` on a client). Bytes are
//! message payload bytes as seen where the layer sits: outside a compression
//! layer, uncompressed sizes (the wire bytes are in the transport counters). A
//! streaming call is finished, counted and timed when its response stream
//! ends; its status is the stream's final status. A call dropped before it
//! finished counts as `DEADLINE_EXCEEDED` when its deadline has passed, else
//! `CANCELLED`. Methods beyond the `max_methods` distinct ones seen (default
//! 1000) share the label `method="other"`, so a client calling random method
//! names cannot blow up the label set.
//!
//! ## Cost
//!
//! Counting a call is a handful of uncontended atomic additions: each method
//! keeps its counters in a stripe per thread slot (so worker threads never
//! write the same cache line), each service clone remembers the last few
//! methods it counted (so the shared method table is read only for a method
//! it has not seen), and the stripes are summed only when the registry is
//! scraped. `calls_in_flight` is calls started minus calls finished, and a
//! histogram's count is the sum of its buckets, both computed at scrape time.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use trpc::stats::TransportStats;
//! use trpc_layers::admin::Admin;
//! use trpc_layers::metrics::{MetricsLayer, TransportCollector};
//!
//! let registry = prometheus::Registry::new();
//! let stats = TransportStats::new();
//! registry.register(Box::new(TransportCollector::server(stats.clone())))?;
//! let admin = Admin::builder()
//!     .metrics(registry.clone())
//!     .bind("127.0.0.1:9100".parse()?)
//!     .await?;
//! let router = trpc::server::Router::new();
//! trpc::Server::builder()
//!     .transport_stats(stats)
//!     .layer(MetricsLayer::server(&registry)?)
//!     .serve("127.0.0.1:7000".parse()?, router)
//!     .await?;
//! admin.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! [`Request::protocol`]: trpc::Request::protocol

mod families;
pub mod future;
mod layer;
mod transport;

pub use families::RpcMetrics;
pub use layer::{MetricsBuilder, MetricsLayer};
pub use transport::TransportCollector;

use std::cell::RefCell;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;
use trpc::{Body, BoxError, Method, Protocol, Request, Response};

use self::families::{Direction, MethodStats, Stripe};
use self::future::{CountedBody, ResponseFuture};

/// Records call metrics; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Metrics<S> {
    inner: S,
    metrics: RpcMetrics,
}

impl<S> Metrics<S> {
    /// Wraps `inner`, recording into the metrics of `layer`.
    pub fn new(inner: S, layer: MetricsLayer) -> Self {
        Metrics {
            inner,
            metrics: layer.metrics().clone(),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

thread_local! {
    /// The last few methods counted on this thread, so most calls find
    /// their metrics without touching the shared method table. Per thread,
    /// not per service: a server calls a fresh clone of its stack for each
    /// call, whose own cache would always start empty.
    static RECENT: RefCell<Recent> = const {
        RefCell::new(Recent {
            entries: [const { None }; 8],
            next: 0,
        })
    };
}

/// A cached method's metrics: `(RpcMetrics::id, protocol, method, stats)`.
type RecentEntry = (u64, Protocol, Method, Arc<MethodStats>);

/// The last methods counted on a thread (a ring).
struct Recent {
    entries: [Option<RecentEntry>; 8],
    next: usize,
}

/// The stripe this thread counts `method` in, in `metrics`.
fn stripe(metrics: &RpcMetrics, protocol: Protocol, method: &Method) -> Arc<Stripe> {
    let id = metrics.id();
    RECENT.with(|recent| {
        // Never re-entered: nothing below calls back into this layer.
        let Ok(mut recent) = recent.try_borrow_mut() else {
            return metrics.method(protocol, method).stripe();
        };
        for (i, p, m, stats) in recent.entries.iter().flatten() {
            if *i == id && *p == protocol && m.as_bytes() == method.as_bytes() {
                return stats.stripe();
            }
        }
        let stats = metrics.method(protocol, method);
        let stripe = stats.stripe();
        // An owned copy: the request's method may share a large read buffer.
        let owned = Method::from(method.as_str().to_owned());
        let next = recent.next;
        recent.entries[next] = Some((id, protocol, owned, stats));
        recent.next = (next + 1) % recent.entries.len();
        stripe
    })
}

impl<S> Service<Request<Body>> for Metrics<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let start = Instant::now();
        let stripe = stripe(&self.metrics, req.protocol(), req.method());
        stripe.start();
        let deadline = req.deadline();
        let req = if req.get_ref().is_stream() {
            let counted = stripe.clone();
            req.map(|body| Body::stream(CountedBody::new(body, counted, Direction::Request)))
        } else {
            if let Some(p) = req.get_ref().as_once() {
                stripe.count(Direction::Request, p.len());
            }
            req
        };
        ResponseFuture::new(self.inner.call(req), stripe, start, deadline)
    }
}

#[cfg(test)]
mod tests;
