//! The client: [`Endpoint`] → [`Channel`] (a `tower::Service`) → [`Client`] for
//! typed calls.

mod channel;
mod connect;
mod connection;
pub(crate) mod endpoint;
mod role;
mod typed;

pub use channel::{Channel, ResponseFuture};
pub use connection::Trailers;
pub use endpoint::Endpoint;
pub use typed::Client;
