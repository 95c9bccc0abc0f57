//! `make bench`: trpc against tonic, tarpc and a raw framed-TCP echo, in one
//! run, side by side.
//!
//! ```text
//! cargo run --release --manifest-path benches/Cargo.toml            # full run (~10 min)
//! BENCH_QUICK=1 cargo run --release --manifest-path benches/Cargo.toml  # ~1 min
//! ```
//!
//! The binary is both the load generator and every server: it re-executes
//! itself as `trpc-bench bench-server --system X --listen ADDR`, one process
//! per system, so server CPU time and memory can be read from `/proc`.
//! `trpc-bench load` drives one running server for a fixed number of calls
//! (for profilers such as callgrind). See docs/PERFORMANCE.md.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

mod cluster;
mod load;
mod messages;
mod procfs;
mod report;
mod run;
mod systems;
mod wire;

use systems::{Client, System};

#[derive(Parser, Debug)]
#[command(
    name = "trpc-bench",
    about = "trpc vs tonic, tarpc and raw framed TCP",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The full comparison (the default).
    Run(RunArgs),
    /// Serve one system (started by `run`; exits when stdin closes).
    BenchServer {
        /// The system to serve.
        #[arg(long, value_enum)]
        system: System,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Tokio worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Keep running when stdin closes (for running by hand).
        #[arg(long)]
        detach: bool,
    },
    /// Open idle connections to a running server (each used once) and hold
    /// them (for memory profilers).
    Idle {
        /// The system the server speaks.
        #[arg(long, value_enum)]
        system: System,
        /// The server's address.
        #[arg(long)]
        addr: SocketAddr,
        /// Connections to open.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// How long to hold them, ms.
        #[arg(long, default_value_t = 2000)]
        hold_ms: u64,
    },
    /// The discovery and balancing scenarios: p2c over replicas vs one
    /// channel, and the time from an etcd change to the balancer.
    Cluster(cluster::ClusterArgs),
    /// Drive a running server for a fixed number of calls (for profiling).
    Load {
        /// The system the server speaks.
        #[arg(long, value_enum)]
        system: System,
        /// The server's address.
        #[arg(long)]
        addr: SocketAddr,
        /// Callers in flight.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Payload bytes.
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Calls in all.
        #[arg(long, default_value_t = 200_000)]
        calls: u64,
        /// Tokio worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Drive a running server with the wire-level load generator (one
    /// thread, pre-encoded frames, no framework client; raw, trpc,
    /// trpc-inline, trpc-std): what the "Servers alone" table measures.
    Wire {
        /// The system the server speaks (raw, trpc, trpc-inline, trpc-std).
        #[arg(long, value_enum)]
        system: System,
        /// The server's address.
        #[arg(long)]
        addr: SocketAddr,
        /// The server's process id, to report its CPU time per call.
        #[arg(long)]
        pid: Option<u32>,
        /// Calls in flight.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Payload bytes.
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Warm-up, ms.
        #[arg(long, default_value_t = 500)]
        warmup_ms: u64,
        /// Measured window, ms.
        #[arg(long, default_value_t = 3000)]
        window_ms: u64,
    },
}

#[derive(Args, Debug, Clone, Default)]
struct RunArgs {
    /// Systems to compare (raw is always included: ratios are against it).
    #[arg(long, value_enum, value_delimiter = ',')]
    systems: Vec<System>,
    /// Payload sizes in bytes.
    #[arg(long, value_delimiter = ',')]
    payloads: Vec<usize>,
    /// Callers in flight on the one connection.
    #[arg(long, value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Rounds (default 5; 2 with BENCH_QUICK=1).
    #[arg(long)]
    rounds: Option<usize>,
    /// Warm-up per cell, ms (default 500; 150 quick).
    #[arg(long)]
    warmup_ms: Option<u64>,
    /// Measured window per cell, ms (default 2000; 500 quick).
    #[arg(long)]
    window_ms: Option<u64>,
    /// Tokio worker threads of every server and of the client (default: CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// Only the unary cells.
    #[arg(long)]
    unary_only: bool,
    /// Skip pricing each layer of the standard stack.
    #[arg(long, conflicts_with = "layers_only")]
    no_layers: bool,
    /// Only price each layer of the standard stack (no unary cells, no
    /// extras): a short run to compare two builds' layers.
    #[arg(long)]
    layers_only: bool,
    /// Also write the markdown report to this file.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format!("cannot start the tokio runtime: {e}")))
}

