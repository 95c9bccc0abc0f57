//! Credentials, identities and constant-time comparison.

use std::fmt;
use std::sync::Arc;

/// How a credential was presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// `authorization: Bearer <token>`.
    Bearer,
    /// `x-api-key: <key>`.
    ApiKey,
}

/// A credential presented by a caller. Its `Debug` output hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    kind: CredentialKind,
    secret: String,
}

impl Credential {
    /// A credential of `kind`.
    pub fn new(kind: CredentialKind, secret: impl Into<String>) -> Self {
        Credential {
            kind,
            secret: secret.into(),
        }
    }

    /// How it was presented.
    pub fn kind(&self) -> CredentialKind {
        self.kind
    }

    /// The token or key. Compare it with [`constant_time_eq`].
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("kind", &self.kind)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Who the caller is, as established by a validator; handlers find it in the
/// request extensions. Cheap to clone.
///
/// ```
/// use trpc_layers::auth::Identity;
/// let id = Identity::new("alice").with_scope("read").with_scope("admin");
/// assert!(id.has_scope("admin"));
/// assert_eq!(id.subject(), "alice");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    inner: Arc<IdentityInner>,
}

#[derive(PartialEq, Eq)]
struct IdentityInner {
    subject: Box<str>,
    scopes: Box<[Box<str>]>,
}

impl Identity {
    /// An identity without scopes.
    pub fn new(subject: impl AsRef<str>) -> Self {
        Identity {
            inner: Arc::new(IdentityInner {
                subject: subject.as_ref().into(),
                scopes: Box::new([]),
            }),
        }
    }

    /// Adds a scope (a permission, role, ...).
    pub fn with_scope(self, scope: impl AsRef<str>) -> Self {
        let mut scopes: Vec<Box<str>> = self.inner.scopes.to_vec();
        scopes.push(scope.as_ref().into());
        Identity {
            inner: Arc::new(IdentityInner {
                subject: self.inner.subject.clone(),
                scopes: scopes.into(),
            }),
        }
    }

    /// An equal identity that shares nothing with this one (so clones of
    /// the two never touch the same reference count).
    pub(crate) fn deep_clone(&self) -> Self {
        Identity {
            inner: Arc::new(IdentityInner {
                subject: self.inner.subject.clone(),
                scopes: self.inner.scopes.clone(),
            }),
        }
    }

    /// The subject (user, service account, key owner).
    pub fn subject(&self) -> &str {
        &self.inner.subject
    }

    /// The scopes.
    pub fn scopes(&self) -> impl Iterator<Item = &str> + '_ {
        self.inner.scopes.iter().map(|s| &**s)
    }

    /// True if the identity has `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.inner.scopes.iter().any(|s| &**s == scope)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("subject", &self.inner.subject)
            .field("scopes", &self.inner.scopes)
            .finish()
    }
}

/// Compares two secrets in time that depends only on their lengths, never on
/// where they differ (no early exit).
///
/// ```
/// use trpc_layers::auth::constant_time_eq;
/// assert!(constant_time_eq(b"token", b"token"));
/// assert!(!constant_time_eq(b"token", b"tokem"));
/// assert!(!constant_time_eq(b"token", b"token2"));
/// ```
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Every byte of the common length is compared, whatever differs: the
    // time depends on the lengths only.
    let diff = a
        .iter()
        .zip(b)
        .fold(u8::from(a.len() != b.len()), |d, (x, y)| d | (x ^ y));
    // Keep the optimiser from turning the loop into an early-exit comparison.
    std::hint::black_box(diff) == 0
}
