//! Prometheus metrics: [`MetricsLayer`] counts calls, latency, in-flight calls,
//! bytes and messages; [`TransportCollector`] exports connection and wire-byte
//! counters; [`AdminServer`] serves `/metrics` and `/healthz` over HTTP (hyper).
//!
//! Families (prefix `trpc_client_` or `trpc_server_`, with a configurable
//! namespace instead of `trpc`):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `calls_total` | counter | `method`, `code` |
//! | `call_duration_seconds` | histogram | `method` |
//! | `calls_in_flight` | gauge | `method` |
//! | `request_bytes_total`, `response_bytes_total` | counter | `method` |
//! | `request_messages_total`, `response_messages_total` | counter | `method` |
//!
//! Bytes are message payload bytes as seen where the layer sits: outside a
//! compression layer, uncompressed sizes (the wire bytes are in the
//! transport counters). A streaming call is finished, counted and timed when
//! its response stream ends; its status is the stream's final status. A call
//! dropped before it finished counts as `DEADLINE_EXCEEDED` when its deadline
//! has passed, else `CANCELLED`. Methods beyond the `max_methods` distinct ones
//! seen (default 1000) share the label `method="other"`, so a client calling
//! random method names cannot blow up the label set.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use trpc::stats::TransportStats;
//! use trpc_layers::metrics::{AdminServer, MetricsLayer, TransportCollector};
//!
//! let registry = prometheus::Registry::new();
//! let stats = TransportStats::new();
//! registry.register(Box::new(TransportCollector::server(stats.clone())))?;
//! let admin = AdminServer::bind("127.0.0.1:9100".parse()?, registry.clone()).await?;
//! let router = trpc::server::Router::new();
//! trpc::Server::builder()
//!     .transport_stats(stats)
//!     .layer(MetricsLayer::server(&registry)?)
//!     .serve("127.0.0.1:7000".parse()?, router)
//!     .await?;
//! admin.shutdown().await;
//! # Ok(()) }
//! ```

mod admin;
mod families;
pub mod future;
mod layer;
mod transport;

pub use admin::AdminServer;
pub use families::RpcMetrics;
pub use layer::{MetricsBuilder, MetricsLayer};
pub use transport::TransportCollector;

use std::task::{Context, Poll};

use tower_service::Service;
use trpc::{Body, BoxError, Request, Response};

use self::families::Direction;
use self::future::{CountedBody, ResponseFuture};

/// Records call metrics; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Metrics<S> {
    inner: S,
    metrics: RpcMetrics,
}

impl<S> Metrics<S> {
    /// Wraps `inner`, recording into `metrics`.
    pub fn new(inner: S, metrics: RpcMetrics) -> Self {
        Metrics { inner, metrics }
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
        let m = self.metrics.method(req.method());
        m.in_flight.inc();
        let deadline = req.deadline();
        let req = if req.get_ref().is_stream() {
            let m = m.clone();
            req.map(|body| Body::stream(CountedBody::new(body, m, Direction::Request)))
        } else {
            if let Some(p) = req.get_ref().as_once() {
                m.count(Direction::Request, p.len());
            }
            req
        };
        ResponseFuture::new(self.inner.call(req), m, deadline)
    }
}

#[cfg(test)]
mod tests;
