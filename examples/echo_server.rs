//! The echo server used by `make demo`, the CLI and the integration tests.
//!
//! Run: `cargo run --example echo_server -- --listen 127.0.0.1:7000`
//! (`--json` for JSON logs; `RUST_LOG=debug` for more detail; `--tls-cert
//! server.crt --tls-key server.key [--tls-client-ca ca.crt]` for TLS / mTLS;
//! `--register etcd://127.0.0.1:2379/echo` to register in etcd, see
//! docs/DISCOVERY.md).
//!
//! Methods (JSON or protobuf):
//! * `echo.Echo/Say`   `{"message": "..."}` → the same message; request metadata
//!   whose key starts with `x-` is echoed back as response metadata (text
//!   values in order, repeated keys included; a binary `x-…-bin` key once,
//!   with its last value); other metadata is not echoed.
//! * `echo.Echo/Sleep` `{"millis": N}` → sleeps, then replies; a cancelled sleep
//!   (deadline passed, caller gone) is logged and counted.
//! * `echo.Echo/Fail`  `{"code": N, "message": "..."}` → fails with that status.
//! * `echo.Echo/Panic` → the handler panics; the call gets INTERNAL, the server lives on.
//! * `echo.Echo/Stats` → `{"calls": N, "cancelled": N}`.
//! * `grpc.health.v1.Health/Check` and `Watch` (`trpc health ADDR`).
//!
//! Every `Say` reply carries `served-by: ADDR` (this replica's address), so a
//! balanced client can tell replicas apart (`trpc call ... --repeat N`).
//!
//! It prints `listening on ADDR` once bound and stops gracefully on
//! SIGINT/SIGTERM: health turns NOT_SERVING, and with `--register` its etcd
//! key is deleted first and clients get `--deregister-delay` to move away
//! before it drains.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::time::Instant;
use trpc::codec::{Json, Proto};
use trpc::health::HealthReporter;
use trpc::metadata::MetadataValue;
use trpc::server::{unary, Router, Server};
use trpc::{Code, Request, Response, Status};
use trpc_layers::discovery::etcd::Etcd;
use trpc_layers::discovery::{Instance, Target};

#[derive(Parser, Debug)]
#[command(about = "trpc echo server")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// Log as JSON lines.
    #[arg(long)]
    json: bool,
    /// Server-side deadline for every call (e.g. 30s).
    #[arg(long, value_parser = trpc::util::parse_duration)]
    timeout: Option<Duration>,
    /// Largest message accepted and sent, in bytes.
    #[arg(long)]
    max_message_size: Option<usize>,
    /// Serve TLS with this certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Require client certificates signed by this CA (mutual TLS).
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<std::path::PathBuf>,
    /// Register in etcd as a replica of NAME: etcd://HOST:PORT/NAME.
    #[arg(long, value_name = "etcd://HOST:PORT/NAME")]
    register: Option<String>,
    /// Weight announced in the registration.
    #[arg(long, default_value_t = 100)]
    weight: u32,
    /// Zone announced in the registration.
    #[arg(long)]
    zone: Option<String>,
    /// Lease TTL of the registration: how long the key outlives a killed server.
    #[arg(long, value_parser = trpc::util::parse_duration, default_value = "10s")]
    lease_ttl: Duration,
    /// Time between deregistering and draining at shutdown.
    #[arg(long, value_parser = trpc::util::parse_duration, default_value = "500ms")]
    deregister_delay: Duration,
}

/// `echo.Echo/Say` request and reply.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
pub struct EchoMessage {
    /// The text to echo.
    #[prost(string, tag = "1")]
    #[serde(default)]
    pub message: String,
}

/// `echo.Echo/Sleep` request.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
pub struct SleepRequest {
    /// How long to sleep.
    #[prost(uint64, tag = "1")]
    #[serde(default)]
    pub millis: u64,
}

/// `echo.Echo/Sleep` reply.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
pub struct SleepReply {
    /// How long it slept.
    #[prost(uint64, tag = "1")]
    pub slept_millis: u64,
}

/// `echo.Echo/Fail` request.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
pub struct FailRequest {
    /// The status code to return.
    #[prost(uint32, tag = "1")]
    #[serde(default)]
    pub code: u32,
    /// The status message.
    #[prost(string, tag = "2")]
    #[serde(default)]
    pub message: String,
}

/// An empty message.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
pub struct Empty {}

/// `echo.Echo/Stats` reply.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Calls handled.
    #[prost(uint64, tag = "1")]
    pub calls: u64,
    /// Sleeps that were cancelled before finishing.
    #[prost(uint64, tag = "2")]
    pub cancelled: u64,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    cancelled: AtomicU64,
}

/// Counts a cancelled sleep when dropped before `finish`.
struct SleepGuard {
    counters: Arc<Counters>,
    started: Instant,
    millis: u64,
    finished: bool,
}

impl Drop for SleepGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                after_ms = self.started.elapsed().as_millis() as u64,
                of_ms = self.millis,
                "Sleep cancelled (deadline passed or caller went away)"
            );
        }
    }
}

