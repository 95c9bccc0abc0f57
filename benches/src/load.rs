//! The load generator: C callers sharing one client (one connection), a
//! warm-up, then a timed window whose completions, latencies and CPU time are
//! recorded.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

use crate::procfs::{self, ServerProc};
use crate::systems::Client;

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// One measurement of one system in one cell.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sample {
    /// Calls completed per second in the window.
    pub(crate) rps: f64,
    /// Median latency, µs.
    pub(crate) p50_us: f64,
    /// 99th percentile latency, µs.
    pub(crate) p99_us: f64,
    /// Server CPU time (user + system) per call, µs.
    pub(crate) server_cpu_us: f64,
    /// Client (this process) CPU time per call, µs.
    pub(crate) client_cpu_us: f64,
}

/// Drives cells; keeps the per-caller histograms between cells.
#[derive(Debug)]
pub(crate) struct Load {
    spare: Vec<Histogram<u64>>,
    ticks_per_sec: u64,
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

impl Load {
    /// A load generator.
    pub(crate) fn new() -> Self {
        Load {
            spare: Vec::new(),
            ticks_per_sec: procfs::clock_ticks(),
        }
    }

    fn histogram(&mut self) -> Histogram<u64> {
        match self.spare.pop() {
            Some(mut h) => {
                h.reset();
                h
            }
            None => new_histogram(),
        }
    }

    /// Runs `concurrency` callers of `payload` bytes against `client` for
    /// `warmup`, then measures for `window`.
    pub(crate) async fn run_cell(
        &mut self,
        client: &Client,
        server: &ServerProc,
        payload: &Bytes,
        concurrency: usize,
        warmup: Duration,
        window: Duration,
    ) -> Result<Sample, String> {
        let phase = Arc::new(AtomicU8::new(WARMUP));
        let mut tasks = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            let mut client = client.clone();
            let mut hist = self.histogram();
            let phase = phase.clone();
            let payload = payload.clone();
            tasks.push(tokio::spawn(async move {
                let mut calls = 0u64;
                while phase.load(Ordering::Relaxed) != STOP {
                    let start = Instant::now();
                    let reply = client.echo(&payload).await;
                    let took = start.elapsed();
                    match reply {
                        Ok(r) if r.len() == payload.len() => {}
                        Ok(r) => {
                            phase.store(STOP, Ordering::Relaxed);
                            return Err(format!(
                                "echo of {} bytes came back with {} bytes",
                                payload.len(),
                                r.len()
                            ));
                        }
                        Err(e) => {
                            phase.store(STOP, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                    if phase.load(Ordering::Relaxed) == MEASURE {
                        hist.saturating_record(took.as_nanos() as u64);
                        calls += 1;
                    }
                }
                Ok((hist, calls))
            }));
        }
        tokio::time::sleep(warmup).await;
        let server0 = server.cpu_ticks()?;
        let client0 = procfs::cpu_ticks(std::process::id())?;
        let started = Instant::now();
        let _ = phase.compare_exchange(WARMUP, MEASURE, Ordering::Relaxed, Ordering::Relaxed);
        tokio::time::sleep(window).await;
        let _ = phase.compare_exchange(MEASURE, STOP, Ordering::Relaxed, Ordering::Relaxed);
        let elapsed = started.elapsed();
        let server1 = server.cpu_ticks()?;
        let client1 = procfs::cpu_ticks(std::process::id())?;
        phase.store(STOP, Ordering::Relaxed);

        let mut all = self.histogram();
        let mut calls = 0u64;
        let mut error = None;
        for t in tasks {
            match t.await {
                Ok(Ok((hist, n))) => {
                    let _ = all.add(&hist);
                    calls += n;
                    self.spare.push(hist);
                }
                Ok(Err(e)) => error = Some(e),
                Err(e) => error = Some(format!("caller task failed: {e}")),
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        if calls == 0 {
            return Err("no call completed in the window".into());
        }
        let per_call = |ticks: u64| ticks as f64 * 1e6 / self.ticks_per_sec as f64 / calls as f64;
        let sample = Sample {
            rps: calls as f64 / elapsed.as_secs_f64(),
            p50_us: all.value_at_quantile(0.50) as f64 / 1e3,
            p99_us: all.value_at_quantile(0.99) as f64 / 1e3,
            server_cpu_us: per_call(server1.saturating_sub(server0)),
            client_cpu_us: per_call(client1.saturating_sub(client0)),
        };
        self.spare.push(all);
        Ok(sample)
    }
}

/// Runs `calls` echo calls from `concurrency` callers as fast as possible (for
/// profiling: a bounded amount of work, whatever the speed). Returns the time taken.
pub(crate) async fn run_count(
    client: &Client,
    payload: &Bytes,
    concurrency: usize,
    calls: u64,
) -> Result<Duration, String> {
    let left = Arc::new(std::sync::atomic::AtomicU64::new(calls));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut client = client.clone();
        let left = left.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                client.echo(&payload).await?;
            }
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(started.elapsed())
}
