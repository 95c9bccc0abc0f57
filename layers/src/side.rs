//! [`Side`]: which end of a call a layer sits on.

use std::fmt;

use trpc::Request;

/// Which end of a call a layer serves: the one side type of every layer
/// ([`TraceLayer::client`](crate::TraceLayer::client) /
/// [`server`](crate::TraceLayer::server), the `side` of metrics, the
/// direction of compression).
///
/// ```
/// use trpc_layers::Side;
/// assert_eq!(Side::Client.as_str(), "client");
/// assert_eq!(Side::Server.to_string(), "server");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The caller's end: a stack around a `trpc::Channel`.
    Client,
    /// The callee's end: a stack around a `trpc::server::Router`.
    Server,
}

impl Side {
    /// `"client"` or `"server"`, as in metric names and the `otel.kind` of spans.
    pub const fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }

    /// The side a request is on, for layers that serve both sides with one
    /// constructor (`TimeoutLayer`): a request a server received carries the
    /// peer's address or a transport-enforced deadline; one a client builds
    /// has neither.
    pub fn of<T>(req: &Request<T>) -> Side {
        if req.remote_addr().is_some() || req.deadline_enforced() {
            Side::Server
        } else {
            Side::Client
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
