//! [`RequireAuthLayer`]: authenticates calls, with per-method rules.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;
use trpc::{Body, BoxError, Method, Request, Response, Status};

use super::error::{MissingCredentials, MissingScope};
use super::future::AuthFuture;
use super::identity::{Credential, CredentialKind, Identity};
use super::validator::Validator;
use super::{API_KEY, AUTHORIZATION};
use crate::util::{pattern_matches, MethodSet};

/// Per-method rules.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rules {
    anonymous: MethodSet,
    scopes: Vec<(Box<str>, Box<str>)>,
}

impl Rules {
    /// `PERMISSION_DENIED` when `identity` lacks a scope `method` requires.
    pub(crate) fn check_scopes(&self, identity: &Identity, method: &Method) -> Result<(), Status> {
        for (pattern, scope) in &self.scopes {
            if pattern_matches(pattern, method.as_str()) && !identity.has_scope(scope) {
                return Err(Status::permission_denied(format!(
                    "{} may not call {method}: scope {scope:?} required",
                    identity.subject()
                ))
                .with_source(MissingScope::new(scope)));
            }
        }
        Ok(())
    }
}

/// The credential of a request, from `authorization: Bearer` or `x-api-key`.
fn credential(req: &Request<Body>) -> Option<Credential> {
    if let Some(v) = req.metadata().get(AUTHORIZATION) {
        let v = v.trim_ascii();
        if let Some((scheme, token)) = v.split_once(' ') {
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim_ascii().is_empty() {
                return Some(Credential::new(CredentialKind::Bearer, token.trim_ascii()));
            }
        }
    }
    req.metadata()
        .get(API_KEY)
        .filter(|k| !k.is_empty())
        .map(|k| Credential::new(CredentialKind::ApiKey, k))
}

/// Requires callers to authenticate; see the [module docs](super).
#[derive(Clone)]
pub struct RequireAuthLayer<V> {
    validator: V,
    rules: Arc<Rules>,
}

impl<V: Validator> RequireAuthLayer<V> {
    /// Every method requires a credential that `validator` accepts.
    pub fn new(validator: V) -> Self {
        RequireAuthLayer {
            validator,
            rules: Arc::new(Rules::default()),
        }
    }

    /// Methods matching `pattern` (`pkg.Service/Method`, `pkg.Service/*`,
    /// `*`) need no credential. May be called several times.
    pub fn allow_anonymous(mut self, pattern: &str) -> Self {
        let rules = Arc::make_mut(&mut self.rules);
        rules.anonymous = rules.anonymous.with(pattern);
        self
    }

    /// Methods matching `pattern` require identities with `scope`
    /// (`PERMISSION_DENIED` otherwise). May be called several times; every
    /// matching rule applies.
    pub fn require_scope(mut self, pattern: &str, scope: &str) -> Self {
        Arc::make_mut(&mut self.rules)
            .scopes
            .push((pattern.into(), scope.into()));
        self
    }
}

impl<V> fmt::Debug for RequireAuthLayer<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireAuthLayer")
            .field(
                "anonymous",
                &self.rules.anonymous.iter().collect::<Vec<_>>(),
            )
            .field("scopes", &self.rules.scopes)
            .finish_non_exhaustive()
    }
}

impl<S, V: Clone> Layer<S> for RequireAuthLayer<V> {
    type Service = RequireAuth<S, V>;

    fn layer(&self, inner: S) -> RequireAuth<S, V> {
        RequireAuth {
            inner,
            validator: self.validator.clone(),
            rules: self.rules.clone(),
        }
    }
}

/// Authenticates calls before the inner service sees them; see the
/// [module docs](super).
#[derive(Clone)]
pub struct RequireAuth<S, V> {
    inner: S,
    validator: V,
    rules: Arc<Rules>,
}

impl<S, V: Validator> RequireAuth<S, V> {
    /// Wraps `inner` with the rules of `layer`.
    pub fn new(inner: S, layer: &RequireAuthLayer<V>) -> Self {
        layer.layer(inner)
    }
}

impl<S, V> RequireAuth<S, V> {
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
    type Future = AuthFuture<S, V>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let rules = self.rules.clone();
        if rules.anonymous.matches(req.method().as_str()) {
            return AuthFuture::called(self.inner.call(req), rules);
        }
        let Some(cred) = credential(&req) else {
            let status = Status::unauthenticated(format!(
                "{} requires credentials: send `{AUTHORIZATION}: Bearer <token>` or `{API_KEY}`",
                req.method()
            ))
            .with_source(MissingCredentials::new());
            return AuthFuture::failed(status, rules);
        };
        let check = self.validator.validate(cred, req.method().clone());
        // The validator may take a while: the future takes the service that
        // was made ready and leaves a clone here (to be made ready again).
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        AuthFuture::validating(check, ready, req, rules)
    }
}
