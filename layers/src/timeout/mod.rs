//! Call deadlines: [`TimeoutLayer`] gives each call a deadline and makes sure
//! the call ends when it passes.
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
//!   so the handler sees the effective deadline in `req.deadline()`.
//!
//! When the deadline passes the call ends with `DEADLINE_EXCEEDED` (on the
//! client the server is sent CANCEL; on the server the handler is dropped).
//! For a streaming response the deadline covers the whole stream: when it
//! passes, the stream ends with a `DEADLINE_EXCEEDED` item.
//!
//! ## Who keeps the timer
//!
//! A timer per call costs more than the rest of the layer, and the transports
//! already keep one timer per connection for every call's deadline. So the
//! layer times a call itself only when nothing below does:
//!
//! * **Server**: a trpc server transport enforces the request's deadline
//!   ([`Request::deadline_enforced`]) and learns of every
//!   [`Request::set_deadline`]: the layer only tightens the deadline.
//! * **Client**: a [`Channel`](trpc::Channel) enforces `req.deadline()` until
//!   the response arrives and reports it through a
//!   [`DeadlineProbe`](trpc::client::DeadlineProbe) when it takes the call on
//!   inside the layer's `call`. Layers that pass the call straight on (auth,
//!   metrics, compression, a retry's first attempt, a load balancer picking a
//!   ready channel) keep that answer; a `tower::buffer::Buffer`, which hands
//!   the call to a worker that may wait for readiness past the deadline, or
//!   any other service, does not, and the layer arms its own timer. A
//!   response stream is always timed by the layer on the client (the channel
//!   only times the wait for the response).
//!
//! Errors are a `DEADLINE_EXCEEDED` [`Status`](trpc::Status) whose source is
//! an [`error::Elapsed`]; the message says which side gave up and, on the
//! server, whether the server's timeout or the caller's deadline passed.
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
//! [`Request::deadline_enforced`]: trpc::Request::deadline_enforced

pub mod error;
pub mod future;
mod layer;

pub use layer::TimeoutLayer;

use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;
use trpc::client::DeadlineProbe;
use trpc::{Body, BoxError, Request, Response};

use self::error::Expiry;
use self::future::{Enforcer, ResponseFuture};
use crate::Side;

/// Sets and enforces a call deadline; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    layer: TimeoutLayer,
}

impl<S> Timeout<S> {
    /// Wraps `inner` with the configuration of `layer`.
    pub const fn new(inner: S, layer: TimeoutLayer) -> Self {
        Timeout { inner, layer }
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
        let timeout = self.layer.timeout();
        let ours = Instant::now() + timeout;
        req.set_deadline(ours);
        let deadline = req.deadline().unwrap_or(ours);
        let expiry = match Side::of(&req) {
            Side::Client => Expiry::Client,
            Side::Server if deadline < ours => Expiry::CallerDeadline,
            Side::Server => Expiry::ServerTimeout(timeout),
        };
        if req.deadline_enforced() {
            return ResponseFuture::new(
                self.inner.call(req),
                deadline,
                Enforcer::Transport,
                expiry,
            );
        }
        let probe = DeadlineProbe::start();
        let future = self.inner.call(req);
        let enforcer = if probe.finish().is_some_and(|d| d <= deadline) {
            Enforcer::Channel
        } else {
            // Layers above need no timer of their own: this one ends the call.
            DeadlineProbe::enforced(deadline);
            Enforcer::Layer
        };
        ResponseFuture::new(future, deadline, enforcer, expiry)
    }
}

#[cfg(test)]
mod tests;
