//! The markdown report: medians over rounds, ratios measured side by side in
//! the same round, and the targets.

use std::fmt::{self, Write as _};
use std::time::Duration;

use crate::load::Sample;
use crate::run::{fmt_size, Cell, Plan, Results, LAYER_CELL};
use crate::systems::System;
use crate::wire::{self, WireSample};

/// The outcome of a run.
#[derive(Debug)]
pub(crate) struct Report {
    /// What ran.
    pub(crate) plan: Plan,
    /// The unary cells, in order.
    pub(crate) cells: Vec<Cell>,
    /// What was measured.
    pub(crate) results: Results,
    /// How long the run took.
    pub(crate) elapsed: Duration,
    /// The trpc commit measured ([`trpc_version`]).
    pub(crate) version: String,
}

/// The median of `v` (mean of the middle two for an even count); NaN if empty.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// nproc, CPU model and kernel of this machine.
pub(crate) fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{nproc} CPUs ({model}), Linux {}", kernel.trim())
}

/// The trpc commit the bench was built from, and whether `src/` or `layers/`
/// had uncommitted changes (read with `git`; "unknown" without it).
pub(crate) fn trpc_version() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            let dirty = git(&["status", "--porcelain", "--", "src", "layers"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{commit} + uncommitted changes in src/ or layers/")
            } else {
                commit
            }
        }
        None => "unknown".into(),
    }
}

/// A target of an issue and whether it holds.
struct Target {
    /// The issue that set it.
    source: &'static str,
    what: String,
    measured: Option<f64>,
    goal: f64,
    at_least: bool,
    unit: &'static str,
}

impl Target {
    fn verdict(&self) -> &'static str {
        match self.measured {
            None => "not measured",
            Some(m) if m.is_nan() => "not measured",
            Some(m) if (self.at_least && m >= self.goal) || (!self.at_least && m <= self.goal) => {
                "holds"
            }
            Some(_) => "**misses**",
        }
    }
}

impl Report {
    fn samples(&self, sys: System, cell: Cell) -> &[Sample] {
        self.results
            .unary
            .get(&(sys, cell))
            .map_or(&[], |v| v.as_slice())
    }

    fn has(&self, sys: System) -> bool {
        self.plan.systems.contains(&sys)
    }

    /// Median over rounds of a per-round ratio `f(a) / f(b)`.
    fn ratio(&self, a: System, b: System, cell: Cell, f: impl Fn(&Sample) -> f64) -> Option<f64> {
        let (sa, sb) = (self.samples(a, cell), self.samples(b, cell));
        if sa.is_empty() || sa.len() != sb.len() {
            return None;
        }
        Some(median(
            sa.iter().zip(sb).map(|(x, y)| f(x) / f(y)).collect(),
        ))
    }

    fn cell(&self, payload: usize, concurrency: usize) -> Option<Cell> {
        let c = Cell {
            payload,
            concurrency,
        };
        self.cells.contains(&c).then_some(c)
    }

    /// A ratio target on a unary cell (None when not measured).
    #[allow(clippy::too_many_arguments)]
    fn unary_target(
        &self,
        source: &'static str,
        what: &str,
        a: System,
        b: System,
        cell: Option<Cell>,
        goal: f64,
        at_least: bool,
        f: fn(&Sample) -> f64,
    ) -> Target {
        let measured = match cell {
            Some(c) if self.has(a) && self.has(b) => self.ratio(a, b, c, f),
            _ => None,
        };
        Target {
            source,
            what: what.into(),
            measured,
            goal,
            at_least,
            unit: "×",
        }
    }

