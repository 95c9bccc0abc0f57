//! The [`ResponseFuture`] of [`Trace`](super::Trace) and the traced response stream.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_core::Stream;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tracing::{Level, Span};
use trpc::{Body, BoxError, Code, Method, Payload, Response, Status};

use super::context::{CurrentGuard, TraceContext};
use crate::util::dropped_outcome;
use crate::Side;

/// An event at a level chosen at run time, with the call's span as its
/// explicit parent (no enter and exit just to log it) or, when the span is
/// disabled, the current span as usual.
macro_rules! end_event {
    ($level:expr, $span:expr, $($fields:tt)+) => {
        if $span.is_disabled() {
            match $level {
                Level::ERROR => tracing::event!(target: "trpc_layers::trace", Level::ERROR, $($fields)+),
                Level::WARN => tracing::event!(target: "trpc_layers::trace", Level::WARN, $($fields)+),
                Level::INFO => tracing::event!(target: "trpc_layers::trace", Level::INFO, $($fields)+),
                Level::DEBUG => tracing::event!(target: "trpc_layers::trace", Level::DEBUG, $($fields)+),
                _ => tracing::event!(target: "trpc_layers::trace", Level::TRACE, $($fields)+),
            }
        } else {
            let parent = $span;
            match $level {
                Level::ERROR => tracing::event!(target: "trpc_layers::trace", parent: parent, Level::ERROR, $($fields)+),
                Level::WARN => tracing::event!(target: "trpc_layers::trace", parent: parent, Level::WARN, $($fields)+),
                Level::INFO => tracing::event!(target: "trpc_layers::trace", parent: parent, Level::INFO, $($fields)+),
                Level::DEBUG => tracing::event!(target: "trpc_layers::trace", parent: parent, Level::DEBUG, $($fields)+),
                _ => tracing::event!(target: "trpc_layers::trace", parent: parent, Level::TRACE, $($fields)+),
            }
        }
    };
}

/// What the end of a call is logged with (only when a subscriber takes the
/// layer's span or events).
pub(crate) struct Call {
    pub(crate) span: Span,
    pub(crate) method: Method,
    pub(crate) start: Instant,
    pub(crate) deadline: Option<Instant>,
    pub(crate) level_for: fn(Code) -> Level,
}

impl Call {
    /// Records the outcome on the span and logs the end of the call.
    fn finish(
        &self,
        ctx: &TraceContext,
        code: Code,
        error: Option<&dyn fmt::Display>,
        messages: Option<u64>,
    ) {
        // Microsecond resolution reads better than 0.14136500000000002.
        let latency_ms = self.start.elapsed().as_micros() as u64 as f64 / 1e3;
        let span = &self.span;
        if !span.is_disabled() {
            span.record("code", code.as_str());
            span.record("latency_ms", latency_ms);
            if let Some(n) = messages {
                span.record("messages", n);
            }
        }
        let level = (self.level_for)(code);
        let code = code.as_str();
        // The event names the call itself too, so it is complete when the
        // span is filtered out (spans at INFO, the subscriber at WARN) and
        // log search can find a call by trace id from its events alone.
        let (method, trace_id) = (&self.method, ctx.trace_id());
        match error {
            None => end_event!(level, span, %method, %trace_id, code, latency_ms, "call finished"),
            Some(e) => {
                end_event!(level, span, %method, %trace_id, code, latency_ms, error = %e, "call failed")
            }
        }
    }
}

/// Runs `f` inside the call's span (if any) and, on the server, with the
/// call's context current, so calls made by the handler join its trace.
fn in_call<T>(call: Option<&Call>, ctx: &TraceContext, side: Side, f: impl FnOnce() -> T) -> T {
    let _enter = call.map(|c| c.span.enter());
    let _current = (side == Side::Server).then(|| CurrentGuard::enter(*ctx));
    f()
}

pin_project! {
    /// Polls the inner future inside the call's span (and, on the server,
    /// with the call's [`TraceContext`] current).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        ctx: TraceContext,
        side: Side,
        // `None` once the outcome is logged or handed to the response stream
        // (or from the start, when nothing is logged).
        call: Option<Call>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(call) = this.call.take() {
                // Dropped before an outcome: the deadline passed (the core or
                // an outer layer gave up) or the caller went away.
                let (code, why) = dropped_outcome(call.deadline);
                call.finish(this.ctx, code, Some(&why), None);
            }
        }
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, ctx: TraceContext, side: Side, call: Option<Call>) -> Self {
        ResponseFuture {
            inner,
            ctx,
            side,
            call,
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("ctx", &self.ctx)
            .field("side", &self.side)
            .finish()
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (ctx, side, inner) = (*this.ctx, *this.side, this.inner);
        let result = ready!(in_call(this.call.as_ref(), &ctx, side, || inner.poll(cx)));
        let call = this.call.take();
        match result {
            Ok(mut resp) => {
                if side == Side::Client {
                    resp.extensions_mut().insert(ctx);
                }
                if resp.get_ref().is_stream() && (call.is_some() || side == Side::Server) {
                    return Poll::Ready(Ok(resp.map(|body| {
                        Body::stream(TracedBody {
                            inner: Some(body),
                            ctx,
                            side,
                            call,
                            messages: 0,
                        })
                    })));
                }
                if let Some(call) = call {
                    call.finish(&ctx, Code::Ok, None, None);
                }
                Poll::Ready(Ok(resp))
            }
            Err(e) => {
                let e = e.into();
                if let Some(call) = call {
                    call.finish(&ctx, trpc::Status::code_of(&*e), Some(&e), None);
                }
                Poll::Ready(Err(e))
            }
        }
    }
}

/// A response stream that counts messages and logs the end of the call when
/// the stream ends (or `CANCELLED` when it is dropped before). On the server
/// the handler's stream is polled with the call's context current.
struct TracedBody {
    inner: Option<Body>,
    ctx: TraceContext,
    side: Side,
    // `None` once the end is logged (or when nothing is logged).
    call: Option<Call>,
    messages: u64,
}

impl Stream for TracedBody {
    type Item = Result<Payload, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(body) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let item = ready!(in_call(this.call.as_ref(), &this.ctx, this.side, || {
            Pin::new(body).poll_next(cx)
        }));
        let end = match &item {
            Some(Ok(_)) => {
                this.messages += 1;
                return Poll::Ready(item);
            }
            None => None,
            // An OK status carries trailers: a successful end.
            Some(Err(s)) if s.code() == Code::Ok => None,
            Some(Err(s)) => Some(s),
        };
        this.inner = None;
        if let Some(call) = this.call.take() {
            match end {
                None => call.finish(&this.ctx, Code::Ok, None, Some(this.messages)),
                Some(s) => call.finish(&this.ctx, s.code(), Some(s), Some(this.messages)),
            }
        }
        Poll::Ready(item)
    }
}

impl Drop for TracedBody {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            let (code, why) = dropped_outcome(call.deadline);
            call.finish(&self.ctx, code, Some(&why), Some(self.messages));
        }
    }
}
