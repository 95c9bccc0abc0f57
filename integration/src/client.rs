//! Clients of a [`crate::server::TestServer`] (or of any address): an
//! endpoint with a bounded connect timeout, and a connected channel.

use std::net::SocketAddr;
use std::time::Duration;

use trpc::{Channel, Endpoint};

use crate::wait::{within, SOON};

/// An endpoint for `addr` with a bounded (5 s) connect timeout.
pub fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::new(format!("tcp://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
}

/// A channel to `addr` with default settings, connected (panics if the
/// connection fails).
pub async fn connect(addr: SocketAddr) -> Channel {
    within(SOON, "connect", endpoint(addr).connect())
        .await
        .expect("connect")
}
