//! The server: [`Server::builder`] with tower layers, a [`Router`] of handlers,
//! and graceful shutdown.
//!
//! ```no_run
//! use std::time::Duration;
//! use trpc::{server::{unary, Router, Server}, Request, Response, Status};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Msg { message: String }
//!
//! async fn say(req: Request<Msg>) -> Result<Response<Msg>, Status> {
//!     Ok(Response::new(req.into_inner()))
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let router = Router::new().route("echo.Echo/Say", unary(say));
//! Server::builder()
//!     .timeout(Duration::from_secs(5))
//!     .layer(tower::limit::ConcurrencyLimitLayer::new(1024))
//!     .serve("127.0.0.1:7000".parse().unwrap(), router) // until SIGINT/SIGTERM
//!     .await
//! # }
//! ```

mod accept;
pub(crate) use accept::{ConnCtx, ConnService};
mod call;
mod conn;
mod limits;
mod local;
mod pool;
mod router;
mod stream;

pub use router::{
    bidi_streaming, client_streaming, server_streaming, unary, BidiStreaming, BoxFuture,
    ClientStreaming, Handler, HandlerFn, Route, RouteFuture, Router, ServerStreaming, State, Unary,
};

use std::future::{pending, Future};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::layer::util::{Identity, Stack};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::Body;
use crate::frame::{self, Settings};
use crate::request::{Request, Response};
use crate::status::BoxError;

/// Server limits and timeouts (docs/LIMITS.md lists each with its default).
#[derive(Clone, Debug)]
pub(crate) struct ServerConfig {
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_message: usize,
    pub(crate) max_send_message: usize,
    pub(crate) max_metadata: usize,
    pub(crate) max_concurrent_streams: u32,
    pub(crate) max_connections: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) frame_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) keepalive: Option<(Duration, Duration)>,
    pub(crate) shutdown_grace: Duration,
    pub(crate) tcp_nodelay: bool,
    pub(crate) max_buffered_request_bytes: usize,
    pub(crate) max_cancels: Option<(u32, Duration)>,
    pub(crate) stream_window: u32,
    pub(crate) connection_window: u32,
    pub(crate) stream_idle_timeout: Duration,
    pub(crate) inline_handlers: bool,
    pub(crate) max_connection_age: Option<Duration>,
    pub(crate) max_connection_age_grace: Duration,
    pub(crate) stats: Option<Arc<crate::stats::TransportStats>>,
    /// Serve HTTP/2 (gRPC and the JSON gateway) on the port.
    pub(crate) grpc: bool,
    /// Serve HTTP/1 (the JSON gateway) on the port.
    pub(crate) http1: bool,
    pub(crate) health: Option<crate::health::HealthReporter>,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::ServerTls>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            timeout: None,
            max_message: frame::DEFAULT_MAX_MESSAGE,
            max_send_message: frame::DEFAULT_MAX_MESSAGE,
            max_metadata: frame::DEFAULT_MAX_METADATA,
            max_concurrent_streams: 1024,
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(600)),
            keepalive: Some((Duration::from_secs(60), Duration::from_secs(20))),
            shutdown_grace: Duration::from_secs(10),
            tcp_nodelay: true,
            max_buffered_request_bytes: 64 << 20,
            max_cancels: Some((2000, Duration::from_secs(1))),
            stream_window: frame::DEFAULT_STREAM_WINDOW,
            connection_window: frame::DEFAULT_CONNECTION_WINDOW,
            stream_idle_timeout: Duration::from_secs(300),
            inline_handlers: false,
            max_connection_age: None,
            max_connection_age_grace: Duration::from_secs(30),
            stats: None,
            grpc: true,
            http1: true,
            health: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl ServerConfig {
    pub(crate) fn settings(&self) -> Settings {
        Settings {
            max_concurrent_streams: Some(self.max_concurrent_streams),
            max_message_size: Some(self.max_message.min(u32::MAX as usize) as u32),
            max_metadata_size: Some(self.max_metadata.min(u32::MAX as usize) as u32),
            initial_stream_window: Some(self.stream_window),
            initial_connection_window: Some(self.connection_window),
        }
    }
}

