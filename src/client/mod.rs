//! The client: [`Endpoint`] → [`Channel`] (a `tower::Service`) → [`Client`] for
//! typed calls.

mod channel;
mod connection;
mod endpoint;
mod load;
mod typed;

pub use channel::{Channel, ResponseFuture};
pub use connection::Trailers;
pub use endpoint::Endpoint;
pub use typed::Client;