fn router(counters: Arc<Counters>, served_by: MetadataValue) -> Router {
    let c = counters.clone();
    let say = move |req: Request<EchoMessage>| {
        let c = c.clone();
        let served_by = served_by.clone();
        async move {
            c.calls.fetch_add(1, Ordering::Relaxed);
            let mut echoed = trpc::MetadataMap::new();
            for (k, v) in req.metadata().iter() {
                if !k.starts_with("x-") {
                    continue;
                }
                // Keys and values were validated on arrival, so these succeed.
                let _ = if trpc::metadata::is_binary_key(k.as_bytes()) {
                    echoed.try_insert_bin(k, bytes::Bytes::copy_from_slice(v))
                } else {
                    std::str::from_utf8(v).map_or(Ok(()), |v| echoed.append(k, v))
                };
            }
            echoed.insert_value("served-by", served_by);
            let mut resp = Response::new(req.into_inner());
            *resp.metadata_mut() = echoed;
            Ok::<_, Status>(resp)
        }
    };
    let c = counters.clone();
    let sleep = move |req: Request<SleepRequest>| {
        let c = c.clone();
        async move {
            c.calls.fetch_add(1, Ordering::Relaxed);
            let millis = req.get_ref().millis;
            let mut guard = SleepGuard {
                counters: c.clone(),
                started: Instant::now(),
                millis,
                finished: false,
            };
            tokio::time::sleep(Duration::from_millis(millis)).await;
            guard.finished = true;
            Ok::<_, Status>(Response::new(SleepReply {
                slept_millis: millis,
            }))
        }
    };
    let c = counters.clone();
    let fail = move |req: Request<FailRequest>| {
        let c = c.clone();
        async move {
            c.calls.fetch_add(1, Ordering::Relaxed);
            let FailRequest { code, message } = req.into_inner();
            let code = Code::from_u32(code);
            if code == Code::Ok {
                return Ok(Response::new(Empty {}));
            }
            Err(Status::new(code, message))
        }
    };
    let c = counters.clone();
    let panic = move |_req: Request<Empty>| {
        let c = c.clone();
        async move {
            c.calls.fetch_add(1, Ordering::Relaxed);
            if c.calls.load(Ordering::Relaxed) > 0 {
                panic!("echo.Echo/Panic was called");
            }
            Ok::<_, Status>(Response::new(Empty {}))
        }
    };
    let c = counters;
    let stats = move |_req: Request<Empty>| {
        let c = c.clone();
        async move {
            Ok::<_, Status>(Response::new(Stats {
                calls: c.calls.load(Ordering::Relaxed),
                cancelled: c.cancelled.load(Ordering::Relaxed),
            }))
        }
    };
    let both = (Json, Proto);
    Router::new()
        .route("echo.Echo/Say", unary(say).codec(both))
        .route("echo.Echo/Sleep", unary(sleep).codec(both))
        .route("echo.Echo/Fail", unary(fail).codec(both))
        .route("echo.Echo/Panic", unary(panic).codec(both))
        .route("echo.Echo/Stats", unary(stats).codec(both))
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    init_logging(args.json);
    // Keep the default panic message off stderr: the handler panic is logged
    // through tracing by the server, with the method name.
    std::panic::set_hook(Box::new(|_| {}));

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let local = listener.local_addr()?;
    println!("listening on {local}");
    let health = HealthReporter::new();
    health.set_serving("echo.Echo");
    let served_by = MetadataValue::try_from(local.to_string()).map_err(std::io::Error::other)?;
    let router = router(Arc::new(Counters::default()), served_by).merge(health.router());
    let signal: Pin<Box<dyn Future<Output = ()> + Send>> = match &args.register {
        None => Box::pin(trpc::server::shutdown_signal()),
        Some(target) => {
            let Target::Etcd { endpoint, name } =
                Target::parse(target).map_err(std::io::Error::other)?
            else {
                return Err(std::io::Error::other(
                    "--register takes etcd://HOST:PORT/NAME",
                ));
            };
            let mut instance = Instance::new(local.to_string()).weight(args.weight);
            instance.zone = args.zone.clone();
            let registration = Etcd::new([endpoint])
                .lease_ttl(args.lease_ttl)
                .register(&name, instance);
            tracing::info!(key = registration.key(), "registering in etcd");
            // At SIGTERM: NOT_SERVING at once, then the key goes, then (after
            // the delay) the server drains.
            let health = health.clone();
            let signal = async move {
                trpc::server::shutdown_signal().await;
                health.shutdown();
            };
            Box::pin(registration.deregister_on(signal, args.deregister_delay))
        }
    };
    let mut server = Server::builder().health(health);
    if let Some(t) = args.timeout {
        server = server.timeout(t);
    }
    if let Some(n) = args.max_message_size {
        server = server.max_message_size(n);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let mut tls =
            trpc::tls::ServerTlsConfig::from_pem_files(cert, key).map_err(std::io::Error::other)?;
        if let Some(ca) = &args.tls_client_ca {
            tls = tls
                .client_ca_pem(std::fs::read(ca)?)
                .map_err(std::io::Error::other)?;
        }
        server = server.tls_config(tls).map_err(std::io::Error::other)?;
    }
    server.serve_with_listener(listener, router, signal).await?;
    println!("echo server stopped");
    Ok(())
}
