//! The benchmark run: start every server in its own process, then measure
//! cell by cell with the systems interleaved round by round, then the extras
//! (16 MiB round trip, streaming, idle-connection memory).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::load::{Load, Sample};
use crate::messages::payload;
use crate::procfs::{self, ServerProc};
use crate::report::Report;
use crate::systems::{Client, System};
use crate::wire::{self, WireSample};

/// What to run.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// Systems, in table order (raw first: ratios are against it).
    pub(crate) systems: Vec<System>,
    /// Payload sizes, bytes.
    pub(crate) payloads: Vec<usize>,
    /// Callers in flight.
    pub(crate) concurrency: Vec<usize>,
    /// Rounds: every system runs every cell once per round.
    pub(crate) rounds: usize,
    /// Warm-up before each measured window.
    pub(crate) warmup: Duration,
    /// Measured window.
    pub(crate) window: Duration,
    /// Tokio worker threads of every server and of the client.
    pub(crate) threads: usize,
    /// Size of the big-message round trip.
    pub(crate) big: usize,
    /// Timed big round trips per system per round.
    pub(crate) big_iters: usize,
    /// Bytes per streaming download.
    pub(crate) stream_total: u64,
    /// Bytes per streamed message.
    pub(crate) stream_chunk: u32,
    /// Idle connections opened for the memory measurement.
    pub(crate) idle_conns: usize,
    /// Skip the big message, streaming and memory measurements.
    pub(crate) unary_only: bool,
    /// Price each layer of the standard stack (64 B, 256 in flight).
    pub(crate) layers: bool,
    /// Drive the servers [`wire::SYSTEMS`] with the one wire-level load
    /// generator (64 B, 256 in flight).
    pub(crate) wire: bool,
    /// The command line, for the report.
    pub(crate) command: String,
}

/// One unary cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Cell {
    /// Payload bytes.
    pub(crate) payload: usize,
    /// Callers in flight on the one connection.
    pub(crate) concurrency: usize,
}

/// Idle-connection memory of one server.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Memory {
    /// RSS with one connection, KiB.
    pub(crate) before_kib: u64,
    /// RSS with `idle_conns` more, KiB.
    pub(crate) after_kib: u64,
    /// (after - before) / connections, KiB.
    pub(crate) per_conn_kib: f64,
}

/// Everything measured.
#[derive(Debug, Default)]
pub(crate) struct Results {
    /// Unary samples, one per round, per (system, cell).
    pub(crate) unary: HashMap<(System, Cell), Vec<Sample>>,
    /// The layer-pricing samples (cell [`LAYER_CELL`]), one per round.
    pub(crate) layers: HashMap<System, Vec<Sample>>,
    /// The wire-level generator's samples (cell [`LAYER_CELL`]), one per
    /// round.
    pub(crate) wire: HashMap<System, Vec<WireSample>>,
    /// 16 MiB round-trip times per round (median of the round's iterations).
    pub(crate) big: HashMap<System, Vec<Duration>>,
    /// Streaming download throughput per round, bytes/s.
    pub(crate) stream: HashMap<System, Vec<f64>>,
    /// Idle-connection memory.
    pub(crate) memory: HashMap<System, Memory>,
    /// Systems whose extras failed, with why.
    pub(crate) notes: Vec<String>,
}

/// A one-line progress display on stderr (rewritten in place on a terminal).
#[derive(Debug)]
pub(crate) struct Progress {
    tty: bool,
    started: Instant,
}

