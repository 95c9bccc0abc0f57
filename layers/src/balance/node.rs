//! One endpoint of a balancer: its channel and what is known of its load and
//! health.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;
use trpc::Channel;

use super::outlier::{OutlierDetection, OutlierState};
use crate::discovery::Instance;

/// Added to every latency estimate in the p2c cost, so that an endpoint
/// without replies yet (estimate 0) still costs more with each call in
/// flight: new endpoints are tried first, but not flooded.
const BASE_COST_NS: f64 = 50_000.0;

pub(crate) struct Node {
    pub(crate) instance: Instance,
    /// A stable hash of the address (consistent hashing).
    pub(crate) addr_hash: u64,
    pub(crate) channel: Channel,
    /// Calls in flight through this balancer.
    pub(crate) in_flight: AtomicUsize,
    /// A connection is established (or none was tried and failed yet).
    pub(crate) up: AtomicBool,
    /// A background connect/probe task is running.
    pub(crate) probing: AtomicBool,
    /// An active health check task is running.
    pub(crate) checking: AtomicBool,
    /// The last active health check said SERVING (true without checks).
    pub(crate) healthy: AtomicBool,
    /// Gone from discovery: background tasks stop.
    pub(crate) removed: AtomicBool,
    /// Server-reported utilization (f64 bits), 0 without reports.
    pub(crate) utilization: AtomicU64,
    /// Server-reported calls in flight.
    pub(crate) server_in_flight: AtomicU64,
    /// Peak-EWMA latency: (nanoseconds, when last updated).
    ewma: Mutex<(f64, Instant)>,
    pub(crate) outlier: Mutex<OutlierState>,
    /// End of the current ejection in nanoseconds after [`base`], 0 if never
    /// ejected: read on every pick without taking the outlier lock.
    ejected_until: AtomicU64,
    /// Calls completed (for tallies and tests).
    pub(crate) completed: AtomicU64,
}

impl Node {
    pub(crate) fn new(instance: Instance, channel: Channel) -> Node {
        Node {
            addr_hash: super::pick::stable_hash(instance.addr.as_str()),
            instance,
            channel,
            in_flight: AtomicUsize::new(0),
            up: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            checking: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            removed: AtomicBool::new(false),
            utilization: AtomicU64::new(0f64.to_bits()),
            server_in_flight: AtomicU64::new(0),
            ewma: Mutex::new((0.0, Instant::now())),
            outlier: Mutex::new(OutlierState::default()),
            ejected_until: AtomicU64::new(0),
            completed: AtomicU64::new(0),
        }
    }

    pub(crate) fn addr(&self) -> &str {
        &self.instance.addr
    }

    pub(crate) fn utilization(&self) -> f64 {
        f64::from_bits(self.utilization.load(Ordering::Relaxed))
    }

    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && since_base(now) < until
    }

    /// Usable by the first tier of picking: connected, healthy, not ejected.
    pub(crate) fn is_available(&self, now: Instant) -> bool {
        self.up.load(Ordering::Relaxed)
            && self.healthy.load(Ordering::Relaxed)
            && !self.is_ejected(now)
    }

    /// Healthy and not ejected, connected or not.
    pub(crate) fn is_eligible(&self, now: Instant) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.is_ejected(now)
    }

    /// The peak-EWMA latency in nanoseconds (0 before the first reply),
    /// decaying toward 0 while no reply arrives, so an endpoint that was
    /// slow once is tried again later.
    pub(crate) fn latency_ns(&self, now: Instant, decay: Duration) -> f64 {
        let (estimate, stamp) = *self.ewma.lock().unwrap_or_else(|e| e.into_inner());
        estimate * decay_factor(now.saturating_duration_since(stamp), decay)
    }

    /// The p2c cost: (latency + a base) × (calls in flight + 1) × (1 + reported utilization).
    pub(crate) fn cost(&self, now: Instant, decay: Duration) -> f64 {
        let pending = self.in_flight.load(Ordering::Relaxed) as f64;
        (self.latency_ns(now, decay) + BASE_COST_NS) * (pending + 1.0) * (1.0 + self.utilization())
    }

    /// Records a reply's round trip: a peak (a slower reply) is taken at once,
    /// faster replies are averaged in with a weight that grows with the time
    /// since the last one (`decay` is the time constant).
    pub(crate) fn observe_rtt(&self, rtt: Duration, now: Instant, decay: Duration) {
        let rtt = rtt.as_nanos() as f64;
        let mut ewma = self.ewma.lock().unwrap_or_else(|e| e.into_inner());
        let (estimate, stamp) = *ewma;
        let next = if rtt > estimate {
            rtt
        } else {
            let w = decay_factor(now.saturating_duration_since(stamp), decay);
            estimate * w + rtt * (1.0 - w)
        };
        *ewma = (next, now);
    }

    /// Records an outcome for outlier detection; returns true if the node was
    /// ejected by it.
    pub(crate) fn observe_outcome(
        &self,
        failed: bool,
        now: Instant,
        config: &OutlierDetection,
        may_eject: impl FnOnce() -> bool,
    ) -> bool {
        let mut state = self.outlier.lock().unwrap_or_else(|e| e.into_inner());
        let ejected = state.observe(failed, now, config, may_eject);
        if let (true, Some(until)) = (ejected, state.ejected_until()) {
            self.ejected_until
                .store(since_base(until).max(1), Ordering::Relaxed);
        }
        ejected
    }
}

/// A fixed point in time that ejection deadlines are counted from.
fn base() -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Nanoseconds from [`base`] to `t` (0 for earlier instants).
fn since_base(t: Instant) -> u64 {
    t.saturating_duration_since(base()).as_nanos() as u64
}

/// `e^(-elapsed/decay)`.
fn decay_factor(elapsed: Duration, decay: Duration) -> f64 {
    (-(elapsed.as_nanos() as f64) / decay.as_nanos().max(1) as f64).exp()
}

/// Connects `node` in the background until a connection is up (or the node
/// is removed), with backoff; marks it up.
pub(crate) fn spawn_connect(node: &Arc<Node>, timeout: Duration) {
    if node.probing.swap(true, Ordering::AcqRel) {
        return;
    }
    let weak: Weak<Node> = Arc::downgrade(node);
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(50);
        loop {
            let Some(node) = weak.upgrade() else { return };
            if node.removed.load(Ordering::Relaxed) {
                node.probing.store(false, Ordering::Release);
                return;
            }
            let channel = node.channel.clone();
            drop(node);
            let ok = matches!(
                tokio::time::timeout(timeout, channel.wait_connected()).await,
                Ok(Ok(()))
            );
            let Some(node) = weak.upgrade() else { return };
            if ok {
                node.up.store(true, Ordering::Release);
                node.probing.store(false, Ordering::Release);
                tracing::debug!(addr = node.addr(), "endpoint connected");
                return;
            }
            drop(node);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    });
}
