//! Authentication: [`AuthLayer`] attaches credentials on the client;
//! [`RequireAuthLayer`] checks them on the server through a pluggable
//! [`Validator`].
//!
//! * Client: `authorization: Bearer <token>` ([`AuthLayer::bearer`]) or
//!   `x-api-key: <key>` ([`AuthLayer::api_key`]).
//! * Server: the credential is extracted from the metadata and handed to the
//!   validator (any async closure `Fn(Credential, Method) -> Future<Output =
//!   Result<Identity, Status>>`, or [`StaticKeys`] for fixed secrets compared
//!   in constant time). Missing or rejected credentials fail the call with
//!   `UNAUTHENTICATED`; a valid identity without a required scope
//!   ([`RequireAuthLayer::require_scope`]) fails it with `PERMISSION_DENIED`
//!   (validators may also return `PERMISSION_DENIED` themselves). Methods marked
//!   with [`RequireAuthLayer::allow_anonymous`] (health checks, for instance) skip
//!   authentication. The handler finds the [`Identity`] in the request
//!   extensions.
//!
//! ```
//! use trpc::{Method, Status};
//! use trpc_layers::auth::{Credential, Identity, RequireAuthLayer, StaticKeys};
//!
//! // Fixed keys:
//! let keys = StaticKeys::new()
//!     .bearer("s3cret-token", Identity::new("alice").with_scope("admin"))
//!     .api_key("k-123", Identity::new("batch-job"));
//! let layer = RequireAuthLayer::new(keys)
//!     .allow_anonymous("shop.Catalog/List")
//!     .require_scope("admin.Admin/*", "admin");
//!
//! // Or any async check:
//! let layer = RequireAuthLayer::new(|cred: Credential, _method: Method| async move {
//!     match cred.secret() {
//!         "let-me-in" => Ok(Identity::new("guest")),
//!         _ => Err(Status::unauthenticated("unknown token")),
//!     }
//! });
//! # drop(layer);
//! ```

pub mod client;
pub mod error;
mod identity;
pub mod server;
mod validator;

pub use client::{Auth, AuthLayer};
pub use identity::{constant_time_eq, Credential, CredentialKind, Identity};
pub use server::{RequireAuth, RequireAuthLayer};
pub use validator::{StaticKeys, Validator};

/// The metadata key of bearer tokens (`authorization: Bearer <token>`).
pub const AUTHORIZATION: &str = "authorization";
/// The metadata key of API keys.
pub const API_KEY: &str = "x-api-key";

#[cfg(test)]
mod tests;
