//! The [`ResponseFuture`] of [`Metrics`](super::Metrics) and the counting
//! stream wrappers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_core::Stream;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use trpc::{Body, BoxError, Code, Payload, Response, Status};

use super::families::{Direction, Stripe};
use crate::util::dropped_outcome;

pin_project! {
    /// Records the outcome of the call when the inner future finishes (or,
    /// for a streaming response, when the stream ends).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // `None` once the outcome has been handed on.
        metrics: Option<Arc<Stripe>>,
        start: Instant,
        deadline: Option<Instant>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(m) = this.metrics.take() {
                m.finish(dropped_outcome(*this.deadline).0, this.start.elapsed());
            }
        }
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(
        inner: F,
        metrics: Arc<Stripe>,
        start: Instant,
        deadline: Option<Instant>,
    ) -> Self {
        ResponseFuture {
            inner,
            metrics: Some(metrics),
            start,
            deadline,
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("metrics", &self.metrics)
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
        let result = ready!(this.inner.poll(cx));
        let Some(m) = this.metrics.take() else {
            return Poll::Ready(result.map_err(Into::into));
        };
        match result {
            Ok(resp) => {
                if resp.get_ref().is_stream() {
                    let (start, deadline) = (*this.start, *this.deadline);
                    return Poll::Ready(Ok(resp.map(|body| {
                        Body::stream(MeteredBody {
                            inner: Some(body),
                            metrics: Some(m),
                            start,
                            deadline,
                        })
                    })));
                }
                if let Some(p) = resp.get_ref().as_once() {
                    m.count(Direction::Response, p.len());
                }
                m.finish(Code::Ok, this.start.elapsed());
                Poll::Ready(Ok(resp))
            }
            Err(e) => {
                let e = e.into();
                m.finish(trpc::Status::code_of(&*e), this.start.elapsed());
                Poll::Ready(Err(e))
            }
        }
    }
}

/// A stream that counts its messages (a streaming request).
pub(crate) struct CountedBody {
    inner: Body,
    metrics: Arc<Stripe>,
    dir: Direction,
}

impl CountedBody {
    pub(crate) fn new(inner: Body, metrics: Arc<Stripe>, dir: Direction) -> Self {
        CountedBody {
            inner,
            metrics,
            dir,
        }
    }
}

impl Stream for CountedBody {
    type Item = Result<Payload, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let item = ready!(Pin::new(&mut this.inner).poll_next(cx));
        if let Some(Ok(p)) = &item {
            this.metrics.count(this.dir, p.len());
        }
        Poll::Ready(item)
    }
}

/// A streaming response: counts messages and finishes the call at the end of
/// the stream (or when dropped before it).
struct MeteredBody {
    inner: Option<Body>,
    metrics: Option<Arc<Stripe>>,
    start: Instant,
    deadline: Option<Instant>,
}

impl Stream for MeteredBody {
    type Item = Result<Payload, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(body) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let item = ready!(Pin::new(body).poll_next(cx));
        let end = match &item {
            Some(Ok(p)) => {
                if let Some(m) = &this.metrics {
                    m.count(Direction::Response, p.len());
                }
                None
            }
            None => Some(Code::Ok),
            Some(Err(s)) => Some(s.code()),
        };
        if let Some(code) = end {
            this.inner = None;
            if let Some(m) = this.metrics.take() {
                m.finish(code, this.start.elapsed());
            }
        }
        Poll::Ready(item)
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        if let Some(m) = self.metrics.take() {
            m.finish(dropped_outcome(self.deadline).0, self.start.elapsed());
        }
    }
}
