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
use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use rustc_hash::FxBuildHasher;
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
    /// The metrics this thread has counted in, so most calls find theirs
    /// without touching the shared method table (its read lock, its hash of
    /// the key). Per thread, not per service: a server calls a fresh clone
    /// of its stack for each call, whose own cache would always start empty.
    static METHODS: RefCell<ThreadMethods> = RefCell::new(ThreadMethods::default());
}

/// At most this many `(metrics, protocol)` tables per thread, and this many
/// names in each: past either, the cache starts over (names come from the
/// wire and are not bounded by the routes a server has).
const MAX_TABLES: usize = 16;
const MAX_NAMES: usize = 1024;

/// The metrics of each method name seen, for one `(metrics, protocol)`.
type Names = HashMap<Bytes, Arc<MethodStats>, FxBuildHasher>;

/// Per thread: the names of each `(RpcMetrics::id, protocol)`.
#[derive(Default)]
struct ThreadMethods {
    tables: Vec<(u64, Protocol, Names)>,
}

/// The stripe this thread counts `method` in, in `metrics`.
fn stripe(metrics: &RpcMetrics, protocol: Protocol, method: &Method) -> Arc<Stripe> {
    let id = metrics.id();
    METHODS.with(|cache| {
        // Never re-entered: nothing below calls back into this layer.
        let Ok(mut cache) = cache.try_borrow_mut() else {
            return metrics.method(protocol, method).1.stripe();
        };
        let tables = &mut cache.tables;
        let at = match tables
            .iter()
            .position(|(i, p, _)| *i == id && *p == protocol)
        {
            Some(at) => at,
            None => {
                if tables.len() >= MAX_TABLES {
                    tables.clear();
                }
                tables.push((id, protocol, HashMap::default()));
                tables.len() - 1
            }
        };
        let names = &mut tables[at].2;
        if let Some(stats) = names.get(&method.as_bytes()[..]) {
            return stats.stripe();
        }
        let (name, stats) = metrics.method(protocol, method);
        if names.len() >= MAX_NAMES {
            names.clear();
        }
        // The table's copy of the name when there is one; the request's
        // method may share a large read buffer.
        let key = match name {
            Some(name) => name.as_bytes().clone(),
            None => Bytes::copy_from_slice(method.as_bytes()),
        };
        let stripe = stats.stripe();
        names.insert(key, stats);
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
