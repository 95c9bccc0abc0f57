//! [`RequireAuthLayer`]: who may call what.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;
use trpc::{Method, Status};

use super::RequireAuth;
use crate::auth::error::MissingScope;
use crate::auth::{Identity, Validator};
use crate::util::{pattern_matches, MethodSet};

/// Per-method rules.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rules {
    pub(crate) anonymous: MethodSet,
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

/// Requires callers to authenticate; see the [module docs](super).
#[derive(Clone)]
pub struct RequireAuthLayer<V> {
    pub(super) validator: V,
    pub(super) rules: Arc<Rules>,
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
        RequireAuth::new(inner, self.clone())
    }
}
