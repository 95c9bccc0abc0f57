//! [`Validator`]: pluggable credential checks, and [`StaticKeys`].

use std::fmt;
use std::future::{ready, Future, Ready};
use std::sync::Arc;

use trpc::{Method, Status};

use super::identity::{constant_time_eq, Credential, CredentialKind, Identity};
use crate::util::{slot, slots};

/// Checks a credential and says who the caller is.
///
/// Return `Ok(identity)` to let the call through, `Err` with
/// `UNAUTHENTICATED` for unknown credentials, `PERMISSION_DENIED` for a known
/// caller that may not call `method`, or any other status (e.g. `UNAVAILABLE`
/// when an identity provider cannot be reached).
///
/// Implemented for [`StaticKeys`] and for async closures
/// `Fn(Credential, Method) -> impl Future<Output = Result<Identity, Status>>`.
///
/// A validator that can answer without waiting (fixed keys, a signature
/// checked locally) also implements [`validate_now`](Validator::validate_now):
/// the layer then checks the call in `call`, with no future, no copy of the
/// credential and no clone of the inner service.
pub trait Validator: Clone + Send + Sync + 'static {
    /// The future of a check.
    type Future: Future<Output = Result<Identity, Status>> + Send + 'static;

    /// Checks `credential` for a call of `method`.
    fn validate(&self, credential: Credential, method: Method) -> Self::Future;

    /// Checks a credential of `kind` whose token or key is `secret` without
    /// waiting: `Some(result)` is the answer, `None` (the default) means
    /// "call [`validate`](Validator::validate)".
    fn validate_now(
        &self,
        kind: CredentialKind,
        secret: &str,
        method: &Method,
    ) -> Option<Result<Identity, Status>> {
        let _ = (kind, secret, method);
        None
    }
}

impl<F, Fut> Validator for F
where
    F: Fn(Credential, Method) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Identity, Status>> + Send + 'static,
{
    type Future = Fut;

    fn validate(&self, credential: Credential, method: Method) -> Fut {
        self(credential, method)
    }
}

#[derive(Clone)]
struct Key {
    kind: CredentialKind,
    secret: Box<[u8]>,
    /// The identity, one copy per thread slot: a call clones the copy of its
    /// thread, so threads never share a reference count.
    identities: Box<[Identity]>,
}

/// A validator for a fixed set of bearer tokens and API keys.
///
/// Every configured secret of the presented kind is compared with
/// [`constant_time_eq`], all of them on every call, so neither the position of
/// a difference nor which key matched shows in the timing. Its `Debug` output
/// hides the secrets.
#[derive(Clone, Default)]
pub struct StaticKeys {
    keys: Arc<Vec<Key>>,
}

impl StaticKeys {
    /// No keys (every credential is rejected).
    pub fn new() -> Self {
        StaticKeys::default()
    }

    fn with(mut self, kind: CredentialKind, secret: &str, identity: Identity) -> Self {
        Arc::make_mut(&mut self.keys).push(Key {
            kind,
            secret: secret.as_bytes().into(),
            identities: (0..slots()).map(|_| identity.deep_clone()).collect(),
        });
        self
    }

    /// Accepts `authorization: Bearer <token>` as `identity`.
    pub fn bearer(self, token: impl AsRef<str>, identity: Identity) -> Self {
        self.with(CredentialKind::Bearer, token.as_ref(), identity)
    }

    /// Accepts `x-api-key: <key>` as `identity`.
    pub fn api_key(self, key: impl AsRef<str>, identity: Identity) -> Self {
        self.with(CredentialKind::ApiKey, key.as_ref(), identity)
    }

    /// The identity of `credential`, if it is one of the keys.
    pub fn lookup(&self, credential: &Credential) -> Option<Identity> {
        self.find(credential.kind(), credential.secret())
    }

    fn find(&self, kind: CredentialKind, secret: &str) -> Option<Identity> {
        let mut found = None;
        for key in self.keys.iter() {
            let same = constant_time_eq(&key.secret, secret.as_bytes());
            if same && key.kind == kind && found.is_none() {
                found = Some(&key.identities[slot()]);
            }
        }
        found.cloned()
    }
}

fn rejected(kind: CredentialKind) -> Status {
    Status::unauthenticated(match kind {
        CredentialKind::Bearer => "invalid bearer token",
        CredentialKind::ApiKey => "invalid API key",
    })
}

impl Validator for StaticKeys {
    type Future = Ready<Result<Identity, Status>>;

    fn validate(&self, credential: Credential, _method: Method) -> Self::Future {
        ready(
            self.lookup(&credential)
                .ok_or_else(|| rejected(credential.kind())),
        )
    }

    fn validate_now(
        &self,
        kind: CredentialKind,
        secret: &str,
        _method: &Method,
    ) -> Option<Result<Identity, Status>> {
        Some(self.find(kind, secret).ok_or_else(|| rejected(kind)))
    }
}

impl fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (k.kind, &k.identities[0])))
            .finish()
    }
}
