//! A service by name across replicas: three replica processes, a client
//! balancing over them with each policy, then one replica killed (SIGKILL)
//! mid-run with nothing failing.
//!
//! Run: `cargo run --example cluster` (a static registry, no external service)
//! or `cargo run --example cluster -- --etcd http://127.0.0.1:2379` (the
//! replicas register in etcd; the client watches it).
//!
//! The replicas are this same program started with `--replica`: echo servers
//! whose replies carry `served-by`, with the health service and load reports.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tower::util::BoxCloneService;
use tower::ServiceBuilder;
use trpc::health::HealthReporter;
use trpc::server::{unary, Router, Server};
use trpc::{Body, Client, Request, Response, Status};
use trpc_layers::balance::BalanceLayer;
use trpc_layers::discovery::etcd::Etcd;
use trpc_layers::discovery::{Discovery, Instance};
use trpc_layers::load_report::{LoadReportLayer, LoadReporter};
use trpc_layers::RetryLayer;

#[derive(Parser, Debug)]
#[command(about = "trpc cluster demo: discovery, load balancing, failover")]
struct Args {
    /// Use this etcd (e.g. http://127.0.0.1:2379) instead of a static list.
    #[arg(long)]
    etcd: Option<String>,
    /// Calls per policy.
    #[arg(long, default_value_t = 600)]
    calls: usize,
    /// Run as a replica (used by the demo itself).
    #[arg(long, hide = true)]
    replica: bool,
    /// Replica: the weight to register with.
    #[arg(long, hide = true, default_value_t = 100)]
    weight: u32,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Say {
    message: String,
}

type Svc = BoxCloneService<Request<Body>, Response<Body>, trpc::BoxError>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.replica {
        return replica(args).await;
    }
    let weights = [100, 100, 200];
    let mut replicas = Vec::new();
    for w in weights {
        replicas.push(Replica::spawn(w, args.etcd.as_deref()).await?);
    }
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    println!("3 replicas: {} (weights {weights:?})", join(&addrs));
    match &args.etcd {
        Some(url) => println!("registry: etcd at {url} (/trpc/services/cluster-demo/ADDR)"),
        None => println!("registry: a static list"),
    }

    let policies: Vec<(&str, BalanceLayer)> = vec![
        ("round_robin", BalanceLayer::round_robin()),
        ("random", BalanceLayer::random()),
        ("weighted", BalanceLayer::weighted()),
        ("least_outstanding", BalanceLayer::least_outstanding()),
        ("p2c_peak_ewma", BalanceLayer::p2c_peak_ewma()),
        (
            "consistent_hash",
            BalanceLayer::consistent_hash_by_metadata("x-user"),
        ),
    ];
    println!("\n{} calls per policy, 16 at a time:", args.calls);
    print!("{:<20}", "policy");
    for a in &addrs {
        print!("{:>18}", a.to_string());
    }
    println!("{:>8}", "failed");
    for (name, layer) in policies {
        let svc = client(layer, &args, &replicas, &weights).await?;
        let tally = run(svc, args.calls, 16, None).await;
        print!("{name:<20}");
        for a in &addrs {
            let n = tally.get(&a.to_string()).copied().unwrap_or(0);
            print!(
                "{:>18}",
                format!("{n} ({:.0}%)", n as f64 * 100.0 / args.calls as f64)
            );
        }
        println!("{:>8}", failed(&tally));
    }
    println!("(consistent_hash: 40 users, each always on the same replica)");

    // Failover: SIGKILL one replica in the middle of a run.
    let svc = client(BalanceLayer::p2c_peak_ewma(), &args, &replicas, &weights).await?;
    let victim = replicas[1].addr;
    println!("\np2c_peak_ewma with retries, {} calls; replica {victim} is killed (SIGKILL) after a third of them:", args.calls * 3);
    let tally = run(
        svc,
        args.calls * 3,
        16,
        Some((args.calls, &mut replicas[1])),
    )
    .await;
    for (by, n) in &tally {
        println!("  {by:<22}{n:>6}");
    }
    let lost = failed(&tally);
    println!("failed calls: {lost}");
    for r in &mut replicas {
        r.stop().await;
    }
    if lost > 0 {
        return Err(format!("{lost} calls failed").into());
    }
    Ok(())
}

