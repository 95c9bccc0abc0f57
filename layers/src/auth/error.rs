//! Error types of the auth layers. Each is the `source()` of the
//! [`Status`](trpc::Status) a rejected call fails with.

use std::fmt;

/// The call carried no credential (`UNAUTHENTICATED`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MissingCredentials(());

impl MissingCredentials {
    /// A new `MissingCredentials`.
    pub const fn new() -> Self {
        MissingCredentials(())
    }
}

impl fmt::Display for MissingCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("missing credentials")
    }
}

impl std::error::Error for MissingCredentials {}

/// The identity lacks a scope the method requires (`PERMISSION_DENIED`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingScope {
    scope: Box<str>,
}

impl MissingScope {
    /// The identity lacks `scope`.
    pub fn new(scope: &str) -> Self {
        MissingScope {
            scope: scope.into(),
        }
    }

    /// The missing scope.
    pub fn scope(&self) -> &str {
        &self.scope
    }
}

impl fmt::Display for MissingScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "missing scope {:?}", self.scope)
    }
}

impl std::error::Error for MissingScope {}

/// A credential configured on the client cannot be sent (it contains control
/// characters); every call fails with `UNAUTHENTICATED`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InvalidCredential(());

impl InvalidCredential {
    /// A new `InvalidCredential`.
    pub const fn new() -> Self {
        InvalidCredential(())
    }
}

impl fmt::Display for InvalidCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the configured credential cannot be sent as metadata")
    }
}

impl std::error::Error for InvalidCredential {}

/// The error of a future that failed before calling the inner service (taken
/// once; a second poll is a bug of the caller).
pub(crate) fn take_error(error: &mut Option<trpc::Status>) -> trpc::BoxError {
    error
        .take()
        .unwrap_or_else(|| trpc::Status::internal("future polled after completion"))
        .into()
}
