//! [`AuthLayer`]: the credential a client sends.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;
use trpc::metadata::MetadataValue;

use super::Auth;
use crate::auth::{API_KEY, AUTHORIZATION};
use crate::util::slots;

#[derive(PartialEq, Eq)]
pub(super) struct Header {
    pub(super) key: &'static str,
    /// The validated value, one copy per thread slot (a call clones its
    /// thread's copy, so threads never share a reference count); `None` when
    /// the secret cannot travel as metadata.
    pub(super) values: Option<Box<[MetadataValue]>>,
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
    pub(super) header: Arc<Header>,
}

impl AuthLayer {
    fn new(key: &'static str, value: String) -> Self {
        AuthLayer {
            header: Arc::new(Header {
                key,
                values: MetadataValue::try_from(value.as_str()).ok().map(|_| {
                    (0..slots())
                        .filter_map(|_| MetadataValue::try_from(value.as_str()).ok())
                        .collect()
                }),
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
