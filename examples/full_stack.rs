//! Every trpc layer on a server and a client, stacked with `ServiceBuilder`.
//!
//! Run: `cargo run --example full_stack` (a demo: server and client in one
//! process, printing a reply, a retried call, rejected credentials, a
//! compressed payload and some /metrics lines; with `--metrics
//! 127.0.0.1:9100` the server and /metrics stay up after the demo until
//! Ctrl-C), or
//! `cargo run --example full_stack -- --listen 127.0.0.1:7000 --metrics 127.0.0.1:9100`
//! for the server alone (then `curl 127.0.0.1:9100/metrics`), and
//! `cargo run --example full_stack -- --connect 127.0.0.1:7000` for the client.
//! `--json` logs JSON lines; `RUST_LOG` filters them (default `info`, `warn` in
//! the demo).
//!
//! Server stack, outermost first: trace, metrics, load shed, concurrency
//! limit (tower), timeout, auth, compression, router. Client stack: trace,
//! call metrics, call deadline, auth, retry, attempt timeout, compression,
//! channel (docs/LAYERS.md explains the order).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use prometheus::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::limit::ConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::{Service, ServiceBuilder};
use trpc::health::HealthReporter;
use trpc::server::{unary, Router, Server};
use trpc::stats::TransportStats;
use trpc::{Body, BoxError, Client, Endpoint, Request, Response, Status};
use trpc_layers::admin::{Admin, AdminServer};
use trpc_layers::auth::{Identity, StaticKeys};
use trpc_layers::metrics::TransportCollector;
use trpc_layers::retry::Attempts;
use trpc_layers::trace::TraceContext;
use trpc_layers::{
    AuthLayer, CompressionLayer, MetricsLayer, RequireAuthLayer, RetryLayer, TimeoutLayer,
    TraceLayer,
};

#[derive(Parser, Debug)]
#[command(about = "trpc with every layer: trace, metrics, timeout, retry, auth, compression")]
struct Args {
    /// Run only the server, on this address.
    #[arg(long, conflicts_with = "connect")]
    listen: Option<SocketAddr>,
    /// Run only the client, against this server.
    #[arg(long)]
    connect: Option<SocketAddr>,
    /// Serve /metrics, /healthz and /readyz on this address.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Log JSON lines.
    #[arg(long)]
    json: bool,
    /// The bearer token the client sends.
    #[arg(long, default_value = "demo-token")]
    token: String,
}

/// The one message type of the demo service.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Msg {
    #[serde(default)]
    message: String,
}

fn msg(s: impl Into<String>) -> Msg {
    Msg { message: s.into() }
}

/// `demo.Shop/*` handlers.
fn router() -> Router {
    let echo = |req: Request<Msg>| async move {
        let who = req
            .extensions()
            .get::<Identity>()
            .map_or("anonymous".into(), |id| id.subject().to_owned());
        let trace = req
            .extensions()
            .get::<TraceContext>()
            .map(|ctx| ctx.trace_id().to_string())
            .unwrap_or_default();
        let text = req.into_inner().message;
        tracing::info!(%who, len = text.len(), "echo");
        let mut resp = Response::new(msg(text));
        let _ = resp.metadata_mut().try_insert("x-caller", &who);
        let _ = resp.metadata_mut().try_insert("x-trace-id", &trace);
        Ok::<_, Status>(resp)
    };
    // Fails two calls out of three with UNAVAILABLE: the client's retry
    // layer (the method is idempotent) hides it.
    let calls = Arc::new(AtomicU64::new(0));
    let flaky = move |_req: Request<Msg>| {
        let n = calls.fetch_add(1, Ordering::Relaxed) + 1;
        async move {
            if n % 3 != 0 {
                return Err(Status::unavailable(format!("flaky: call {n} fails")));
            }
            Ok(Response::new(msg(format!("served on call {n}"))))
        }
    };
    let admin =
        |_req: Request<Msg>| async move { Ok::<_, Status>(Response::new(msg("reset done"))) };
    let ping = |_req: Request<Msg>| async move { Ok::<_, Status>(Response::new(msg("pong"))) };
    Router::new()
        .route("demo.Shop/Echo", unary(echo))
        .route("demo.Shop/Flaky", unary(flaky))
        .route("demo.Shop/Admin", unary(admin))
        .route("demo.Shop/Ping", unary(ping))
}

