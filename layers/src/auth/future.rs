//! The response futures of the auth layers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower_service::Service;
use trpc::{Body, BoxError, Request, Response, Status};

use super::server::Rules;
use super::validator::Validator;

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called { #[pin] future: F },
        Failed { error: Option<Status> },
    }
}

pin_project! {
    /// The future of an [`Auth`](super::Auth) call: the inner call, or the
    /// error of an unusable credential.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Called { future },
        }
    }

    pub(crate) fn failed(error: Status) -> Self {
        ResponseFuture {
            kind: Kind::Failed { error: Some(error) },
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

fn take_error(error: &mut Option<Status>) -> BoxError {
    error
        .take()
        .unwrap_or_else(|| Status::internal("future polled after completion"))
        .into()
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future } => future.poll(cx).map_err(Into::into),
            KindProj::Failed { error } => Poll::Ready(Err(take_error(error))),
        }
    }
}

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
    pub struct AuthFuture<S, V>
    where
        S: Service<Request<Body>>,
        V: Validator,
    {
        #[pin]
        state: State<V::Future, S::Future>,
        // The ready inner service and the request, until validation succeeds.
        pending: Option<(S, Request<Body>)>,
        rules: Arc<Rules>,
    }
}

impl<S, V> AuthFuture<S, V>
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
        AuthFuture {
            state: State::Validating { check },
            pending: Some((service, req)),
            rules,
        }
    }

    pub(crate) fn called(future: S::Future, rules: Arc<Rules>) -> Self {
        AuthFuture {
            state: State::Called { future },
            pending: None,
            rules,
        }
    }

    pub(crate) fn failed(error: Status, rules: Arc<Rules>) -> Self {
        AuthFuture {
            state: State::Failed { error: Some(error) },
            pending: None,
            rules,
        }
    }
}

impl<S, V> fmt::Debug for AuthFuture<S, V>
where
    S: Service<Request<Body>>,
    V: Validator,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthFuture")
    }
}

impl<S, V> Future for AuthFuture<S, V>
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
                    let Some((mut service, mut req)) = this.pending.take() else {
                        return Poll::Ready(Err(Status::internal(
                            "future polled after completion",
                        )
                        .into()));
                    };
                    if let Err(denied) = this.rules.check_scopes(&identity, req.method()) {
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
