//! `trpc-replica`: an echo replica for the failure tests (see
//! `trpc_integration::replica`).
//!
//! ```text
//! trpc-replica [--listen 127.0.0.1:0] [--register etcd://HOST:PORT/NAME]
//!              [--lease-ttl SECS] [--propagation MILLIS] [--weight N]
//! ```
//!
//! Prints `listening on ADDR`, then `registered` once its key is in etcd.
//! On SIGTERM it prints `deregistering`, deletes its key, prints
//! `deregistered`, waits the propagation delay, drains (health NOT_SERVING,
//! GOAWAY, in-flight calls finish) and prints `stopped`.

use std::net::SocketAddr;
use std::time::Duration;

use trpc::health::HealthReporter;
use trpc::server::{shutdown_signal, Server};
use trpc_layers::discovery::etcd::Etcd;
use trpc_layers::discovery::{Instance, Target};
use trpc_layers::load_report::{LoadReportLayer, LoadReporter};

struct Args {
    listen: SocketAddr,
    register: Option<String>,
    lease_ttl: u64,
    propagation: u64,
    weight: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        register: None,
        lease_ttl: 2,
        propagation: 300,
        weight: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => args.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--register" => args.register = Some(value()?),
            "--lease-ttl" => {
                args.lease_ttl = value()?.parse().map_err(|e| format!("--lease-ttl: {e}"))?
            }
            "--propagation" => {
                args.propagation = value()?
                    .parse()
                    .map_err(|e| format!("--propagation: {e}"))?
            }
            "--weight" => args.weight = value()?.parse().map_err(|e| format!("--weight: {e}"))?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("trpc-replica: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("trpc-replica: bind {}: {e}", args.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(args.listen);
    let health = HealthReporter::new();
    health.set_serving("echo.Echo");
    let router = trpc_integration::replica::router(addr).merge(health.router());

    let registration = match args.register.as_deref().map(Target::parse) {
        None => None,
        Some(Ok(Target::Etcd { endpoint, name })) => {
            let etcd = Etcd::new([endpoint])
                .lease_ttl(Duration::from_secs(args.lease_ttl))
                .backoff_max(Duration::from_millis(300));
            let instance = Instance::new(addr.to_string()).weight(args.weight);
            Some(etcd.register(&name, instance))
        }
        Some(_) => {
            eprintln!("trpc-replica: --register takes etcd://HOST:PORT/NAME");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(r) = &registration {
        let mut state = r.watch_registered();
        tokio::spawn(async move {
            if state.wait_for(|r| *r).await.is_ok() {
                println!("registered");
            }
        });
    }
    let propagation = Duration::from_millis(args.propagation);
    let reporter = health.clone();
    let signal = async move {
        shutdown_signal().await;
        reporter.shutdown();
        if let Some(r) = registration {
            println!("deregistering");
            r.deregister().await;
            println!("deregistered");
            tokio::time::sleep(propagation).await;
        }
        println!("draining");
    };
    println!("listening on {addr}");
    let served = Server::builder()
        .health(health)
        .shutdown_grace(Duration::from_secs(10))
        .layer(LoadReportLayer::new(LoadReporter::new()))
        .serve_with_listener(listener, router, signal)
        .await;
    println!("stopped");
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trpc-replica: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
