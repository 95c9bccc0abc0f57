//! The server side of auth: [`RequireAuthLayer`] checks credentials through a
//! [`Validator`], with per-method rules.

pub mod future;
mod layer;

pub use layer::RequireAuthLayer;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;
use trpc::{Body, BoxError, Request, Response, Status};

use self::future::ResponseFuture;
use self::layer::Rules;
use super::error::MissingCredentials;
use super::{Credential, CredentialKind, Validator, API_KEY, AUTHORIZATION};

/// The credential of a request, from `authorization: Bearer` or `x-api-key`,
/// borrowed from its metadata.
fn credential(req: &Request<Body>) -> Option<(CredentialKind, &str)> {
    if let Some(v) = req.metadata().get(AUTHORIZATION) {
        let v = v.trim_ascii();
        // A byte search (the space is ASCII: both sides stay `str`s): the
        // `char` pattern of `split_once` costs a searcher per call.
        if let Some(at) = v.bytes().position(|b| b == b' ') {
            let (scheme, token) = (&v[..at], v[at + 1..].trim_ascii());
            if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() {
                return Some((CredentialKind::Bearer, token));
            }
        }
    }
    req.metadata()
        .get(API_KEY)
        .filter(|k| !k.is_empty())
        .map(|k| (CredentialKind::ApiKey, k))
}

/// Authenticates calls before the inner service sees them; see the
/// [module docs](super).
#[derive(Clone)]
pub struct RequireAuth<S, V> {
    inner: S,
    validator: V,
    rules: Arc<Rules>,
}

impl<S, V> RequireAuth<S, V> {
    /// Wraps `inner` with the validator and rules of `layer`.
    pub fn new(inner: S, layer: RequireAuthLayer<V>) -> Self {
        RequireAuth {
            inner,
            validator: layer.validator,
            rules: layer.rules,
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

impl<S: fmt::Debug, V> fmt::Debug for RequireAuth<S, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireAuth")
            .field("inner", &self.inner)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl<S, V> Service<Request<Body>> for RequireAuth<S, V>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone,
    S::Error: Into<BoxError>,
    V: Validator,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture<S, V>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        if self.rules.anonymous.matches(req.method().as_str()) {
            return ResponseFuture::called(self.inner.call(req));
        }
        let Some((kind, secret)) = credential(&req) else {
            let status = Status::unauthenticated(format!(
                "{} requires credentials: send `{AUTHORIZATION}: Bearer <token>` or `{API_KEY}`",
                req.method()
            ))
            .with_source(MissingCredentials::new());
            return ResponseFuture::failed(status);
        };
        // A validator that needs no waiting answers here: no future, no
        // copy of the credential, the ready service used as it is.
        if let Some(checked) = self.validator.validate_now(kind, secret, req.method()) {
            let allowed = checked.and_then(|identity| {
                self.rules.check_scopes(&identity, req.method())?;
                Ok(identity)
            });
            return match allowed {
                Ok(identity) => {
                    req.extensions_mut().insert(identity);
                    ResponseFuture::called(self.inner.call(req))
                }
                Err(status) => ResponseFuture::failed(status),
            };
        }
        let check = self
            .validator
            .validate(Credential::new(kind, secret), req.method().clone());
        // The validator may take a while: the future takes the service that
        // was made ready and leaves a clone here (to be made ready again).
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::validating(check, ready, req, self.rules.clone())
    }
}