fn fail(msg: String) -> ! {
    eprintln!("\ntrpc-bench: {msg}");
    std::process::exit(1)
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        None => bench(cli.run),
        Some(Command::Run(args)) => bench(args),
        Some(Command::Cluster(args)) => {
            if let Err(e) = cluster::run(args) {
                fail(e);
            }
        }
        Some(Command::BenchServer {
            system,
            listen,
            threads,
            detach,
        }) => {
            if !detach {
                procfs::exit_when_stdin_closes();
            }
            systems::trpc_std::init_tracing(system);
            runtime(threads).block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .unwrap_or_else(|e| fail(format!("bind {listen}: {e}")));
                let addr = listener
                    .local_addr()
                    .unwrap_or_else(|e| fail(e.to_string()));
                println!("listening on {addr}");
                if let Err(e) = systems::serve(system, listener).await {
                    fail(format!("{system} server: {e}"));
                }
            })
        }
        Some(Command::Idle {
            system,
            addr,
            connections,
            hold_ms,
        }) => runtime(2).block_on(async move {
            let open = run::open_idle(system, addr, connections)
                .await
                .unwrap_or_else(|e| fail(e));
            println!("{system}: {} idle connections open", open.len());
            tokio::time::sleep(Duration::from_millis(hold_ms)).await;
        }),
        Some(Command::Load {
            system,
            addr,
            concurrency,
            payload,
            calls,
            threads,
        }) => runtime(threads).block_on(async move {
            let client = Client::connect(system, addr)
                .await
                .unwrap_or_else(|e| fail(e));
            let payload = messages::payload(payload);
            let took = load::run_count(&client, &payload, concurrency, calls)
                .await
                .unwrap_or_else(|e| fail(e));
            println!(
                "{system}: {calls} calls, {concurrency} in flight, in {:.2} s ({:.0} calls/s)",
                took.as_secs_f64(),
                calls as f64 / took.as_secs_f64()
            );
        }),
        Some(Command::Wire {
            system,
            addr,
            pid,
            concurrency,
            payload,
            warmup_ms,
            window_ms,
        }) => {
            let payload = messages::payload(payload);
            let s = wire::run(
                system,
                addr,
                pid,
                &payload,
                concurrency,
                Duration::from_millis(warmup_ms),
                Duration::from_millis(window_ms),
            )
            .unwrap_or_else(|e| fail(e));
            println!(
                "{system}: {:.0} calls/s, {concurrency} in flight, server CPU {:.2} µs/call, generator CPU {:.2} µs/call",
                s.rps, s.server_cpu_us, s.client_cpu_us
            );
        }
    }
}

fn bench(args: RunArgs) {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let mut systems = if args.systems.is_empty() {
        System::ALL.to_vec()
    } else {
        args.systems.clone()
    };
    if args.layers_only {
        systems.clear();
    } else if !systems.contains(&System::Raw) {
        systems.push(System::Raw);
    }
    systems.sort();
    systems.dedup();
    let or = |v: &Vec<usize>, d: &[usize]| if v.is_empty() { d.to_vec() } else { v.clone() };
    let mut command = String::from(if quick {
        "BENCH_QUICK=1 make bench"
    } else {
        "make bench"
    });
    let extra: Vec<String> = std::env::args().skip(1).collect();
    if !extra.is_empty() {
        command = format!("{command} (trpc-bench {})", extra.join(" "));
    }
    let plan = run::Plan {
        systems,
        payloads: or(&args.payloads, &[64, 4096]),
        concurrency: or(&args.concurrency, &[1, 64, 256]),
        rounds: args.rounds.unwrap_or(if quick { 2 } else { 5 }).max(1),
        warmup: Duration::from_millis(args.warmup_ms.unwrap_or(if quick { 150 } else { 500 })),
        window: Duration::from_millis(args.window_ms.unwrap_or(if quick { 500 } else { 2000 })),
        threads,
        big: 16 << 20,
        big_iters: if quick { 1 } else { 3 },
        stream_total: if quick { 64 << 20 } else { 256 << 20 },
        stream_chunk: 64 << 10,
        idle_conns: 1000,
        unary_only: args.unary_only || args.layers_only,
        layers: !args.no_layers,
        wire: !args.layers_only,
        command,
    };
    let report = runtime(threads)
        .block_on(run::run(plan))
        .unwrap_or_else(|e| fail(e));
    let text = report.to_string();
    println!("{text}");
    if let Some(path) = args.out {
        if let Err(e) = std::fs::write(&path, &text) {
            fail(format!("cannot write {}: {e}", path.display()));
        }
    }
}
