//! The client: [`Endpoint`] → [`Channel`] (a `tower::Service`) → [`Client`] for
//! typed calls.

mod channel;
mod connection;
pub(crate) mod endpoint;
mod typed;

pub use channel::{Channel, ResponseFuture};
pub use connection::Trailers;
pub use endpoint::Endpoint;
pub use typed::Client;
