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
use super::layer::TraceLayer;
use crate::util::dropped_outcome;
use crate::Side;

/// An event at a level chosen at run time.
macro_rules! event_at {
    ($level:expr, $($rest:tt)+) => {
        match $level {
            Level::ERROR => tracing::event!(target: "trpc_layers::trace", Level::ERROR, $($rest)+),
            Level::WARN => tracing::event!(target: "trpc_layers::trace", Level::WARN, $($rest)+),
            Level::INFO => tracing::event!(target: "trpc_layers::trace", Level::INFO, $($rest)+),
            Level::DEBUG => tracing::event!(target: "trpc_layers::trace", Level::DEBUG, $($rest)+),
            _ => tracing::event!(target: "trpc_layers::trace", Level::TRACE, $($rest)+),
        }
    };
}

/// What the end of a call is logged with.
pub(crate) struct Call {
    pub(crate) span: Span,
    pub(crate) ctx: TraceContext,
    pub(crate) method: Method,
    pub(crate) start: Instant,
    pub(crate) deadline: Option<Instant>,
    pub(crate) layer: TraceLayer,
}

impl Call {
    /// Runs `f` inside the span (and, on the server, with the call's context
    /// current, so calls made by the handler join its trace).
    fn enter<T>(&self, f: impl FnOnce() -> T) -> T {
        let _enter = self.span.enter();
        let _current = (self.layer.side == Side::Server).then(|| CurrentGuard::enter(self.ctx));
        f()
    }

    /// Records the outcome on the span and logs the end of the call.
    fn finish(&self, code: Code, error: Option<&dyn fmt::Display>, messages: Option<u64>) {
        // Microsecond resolution reads better than 0.14136500000000002.
        let latency_ms = self.start.elapsed().as_micros() as f64 / 1e3;
        let span = &self.span;
        span.record("code", code.as_str());
        span.record("latency_ms", latency_ms);
        if let Some(n) = messages {
            span.record("messages", n);
        }
        let level = (self.layer.level_for)(code);
        let code = code.as_str();
        // The event names the call itself too, so it is complete when the
        // span is filtered out (spans at INFO, the subscriber at WARN) and
        // log search can find a call by trace id from its events alone.
        let (method, trace_id) = (&self.method, self.ctx.trace_id());
        let _enter = span.enter();
        match error {
            None => event_at!(level, %method, %trace_id, code, latency_ms, "call finished"),
            Some(e) => {
                event_at!(level, %method, %trace_id, code, latency_ms, error = %e, "call failed")
            }
        }
    }
}

pin_project! {
    /// Polls the inner future inside the call's span (and, on the server,
    /// with the call's [`TraceContext`] current).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // `None` once the outcome is logged or handed to the response stream.
        call: Option<Call>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                // Dropped before an outcome: the deadline passed (the core or
                // an outer layer gave up) or the caller went away.
                let (code, why) = dropped_outcome(call.deadline);
                call.finish(code, Some(&why), None);
            }
        }
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, call: Call) -> Self {
        ResponseFuture {
            inner,
            call: Some(call),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("ctx", &self.call.as_ref().map(|c| c.ctx))
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
        let inner = this.inner;
        let result = match this.call.as_ref() {
            Some(call) => ready!(call.enter(|| inner.poll(cx))),
            None => ready!(inner.poll(cx)),
        };
        let Some(call) = this.call.take() else {
            return Poll::Ready(result.map_err(Into::into));
        };
        match result {
            Ok(mut resp) => {
                if call.layer.side == Side::Client {
                    resp.extensions_mut().insert(call.ctx);
                }
                if resp.get_ref().is_stream() {
                    return Poll::Ready(Ok(resp.map(|body| {
                        Body::stream(TracedBody {
                            inner: Some(body),
                            call: Some(call),
                            messages: 0,
                        })
                    })));
                }
                call.finish(Code::Ok, None, None);
                Poll::Ready(Ok(resp))
            }
            Err(e) => {
                let e = e.into();
                call.finish(trpc::Status::code_of(&*e), Some(&e), None);
                Poll::Ready(Err(e))
            }
        }
    }
}

/// A response stream that counts messages and logs the end of the call when
/// the stream ends (or `CANCELLED` when it is dropped before).
struct TracedBody {
    inner: Option<Body>,
    // `None` once the end is logged.
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
        let item = match &this.call {
            Some(call) => ready!(call.enter(|| Pin::new(body).poll_next(cx))),
            None => ready!(Pin::new(body).poll_next(cx)),
        };
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
                None => call.finish(Code::Ok, None, Some(this.messages)),
                Some(s) => call.finish(s.code(), Some(s), Some(this.messages)),
            }
        }
        Poll::Ready(item)
    }
}

impl Drop for TracedBody {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            let (code, why) = dropped_outcome(call.deadline);
            call.finish(code, Some(&why), Some(self.messages));
        }
    }
}