impl Progress {
    fn new() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
        }
    }

    fn show(&self, msg: &str) {
        let t = self.started.elapsed().as_secs();
        let line = format!("[{:>2}:{:02}] {msg}", t / 60, t % 60);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    fn done(&self) {
        if self.tty {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

/// A big round trip or a download that takes longer than this has stalled.
const STALL: Duration = Duration::from_secs(5);

/// The cell in which each layer of the standard stack is priced.
pub(crate) const LAYER_CELL: Cell = Cell {
    payload: 64,
    concurrency: 256,
};

/// `n` as "64 B", "4 KiB", "16 MiB".
pub(crate) fn fmt_size(n: usize) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1024 && n % 1024 == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

/// The progress line of a [`LAYER_CELL`] measurement.
fn layer_cell_line(what: &str, round: usize, rounds: usize, sys: System) -> String {
    format!(
        "{what} · round {}/{rounds} · {} × {} in flight · {}",
        round + 1,
        fmt_size(LAYER_CELL.payload),
        LAYER_CELL.concurrency,
        sys.label()
    )
}

/// `items` rotated left by `by`: each round starts with a different system.
fn rotated<T: Copy>(items: &[T], by: usize) -> Vec<T> {
    let n = items.len().max(1);
    (0..items.len()).map(|i| items[(i + by) % n]).collect()
}

/// Runs the plan and returns the report.
pub(crate) async fn run(plan: Plan) -> Result<Report, String> {
    let progress = Progress::new();
    let mut results = Results::default();
    let began = Instant::now();
    // Read now: `make bench` has just built from this tree.
    let version = crate::report::trpc_version();

    progress.show("starting servers");
    let mut servers = HashMap::new();
    let mut clients = HashMap::new();
    let mut all = plan.systems.clone();
    if plan.layers {
        all.extend(System::LAYERS);
    }
    if plan.wire {
        all.extend(wire::SYSTEMS);
    }
    all.sort();
    all.dedup();
    for &sys in &all {
        let server = ServerProc::spawn(sys, plan.threads)?;
        let mut client = Client::connect(sys, server.addr).await?;
        let probe = payload(64);
        let reply = client.echo(&probe).await?;
        if reply != probe {
            return Err(format!("{sys}: the echo reply differs from the request"));
        }
        servers.insert(sys, server);
        clients.insert(sys, client);
    }

    let cells: Vec<Cell> = plan
        .payloads
        .iter()
        .flat_map(|&payload| {
            plan.concurrency.iter().map(move |&concurrency| Cell {
                payload,
                concurrency,
            })
        })
        .collect();
    let payloads: HashMap<usize, Bytes> = plan.payloads.iter().map(|&n| (n, payload(n))).collect();
    let mut load = Load::new();
    let total = plan.rounds * cells.len() * plan.systems.len();
    let mut done = 0;
    for round in 0..plan.rounds {
        for (ci, cell) in cells.iter().enumerate() {
            for sys in rotated(&plan.systems, round + ci) {
                done += 1;
                progress.show(&format!(
                    "round {}/{} · {} × {} in flight · {sys} ({done}/{total})",
                    round + 1,
                    plan.rounds,
                    fmt_size(cell.payload),
                    cell.concurrency
                ));
                let sample = load
                    .run_cell(
                        &clients[&sys],
                        &servers[&sys],
                        &payloads[&cell.payload],
                        cell.concurrency,
                        plan.warmup,
                        plan.window,
                    )
                    .await
                    .map_err(|e| {
                        format!(
                            "{sys}, {} × {}: {e}",
                            fmt_size(cell.payload),
                            cell.concurrency
                        )
                    })?;
                results.unary.entry((sys, *cell)).or_default().push(sample);
            }
        }
    }

    if plan.layers {
        let payload = payload(LAYER_CELL.payload);
        for round in 0..plan.rounds {
            for sys in rotated(System::LAYERS, round) {
                progress.show(&layer_cell_line("layer costs", round, plan.rounds, sys));
                let sample = load
                    .run_cell(
                        &clients[&sys],
                        &servers[&sys],
                        &payload,
                        LAYER_CELL.concurrency,
                        plan.warmup,
                        plan.window,
                    )
                    .await
                    .map_err(|e| format!("{sys}, layer costs: {e}"))?;
                results.layers.entry(sys).or_default().push(sample);
            }
        }
    }

    if plan.wire {
        let payload = payload(LAYER_CELL.payload);
        for round in 0..plan.rounds {
            for sys in rotated(wire::SYSTEMS, round) {
                progress.show(&layer_cell_line(
                    "one load generator",
                    round,
                    plan.rounds,
                    sys,
                ));
                let server = servers.get(&sys).ok_or("no server")?;
                let (addr, pid, payload) = (server.addr, server.pid, payload.clone());
                let (warmup, window) = (plan.warmup, plan.window);
                // The generator blocks on its socket: a thread of its own.
                let sample = tokio::task::spawn_blocking(move || {
                    wire::run(
                        sys,
                        addr,
                        Some(pid),
                        &payload,
                        LAYER_CELL.concurrency,
                        warmup,
                        window,
                    )
                })
                .await
                .map_err(|e| format!("{sys}, one load generator: {e}"))??;
                results.wire.entry(sys).or_default().push(sample);
            }
        }
    }

    if !plan.unary_only {
        // Fresh connections for each extra: a stall in one cannot leak into
        // the next.
        drop(clients);
        let mut fresh = connect_all(&plan.systems, &servers).await?;
        big_messages(&plan, &mut fresh, &progress, &mut results).await?;
        let mut fresh = connect_all(&plan.systems, &servers).await?;
        streaming(&plan, &mut fresh, &progress, &mut results).await;
        drop(fresh);
        drop(servers);
        for &sys in &plan.systems {
            progress.show(&format!(
                "idle memory · {sys}: {} connections, each used once",
                plan.idle_conns
            ));
            match idle_memory(sys, plan.threads, plan.idle_conns).await {
                Ok(m) => {
                    results.memory.insert(sys, m);
                }
                Err(e) => results.notes.push(format!("idle memory, {sys}: {e}")),
            }
        }
    }
    progress.done();
    Ok(Report {
        plan,
        cells,
        results,
        elapsed: began.elapsed(),
        version,
    })
}

/// One new client (connection) per system.
async fn connect_all(
    systems: &[System],
    servers: &HashMap<System, ServerProc>,
) -> Result<HashMap<System, Client>, String> {
    let mut clients = HashMap::new();
    for &sys in systems {
        let server = servers.get(&sys).ok_or("no server")?;
        clients.insert(sys, Client::connect(sys, server.addr).await?);
    }
    Ok(clients)
}

async fn big_messages(
    plan: &Plan,
    clients: &mut HashMap<System, Client>,
    progress: &Progress,
    results: &mut Results,
) -> Result<(), String> {
    let big = payload(plan.big);
    for round in 0..plan.rounds {
        for sys in rotated(&plan.systems, round) {
            progress.show(&format!(
                "{} round trip · round {}/{} · {sys}",
                fmt_size(plan.big),
                round + 1,
                plan.rounds
            ));
            let client = clients.get_mut(&sys).ok_or("no client")?;
            let mut times = Vec::new();
            for i in 0..=plan.big_iters {
                let t = Instant::now();
                let outcome = tokio::time::timeout(STALL, client.echo(&big)).await;
                let took = t.elapsed();
                let failure = match outcome {
                    Ok(Ok(reply)) if reply.len() == big.len() => None,
                    Ok(Ok(reply)) => Some(format!("the echo came back with {} bytes", reply.len())),
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some(format!("no reply within {} s", STALL.as_secs())),
                };
                if let Some(why) = failure {
                    // A stalled or failed round trip counts as STALL (the row
                    // shows a bound); the rest of this round is skipped.
                    results.notes.push(format!(
                        "{sys}: a {} round trip (round {}, call {}) failed: {why}; counted as {} s",
                        fmt_size(plan.big),
                        round + 1,
                        i + 1,
                        STALL.as_secs()
                    ));
                    times = vec![STALL];
                    break;
                }
                if i > 0 {
                    times.push(took);
                }
            }
            times.sort();
            results
                .big
                .entry(sys)
                .or_default()
                .push(times[times.len() / 2]);
        }
    }
    Ok(())
}

async fn streaming(
    plan: &Plan,
    clients: &mut HashMap<System, Client>,
    progress: &Progress,
    results: &mut Results,
) {
    let streaming: Vec<System> = plan
        .systems
        .iter()
        .copied()
        .filter(|s| s.streams())
        .collect();
    for &sys in plan.systems.iter().filter(|s| !s.streams()) {
        results.notes.push(format!(
            "streaming, {sys}: the framework has no streaming calls"
        ));
    }
    for round in 0..plan.rounds {
        for sys in rotated(&streaming, round) {
            progress.show(&format!(
                "streaming {} in {} messages · round {}/{} · {sys}",
                fmt_size(plan.stream_total as usize),
                fmt_size(plan.stream_chunk as usize),
                round + 1,
                plan.rounds
            ));
            let Some(client) = clients.get_mut(&sys) else {
                continue;
            };
            // Warm-up: a short download.
            match tokio::time::timeout(STALL, client.download(4 << 20, plan.stream_chunk)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    results.notes.push(format!("streaming, {sys}: {e}"));
                    continue;
                }
                Err(_) => {
                    results.notes.push(format!(
                        "streaming, {sys}: a 4 MiB warm-up download stalled"
                    ));
                    continue;
                }
            }
            let t = Instant::now();
            let limit = STALL * 4;
            match tokio::time::timeout(limit, client.download(plan.stream_total, plan.stream_chunk))
                .await
                .unwrap_or_else(|_| Err(format!("did not finish within {} s", limit.as_secs())))
            {
                Ok(got) if got == plan.stream_total => {
                    let rate = got as f64 / t.elapsed().as_secs_f64();
                    results.stream.entry(sys).or_default().push(rate);
                }
                Ok(got) => results.notes.push(format!(
                    "streaming, {sys}: received {got} of {} bytes",
                    plan.stream_total
                )),
                Err(e) => results.notes.push(format!("streaming, {sys}: {e}")),
            }
        }
    }
}

/// Opens `conns` connections to `addr`, each used for one 64 B call, and
/// returns them open.
pub(crate) async fn open_idle(
    sys: System,
    addr: std::net::SocketAddr,
    conns: usize,
) -> Result<Vec<Client>, String> {
    const BATCH: usize = 50;
    let probe = payload(64);
    let mut open = Vec::with_capacity(conns);
    while open.len() < conns {
        let n = BATCH.min(conns - open.len());
        let batch = (0..n).map(|_| async {
            let mut c = Client::connect(sys, addr).await?;
            c.echo(&probe).await?;
            Ok::<_, String>(c)
        });
        open.extend(futures::future::try_join_all(batch).await?);
    }
    Ok(open)
}

/// Server RSS growth per idle connection: a fresh server, one warm connection,
/// then `conns` more, each used for one 64 B call and left open.
async fn idle_memory(sys: System, threads: usize, conns: usize) -> Result<Memory, String> {
    let server = ServerProc::spawn(sys, threads)?;
    let probe = payload(64);
    let mut first = Client::connect(sys, server.addr).await?;
    first.echo(&probe).await?;
    procfs::settle().await;
    let before_kib = server.rss_kib()?;
    let open = open_idle(sys, server.addr, conns).await?;
    procfs::settle().await;
    procfs::settle().await;
    let after_kib = server.rss_kib()?;
    drop(open);
    drop(first);
    Ok(Memory {
        before_kib,
        after_kib,
        per_conn_kib: after_kib.saturating_sub(before_kib) as f64 / conns as f64,
    })
}