/// Serves the demo service with every server layer until `shutdown`.
async fn run_server(
    listener: tokio::net::TcpListener,
    registry: &Registry,
    health: HealthReporter,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), BoxError> {
    let stats = TransportStats::new();
    registry.register(Box::new(TransportCollector::server(stats.clone())))?;
    let keys = StaticKeys::new()
        .bearer("demo-token", Identity::new("alice").with_scope("admin"))
        .api_key("reader-key", Identity::new("bob"));
    let layers = ServiceBuilder::new()
        .layer(TraceLayer::server())
        .layer(MetricsLayer::server(registry)?)
        .layer(LoadShedLayer::new())
        .layer(ConcurrencyLimitLayer::new(256))
        .layer(TimeoutLayer::new(Duration::from_secs(5)))
        .layer(
            RequireAuthLayer::new(keys)
                .allow_anonymous("demo.Shop/Ping")
                .allow_anonymous("grpc.health.v1.Health/*")
                .require_scope("demo.Shop/Admin", "admin"),
        )
        .layer(CompressionLayer::server());
    // grpc.health.v1.Health on the RPC port too; NOT_SERVING (and /readyz
    // failing) as soon as the drain starts.
    let router = router().merge(health.router());
    Server::builder()
        .transport_stats(stats)
        .health(health)
        .layer(layers)
        .serve_with_listener(listener, router, shutdown)
        .await?;
    Ok(())
}

/// The client stack over `channel`, sending `auth`.
fn client_stack<S>(
    channel: S,
    registry_layer: MetricsLayer,
    auth: AuthLayer,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = BoxError, Future = impl Send> + Clone
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    ServiceBuilder::new()
        .layer(TraceLayer::client())
        .layer(registry_layer)
        .layer(TimeoutLayer::new(Duration::from_secs(2)))
        .layer(auth)
        .layer(
            RetryLayer::exponential(4)
                .backoff(Duration::from_millis(20), Duration::from_millis(200))
                .idempotent("demo.Shop/Flaky")
                .idempotent("demo.Shop/Ping"),
        )
        .layer(TimeoutLayer::new(Duration::from_millis(500)))
        .layer(CompressionLayer::client())
        .service(channel)
}

