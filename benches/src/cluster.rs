//! `trpc-bench cluster`: the discovery and balancing scenarios of `make bench`.
//!
//! 1. **p2c over replicas vs one channel**: `--replicas` (4) trpc servers,
//!    each its own `bench-server` process; a `BalanceLayer::p2c_peak_ewma()`
//!    client over all of them against a plain `Channel` to one of them,
//!    64 B × 256 in flight, interleaved rounds (target: p2c ≥ 0.8× the
//!    single channel's calls/s).
//! 2. **etcd change → balancer**: a real etcd (started on free ports, as the
//!    tests do), a balancer watching a prefix, and `--changes` puts and
//!    deletes of instances: the time from issuing each change to the balancer
//!    having applied it, p50 and p99 (target ≤ 500 ms).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use tower::Service;
use trpc::codec::Proto;
use trpc::{Body, BoxError, Request, Response};
use trpc_layers::balance::BalanceLayer;
use trpc_layers::discovery::etcd::Etcd;
use trpc_layers::discovery::{Discovery, Instance};

use crate::messages::{self, EchoMsg};
use crate::procfs::ServerProc;
use crate::systems::{trpc as bare, System};

/// Options of `trpc-bench cluster`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ClusterArgs {
    /// Replica processes behind the balancer.
    #[arg(long, default_value_t = 4)]
    replicas: usize,
    /// Payload bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Callers in flight.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Interleaved rounds (default 3; 2 with BENCH_QUICK=1).
    #[arg(long)]
    rounds: Option<usize>,
    /// Measured window per round, ms (default 2000; 500 quick).
    #[arg(long)]
    window_ms: Option<u64>,
    /// etcd changes to time (default 100; 40 quick).
    #[arg(long)]
    changes: Option<usize>,
    /// Tokio worker threads of the client (default: CPUs).
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs both scenarios and prints a markdown report.
pub(crate) fn run(args: ClusterArgs) -> Result<(), String> {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let rounds = args.rounds.unwrap_or(if quick { 2 } else { 3 });
    let window = Duration::from_millis(args.window_ms.unwrap_or(if quick { 500 } else { 2000 }));
    let changes = args.changes.unwrap_or(if quick { 40 } else { 100 });
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let servers = (0..args.replicas.max(1))
        .map(|_| ServerProc::spawn(System::Trpc, 2))
        .collect::<Result<Vec<_>, _>>()?;
    rt.block_on(async move {
        println!("## Discovery and balancing (`trpc-bench cluster`)\n");
        throughput(&args, &servers, rounds, window).await?;
        println!();
        etcd_latency(changes).await
    })
}