    fn targets(&self) -> Vec<Target> {
        let rps: fn(&Sample) -> f64 = |s| s.rps;
        let p50: fn(&Sample) -> f64 = |s| s.p50_us;
        let (raw, trpc) = (System::Raw, System::Trpc);
        let c64 = self.cell(64, 256);
        vec![
            self.unary_target(
                "#11",
                "64 B, 256 in flight: trpc req/s ÷ raw",
                trpc,
                raw,
                c64,
                0.6,
                true,
                rps,
            ),
            self.unary_target(
                "#11",
                "64 B, 256 in flight: trpc req/s ÷ tarpc",
                trpc,
                System::Tarpc,
                c64,
                2.0,
                true,
                rps,
            ),
            self.wire_target(),
            self.layer_target(),
            self.unary_target(
                "#6",
                "64 B, 256 in flight: trpc req/s ÷ tarpc",
                trpc,
                System::Tarpc,
                c64,
                2.5,
                true,
                rps,
            ),
            self.unary_target(
                "#6",
                "64 B, 256 in flight: trpc req/s ÷ tonic",
                trpc,
                System::Tonic,
                c64,
                8.0,
                true,
                rps,
            ),
            self.std_target(c64),
            self.unary_target(
                "#14",
                "64 B, 256 in flight: trpc (gRPC) req/s ÷ tonic",
                System::TrpcGrpc,
                System::Tonic,
                c64,
                1.2,
                true,
                rps,
            ),
            self.unary_target(
                "#14",
                "64 B, 256 in flight: trpc (gRPC) server CPU/call ÷ tonic",
                System::TrpcGrpc,
                System::Tonic,
                c64,
                1.0,
                false,
                |s| s.server_cpu_us,
            ),
            self.unary_target(
                "#6",
                "4 KiB, 64 in flight: trpc req/s ÷ raw",
                trpc,
                raw,
                self.cell(4096, 64),
                0.85,
                true,
                rps,
            ),
            self.unary_target(
                "#6",
                "64 B, 1 in flight: trpc p50 ÷ raw p50",
                trpc,
                raw,
                self.cell(64, 1),
                1.3,
                false,
                p50,
            ),
            Target {
                source: "#6",
                what: "server memory per idle connection, trpc".into(),
                measured: self.results.memory.get(&trpc).map(|m| m.per_conn_kib),
                goal: 8.0,
                at_least: false,
                unit: " KiB",
            },
            Target {
                source: "#6",
                what: format!("{} round trip: trpc MiB/s ÷ raw", fmt_size(self.plan.big)),
                measured: self.big_ratio(trpc),
                goal: 0.7,
                at_least: true,
                unit: "×",
            },
            Target {
                source: "#6",
                what: "streaming download: trpc MiB/s ÷ raw".into(),
                measured: self.stream_ratio(trpc),
                goal: 0.7,
                at_least: true,
                unit: "×",
            },
        ]
    }

    /// The standard stack against the bare stack, side by side in the layer
    /// costs (issue #12).
    fn layer_target(&self) -> Target {
        let measured = match (
            self.results.layers.get(&System::TrpcStd),
            self.results.layers.get(&System::Trpc),
        ) {
            (Some(a), Some(b)) if a.len() == b.len() && !a.is_empty() => Some(median(
                a.iter().zip(b).map(|(x, y)| x.rps / y.rps).collect(),
            )),
            _ => None,
        };
        Target {
            source: "#12",
            what: format!(
                "{} B, {} in flight: trpc standard stack req/s ÷ bare",
                LAYER_CELL.payload, LAYER_CELL.concurrency
            ),
            measured,
            goal: 0.75,
            at_least: true,
            unit: "×",
        }
    }

    /// Median of the per-round ratios `a ÷ b` of the wire generator's req/s.
    fn wire_ratio(&self, a: System, b: System) -> Option<f64> {
        match (self.results.wire.get(&a), self.results.wire.get(&b)) {
            (Some(x), Some(y)) if x.len() == y.len() && !x.is_empty() => Some(median(
                x.iter().zip(y).map(|(x, y)| x.rps / y.rps).collect(),
            )),
            _ => None,
        }
    }

    /// Issue #11's trpc ÷ raw with the one load generator for both servers.
    fn wire_target(&self) -> Target {
        Target {
            source: "#11",
            what: format!(
                "{} B, {} in flight, one load generator for both servers: trpc req/s ÷ raw",
                LAYER_CELL.payload, LAYER_CELL.concurrency
            ),
            measured: self.wire_ratio(System::Trpc, System::Raw),
            goal: 0.6,
            at_least: true,
            unit: "×",
        }
    }

    fn fmt_wire(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.results.wire.is_empty() {
            return Ok(());
        }
        writeln!(f)?;
        writeln!(
            f,
            "### Servers alone: one load generator for all ({} × {} in flight)",
            fmt_size(LAYER_CELL.payload),
            LAYER_CELL.concurrency
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "The same client drives every server: one thread writing pre-encoded request \
             frames and checking every reply (`trpc-bench wire`), so the ratios price the \
             servers only."
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "| server | req/s | vs raw | server CPU/call | generator CPU/call |"
        )?;
        writeln!(f, "|---|---:|---:|---:|---:|")?;
        for &sys in wire::SYSTEMS {
            let Some(v) = self.results.wire.get(&sys) else {
                continue;
            };
            let m = |g: fn(&WireSample) -> f64| median(v.iter().map(g).collect());
            writeln!(
                f,
                "| {} | {} | {} | {} | {} |",
                sys.label(),
                rate(m(|s| s.rps)),
                ratio_cell(self.wire_ratio(sys, System::Raw)),
                us(m(|s| s.server_cpu_us)),
                us(m(|s| s.client_cpu_us)),
            )?;
        }
        Ok(())
    }

