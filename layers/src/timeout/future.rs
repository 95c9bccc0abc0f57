//! The [`ResponseFuture`] of [`Timeout`](super::Timeout).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_core::Stream;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use trpc::{Body, BoxError, Payload, Response, Status};

use super::error::Expiry;

/// Who ends the call when its deadline passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Enforcer {
    /// This future's own timer, for the whole call.
    Layer,
    /// The channel below, until the response arrives; this future's timer
    /// covers a response stream.
    Channel,
    /// The server transport, for the whole call.
    Transport,
}

pin_project! {
    /// Races the inner future against the call's deadline when nothing below
    /// enforces it (see [`Timeout`](super::Timeout)); otherwise passes it
    /// through.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // Armed only when this layer enforces the deadline itself (boxed: the
        // common case, a deadline enforced below, then carries 8 bytes, not
        // a timer entry, through every layer above).
        sleep: Option<Pin<Box<Sleep>>>,
        deadline: Instant,
        enforcer: Enforcer,
        expiry: Expiry,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, deadline: Instant, enforcer: Enforcer, expiry: Expiry) -> Self {
        ResponseFuture {
            inner,
            sleep: (enforcer == Enforcer::Layer)
                .then(|| Box::pin(tokio::time::sleep_until(deadline))),
            deadline,
            enforcer,
            expiry,
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("deadline", &self.deadline)
            .field("enforcer", &self.enforcer)
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
                if !resp.get_ref().is_stream() || *this.enforcer == Enforcer::Transport {
                    return Poll::Ready(Ok(resp));
                }
                // The deadline covers the whole call, stream included.
                let (deadline, expiry) = (*this.deadline, *this.expiry);
                Poll::Ready(Ok(resp.map(|body| {
                    Body::stream(DeadlineBody {
                        inner: Some(body),
                        sleep: tokio::time::sleep_until(deadline),
                        expiry,
                    })
                })))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => {
                if let Some(sleep) = this.sleep.as_mut() {
                    ready!(sleep.as_mut().poll(cx));
                    return Poll::Ready(Err(this.expiry.status(false).into()));
                }
                Poll::Pending
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
        expiry: Expiry,
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
                Poll::Ready(Some(Err(this.expiry.status(true))))
            }
        }
    }
}
