//! Structured logging: [`TraceLayer`] opens one [`tracing`] span per call and
//! propagates the W3C trace context.
//!
//! The span (`rpc.client` or `rpc.server`, target `trpc_layers::trace`) has the
//! fields `method`, `trace_id`, `span_id`, `parent_id`, on the server also
//! `stream_id` and `peer`, and when the call ends `code`, `latency_ms` and,
//! for streams, `messages`. The end of every call is logged as an event inside
//! the span (with `method`, `trace_id`, `code`, `latency_ms` and `error`, so it
//! stands on its own when spans are filtered out) whose level depends on the
//! outcome ([`default_level`]: `OK` at INFO, caller errors at WARN, server
//! errors at ERROR). Everything works
//! with `tracing-subscriber`'s `EnvFilter` (`RUST_LOG=trpc_layers=info`) and its
//! JSON formatter.
//!
//! Trace context:
//!
//! * **Server**: the caller's `traceparent` metadata is parsed; the call gets a
//!   child [`TraceContext`] of it (or a new trace when absent or malformed),
//!   stored in the request extensions for the handler. While the handler is
//!   polled, [`TraceContext::current`] returns it.
//! * **Client**: the call's parent is, in order, a [`TraceContext`] in the
//!   request extensions, a `traceparent` already in the metadata, or
//!   [`TraceContext::current`] (a call made from a handler); with none, a new
//!   trace starts. The call's own context is sent as `traceparent` and put in
//!   the response extensions.
//!
//! ```
//! use tower::ServiceBuilder;
//! use trpc_layers::TraceLayer;
//!
//! # fn wrap<S>(channel: S) -> impl Sized {
//! let stack = ServiceBuilder::new().layer(TraceLayer::client()).service(channel);
//! # stack }
//! ```

mod context;
pub mod future;
mod layer;

pub use context::{SpanId, TraceContext, TraceId, TRACEPARENT};
pub use layer::{default_level, TraceLayer};

use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;
use tracing::field;
use trpc::metadata::MetadataValue;
use trpc::{Body, BoxError, Request, Response};

use self::context::CurrentGuard;
use self::future::{Call, ResponseFuture};
use crate::Side;

/// Traces calls; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Trace<S> {
    inner: S,
    layer: TraceLayer,
}

impl<S> Trace<S> {
    /// Wraps `inner` with the configuration of `layer`.
    pub fn new(inner: S, layer: TraceLayer) -> Self {
        Trace { inner, layer }
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

/// A span at a level chosen at run time.
macro_rules! span_at {
    ($level:expr, $($rest:tt)+) => {
        match $level {
            tracing::Level::ERROR => tracing::span!(tracing::Level::ERROR, $($rest)+),
            tracing::Level::WARN => tracing::span!(tracing::Level::WARN, $($rest)+),
            tracing::Level::INFO => tracing::span!(tracing::Level::INFO, $($rest)+),
            tracing::Level::DEBUG => tracing::span!(tracing::Level::DEBUG, $($rest)+),
            _ => tracing::span!(tracing::Level::TRACE, $($rest)+),
        }
    };
}

impl<S> Service<Request<Body>> for Trace<S>
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

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let layer = self.layer;
        let ctx = match layer.side {
            Side::Server => {
                let remote = req
                    .metadata()
                    .get(TRACEPARENT)
                    .and_then(TraceContext::from_traceparent);
                let ctx = remote.map_or_else(TraceContext::new_root, |r| r.child());
                req.extensions_mut().insert(ctx);
                ctx
            }
            Side::Client => {
                let parent = req
                    .extensions()
                    .get::<TraceContext>()
                    .copied()
                    .or_else(|| {
                        req.metadata()
                            .get(TRACEPARENT)
                            .and_then(TraceContext::from_traceparent)
                    })
                    .or_else(TraceContext::current);
                let ctx = parent.map_or_else(TraceContext::new_root, |p| p.child());
                // Always valid: ASCII hex and dashes.
                if let Ok(v) = ctx.with_traceparent(|tp| MetadataValue::try_from(tp)) {
                    req.metadata_mut().insert_value(TRACEPARENT, v);
                }
                ctx
            }
        };
        // Nothing to time or log unless a subscriber takes what this layer
        // would log at its most severe level: then only the trace context
        // travels.
        let call = layer.logs_enabled().then(|| {
            // Every field at once: recording them later costs a dispatch each.
            let span = match layer.side {
                Side::Server => span_at!(
                    layer.span_level,
                    "rpc",
                    otel.kind = "server",
                    method = %req.method(),
                    trace_id = %ctx.trace_id(),
                    span_id = %ctx.span_id(),
                    parent_id = ctx.parent_id().map(field::display),
                    stream_id = req.stream_id(),
                    peer = req.remote_addr().map(field::display),
                    code = field::Empty,
                    latency_ms = field::Empty,
                    messages = field::Empty,
                ),
                Side::Client => span_at!(
                    layer.span_level,
                    "rpc",
                    otel.kind = "client",
                    method = %req.method(),
                    trace_id = %ctx.trace_id(),
                    span_id = %ctx.span_id(),
                    parent_id = ctx.parent_id().map(field::display),
                    code = field::Empty,
                    latency_ms = field::Empty,
                    messages = field::Empty,
                ),
            };
            Call {
                span,
                method: req.method().clone(),
                start: Instant::now(),
                deadline: req.deadline(),
                level_for: layer.level_for,
            }
        });
        // The handler's future is made with the call's context current; its
        // span is entered from its first poll on.
        let future = {
            let _current = (layer.side == Side::Server).then(|| CurrentGuard::enter(ctx));
            self.inner.call(req)
        };
        ResponseFuture::new(future, ctx, layer.side, call)
    }
}

#[cfg(test)]
mod tests;
