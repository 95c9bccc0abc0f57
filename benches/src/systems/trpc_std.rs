//! trpc with the standard stack of `trpc-layers` — timeout, metrics, tracing
//! (INFO enabled, no subscriber output; see [`init_tracing`]) and bearer-token
//! auth — on both sides, plus one variant per layer alone to price each layer.
//!
//! Client stack, outermost first (the order `trpc-layers` documents): trace,
//! metrics, timeout, auth. Server stack: trace, metrics, auth, timeout.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_layer::Layer;
use trpc::codec::Proto;
use trpc::server::Server;
use trpc::Channel;
use trpc_layers::auth::{Identity, StaticKeys};
use trpc_layers::{AuthLayer, MetricsLayer, RequireAuthLayer, TimeoutLayer, TraceLayer};

use super::trpc::{channel, router};
use super::{System, MAX_MESSAGE};

/// The bearer token every client presents.
pub(crate) const TOKEN: &str = "bench-token-0123456789abcdef";
/// The call deadline of the timeout layer (never reached).
const DEADLINE: Duration = Duration::from_secs(30);

fn validator() -> StaticKeys {
    StaticKeys::new().bearer(TOKEN, Identity::new("bench"))
}

fn registry_metrics(client: bool) -> Result<MetricsLayer, String> {
    let registry = prometheus::Registry::new();
    let layer = if client {
        MetricsLayer::client(&registry)
    } else {
        MetricsLayer::server(&registry)
    };
    layer.map_err(|e| format!("metrics: {e}"))
}

/// Installs the `tracing` subscriber of a bench server for `system`:
///
/// * the standard stack and `trpc-trace`: a subscriber that enables INFO
///   (spans are created and events dispatched) and outputs nothing — the
///   registry under an INFO level filter;
/// * `trpc-trace-fmt`: the fmt subscriber at INFO, plain text, writing into
///   `io::sink` — what formatting a log line per call costs;
/// * every other system: none.
pub(crate) fn init_tracing(system: System) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    match system {
        System::TrpcStd | System::TrpcTrace => tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::INFO)
            .init(),
        System::TrpcTraceFmt => tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(io::sink)
            .init(),
        _ => {}
    }
}

/// Serves `system` (a trpc variant with layers) forever.
pub(crate) async fn serve(system: System, listener: TcpListener) -> Result<(), String> {
    // BENCH_INLINE_HANDLERS=1: price the layers with handlers polled in the
    // connection's task (`Server::inline_handlers`), as round 1 measured them.
    let inline = std::env::var_os("BENCH_INLINE_HANDLERS").is_some_and(|v| v == "1");
    let server = Server::builder()
        .max_message_size(MAX_MESSAGE)
        .inline_handlers(inline);
    let never = std::future::pending();
    let r = match system {
        System::TrpcTimeout => {
            server
                .layer(TimeoutLayer::new(DEADLINE))
                .serve_with_listener(listener, router(), never)
                .await
        }
        System::TrpcMetrics => {
            server
                .layer(registry_metrics(false)?)
                .serve_with_listener(listener, router(), never)
                .await
        }
        System::TrpcTrace | System::TrpcTraceFmt => {
            server
                .layer(TraceLayer::server())
                .serve_with_listener(listener, router(), never)
                .await
        }
        System::TrpcAuth => {
            server
                .layer(RequireAuthLayer::new(validator()))
                .serve_with_listener(listener, router(), never)
                .await
        }
        _ => {
            server
                .layer(TraceLayer::server())
                .layer(registry_metrics(false)?)
                .layer(RequireAuthLayer::new(validator()))
                .layer(TimeoutLayer::new(DEADLINE))
                .serve_with_listener(listener, router(), never)
                .await
        }
    };
    r.map_err(|e: io::Error| e.to_string())
}

/// A client stack with the timeout layer only.
pub(crate) type TimeoutClient = trpc::Client<<TimeoutLayer as Layer<Channel>>::Service, Proto>;
/// A client stack with the metrics layer only.
pub(crate) type MetricsClient = trpc::Client<<MetricsLayer as Layer<Channel>>::Service, Proto>;
/// A client stack with the trace layer only.
pub(crate) type TraceClient = trpc::Client<<TraceLayer as Layer<Channel>>::Service, Proto>;
/// A client stack with the auth layer only.
pub(crate) type AuthClient = trpc::Client<<AuthLayer as Layer<Channel>>::Service, Proto>;
/// The standard client stack.
pub(crate) type StdClient = trpc::Client<
    <TraceLayer as Layer<
        <MetricsLayer as Layer<
            <TimeoutLayer as Layer<<AuthLayer as Layer<Channel>>::Service>>::Service,
        >>::Service,
    >>::Service,
    Proto,
>;

async fn connect_channel(addr: SocketAddr) -> Result<Channel, String> {
    channel(addr)
        .await
        .map_err(|e| format!("trpc: connect to {addr}: {e}"))
}

/// Connects a client with the timeout layer.
pub(crate) async fn timeout(addr: SocketAddr) -> Result<TimeoutClient, String> {
    let ch = connect_channel(addr).await?;
    Ok(trpc::Client::with_codec(
        TimeoutLayer::new(DEADLINE).layer(ch),
        Proto,
    ))
}

/// Connects a client with the metrics layer.
pub(crate) async fn metrics(addr: SocketAddr) -> Result<MetricsClient, String> {
    let ch = connect_channel(addr).await?;
    Ok(trpc::Client::with_codec(
        registry_metrics(true)?.layer(ch),
        Proto,
    ))
}

/// Connects a client with the trace layer.
pub(crate) async fn trace(addr: SocketAddr) -> Result<TraceClient, String> {
    let ch = connect_channel(addr).await?;
    Ok(trpc::Client::with_codec(
        TraceLayer::client().layer(ch),
        Proto,
    ))
}

/// Connects a client with the auth layer.
pub(crate) async fn auth(addr: SocketAddr) -> Result<AuthClient, String> {
    let ch = connect_channel(addr).await?;
    Ok(trpc::Client::with_codec(
        AuthLayer::bearer(TOKEN).layer(ch),
        Proto,
    ))
}

/// Connects a client with the whole standard stack.
pub(crate) async fn standard(addr: SocketAddr) -> Result<StdClient, String> {
    let ch = connect_channel(addr).await?;
    let stack = ServiceBuilder::new()
        .layer(TraceLayer::client())
        .layer(registry_metrics(true)?)
        .layer(TimeoutLayer::new(DEADLINE))
        .layer(AuthLayer::bearer(TOKEN))
        .service(ch);
    Ok(trpc::Client::with_codec(stack, Proto))
}