fn join(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn failed(tally: &BTreeMap<String, usize>) -> usize {
    tally
        .iter()
        .filter(|(k, _)| k.starts_with("error"))
        .map(|(_, n)| *n)
        .sum()
}

/// The client stack: retries (idempotent echo) outside the balancer.
async fn client(
    layer: BalanceLayer,
    args: &Args,
    replicas: &[Replica],
    weights: &[u32],
) -> Result<Svc, Box<dyn std::error::Error>> {
    let discovery = match &args.etcd {
        Some(url) => Etcd::new([url.as_str()]).discover("cluster-demo").await?,
        None => Discovery::instances(
            replicas
                .iter()
                .zip(weights)
                .map(|(r, w)| Instance::new(r.addr.to_string()).weight(*w)),
        ),
    };
    let balance = tower::Layer::layer(&layer, discovery);
    // Wait until every replica is known and connected.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while balance.endpoints().iter().filter(|e| e.connected).count() < replicas.len() {
        if tokio::time::Instant::now() > deadline {
            return Err("replicas not discovered within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stack = ServiceBuilder::new()
        .layer(
            RetryLayer::exponential(4)
                .backoff(Duration::from_millis(10), Duration::from_millis(200))
                .idempotent("echo.Echo/*"),
        )
        .service(balance);
    Ok(BoxCloneService::new(stack))
}

/// `total` calls, `concurrency` at a time; kills `kill.1` after `kill.0`
/// calls. A tally of replies per `served-by`, errors per code.
async fn run(
    svc: Svc,
    total: usize,
    concurrency: usize,
    mut kill: Option<(usize, &mut Replica)>,
) -> BTreeMap<String, usize> {
    use futures_util::stream::{self, StreamExt};
    let mut tally = BTreeMap::new();
    let mut calls = stream::iter(0..total)
        .map(|i| {
            let mut client = Client::new(svc.clone());
            async move {
                let mut req = Request::new(Say {
                    message: "hi".into(),
                });
                req.metadata_mut()
                    .try_insert("x-user", &format!("user-{}", i % 40))
                    .map_err(|e| Status::internal(e.to_string()))?;
                req.set_timeout(Duration::from_secs(5));
                let resp = client.unary::<Say, Say>("echo.Echo/Say", req).await?;
                Ok::<_, Status>(resp.metadata().get("served-by").unwrap_or("?").to_string())
            }
        })
        .buffer_unordered(concurrency);
    let mut done = 0;
    while let Some(result) = calls.next().await {
        done += 1;
        let key = match result {
            Ok(by) => by,
            Err(e) => format!("error {}", e.code().as_str()),
        };
        *tally.entry(key).or_insert(0) += 1;
        if let Some((at, replica)) = &mut kill {
            if done == *at {
                replica.kill().await;
                kill = None;
            }
        }
    }
    tally
}

/// A replica process (this program with `--replica`), killed on drop.
struct Replica {
    child: Child,
    addr: SocketAddr,
}

impl Replica {
    async fn spawn(weight: u32, etcd: Option<&str>) -> Result<Replica, Box<dyn std::error::Error>> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["--replica", "--weight", &weight.to_string()]);
        if let Some(url) = etcd {
            cmd.args(["--etcd", url]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(a) = line.strip_prefix("listening on ") {
                    return a.parse().ok();
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .ok_or("replica did not start")?;
        // Keep reading so the replica never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Replica { child, addr })
    }

    async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SIGTERM: graceful (deregisters from etcd first).
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        }
        let _ = self.child.kill().await;
    }
}

/// The replica: echo with `served-by`, health, load reports; registered in
/// etcd with `--etcd`.
async fn replica(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let served_by = trpc::metadata::MetadataValue::try_from(addr.to_string())?;
    let health = HealthReporter::new();
    let router = Router::new()
        .route(
            "echo.Echo/Say",
            unary(move |req: Request<Say>| {
                let served_by = served_by.clone();
                async move {
                    let mut resp = Response::new(req.into_inner());
                    resp.metadata_mut().insert_value("served-by", served_by);
                    Ok::<_, Status>(resp)
                }
            }),
        )
        .merge(health.router());
    let registration = args.etcd.as_deref().map(|url| {
        Etcd::new([url]).lease_ttl(Duration::from_secs(2)).register(
            "cluster-demo",
            Instance::new(addr.to_string()).weight(args.weight),
        )
    });
    println!("listening on {addr}");
    let reporter = health.clone();
    let signal = async move {
        trpc::server::shutdown_signal().await;
        reporter.shutdown();
        if let Some(r) = registration {
            r.deregister().await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    Server::builder()
        .health(health)
        .layer(LoadReportLayer::new(LoadReporter::new()))
        .serve_with_listener(listener, router, signal)
        .await?;
    Ok(())
}