/// Builds and runs a trpc server.
///
/// Layers added with [`Server::layer`] wrap the service passed to `serve`
/// (usually a [`Router`]); the first layer added is the outermost, as with
/// `tower::ServiceBuilder`. Each connection gets its own clone of the stack.
#[derive(Clone, Debug)]
pub struct Server<L = Identity> {
    config: ServerConfig,
    layer: L,
}

impl Server<Identity> {
    /// A server with default settings and no layers.
    pub fn builder() -> Self {
        Server {
            config: ServerConfig::default(),
            layer: Identity::new(),
        }
    }
}

impl Default for Server<Identity> {
    fn default() -> Self {
        Server::builder()
    }
}

impl<L> Server<L> {
    /// Adds a tower layer (inside the ones added before).
    pub fn layer<N>(self, layer: N) -> Server<Stack<N, L>> {
        Server {
            config: self.config,
            layer: Stack::new(layer, self.layer),
        }
    }

    /// A deadline for every call: handlers see min(caller's deadline, this) and
    /// are dropped when it passes (default: only the caller's deadline).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.config.timeout = Some(d);
        self
    }

    /// Largest request message accepted and response message sent (default 4 MiB).
    pub fn max_message_size(mut self, n: usize) -> Self {
        self.config.max_message = n;
        self.config.max_send_message = n;
        self
    }

    /// Largest response message sent (default: `max_message_size`).
    pub fn max_send_message_size(mut self, n: usize) -> Self {
        self.config.max_send_message = n;
        self
    }

    /// Largest request metadata block accepted (default 16 KiB; at least
    /// 1 KiB: smaller values are raised to 1 KiB).
    pub fn max_metadata_size(mut self, n: usize) -> Self {
        self.config.max_metadata = frame::metadata_limit(n);
        self
    }

    /// Most calls in flight on one connection (default 1024); more are refused
    /// with `ResourceExhausted`.
    pub fn max_concurrent_streams(mut self, n: u32) -> Self {
        self.config.max_concurrent_streams = n.max(1);
        self
    }

    /// Most open connections (default 10,000); more are closed at accept.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.config.max_connections = n.max(1);
        self
    }

    /// Time for a new connection to identify itself and send SETTINGS (default 10 s).
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.config.handshake_timeout = d;
        self
    }

    /// A connection holding a partial frame must receive more bytes within
    /// this time (default 30 s): slow-loris protection.
    pub fn frame_timeout(mut self, d: Duration) -> Self {
        self.config.frame_timeout = d;
        self
    }

    /// A peer that accepts none of our output for this long is dropped
    /// (default 30 s).
    pub fn write_timeout(mut self, d: Duration) -> Self {
        self.config.write_timeout = d;
        self
    }

    /// Closes (GOAWAY) a connection with no call for this long (default 10 min).
    pub fn idle_timeout(mut self, d: Option<Duration>) -> Self {
        self.config.idle_timeout = d;
        self
    }

    /// PING a silent client after `interval`; close when no answer arrives
    /// within `timeout` (default 60 s / 20 s). `None` disables.
    pub fn keepalive(mut self, keepalive: Option<(Duration, Duration)>) -> Self {
        self.config.keepalive = keepalive;
        self
    }

    /// How long shutdown waits for in-flight calls before closing connections
    /// anyway (default 10 s).
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.config.shutdown_grace = d;
        self
    }

    /// Flow control: bytes of a request stream that may be in flight before
    /// the handler reads them (default 1 MiB).
    pub fn stream_window(mut self, bytes: u32) -> Self {
        self.config.stream_window = bytes.clamp(1, frame::MAX_WINDOW as u32);
        self
    }

    /// Flow control: the same for all streams of a connection together
    /// (default 16 MiB).
    pub fn connection_window(mut self, bytes: u32) -> Self {
        self.config.connection_window = bytes.clamp(1, frame::MAX_WINDOW as u32);
        self
    }

    /// A stream whose client has sent nothing for this long while its request
    /// stream is still open is ended with DEADLINE_EXCEEDED (default 5 min).
    pub fn stream_idle_timeout(mut self, d: Duration) -> Self {
        self.config.stream_idle_timeout = d;
        self
    }

    /// Most request bytes (metadata and first message of each call) that the
    /// calls in flight on one connection may hold (default 64 MiB). A new call
    /// that would exceed it is refused with `ResourceExhausted`; one call is
    /// always admitted. Streamed request messages are bounded by the
    /// flow-control windows instead.
    pub fn max_buffered_request_bytes(mut self, n: usize) -> Self {
        self.config.max_buffered_request_bytes = n;
        self
    }

    /// Rapid-reset defence: a client that cancels more than `n` calls in
    /// flight within `per` on one connection (a budget of `n` refilled at
    /// `n` per `per`) is disconnected with GOAWAY(ENHANCE_YOUR_CALM)
    /// (default 2,000 per second). `None` disables the check.
    pub fn max_cancel_rate(mut self, limit: Option<(u32, Duration)>) -> Self {
        self.config.max_cancels = limit;
        self
    }

    /// Serves gRPC on the port too (default on): connections that open with
    /// the HTTP/2 preface (or negotiate ALPN `h2` under TLS) are served by
    /// hyper's HTTP/2 server with the same layers and router (docs/GRPC.md),
    /// and answer the HTTP/JSON gateway form too. Off: such connections get
    /// an HTTP/2 GOAWAY. Native connections cost the same either way.
    pub fn grpc(mut self, on: bool) -> Self {
        self.config.grpc = on;
        self
    }

    /// Serves the HTTP/JSON gateway over HTTP/1 on the port too (default
    /// on): `POST /package.Service/Method` with a JSON body (docs/AXUM.md).
    /// Off: HTTP/1 requests get `400 Bad Request`.
    pub fn http1(mut self, on: bool) -> Self {
        self.config.http1 = on;
        self
    }

    /// Runs handlers inside their connection's task (default off).
    ///
    /// By default calls run in tasks of the connection's own (runners that
    /// take the calls of a read batch one after the other, more of them
    /// as calls queue up or wait), so the calls of one connection spread
    /// over all worker threads and a handler that burns CPU holds up
    /// nothing else on its connection (other calls, PINGs). Inline mode
    /// saves handing calls to another task — little since the runners (a
    /// 64 B echo at 256 in flight on one connection: 0.85–1.15× the
    /// default's rate, 0.1–0.3 µs less server CPU per call,
    /// docs/PERFORMANCE.md) — at the price of running all
    /// calls of a connection on one thread at a time: one slow `poll`
    /// delays every other call of that connection.
    pub fn inline_handlers(mut self, on: bool) -> Self {
        self.config.inline_handlers = on;
        self
    }

    /// Closes connections older than `age` (±10% jitter) gracefully: GOAWAY,
    /// then in-flight calls get [`Server::max_connection_age_grace`] to
    /// finish (default: no maximum age). Clients reconnect — behind an L4
    /// load balancer they re-spread over the replicas, new ones included.
    pub fn max_connection_age(mut self, age: Duration) -> Self {
        self.config.max_connection_age = Some(age);
        self
    }

    /// How long calls may run after a connection reached its maximum age
    /// (default 30 s); what is left then is closed.
    pub fn max_connection_age_grace(mut self, grace: Duration) -> Self {
        self.config.max_connection_age_grace = grace;
        self
    }

    /// TCP_NODELAY on accepted connections (default on).
    pub fn tcp_nodelay(mut self, on: bool) -> Self {
        self.config.tcp_nodelay = on;
        self
    }

    /// Serves TLS only (see [`crate::tls`]); the handshake must finish within
    /// the handshake timeout.
    #[cfg(feature = "tls")]
    pub fn tls_config(
        mut self,
        tls: crate::tls::ServerTlsConfig,
    ) -> Result<Self, crate::tls::TlsError> {
        self.config.tls = Some(tls.acceptor()?);
        Ok(self)
    }

    /// Counts connections and bytes into `stats` (see [`crate::stats`]).
    pub fn transport_stats(mut self, stats: Arc<crate::stats::TransportStats>) -> Self {
        self.config.stats = Some(stats);
        self
    }

    /// Marks every service of `reporter` `NOT_SERVING` as soon as graceful
    /// shutdown starts, before GOAWAY is sent (see [`crate::health`]).
    pub fn health(mut self, reporter: crate::health::HealthReporter) -> Self {
        self.config.health = Some(reporter);
        self
    }

    /// Serves one already accepted plaintext connection (any byte stream, e.g.
    /// `tokio::io::duplex`) with this server's limits and layers until it
    /// closes. For tests and fuzzing (`fuzz/`): no TLS, no connection limit,
    /// no shutdown signal; `peer` is what handlers see as the remote address.
    #[doc(hidden)]
    pub async fn serve_connection<IO, S>(self, io: IO, peer: SocketAddr, svc: S)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        L: Layer<S>,
        L::Service: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
        <L::Service as Service<Request<Body>>>::Error: Into<BoxError>,
        <L::Service as Service<Request<Body>>>::Future: Send + 'static,
    {
        let svc = self.layer.layer(svc);
        let guard = ConnCount::new(Arc::new(AtomicUsize::new(0)), self.config.stats.clone());
        let (shutdown, force) = (CancellationToken::new(), CancellationToken::new());
        let ctx = ConnCtx {
            peer,
            svc,
            cfg: Arc::new(self.config),
            shutdown,
            force,
            extensions: None,
        };
        accept::serve_connection(io, ctx).await;
        drop(guard);
    }

    /// Serves on `addr` until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn serve<S>(self, addr: SocketAddr, svc: S) -> io::Result<()>
    where
        L: Layer<S>,
        L::Service: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
        <L::Service as Service<Request<Body>>>::Error: Into<BoxError>,
        <L::Service as Service<Request<Body>>>::Future: Send + 'static,
    {
        self.serve_with_shutdown(addr, svc, shutdown_signal()).await
    }

    /// Serves on `addr` until `signal` completes, then shuts down gracefully.
    pub async fn serve_with_shutdown<S, F>(
        self,
        addr: SocketAddr,
        svc: S,
        signal: F,
    ) -> io::Result<()>
    where
        L: Layer<S>,
        L::Service: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
        <L::Service as Service<Request<Body>>>::Error: Into<BoxError>,
        <L::Service as Service<Request<Body>>>::Future: Send + 'static,
        F: Future<Output = ()>,
    {
        let listener = accept::bind(addr)?;
        self.serve_with_listener(listener, svc, signal).await
    }

    /// Serves connections from `listener` until `signal` completes.
    ///
    /// Shutdown: stop accepting, send GOAWAY on every connection (clients send
    /// new calls elsewhere), let in-flight calls finish, and after the grace
    /// period close whatever is left.
    pub async fn serve_with_listener<S, F>(
        self,
        listener: TcpListener,
        svc: S,
        signal: F,
    ) -> io::Result<()>
    where
        L: Layer<S>,
        L::Service: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
        <L::Service as Service<Request<Body>>>::Error: Into<BoxError>,
        <L::Service as Service<Request<Body>>>::Future: Send + 'static,
        F: Future<Output = ()>,
    {
        let svc = self.layer.layer(svc);
        let cfg = Arc::new(self.config);
        let shutdown = CancellationToken::new();
        let force = CancellationToken::new();
        let tracker = TaskTracker::new();
        let refuser = accept::Refuser::default();
        let open = Arc::new(AtomicUsize::new(0));
        let local = listener.local_addr()?;
        tracing::info!(%local, "trpc server listening");
        tokio::pin!(signal);
        loop {
            let accepted = tokio::select! {
                _ = &mut signal => break,
                r = listener.accept() => r,
            };
            let (tcp, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if open.load(Ordering::Relaxed) >= cfg.max_connections {
                tracing::warn!(%peer, limit = cfg.max_connections, "connection limit reached; refusing new connection");
                refuser.refuse(tcp, peer, cfg.max_connections, &tracker);
                continue;
            }
            if cfg.tcp_nodelay {
                let _ = tcp.set_nodelay(true);
            }
            let guard = ConnCount::new(open.clone(), cfg.stats.clone());
            let ctx = ConnCtx {
                peer,
                svc: svc.clone(),
                cfg: cfg.clone(),
                shutdown: shutdown.clone(),
                force: force.clone(),
                extensions: None,
            };
            // Each kind of connection gets a task future of its own size: a
            // plaintext connection does not pay for the TLS state machine.
            #[cfg(feature = "tls")]
            if let Some(acceptor) = cfg.tls.clone() {
                tracker.spawn(async move {
                    serve_tls(acceptor, tcp, ctx).await;
                    drop(guard);
                });
                continue;
            }
            tracker.spawn(async move {
                accept::serve_connection(tcp, ctx).await;
                drop(guard);
            });
        }
        drop(listener);
        if let Some(health) = &cfg.health {
            health.shutdown();
        }
        let in_flight = open.load(Ordering::Relaxed);
        tracing::info!(
            connections = in_flight,
            "shutting down: stopped accepting, draining connections"
        );
        shutdown.cancel();
        tracker.close();
        if tokio::time::timeout(cfg.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?cfg.shutdown_grace, "grace period over; closing remaining connections");
            force.cancel();
            tracker.wait().await;
        }
        tracing::info!("trpc server stopped");
        Ok(())
    }
}

