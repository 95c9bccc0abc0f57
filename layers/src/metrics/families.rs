//! The registered metric families and the per-method handles of a side.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use tokio::time::Instant;
use trpc::{Code, Method};

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

struct Families {
    side: &'static str,
    calls: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGaugeVec,
    request_bytes: IntCounterVec,
    response_bytes: IntCounterVec,
    request_messages: IntCounterVec,
    response_messages: IntCounterVec,
    methods: RwLock<HashMap<Method, Arc<MethodMetrics>, rustc_hash::FxBuildHasher>>,
    other: OnceLock<Arc<MethodMetrics>>,
    max_methods: usize,
}

/// The handles of one method: counting is a few atomic operations.
pub(crate) struct MethodMetrics {
    method: Box<str>,
    calls_vec: IntCounterVec,
    calls: [OnceLock<IntCounter>; 17],
    pub(crate) in_flight: IntGauge,
    duration: Histogram,
    request_bytes: IntCounter,
    response_bytes: IntCounter,
    request_messages: IntCounter,
    response_messages: IntCounter,
}

impl MethodMetrics {
    /// Counts one message of `len` bytes.
    pub(crate) fn count(&self, dir: Direction, len: usize) {
        let (bytes, messages) = match dir {
            Direction::Request => (&self.request_bytes, &self.request_messages),
            Direction::Response => (&self.response_bytes, &self.response_messages),
        };
        bytes.inc_by(len as u64);
        messages.inc();
    }

    /// Records the end of a call.
    pub(crate) fn finish(&self, code: Code, start: Instant) {
        self.calls[code as usize]
            .get_or_init(|| {
                self.calls_vec
                    .with_label_values(&[&*self.method, code.as_str()])
            })
            .inc();
        self.duration.observe(start.elapsed().as_secs_f64());
        self.in_flight.dec();
    }
}

impl fmt::Debug for MethodMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MethodMetrics")
            .field("method", &self.method)
            .finish()
    }
}

fn ns(namespace: &str, side: &str, name: &str) -> String {
    format!("{namespace}_{side}_{name}")
}

impl RpcMetrics {
    pub(crate) fn register(
        registry: &Registry,
        namespace: &str,
        side: &'static str,
        buckets: Vec<f64>,
        max_methods: usize,
    ) -> prometheus::Result<RpcMetrics> {
        let who = if side == "client" { "made" } else { "handled" };
        let counter = |name: &str, help: String, labels: &[&str]| {
            IntCounterVec::new(Opts::new(ns(namespace, side, name), help), labels)
        };
        let families = Families {
            side,
            calls: counter(
                "calls_total",
                format!("Calls {who}, by method and status code."),
                &["method", "code"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    ns(namespace, side, "call_duration_seconds"),
                    format!("Latency of calls {who}, to the end of the response, in seconds."),
                )
                .buckets(buckets),
                &["method"],
            )?,
            in_flight: IntGaugeVec::new(
                Opts::new(
                    ns(namespace, side, "calls_in_flight"),
                    format!("Calls {who} that have not finished."),
                ),
                &["method"],
            )?,
            request_bytes: counter(
                "request_bytes_total",
                "Request message payload bytes.".into(),
                &["method"],
            )?,
            response_bytes: counter(
                "response_bytes_total",
                "Response message payload bytes.".into(),
                &["method"],
            )?,
            request_messages: counter(
                "request_messages_total",
                "Request messages (one per unary call; each message of a stream).".into(),
                &["method"],
            )?,
            response_messages: counter(
                "response_messages_total",
                "Response messages (one per unary call; each message of a stream).".into(),
                &["method"],
            )?,
            methods: RwLock::new(HashMap::default()),
            other: OnceLock::new(),
            max_methods,
        };
        registry.register(Box::new(families.calls.clone()))?;
        registry.register(Box::new(families.duration.clone()))?;
        registry.register(Box::new(families.in_flight.clone()))?;
        registry.register(Box::new(families.request_bytes.clone()))?;
        registry.register(Box::new(families.response_bytes.clone()))?;
        registry.register(Box::new(families.request_messages.clone()))?;
        registry.register(Box::new(families.response_messages.clone()))?;
        Ok(RpcMetrics {
            inner: Arc::new(families),
        })
    }

    /// `"client"` or `"server"`.
    pub fn side(&self) -> &'static str {
        self.inner.side
    }

    /// The handles of `method` (created on first use).
    pub(crate) fn method(&self, method: &Method) -> Arc<MethodMetrics> {
        let f = &*self.inner;
        {
            let map = f.methods.read().unwrap_or_else(|e| e.into_inner());
            if let Some(m) = map.get(method) {
                return m.clone();
            }
        }
        let mut map = f.methods.write().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = map.get(method) {
            return m.clone();
        }
        if map.len() >= f.max_methods {
            return f
                .other
                .get_or_init(|| Arc::new(self.handles(OTHER_METHOD)))
                .clone();
        }
        let m = Arc::new(self.handles(method.as_str()));
        map.insert(method.clone(), m.clone());
        m
    }

    fn handles(&self, method: &str) -> MethodMetrics {
        let f = &*self.inner;
        let l = &[method];
        MethodMetrics {
            method: method.into(),
            calls_vec: f.calls.clone(),
            calls: Default::default(),
            in_flight: f.in_flight.with_label_values(l),
            duration: f.duration.with_label_values(l),
            request_bytes: f.request_bytes.with_label_values(l),
            response_bytes: f.response_bytes.with_label_values(l),
            request_messages: f.request_messages.with_label_values(l),
            response_messages: f.response_messages.with_label_values(l),
        }
    }
}

impl fmt::Debug for RpcMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcMetrics")
            .field("side", &self.inner.side)
            .field("max_methods", &self.inner.max_methods)
            .finish()
    }
}
