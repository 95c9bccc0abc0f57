//! Retries: [`RetryLayer`] re-sends failed calls with exponential backoff and
//! full jitter, within a retry budget and the call's deadline.
//!
//! A failed call is retried only when **all** of these hold:
//!
//! * its code is retryable (default: `UNAVAILABLE`; see [`RetryLayer::retry_on`]);
//! * it is safe to send again: the method is marked idempotent
//!   ([`RetryLayer::idempotent`], an [`Idempotent`] request extension, or the
//!   `.proto`'s `idempotency_level`, which generated clients attach as a
//!   [`trpc::MethodDescriptor`]), **or**
//!   the error proves the server never processed it ([`Status::is_refused`]:
//!   GOAWAY, connection refused...);
//! * the request can be copied ([`Request::try_clone`]: streaming requests are
//!   never retried);
//! * fewer than `max_attempts` attempts were made;
//! * the backoff ends before the call's deadline (no attempt starts past it);
//! * the retry budget has a token ([`TpsBudget`]: by default retries may add at
//!   most 20% to the calls made, plus 10 per second), so a struggling server is
//!   not hit by a retry storm. Every service built from one layer (and its
//!   clones) shares the budget. A call that would have been retried but for
//!   the budget says so: its status keeps the code of the last attempt, its
//!   message ends with `(not retried: the retry budget is exhausted)`, its
//!   source is an [`error::BudgetExhausted`], and the layer logs a WARN event.
//!
//! The backoff before retry *n* is a random duration in `[0, min(max, initial × 2ⁿ⁻¹)]`
//! ("full jitter"). A response that succeeded after retries carries an
//! [`Attempts`] extension.
//!
//! Put the retry layer *outside* the per-attempt layers (attempt timeout,
//! compression, load balancer) and *inside* the call's deadline:
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use trpc::Code;
//! use trpc_layers::RetryLayer;
//!
//! # fn wrap<S>(channel: S) -> impl Sized {
//! let retry = RetryLayer::exponential(4)
//!     .backoff(Duration::from_millis(20), Duration::from_secs(1))
//!     .retry_on([Code::Unavailable, Code::ResourceExhausted])
//!     .idempotent("echo.Echo/*");
//! let stack = ServiceBuilder::new().layer(retry).service(channel);
//! # stack }
//! ```
//!
//! [`Status::is_refused`]: trpc::Status::is_refused
//! [`Request::try_clone`]: trpc::Request::try_clone

pub mod error;
pub mod future;
mod layer;
mod policy;

pub use layer::RetryLayer;
pub use tower::retry::budget::TpsBudget;

use std::sync::Arc;
use std::task::{Context, Poll};

use tower::retry::budget::Budget;
use tower_service::Service;
use trpc::{Body, BoxError, Request, Response};

use self::future::ResponseFuture;
use self::policy::Policy;

/// Marks a request as idempotent (safe to retry even if it reached the server),
/// whatever its method: `req.extensions_mut().insert(Idempotent)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Idempotent;

/// How many attempts a successful call took; inserted in the response's
/// extensions when it is more than one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempts(pub u32);

/// Retries failed calls; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    policy: Arc<Policy>,
    budget: Option<Arc<TpsBudget>>,
}

impl<S> Retry<S> {
    /// Wraps `inner` with the policy and budget of `layer`.
    pub fn new(inner: S, layer: RetryLayer) -> Self {
        Retry {
            inner,
            policy: layer.policy,
            budget: layer.budget,
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

impl<S> Service<Request<Body>> for Retry<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if let Some(budget) = &self.budget {
            budget.deposit();
        }
        let idempotent = req.extensions().get::<Idempotent>().is_some()
            || req
                .extensions()
                .get::<trpc::MethodDescriptor>()
                .is_some_and(|m| m.is_idempotent())
            || self.policy.idempotent.matches(req.method().as_str());
        let spare = if self.policy.max_attempts > 1 {
            req.try_clone()
        } else {
            None
        };
        let deadline = req.deadline();
        // The future keeps the service that was made ready (with whatever it
        // reserved while getting ready, e.g. its place in a semaphore's queue)
        // for the retries, and leaves a clone here for the next call.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        let future = ready.call(req);
        ResponseFuture::new(
            future,
            ready,
            spare,
            self.policy.clone(),
            self.budget.clone(),
            idempotent,
            deadline,
        )
    }
}

#[cfg(test)]
mod tests;
