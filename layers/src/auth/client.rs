//! [`AuthLayer`]: attaches a bearer token or an API key to every call.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;
use trpc::metadata::MetadataValue;
use trpc::{Body, BoxError, Request, Response};

use super::future::ResponseFuture;
use super::{API_KEY, AUTHORIZATION};

#[derive(PartialEq, Eq)]
struct Header {
    key: &'static str,
    /// The validated value; `None` when the secret cannot travel as metadata.
    value: Option<MetadataValue>,
}

/// Attaches a credential to every call: a bearer token or an API key.
///
/// Its `Debug` output hides the secret. A secret that cannot travel as
/// metadata (control characters) fails every call with `UNAUTHENTICATED`
/// instead of panicking.
///
/// ```
/// use tower::ServiceBuilder;
/// use trpc_layers::AuthLayer;
///
/// # fn wrap<S>(channel: S) -> impl Sized {
/// let token = std::env::var("API_TOKEN").unwrap_or_default();
/// let stack = ServiceBuilder::new().layer(AuthLayer::bearer(token)).service(channel);
/// # stack }
/// ```
#[derive(Clone)]
pub struct AuthLayer {
    header: Arc<Header>,
}

impl AuthLayer {
    fn new(key: &'static str, value: String) -> Self {
        AuthLayer {
            header: Arc::new(Header {
                key,
                value: MetadataValue::try_from(value).ok(),
            }),
        }
    }

    /// Sends `authorization: Bearer <token>`.
    pub fn bearer(token: impl AsRef<str>) -> Self {
        AuthLayer::new(AUTHORIZATION, format!("Bearer {}", token.as_ref()))
    }

    /// Sends `x-api-key: <key>`.
    pub fn api_key(key: impl AsRef<str>) -> Self {
        AuthLayer::new(API_KEY, key.as_ref().to_owned())
    }
}

impl fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("key", &self.header.key)
            .field("value", &"<redacted>")
            .finish()
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth::new(inner, self.clone())
    }
}

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
        let Some(value) = &h.value else {
            return ResponseFuture::failed(
                trpc::Status::unauthenticated(format!(
                    "the configured {} credential contains characters metadata cannot carry",
                    h.key
                ))
                .with_source(super::error::InvalidCredential::new()),
            );
        };
        req.metadata_mut().insert_value(h.key, value.clone());
        ResponseFuture::called(self.inner.call(req))
    }
}