    fn std_target(&self, cell: Option<Cell>) -> Target {
        let what = "64 B, 256 in flight: trpc standard stack req/s ÷ raw";
        match System::standard_stack() {
            Some(std) => {
                self.unary_target("#6", what, std, System::Raw, cell, 0.4, true, |s| s.rps)
            }
            None => Target {
                source: "#6",
                what: what.into(),
                measured: None,
                goal: 0.4,
                at_least: true,
                unit: "×",
            },
        }
    }

    fn big_ratio(&self, sys: System) -> Option<f64> {
        let (a, b) = (
            self.results.big.get(&sys)?,
            self.results.big.get(&System::Raw)?,
        );
        (a.len() == b.len()).then(|| {
            median(
                a.iter()
                    .zip(b)
                    .map(|(x, y)| y.as_secs_f64() / x.as_secs_f64())
                    .collect(),
            )
        })
    }

    fn stream_ratio(&self, sys: System) -> Option<f64> {
        let (a, b) = (
            self.results.stream.get(&sys)?,
            self.results.stream.get(&System::Raw)?,
        );
        (a.len() == b.len()).then(|| median(a.iter().zip(b).map(|(x, y)| x / y).collect()))
    }
}

fn us(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0} µs")
    } else {
        format!("{v:.1} µs")
    }
}

fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn mib_s(bytes_per_sec: f64) -> String {
    format!("{:.0}", bytes_per_sec / (1 << 20) as f64)
}

impl Report {
    /// Median over rounds of `f(sample of sys) - f(sample of bare trpc)`.
    fn layer_delta(&self, sys: System, f: fn(&Sample) -> f64) -> f64 {
        let (Some(a), Some(b)) = (
            self.results.layers.get(&sys),
            self.results.layers.get(&System::Trpc),
        ) else {
            return f64::NAN;
        };
        median(a.iter().zip(b).map(|(x, y)| f(x) - f(y)).collect())
    }

    fn fmt_layers(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.results.layers.is_empty() {
            return Ok(());
        }
        writeln!(f)?;
        writeln!(
            f,
            "### What each layer of the standard stack costs ({} × {} in flight, same layer on client and server)",
            fmt_size(LAYER_CELL.payload),
            LAYER_CELL.concurrency
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "| stack | req/s | vs bare | server CPU/call | Δ server | client CPU/call | Δ client |"
        )?;
        writeln!(f, "|---|---:|---:|---:|---:|---:|---:|")?;
        let bare = self.results.layers.get(&System::Trpc);
        for &sys in System::LAYERS {
            let Some(v) = self.results.layers.get(&sys) else {
                continue;
            };
            let m = |g: fn(&Sample) -> f64| median(v.iter().map(g).collect());
            let vs = bare
                .filter(|b| b.len() == v.len())
                .map(|b| median(v.iter().zip(b).map(|(x, y)| x.rps / y.rps).collect()));
            let delta = |d: f64| {
                if sys == System::Trpc {
                    "–".to_string()
                } else {
                    format!("{:+.2} µs", d)
                }
            };
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {} | {} |",
                sys.label(),
                rate(m(|s| s.rps)),
                ratio_cell(vs),
                us(m(|s| s.server_cpu_us)),
                delta(self.layer_delta(sys, |s| s.server_cpu_us)),
                us(m(|s| s.client_cpu_us)),
                delta(self.layer_delta(sys, |s| s.client_cpu_us)),
            )?;
        }
        Ok(())
    }
}

