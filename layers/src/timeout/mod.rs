//! Call deadlines: [`TimeoutLayer`] sets a deadline on each call and enforces it.
//!
//! The same layer serves both sides of a call:
//!
//! * **Client**: the deadline becomes the call's deadline
//!   ([`Request::set_deadline`]), which the channel sends to the server as
//!   `:timeout` (time left). An earlier deadline already on the request (set by
//!   the caller, or by an outer `TimeoutLayer`) is kept. Inside a retry layer
//!   it bounds each attempt; outside it bounds the whole call, retries and
//!   backoff included.
//! * **Server**: the core sets the request's deadline from the caller's
//!   `:timeout`; this layer narrows it to min(caller's deadline, now + timeout),
//!   so the handler sees the effective deadline, and drops the handler when it
//!   passes.
//!
//! When the deadline passes the inner future is dropped (on the client that
//! sends CANCEL to the server) and the call fails with `DEADLINE_EXCEEDED`,
//! whose source is an [`error::Elapsed`]. For a streaming response the deadline
//! covers the whole stream: when it passes, the stream ends with a
//! `DEADLINE_EXCEEDED` item.
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use trpc_layers::TimeoutLayer;
//!
//! # fn wrap<S>(channel: S) -> impl Sized {
//! let stack = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_millis(200)))
//!     .service(channel);
//! # stack }
//! ```
//!
//! [`Request::set_deadline`]: trpc::Request::set_deadline

pub mod error;
pub mod future;
mod layer;

pub use layer::TimeoutLayer;

use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower_service::Service;
use trpc::{Body, BoxError, Request, Response};

use self::future::ResponseFuture;

/// Sets and enforces a call deadline; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Timeout<S> {
    /// Wraps `inner`, giving every call at most `timeout`.
    pub const fn new(inner: S, timeout: Duration) -> Self {
        Timeout { inner, timeout }
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

impl<S> Service<Request<Body>> for Timeout<S>
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
        let ours = Instant::now() + self.timeout;
        req.set_deadline(ours);
        let deadline = req.deadline().unwrap_or(ours);
        ResponseFuture::new(self.inner.call(req), deadline)
    }
}

#[cfg(test)]
mod tests;
