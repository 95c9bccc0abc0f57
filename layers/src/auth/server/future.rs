//! The [`ResponseFuture`] of [`RequireAuth`](super::RequireAuth): validation,
//! then the inner call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower_service::Service;
use trpc::{Body, BoxError, Request, Response, Status};

use super::layer::Rules;
use crate::auth::error::take_error;
use crate::auth::Validator;

pin_project! {
    #[project = StateProj]
    enum State<VF, F> {
        // Waiting for the validator.
        Validating { #[pin] check: VF },
        // The inner service is handling the call.
        Called { #[pin] future: F },
        // Rejected before validation (no credential).
        Failed { error: Option<Status> },
    }
}

pin_project! {
    /// The future of a [`RequireAuth`](super::RequireAuth) call: validation,
    /// then the inner call.
    pub struct ResponseFuture<S, V>
    where
        S: Service<Request<Body>>,
        V: Validator,
    {
        #[pin]
        state: State<V::Future, S::Future>,
        // The ready inner service, the request and the rules to check the
        // identity against, until validation succeeds.
        pending: Option<(S, Request<Body>, Arc<Rules>)>,
    }
}

impl<S, V> ResponseFuture<S, V>
where
    S: Service<Request<Body>>,
    V: Validator,
{
    pub(crate) fn validating(
        check: V::Future,
        service: S,
        req: Request<Body>,
        rules: Arc<Rules>,
    ) -> Self {
        ResponseFuture {
            state: State::Validating { check },
            pending: Some((service, req, rules)),
        }
    }

    pub(crate) fn called(future: S::Future) -> Self {
        ResponseFuture {
            state: State::Called { future },
            pending: None,
        }
    }

    pub(crate) fn failed(error: Status) -> Self {
        ResponseFuture {
            state: State::Failed { error: Some(error) },
            pending: None,
        }
    }
}

impl<S, V> fmt::Debug for ResponseFuture<S, V>
where
    S: Service<Request<Body>>,
    V: Validator,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<S, V> Future for ResponseFuture<S, V>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: Into<BoxError>,
    V: Validator,
{
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Validating { check } => {
                    let identity = ready!(check.poll(cx))?;
                    let Some((mut service, mut req, rules)) = this.pending.take() else {
                        return Poll::Ready(Err(Status::internal(
                            "future polled after completion",
                        )
                        .into()));
                    };
                    if let Err(denied) = rules.check_scopes(&identity, req.method()) {
                        return Poll::Ready(Err(denied.into()));
                    }
                    req.extensions_mut().insert(identity);
                    let future = service.call(req);
                    this.state.set(State::Called { future });
                }
                StateProj::Called { future } => return future.poll(cx).map_err(Into::into),
                StateProj::Failed { error } => return Poll::Ready(Err(take_error(error))),
            }
        }
    }
}