fn ratio_cell(r: Option<f64>) -> String {
    match r {
        Some(r) if !r.is_nan() => format!("{r:.2}×"),
        _ => "–".into(),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.plan;
        let secs = self.elapsed.as_secs();
        writeln!(f, "- Machine: {}", machine())?;
        writeln!(f, "- trpc: {}", self.version)?;
        writeln!(
            f,
            "- Command: `{}` (took {}m {:02}s)",
            p.command,
            secs / 60,
            secs % 60
        )?;
        writeln!(
            f,
            "- Every server runs in its own process; every server and the client use a tokio \
             multi-thread runtime with {} worker threads; TCP_NODELAY everywhere; one release \
             profile (lto = \"fat\", codegen-units = 1) for all systems.",
            p.threads
        )?;
        writeln!(
            f,
            "- {} round(s); in each, every system runs every cell ({} ms warm-up, then a {} ms \
             window), in an order rotated per round. Figures are medians over rounds; ratios are \
             medians of the per-round ratios (measured side by side). Server CPU is utime + stime \
             of the server process over the window (/proc/<pid>/stat) divided by the calls.",
            p.rounds,
            p.warmup.as_millis(),
            p.window.as_millis()
        )?;
        writeln!(f)?;
        writeln!(f, "### Unary echo, callers sharing one connection")?;
        writeln!(f)?;
        writeln!(f, "| payload | in flight | system | req/s | vs raw | p50 | p99 | server CPU/call | client CPU/call |")?;
        writeln!(f, "|---|---:|---|---:|---:|---:|---:|---:|---:|")?;
        for &cell in &self.cells {
            for &sys in &p.systems {
                let s = self.samples(sys, cell);
                if s.is_empty() {
                    continue;
                }
                let m = |g: fn(&Sample) -> f64| median(s.iter().map(g).collect());
                let vs_raw = if sys == System::Raw {
                    "1.00×".to_string()
                } else {
                    ratio_cell(self.ratio(sys, System::Raw, cell, |s| s.rps))
                };
                writeln!(
                    f,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    fmt_size(cell.payload),
                    cell.concurrency,
                    sys.label(),
                    rate(m(|s| s.rps)),
                    vs_raw,
                    us(m(|s| s.p50_us)),
                    us(m(|s| s.p99_us)),
                    us(m(|s| s.server_cpu_us)),
                    us(m(|s| s.client_cpu_us)),
                )?;
            }
        }
        self.fmt_wire(f)?;
        self.fmt_layers(f)?;
        writeln!(f)?;
        writeln!(f, "### Targets")?;
        writeln!(f)?;
        writeln!(f, "| issue | target | goal | measured | verdict |")?;
        writeln!(f, "|---|---|---:|---:|---|")?;
        for t in self.targets() {
            let goal = format!(
                "{} {:.2}{}",
                if t.at_least { "≥" } else { "≤" },
                t.goal,
                t.unit
            );
            let measured = match t.measured {
                Some(m) if !m.is_nan() => format!("{m:.2}{}", t.unit),
                _ => "–".into(),
            };
            writeln!(
                f,
                "| {} | {} | {goal} | {measured} | {} |",
                t.source,
                t.what,
                t.verdict()
            )?;
        }
        if !self.results.big.is_empty() {
            writeln!(f)?;
            writeln!(f, "### One {} message, round trip", fmt_size(p.big))?;
            writeln!(f)?;
            writeln!(
                f,
                "MiB/s counts the bytes of both directions (2 × {}) per round trip.",
                fmt_size(p.big)
            )?;
            writeln!(f)?;
            writeln!(f, "| system | round trip | MiB/s | vs raw |")?;
            writeln!(f, "|---|---:|---:|---:|")?;
            for &sys in &p.systems {
                let Some(v) = self.results.big.get(&sys) else {
                    continue;
                };
                let secs = median(v.iter().map(|d| d.as_secs_f64()).collect());
                let vs = if sys == System::Raw {
                    Some(1.0)
                } else {
                    self.big_ratio(sys)
                };
                writeln!(
                    f,
                    "| {} | {} | {} | {} |",
                    sys.label(),
                    us(secs * 1e6),
                    mib_s(2.0 * p.big as f64 / secs),
                    ratio_cell(vs)
                )?;
            }
        }
        if !p.unary_only {
            writeln!(f)?;
            writeln!(
                f,
                "### Streaming: a server-streaming download of {} in {} messages",
                fmt_size(p.stream_total as usize),
                fmt_size(p.stream_chunk as usize)
            )?;
            writeln!(f)?;
            writeln!(f, "| system | MiB/s | vs raw |")?;
            writeln!(f, "|---|---:|---:|")?;
            for &sys in &p.systems {
                match self.results.stream.get(&sys) {
                    Some(v) => {
                        let vs = if sys == System::Raw {
                            Some(1.0)
                        } else {
                            self.stream_ratio(sys)
                        };
                        writeln!(
                            f,
                            "| {} | {} | {} |",
                            sys.label(),
                            mib_s(median(v.clone())),
                            ratio_cell(vs)
                        )?;
                    }
                    None => writeln!(f, "| {} | – | – |", sys.label())?,
                }
            }
        }
        if !self.results.memory.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "### Server memory per idle connection ({} connections, each used for one 64 B call)",
                p.idle_conns
            )?;
            writeln!(f)?;
            writeln!(
                f,
                "| system | RSS, 1 connection | RSS, +{} idle | per connection |",
                p.idle_conns
            )?;
            writeln!(f, "|---|---:|---:|---:|")?;
            for &sys in &p.systems {
                let Some(m) = self.results.memory.get(&sys) else {
                    continue;
                };
                writeln!(
                    f,
                    "| {} | {} KiB | {} KiB | {:.1} KiB |",
                    sys.label(),
                    m.before_kib,
                    m.after_kib,
                    m.per_conn_kib
                )?;
            }
        }
        if !self.results.notes.is_empty() {
            writeln!(f)?;
            let mut notes = String::new();
            for n in &self.results.notes {
                let _ = writeln!(notes, "- {n}");
            }
            write!(f, "Notes:\n\n{notes}")?;
        }
        Ok(())
    }
}
