//! The [`ResponseFuture`] of [`Retry`](super::Retry).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::retry::budget::{Budget, TpsBudget};
use tower_service::Service;
use trpc::{Body, BoxError, Request, Response, Status};

use super::error::BudgetExhausted;
use super::policy::Policy;
use super::Attempts;
use crate::util::find_status;

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // An attempt is in flight.
        Called { #[pin] future: F },
        // Waiting out the backoff before the next attempt.
        Backoff { #[pin] sleep: Sleep },
        // Waiting for the service to be ready for the next attempt.
        Ready,
    }
}

pin_project! {
    /// The future of a [`Retry`](super::Retry) call: attempts, backoffs and
    /// readiness waits, as an explicit state machine.
    pub struct ResponseFuture<S>
    where
        S: Service<Request<Body>>,
    {
        #[pin]
        state: State<S::Future>,
        service: S,
        // A copy of the request for the next attempt (`None`: no more attempts).
        request: Option<Request<Body>>,
        policy: Arc<Policy>,
        budget: Option<Arc<TpsBudget>>,
        idempotent: bool,
        deadline: Option<Instant>,
        attempts: u32,
        // The error of the last attempt, returned if the deadline passes
        // before the next one can start.
        last_error: Option<BoxError>,
    }
}

impl<S: Service<Request<Body>>> ResponseFuture<S> {
    pub(crate) fn new(
        future: S::Future,
        service: S,
        request: Option<Request<Body>>,
        policy: Arc<Policy>,
        budget: Option<Arc<TpsBudget>>,
        idempotent: bool,
        deadline: Option<Instant>,
    ) -> Self {
        ResponseFuture {
            state: State::Called { future },
            service,
            request,
            policy,
            budget,
            idempotent,
            deadline,
            attempts: 1,
            last_error: None,
        }
    }
}

impl<S: Service<Request<Body>>> fmt::Debug for ResponseFuture<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempts", &self.attempts)
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => {
                    let err: BoxError = match ready!(future.poll(cx)) {
                        Ok(mut resp) => {
                            if *this.attempts > 1 {
                                resp.extensions_mut().insert(Attempts(*this.attempts));
                            }
                            return Poll::Ready(Ok(resp));
                        }
                        Err(e) => e.into(),
                    };
                    let Some(request) = this.request.as_ref() else {
                        return Poll::Ready(Err(err));
                    };
                    let policy = &**this.policy;
                    let code = trpc::Status::code_of(&*err);
                    if !policy.retryable.contains(code) || *this.attempts >= policy.max_attempts {
                        return Poll::Ready(Err(err));
                    }
                    let refused = find_status(&*err).is_some_and(Status::is_refused);
                    if !(*this.idempotent || refused) {
                        tracing::trace!(method = %request.method(), %code, "not retrying: method is not idempotent and the call may have been processed");
                        return Poll::Ready(Err(err));
                    }
                    let backoff = policy.backoff(*this.attempts);
                    let resume = Instant::now() + backoff;
                    if this.deadline.is_some_and(|d| resume >= d) {
                        tracing::debug!(method = %request.method(), %code, attempts = *this.attempts, "not retrying: the deadline would pass");
                        return Poll::Ready(Err(err));
                    }
                    if let Some(budget) = this.budget.as_ref() {
                        if !budget.withdraw() {
                            tracing::warn!(method = %request.method(), %code, attempts = *this.attempts, "not retrying: the retry budget is exhausted");
                            let exhausted = BudgetExhausted::new(*this.attempts, err);
                            return Poll::Ready(Err(exhausted.into_status().into()));
                        }
                    }
                    tracing::debug!(
                        method = %request.method(),
                        %code,
                        attempt = *this.attempts + 1,
                        backoff_ms = backoff.as_secs_f64() * 1e3,
                        error = %err,
                        "retrying call"
                    );
                    *this.last_error = Some(err);
                    this.state.set(State::Backoff {
                        sleep: tokio::time::sleep_until(resume),
                    });
                }
                StateProj::Backoff { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Ready);
                }
                StateProj::Ready => {
                    if let Err(e) = ready!(this.service.poll_ready(cx)) {
                        return Poll::Ready(Err(e.into()));
                    }
                    // Timers fire late and readiness may take a while: never
                    // start an attempt once the deadline has passed.
                    if this.deadline.is_some_and(|d| Instant::now() >= d) {
                        let err = this.last_error.take().unwrap_or_else(|| {
                            Status::deadline_exceeded("deadline passed before a retry").into()
                        });
                        tracing::debug!(attempts = *this.attempts, error = %err, "not retrying: the deadline passed during the backoff");
                        return Poll::Ready(Err(err));
                    }
                    *this.last_error = None;
                    let Some(request) = this.request.take() else {
                        return Poll::Ready(
                            Err(Status::internal("retry without a request").into()),
                        );
                    };
                    *this.attempts += 1;
                    if *this.attempts < this.policy.max_attempts {
                        *this.request = request.try_clone();
                    }
                    let future = this.service.call(request);
                    this.state.set(State::Called { future });
                }
            }
        }
    }
}
