//! The [`ResponseFuture`] of [`Timeout`](super::Timeout).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_core::Stream;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use trpc::{Body, BoxError, Payload, Response, Status};

use super::error::deadline_exceeded;

pin_project! {
    /// Races the inner future against the call's deadline.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
        deadline: Instant,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, deadline: Instant) -> Self {
        ResponseFuture {
            inner,
            sleep: tokio::time::sleep_until(deadline),
            deadline,
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("deadline", &self.deadline)
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
        match this.inner.poll(cx) {
            Poll::Ready(Ok(resp)) => {
                if !resp.get_ref().is_stream() {
                    return Poll::Ready(Ok(resp));
                }
                // The deadline covers the whole call, stream included.
                let deadline = *this.deadline;
                Poll::Ready(Ok(resp.map(|body| {
                    Body::stream(DeadlineBody {
                        inner: Some(body),
                        sleep: tokio::time::sleep_until(deadline),
                    })
                })))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => {
                ready!(this.sleep.poll(cx));
                Poll::Ready(Err(deadline_exceeded("before the response arrived").into()))
            }
        }
    }
}

pin_project! {
    /// A response stream that ends with `DEADLINE_EXCEEDED` when the deadline
    /// passes (dropping the inner stream, which cancels the call).
    struct DeadlineBody {
        inner: Option<Body>,
        #[pin]
        sleep: Sleep,
    }
}

impl Stream for DeadlineBody {
    type Item = Result<Payload, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let Some(body) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(body).poll_next(cx) {
            Poll::Ready(None) => {
                *this.inner = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(item)) => Poll::Ready(Some(item)),
            Poll::Pending => {
                ready!(this.sleep.poll(cx));
                *this.inner = None;
                Poll::Ready(Some(Err(deadline_exceeded("during the response stream"))))
            }
        }
    }
}