/// Serves one TLS connection: handshake (bounded by the handshake timeout),
/// then the protocol negotiated by ALPN (`h2`: gRPC, `http/1.1`: the JSON
/// gateway, else detection as on a plaintext port) with the peer's TLS
/// details in every request.
#[cfg(feature = "tls")]
async fn serve_tls<S: ConnService>(
    acceptor: crate::tls::ServerTls,
    tcp: tokio::net::TcpStream,
    mut ctx: ConnCtx<S>,
) {
    let peer = ctx.peer;
    let accepted = tokio::time::timeout(
        ctx.cfg.handshake_timeout,
        crate::tls::accept(&acceptor, tcp, peer),
    )
    .await;
    match accepted {
        Ok(Some((io, info))) => {
            let alpn = info.alpn().map(<[u8]>::to_vec);
            let mut ext = http::Extensions::new();
            ext.insert(info);
            ctx.extensions = Some(ext);
            use crate::grpc::server::{serve_http, Http};
            let http = match alpn.as_deref() {
                Some(crate::tls::ALPN_H2) if ctx.cfg.grpc => Some(Http::H2),
                Some(crate::tls::ALPN_HTTP1) if ctx.cfg.http1 => Some(Http::H1),
                _ => None,
            };
            match http {
                Some(Http::H2) => {
                    let limit = ctx.cfg.handshake_timeout;
                    let mut io = io;
                    match accept::read_h2_preface(&mut io, limit).await {
                        Ok(pre) => {
                            let io = crate::grpc::server::Rewind::new(pre, io);
                            serve_http(Http::H2, io, ctx).await
                        }
                        Err(why) => tracing::debug!(%peer, why, "TLS connection closed"),
                    }
                }
                Some(http) => serve_http(http, io, ctx).await,
                None => accept::serve_connection(io, ctx).await,
            }
        }
        Ok(None) => {}
        Err(_) => tracing::warn!(%peer, "TLS handshake timeout"),
    }
}

struct ConnCount(Arc<AtomicUsize>, Option<Arc<crate::stats::TransportStats>>);

impl ConnCount {
    fn new(c: Arc<AtomicUsize>, stats: Option<Arc<crate::stats::TransportStats>>) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = &stats {
            s.on_open();
        }
        ConnCount(c, stats)
    }
}

impl Drop for ConnCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        if let Some(s) = &self.1 {
            s.on_close();
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
