//! The call metrics of a side: per-method counters kept in per-thread stripes
//! (counting touches no cache line another thread writes), summed and exported
//! as prometheus families when the registry is scraped.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use prometheus::Registry;
use trpc::{Code, Method, Protocol};

use crate::util::{slot, slots};
use crate::Side;

/// The label value shared by methods beyond the `max_methods` limit.
pub(crate) const OTHER_METHOD: &str = "other";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Request,
    Response,
}

/// The call metrics of one side (client or server), registered in a
/// [`Registry`]; cheap to clone. Build it with
/// [`MetricsLayer::builder`](super::MetricsLayer::builder).
#[derive(Clone)]
pub struct RpcMetrics {
    inner: Arc<Families>,
}

/// What a side exports, and every method seen so far.
struct Families {
    /// Unique among every `RpcMetrics` ever made: what per-thread caches
    /// key on (an address could be reused).
    id: u64,
    side: Side,
    descs: [Desc; 7],
    /// Upper bounds of the latency buckets, in seconds and in nanoseconds.
    bounds: Box<[f64]>,
    bounds_nanos: Arc<[u64]>,
    methods: RwLock<HashMap<(Protocol, Method), Arc<MethodStats>, rustc_hash::FxBuildHasher>>,
    /// Every distinct [`MethodStats`], in creation order (what a scrape reads).
    all: RwLock<Vec<Arc<MethodStats>>>,
    max_methods: usize,
}

/// Indexes into [`Families::descs`].
const CALLS: usize = 0;
const DURATION: usize = 1;
const IN_FLIGHT: usize = 2;
const REQUEST_BYTES: usize = 3;
const RESPONSE_BYTES: usize = 4;
const REQUEST_MESSAGES: usize = 5;
const RESPONSE_MESSAGES: usize = 6;

/// The metrics of one method on one protocol: a stripe per thread slot.
pub(crate) struct MethodStats {
    protocol: Protocol,
    label: Box<str>,
    /// The shared entry of methods beyond the limit.
    other: bool,
    stripes: Box<[Arc<Stripe>]>,
}

/// The counters of one method, written by the threads of one slot.
pub(crate) struct Stripe {
    started: AtomicU64,
    finished: [AtomicU64; Code::ALL.len()],
    request_bytes: AtomicU64,
    request_messages: AtomicU64,
    response_bytes: AtomicU64,
    response_messages: AtomicU64,
    /// Calls per latency bucket (not cumulative); the last is `+Inf`.
    buckets: Box<[AtomicU64]>,
    duration_nanos: AtomicU64,
    bounds_nanos: Arc<[u64]>,
}

impl fmt::Debug for Stripe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stripe")
            .field("started", &self.started.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl Stripe {
    fn new(bounds_nanos: Arc<[u64]>) -> Stripe {
        Stripe {
            started: AtomicU64::new(0),
            finished: Default::default(),
            request_bytes: AtomicU64::new(0),
            request_messages: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
            response_messages: AtomicU64::new(0),
            buckets: (0..=bounds_nanos.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            duration_nanos: AtomicU64::new(0),
            bounds_nanos,
        }
    }

    /// Counts the start of a call.
    pub(crate) fn start(&self) {
        self.started.fetch_add(1, Relaxed);
    }

    /// Counts one message of `len` bytes.
    pub(crate) fn count(&self, dir: Direction, len: usize) {
        let (bytes, messages) = match dir {
            Direction::Request => (&self.request_bytes, &self.request_messages),
            Direction::Response => (&self.response_bytes, &self.response_messages),
        };
        bytes.fetch_add(len as u64, Relaxed);
        messages.fetch_add(1, Relaxed);
    }

    /// Records the end of a call that took `elapsed`.
    pub(crate) fn finish(&self, code: Code, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        // Buckets are inclusive upper bounds (`le`).
        let bucket = self.bounds_nanos.partition_point(|&b| b < nanos);
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.duration_nanos.fetch_add(nanos, Relaxed);
        self.finished[code as usize].fetch_add(1, Relaxed);
    }
}

impl MethodStats {
    fn new(protocol: Protocol, label: &str, other: bool, bounds_nanos: &Arc<[u64]>) -> MethodStats {
        MethodStats {
            protocol,
            label: label.into(),
            other,
            stripes: (0..slots())
                .map(|_| Arc::new(Stripe::new(bounds_nanos.clone())))
                .collect(),
        }
    }

    /// The stripe this thread counts in.
    pub(crate) fn stripe(&self) -> Arc<Stripe> {
        self.stripes[slot()].clone()
    }

    /// Sums every stripe.
    fn totals(&self) -> Totals {
        let mut t = Totals {
            started: 0,
            finished: [0; Code::ALL.len()],
            request_bytes: 0,
            request_messages: 0,
            response_bytes: 0,
            response_messages: 0,
            buckets: vec![0; self.stripes.first().map_or(0, |s| s.buckets.len())],
            duration_nanos: 0,
        };
        for s in self.stripes.iter() {
            // Finished before started: a call that finishes while we read is
            // never counted as finished but not started.
            for (sum, n) in t.finished.iter_mut().zip(&s.finished) {
                *sum += n.load(Relaxed);
            }
            t.started += s.started.load(Relaxed);
            t.request_bytes += s.request_bytes.load(Relaxed);
            t.request_messages += s.request_messages.load(Relaxed);
            t.response_bytes += s.response_bytes.load(Relaxed);
            t.response_messages += s.response_messages.load(Relaxed);
            for (sum, n) in t.buckets.iter_mut().zip(s.buckets.iter()) {
                *sum += n.load(Relaxed);
            }
            t.duration_nanos += s.duration_nanos.load(Relaxed);
        }
        t
    }
}

impl fmt::Debug for MethodStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MethodStats")
            .field("protocol", &self.protocol)
            .field("method", &self.label)
            .finish()
    }
}

