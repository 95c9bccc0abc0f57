//! Connections over an in-memory pipe (`tokio::io::duplex`) instead of a
//! socket, for tests on paused time (`#[tokio::test(start_paused = true)]`):
//! with no real I/O, the runtime jumps to the next timer whenever every task
//! waits, so timeouts of minutes run in microseconds and deterministically.
//!
//! Three pairings: a real server and a real client ([`serve_channel`]), a
//! real server and a raw peer playing the client ([`serve_peer`]), a real
//! client and a raw peer playing the server ([`channel_peer`]).

use std::net::SocketAddr;

use tokio::io::DuplexStream;
use tokio::task::JoinHandle;
use tower::{Layer, Service};
use trpc::frame::Settings;
use trpc::server::{Router, Server};
use trpc::{Body, BoxError, Channel, Endpoint, Request, Response};

use crate::peer::Peer;

/// Bytes a pipe buffers in each direction.
pub const PIPE_BUFFER: usize = 256 * 1024;

/// The client address a server sees on a pipe.
pub fn client_addr() -> SocketAddr {
    ([127, 0, 0, 1], 9).into()
}

/// An endpoint for pipe connections (`tcp://127.0.0.1:9`, never dialled).
pub fn pipe_endpoint() -> Endpoint {
    Endpoint::from_static("tcp://127.0.0.1:9")
}

/// Serves one connection with `server` and `router` over a new pipe;
/// returns the client's end and the task serving the connection (it ends
/// when the connection does).
pub fn serve_io<L>(server: Server<L>, router: Router) -> (DuplexStream, JoinHandle<()>)
where
    L: Layer<Router> + Send + 'static,
    L::Service: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    <L::Service as Service<Request<Body>>>::Error: Into<BoxError>,
    <L::Service as Service<Request<Body>>>::Future: Send + 'static,
{
    let (client, server_io) = tokio::io::duplex(PIPE_BUFFER);
    let task = tokio::spawn(server.serve_connection(server_io, client_addr(), router));
    (client, task)
}

/// A real server connection and a real client channel over a pipe: the
/// channel (connected: SETTINGS exchanged) and the server's task.
pub async fn serve_channel<L>(
    server: Server<L>,
    router: Router,
    endpoint: Endpoint,
) -> (Channel, JoinHandle<()>)
where
    L: Layer<Router> + Send + 'static,
    L::Service: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    <L::Service as Service<Request<Body>>>::Error: Into<BoxError>,
    <L::Service as Service<Request<Body>>>::Future: Send + 'static,
{
    let (io, task) = serve_io(server, router);
    let channel = endpoint
        .connect_with_io(io)
        .await
        .expect("connect over the pipe");
    (channel, task)
}

/// A real server connection with a raw peer playing the client (nothing
/// sent yet), and the server's task.
pub fn serve_peer<L>(server: Server<L>, router: Router) -> (Peer<DuplexStream>, JoinHandle<()>)
where
    L: Layer<Router> + Send + 'static,
    L::Service: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    <L::Service as Service<Request<Body>>>::Error: Into<BoxError>,
    <L::Service as Service<Request<Body>>>::Future: Send + 'static,
{
    let (io, task) = serve_io(server, router);
    (Peer::new(io), task)
}

/// A real client channel over a pipe with a raw peer playing the server,
/// which answered the client's SETTINGS with `settings`.
pub async fn channel_peer(endpoint: Endpoint, settings: Settings) -> (Channel, Peer<DuplexStream>) {
    let (client, server) = tokio::io::duplex(PIPE_BUFFER);
    let mut peer = Peer::new(server);
    let (channel, _) = tokio::join!(endpoint.connect_with_io(client), async {
        peer.accept_settings(settings).await
    });
    (channel.expect("connect over the pipe"), peer)
}
