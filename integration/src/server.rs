//! Test servers: a [`trpc::Server`] serving a [`Router`] on `127.0.0.1:0`
//! in a background task, stopped gracefully by [`TestServer::shutdown`] (or,
//! without waiting, when dropped); and [`echo_router`], the usual target.
//!
//! ```no_run
//! # #[tokio::main] async fn main() {
//! use trpc_integration::client::connect;
//! use trpc_integration::server::{echo_router, serve};
//! let server = serve(echo_router()).await;
//! let channel = connect(server.addr).await;
//! // ... calls ...
//! # drop(channel);
//! server.shutdown().await;
//! # }
//! ```

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::{Layer, Service};
use trpc::server::{Router, Server};
use trpc::{Body, BoxError, Request, Response};

use crate::messages::EchoMsg;
use crate::wait::{within, SOON};

/// A server running in a background task until [`TestServer::shutdown`]
/// or drop (which starts a graceful shutdown without waiting for it).
#[derive(Debug)]
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<io::Result<()>>>,
}

/// Binds `127.0.0.1:0`.
pub async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

/// Binds `addr` again (a port a test used before): the old sockets may
/// linger briefly, so `AddrInUse` is retried for up to [`SOON`].
pub async fn rebind(addr: SocketAddr) -> TcpListener {
    within(SOON, "rebind the same port", async {
        loop {
            match TcpListener::bind(addr).await {
                Ok(l) => return l,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("bind {addr}: {e}"),
            }
        }
    })
    .await
}

/// Serves `router` with a default server on a fresh port.
pub async fn serve(router: Router) -> TestServer {
    serve_with(Server::builder(), router).await
}

/// Serves `router` with `server` (limits, timeouts, layers) on a fresh port.
pub async fn serve_with<L>(server: Server<L>, router: Router) -> TestServer
where
    L: Layer<Router> + Send + 'static,
    L::Service: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    <L::Service as Service<Request<Body>>>::Error: Into<BoxError>,
    <L::Service as Service<Request<Body>>>::Future: Send + 'static,
{
    serve_on(listener().await, server, router)
}

/// Serves `router` with `server` on an already bound listener.
pub fn serve_on<L>(listener: TcpListener, server: Server<L>, router: Router) -> TestServer
where
    L: Layer<Router> + Send + 'static,
    L::Service: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    <L::Service as Service<Request<Body>>>::Error: Into<BoxError>,
    <L::Service as Service<Request<Body>>>::Future: Send + 'static,
{
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let signal = async move {
        let _ = stopped.await;
    };
    let handle = tokio::spawn(server.serve_with_listener(listener, router, signal));
    TestServer {
        addr,
        stop: Some(stop),
        handle: Some(handle),
    }
}

impl TestServer {
    /// Completes the server's shutdown signal (graceful shutdown starts).
    fn signal_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Signals shutdown and waits (bounded by `limit`) for
    /// `serve_with_listener` to return; returns how long that took.
    pub async fn shutdown_within(mut self, limit: Duration) -> Duration {
        let start = Instant::now();
        self.signal_shutdown();
        if let Some(handle) = self.handle.take() {
            within(limit, "server shutdown", handle)
                .await
                .expect("server task panicked")
                .expect("serve_with_listener failed");
        }
        start.elapsed()
    }

    /// Signals shutdown and waits (at most [`SOON`]) for the server to stop.
    pub async fn shutdown(self) -> Duration {
        self.shutdown_within(SOON).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.signal_shutdown();
    }
}

/// A router with `echo.Echo/Say` (JSON and protobuf): answers an
/// [`EchoMsg`] with itself.
pub fn echo_router() -> Router {
    use trpc::codec::{Json, Proto};
    Router::new().route(
        "echo.Echo/Say",
        trpc::server::unary(|req: Request<EchoMsg>| async move {
            Ok::<_, trpc::Status>(Response::new(req.into_inner()))
        })
        .codec((Json, Proto)),
    )
}
