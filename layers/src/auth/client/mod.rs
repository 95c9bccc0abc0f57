//! The client side of auth: [`AuthLayer`] attaches a bearer token or an API
//! key to every call.

pub mod future;
mod layer;

pub use layer::AuthLayer;

use std::task::{Context, Poll};

use tower_service::Service;
use trpc::{Body, BoxError, Request, Response};

use self::future::ResponseFuture;
use super::error::InvalidCredential;
use crate::util::slot;

/// Attaches the credential of its [`AuthLayer`] to every call.
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S> Auth<S> {
    /// Wraps `inner`, sending the credential of `layer`.
    pub fn new(inner: S, layer: AuthLayer) -> Self {
        Auth { inner, layer }
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

impl<S> Service<Request<Body>> for Auth<S>
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
        let h = &*self.layer.header;
        let Some(value) = h.values.as_ref().and_then(|v| v.get(slot())) else {
            return ResponseFuture::failed(
                trpc::Status::unauthenticated(format!(
                    "the configured {} credential contains characters metadata cannot carry",
                    h.key
                ))
                .with_source(InvalidCredential::new()),
            );
        };
        req.metadata_mut().insert_value(h.key, value.clone());
        ResponseFuture::called(self.inner.call(req))
    }
}