/// Makes the demo calls and prints what happened.
async fn run_client(
    addr: SocketAddr,
    registry: &Registry,
    token: &str,
    admin: Option<SocketAddr>,
) -> Result<(), BoxError> {
    let stats = TransportStats::new();
    registry.register(Box::new(TransportCollector::client(stats.clone())))?;
    let channel = Endpoint::new(format!("tcp://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .transport_stats(stats.clone())
        .connect()
        .await?;
    let metrics = MetricsLayer::client(registry)?;
    let mut client = Client::new(client_stack(
        channel.clone(),
        metrics.clone(),
        AuthLayer::bearer(token),
    ));

    println!("== a reply (bearer token, traced, metered)");
    let resp: Response<Msg> = client
        .unary("demo.Shop/Echo", Request::new(msg("hello, layers")))
        .await?;
    println!(
        "reply {:?} for caller {:?}, trace id {} (the server saw {})",
        resp.get_ref().message,
        resp.metadata().get("x-caller").unwrap_or("?"),
        resp.extensions()
            .get::<TraceContext>()
            .map(|c| c.trace_id().to_string())
            .unwrap_or_default(),
        resp.metadata().get("x-trace-id").unwrap_or("?"),
    );

    println!("\n== a retried call (the server fails 2 calls out of 3 with UNAVAILABLE)");
    let resp: Response<Msg> = client
        .unary("demo.Shop/Flaky", Request::new(msg("")))
        .await?;
    let attempts = resp.extensions().get::<Attempts>().map_or(1, |a| a.0);
    println!(
        "reply {:?} after {attempts} attempts",
        resp.get_ref().message
    );

    println!("\n== rejected credentials");
    let mut intruder = Client::new(client_stack(
        channel.clone(),
        metrics.clone(),
        AuthLayer::bearer("stolen-token"),
    ));
    match intruder
        .unary_message::<Msg, Msg>("demo.Shop/Echo", msg("let me in"))
        .await
    {
        Ok(m) => println!("unexpectedly accepted: {m:?}"),
        Err(e) => println!("wrong token   -> {} ({})", e.code(), e.message()),
    }
    let mut reader = Client::new(client_stack(
        channel.clone(),
        metrics.clone(),
        AuthLayer::api_key("reader-key"),
    ));
    match reader
        .unary_message::<Msg, Msg>("demo.Shop/Admin", msg("reset"))
        .await
    {
        Ok(m) => println!("unexpectedly allowed: {m:?}"),
        Err(e) => println!("no admin scope -> {} ({})", e.code(), e.message()),
    }
    let pong: Msg = Client::new(channel.clone())
        .unary_message("demo.Shop/Ping", msg(""))
        .await?;
    println!("anonymous ping without credentials -> {}", pong.message);

    println!("\n== a compressed payload (gzip both ways)");
    let big = "a compressible line of text, repeated. ".repeat(256 * 1024 / 39);
    let (w0, r0) = (stats.bytes_written(), stats.bytes_read());
    let reply: Msg = client
        .unary_message("demo.Shop/Echo", msg(big.clone()))
        .await?;
    assert_eq!(reply.message.len(), big.len());
    println!(
        "sent and received a {} byte message: {} bytes on the wire out, {} back",
        big.len(),
        stats.bytes_written() - w0,
        stats.bytes_read() - r0
    );

    if let Some(admin) = admin {
        let ready = get(admin, "/readyz?verbose").await?;
        println!("\n== GET /readyz?verbose (http://{admin}/readyz)");
        print!("{}", ready.split("\r\n\r\n").nth(1).unwrap_or(&ready));
        println!("\n== a few lines of /metrics (http://{admin}/metrics)");
        let text = get(admin, "/metrics").await?;
        for line in text.lines().filter(|l| {
            (l.starts_with("trpc_server_calls_total")
                || l.starts_with("trpc_client_calls_total{code=\"OK\",method=\"demo.Shop/Flaky\"")
                || l.starts_with("trpc_server_connections_open")
                || l.starts_with("trpc_client_bytes_sent_total"))
                && !l.contains("Health")
        }) {
            println!("{line}");
        }
    }
    Ok(())
}

/// `GET path` from the admin server, over plain HTTP/1.1 (the whole reply).
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    tcp.read_to_end(&mut buf).await?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn init_logging(json: bool, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let demo = args.listen.is_none() && args.connect.is_none();
    init_logging(args.json, if demo { "warn" } else { "info" });
    let registry = Registry::new();
    let health = HealthReporter::new();
    let admin_at = match (args.metrics, demo) {
        (Some(addr), _) => Some(addr),
        (None, true) => Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        (None, false) => None,
    };
    let admin = match admin_at {
        // /metrics, /healthz and /readyz (ready while the server's health
        // reporter says SERVING); admin::Admin takes pages of your own too.
        Some(addr) => Some(
            Admin::builder()
                .metrics(registry.clone())
                .readiness("server", health.clone())
                .bind(addr)
                .await?,
        ),
        None => None,
    };
    if let Some(admin) = &admin {
        println!("metrics on http://{}/metrics", admin.local_addr());
    }

    if let Some(addr) = args.connect {
        let admin_addr = admin.as_ref().map(AdminServer::local_addr);
        return run_client(addr, &registry, &args.token, admin_addr).await;
    }
    let listener = tokio::net::TcpListener::bind(
        args.listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
    )
    .await?;
    let addr = listener.local_addr()?;
    println!("listening on {addr}");
    if !demo {
        run_server(listener, &registry, health, trpc::server::shutdown_signal()).await?;
        println!("full_stack server stopped");
        return Ok(());
    }

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server_registry = registry.clone();
    let server = tokio::spawn(async move {
        run_server(listener, &server_registry, health, async {
            let _ = stopped.await;
        })
        .await
    });
    let admin_addr = admin.as_ref().map(AdminServer::local_addr);
    let result = run_client(addr, &registry, &args.token, admin_addr).await;
    if let (Some(metrics), Ok(())) = (args.metrics, &result) {
        // Asked for a metrics address: keep the server and /metrics up.
        println!(
            "\nserver on {addr}, metrics on http://{metrics}/metrics; Ctrl-C or SIGTERM to stop"
        );
        trpc::server::shutdown_signal().await;
    }
    let _ = stop.send(());
    server.await??;
    result
}