struct Sample {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

/// `concurrency` callers through clones of `svc` for `window` (after a
/// quarter of it as warm-up).
async fn drive<S>(
    svc: S,
    payload: &Bytes,
    concurrency: usize,
    window: Duration,
) -> Result<Sample, String>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let mut client = trpc::Client::with_codec(svc.clone(), Proto);
        let (measuring, stop, errors) = (measuring.clone(), stop.clone(), errors.clone());
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let msg = EchoMsg {
                    payload: payload.clone(),
                };
                match client.unary_message::<_, EchoMsg>(bare::ECHO, msg).await {
                    Ok(_) if measuring.load(Ordering::Relaxed) => {
                        let _ = hist.record(start.elapsed().as_nanos() as u64);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            hist
        }));
    }
    tokio::time::sleep(window / 4).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(window).await;
    measuring.store(false, Ordering::Relaxed);
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    for t in tasks {
        let h = t.await.map_err(|e| e.to_string())?;
        all.add(&h).map_err(|e| e.to_string())?;
    }
    if errors.load(Ordering::Relaxed) > 0 {
        return Err(format!("{} calls failed", errors.load(Ordering::Relaxed)));
    }
    Ok(Sample {
        rps: all.len() as f64 / took.as_secs_f64(),
        p50_us: all.value_at_quantile(0.5) as f64 / 1000.0,
        p99_us: all.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

async fn throughput(
    args: &ClusterArgs,
    servers: &[ServerProc],
    rounds: usize,
    window: Duration,
) -> Result<(), String> {
    let payload = messages::payload(args.payload);
    let single = bare::channel(servers[0].addr)
        .await
        .map_err(|e| e.to_string())?;
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
    let balance = tower::Layer::layer(
        &BalanceLayer::p2c_peak_ewma().endpoint(|addr| {
            Ok(trpc::Endpoint::new(addr)?.max_message_size(crate::systems::MAX_MESSAGE))
        }),
        Discovery::fixed(addrs),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while balance.endpoints().iter().filter(|e| e.connected).count() < servers.len() {
        if Instant::now() > deadline {
            return Err("replicas not connected within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "p2c over {} replica processes vs one channel to one of them: {} B × {} in flight, {} rounds of {} ms, interleaved\n",
        servers.len(),
        args.payload,
        args.concurrency,
        rounds,
        window.as_millis()
    );
    let (mut one, mut p2c) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        one.push(drive(single.clone(), &payload, args.concurrency, window).await?);
        p2c.push(drive(balance.clone(), &payload, args.concurrency, window).await?);
    }
    let median = |v: &mut Vec<Sample>| {
        v.sort_by(|a, b| a.rps.total_cmp(&b.rps));
        let m = &v[v.len() / 2];
        (m.rps, m.p50_us, m.p99_us)
    };
    let (o, b) = (median(&mut one), median(&mut p2c));
    println!("| client | calls/s (median) | p50 µs | p99 µs | vs one channel |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| one `Channel` | {:.0} | {:.0} | {:.0} | 1.00× |",
        o.0, o.1, o.2
    );
    println!(
        "| `BalanceLayer::p2c_peak_ewma()` over {} | {:.0} | {:.0} | {:.0} | {:.2}× (target ≥ 0.80×) |",
        servers.len(),
        b.0,
        b.1,
        b.2,
        b.0 / o.0
    );
    let spread: Vec<String> = balance
        .endpoints()
        .iter()
        .map(|e| format!("{}: {}", e.instance.addr, e.completed))
        .collect();
    println!("\ncalls per replica (all rounds): {}", spread.join(", "));
    Ok(())
}

async fn etcd_latency(changes: usize) -> Result<(), String> {
    let server = trpc_integration::etcd::EtcdServer::start();
    let etcd = Etcd::new([server.endpoint()]);
    let balance = tower::Layer::layer(
        &BalanceLayer::round_robin(),
        etcd.discover("bench").await.map_err(|e| e.to_string())?,
    );
    let mut client = etcd_client::Client::connect([server.endpoint()], None)
        .await
        .map_err(|e| e.to_string())?;
    let mut watch = balance.watch_changes();
    let mut lags = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    for i in 0..changes {
        // Nothing listens on these ports: only the endpoint set matters.
        let addr = format!("127.0.0.1:{}", 1 + (i / 2) % 1000);
        let key = etcd.key("bench", &addr);
        let start = Instant::now();
        if i % 2 == 0 {
            client
                .put(key, Instance::new(addr.clone()).to_json(), None)
                .await
                .map_err(|e| e.to_string())?;
        } else {
            client.delete(key, None).await.map_err(|e| e.to_string())?;
        }
        let want_present = i % 2 == 0;
        while balance.addrs().contains(&addr) != want_present {
            tokio::time::timeout(Duration::from_secs(10), watch.changed())
                .await
                .map_err(|_| "the balancer missed an etcd change for 10 s".to_string())?
                .map_err(|e| e.to_string())?;
        }
        let _ = lags.record(start.elapsed().as_nanos() as u64);
    }
    let ms = |q: f64| lags.value_at_quantile(q) as f64 / 1e6;
    println!("etcd change → balancer (a put or a delete issued, until the balancer's endpoint set has it), {changes} changes, real etcd on loopback:\n");
    println!("| p50 | p99 | max | target |");
    println!("|---:|---:|---:|---|");
    println!(
        "| {:.2} ms | {:.2} ms | {:.2} ms | p99 ≤ 500 ms |",
        ms(0.5),
        ms(0.99),
        lags.max() as f64 / 1e6
    );
    Ok(())
}