struct Totals {
    started: u64,
    finished: [u64; Code::ALL.len()],
    request_bytes: u64,
    request_messages: u64,
    response_bytes: u64,
    response_messages: u64,
    buckets: Vec<u64>,
    duration_nanos: u64,
}

fn name(namespace: &str, side: Side, name: &str) -> String {
    format!("{namespace}_{side}_{name}")
}

impl RpcMetrics {
    pub(crate) fn register(
        registry: &Registry,
        namespace: &str,
        side: Side,
        buckets: Vec<f64>,
        max_methods: usize,
    ) -> prometheus::Result<RpcMetrics> {
        let who = match side {
            Side::Client => "made",
            Side::Server => "handled",
        };
        let desc = |n: &str, help: String, labels: &[&str]| {
            Desc::new(
                name(namespace, side, n),
                help,
                labels.iter().map(|l| l.to_string()).collect(),
                HashMap::new(),
            )
        };
        let per_method = &["method", "protocol"];
        let descs = [
            desc(
                "calls_total",
                format!("Calls {who}, by method, protocol and status code."),
                &["code", "method", "protocol"],
            )?,
            desc(
                "call_duration_seconds",
                format!("Latency of calls {who}, to the end of the response, in seconds."),
                per_method,
            )?,
            desc(
                "calls_in_flight",
                format!("Calls {who} that have not finished."),
                per_method,
            )?,
            desc(
                "request_bytes_total",
                "Request message payload bytes.".into(),
                per_method,
            )?,
            desc(
                "response_bytes_total",
                "Response message payload bytes.".into(),
                per_method,
            )?,
            desc(
                "request_messages_total",
                "Request messages (one per unary call; each message of a stream).".into(),
                per_method,
            )?,
            desc(
                "response_messages_total",
                "Response messages (one per unary call; each message of a stream).".into(),
                per_method,
            )?,
        ];
        let mut bounds = buckets;
        bounds.retain(|b| b.is_finite());
        if bounds.is_empty() || bounds.windows(2).any(|w| w[0] >= w[1]) {
            return Err(prometheus::Error::Msg(format!(
                "histogram buckets must be finite and strictly increasing: {bounds:?}"
            )));
        }
        let bounds_nanos: Arc<[u64]> = bounds
            .iter()
            .map(|s| Duration::try_from_secs_f64(*s).map_or(0, |d| d.as_nanos() as u64))
            .collect();
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let families = Arc::new(Families {
            id: NEXT_ID.fetch_add(1, Relaxed),
            side,
            descs,
            bounds: bounds.into(),
            bounds_nanos,
            methods: RwLock::new(HashMap::default()),
            all: RwLock::new(Vec::new()),
            max_methods,
        });
        registry.register(Box::new(Exporter(families.clone())))?;
        Ok(RpcMetrics { inner: families })
    }

    /// What tells these metrics apart from every other `RpcMetrics`.
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    /// The side these metrics are of.
    pub fn side(&self) -> Side {
        self.inner.side
    }

    /// The metrics of `method` on `protocol` (created on first use), with
    /// the table's own copy of the name (none for the methods beyond
    /// `max_methods`, which share one entry).
    pub(crate) fn method(
        &self,
        protocol: Protocol,
        method: &Method,
    ) -> (Option<Method>, Arc<MethodStats>) {
        let f = &*self.inner;
        let key = (protocol, method.clone());
        {
            let map = read(&f.methods);
            if let Some(((_, name), m)) = map.get_key_value(&key) {
                return (Some(name.clone()), m.clone());
            }
            if map.len() >= f.max_methods {
                return (None, self.other(protocol));
            }
        }
        let mut map = f.methods.write().unwrap_or_else(|e| e.into_inner());
        if let Some(((_, name), m)) = map.get_key_value(&key) {
            return (Some(name.clone()), m.clone());
        }
        if map.len() >= f.max_methods {
            drop(map);
            return (None, self.other(protocol));
        }
        let stats = Arc::new(MethodStats::new(
            protocol,
            method.as_str(),
            false,
            &f.bounds_nanos,
        ));
        f.all
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(stats.clone());
        // An owned copy: the request's method may share a large read buffer.
        let name = Method::from(method.as_str().to_owned());
        map.insert((protocol, name.clone()), stats.clone());
        (Some(name), stats)
    }

    /// The metrics shared by the methods beyond `max_methods` on `protocol`.
    fn other(&self, protocol: Protocol) -> Arc<MethodStats> {
        let f = &*self.inner;
        let find = |all: &[Arc<MethodStats>]| {
            all.iter()
                .find(|m| m.other && m.protocol == protocol)
                .cloned()
        };
        if let Some(m) = find(&read(&f.all)) {
            return m;
        }
        let mut all = f.all.write().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = find(&all) {
            return m;
        }
        let m = Arc::new(MethodStats::new(
            protocol,
            OTHER_METHOD,
            true,
            &f.bounds_nanos,
        ));
        all.push(m.clone());
        m
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

impl fmt::Debug for RpcMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcMetrics")
            .field("side", &self.inner.side)
            .field("max_methods", &self.inner.max_methods)
            .finish()
    }
}

/// The registered collector: sums the stripes at scrape time.
struct Exporter(Arc<Families>);

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_owned());
    l.set_value(value.to_owned());
    l
}

fn family(desc: &Desc, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut mf = MetricFamily::default();
    mf.set_name(desc.fq_name.clone());
    mf.set_help(desc.help.clone());
    mf.set_field_type(kind);
    mf.set_metric(metrics);
    mf
}

fn counter(labels: Vec<LabelPair>, value: u64) -> proto::Metric {
    let mut c = proto::Counter::default();
    c.set_value(value as f64);
    let mut m = proto::Metric::default();
    m.set_label(labels);
    m.set_counter(c);
    m
}

impl Collector for Exporter {
    fn desc(&self) -> Vec<&Desc> {
        self.0.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let f = &*self.0;
        let methods: Vec<Arc<MethodStats>> = read(&f.all).clone();
        let mut out: [Vec<proto::Metric>; 7] = Default::default();
        for m in &methods {
            let t = m.totals();
            let labels = || {
                vec![
                    label("method", &m.label),
                    label("protocol", m.protocol.as_str()),
                ]
            };
            for (code, &n) in Code::ALL.iter().zip(&t.finished) {
                if n > 0 {
                    let mut l = labels();
                    l.insert(0, label("code", code.as_str()));
                    out[CALLS].push(counter(l, n));
                }
            }
            let mut cumulative = 0;
            let buckets = f
                .bounds
                .iter()
                .zip(&t.buckets)
                .map(|(&bound, &n)| {
                    cumulative += n;
                    let mut b = proto::Bucket::default();
                    b.set_upper_bound(bound);
                    b.set_cumulative_count(cumulative);
                    b
                })
                .collect();
            let count: u64 = t.buckets.iter().sum();
            let mut h = proto::Histogram::default();
            h.set_sample_count(count);
            h.set_sample_sum(t.duration_nanos as f64 / 1e9);
            h.set_bucket(buckets);
            let mut hm = proto::Metric::default();
            hm.set_label(labels());
            hm.set_histogram(h);
            out[DURATION].push(hm);
            let finished: u64 = t.finished.iter().sum();
            let mut g = proto::Gauge::default();
            g.set_value(t.started.saturating_sub(finished) as f64);
            let mut gm = proto::Metric::default();
            gm.set_label(labels());
            gm.set_gauge(g);
            out[IN_FLIGHT].push(gm);
            out[REQUEST_BYTES].push(counter(labels(), t.request_bytes));
            out[RESPONSE_BYTES].push(counter(labels(), t.response_bytes));
            out[REQUEST_MESSAGES].push(counter(labels(), t.request_messages));
            out[RESPONSE_MESSAGES].push(counter(labels(), t.response_messages));
        }
        let kinds = [
            MetricType::COUNTER,
            MetricType::HISTOGRAM,
            MetricType::GAUGE,
            MetricType::COUNTER,
            MetricType::COUNTER,
            MetricType::COUNTER,
            MetricType::COUNTER,
        ];
        f.descs
            .iter()
            .zip(kinds)
            .zip(out)
            .map(|((desc, kind), metrics)| family(desc, kind, metrics))
            .collect()
    }
}
