//! [`TransportCollector`]: the core's [`TransportStats`] as prometheus metrics.

use std::fmt;
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntGauge, Opts};
use trpc::stats::TransportStats;

/// Exports the connection and wire-byte counters of a server or client
/// ([`Server::transport_stats`](trpc::Server::transport_stats),
/// [`Endpoint::transport_stats`](trpc::Endpoint::transport_stats)):
///
/// | name | type |
/// |---|---|
/// | `trpc_{side}_connections_open` | gauge |
/// | `trpc_{side}_connections_opened_total` | counter |
/// | `trpc_{side}_connections_closed_total` | counter |
/// | `trpc_{side}_bytes_received_total` | counter (wire bytes, frames included) |
/// | `trpc_{side}_bytes_sent_total` | counter |
///
/// Values are read from the stats at scrape time.
///
/// ```
/// use trpc::stats::TransportStats;
/// use trpc_layers::metrics::TransportCollector;
///
/// let registry = prometheus::Registry::new();
/// let stats = TransportStats::new();
/// registry.register(Box::new(TransportCollector::server(stats.clone()))).unwrap();
/// // Server::builder().transport_stats(stats) ...
/// ```
pub struct TransportCollector {
    stats: Arc<TransportStats>,
    open: IntGauge,
    opened: IntCounter,
    closed: IntCounter,
    received: IntCounter,
    sent: IntCounter,
    // Serialises scrapes: counters are refreshed with reset + inc_by.
    scrape: Mutex<()>,
}

impl TransportCollector {
    /// Server transport metrics (`trpc_server_*`).
    pub fn server(stats: Arc<TransportStats>) -> Self {
        Self::new(stats, "trpc", "server")
    }

    /// Client transport metrics (`trpc_client_*`).
    pub fn client(stats: Arc<TransportStats>) -> Self {
        Self::new(stats, "trpc", "client")
    }

    /// Metrics named `{namespace}_{side}_*`.
    ///
    /// # Panics
    /// If `namespace` or `side` make invalid metric names.
    pub fn new(stats: Arc<TransportStats>, namespace: &str, side: &str) -> Self {
        let name = |n: &str| format!("{namespace}_{side}_{n}");
        let counter = |n: &str, help: &str| {
            IntCounter::with_opts(Opts::new(name(n), help))
                .unwrap_or_else(|e| panic!("invalid metric name {}: {e}", name(n)))
        };
        TransportCollector {
            stats,
            open: IntGauge::with_opts(Opts::new(name("connections_open"), "Open connections."))
                .unwrap_or_else(|e| panic!("invalid metric name: {e}")),
            opened: counter("connections_opened_total", "Connections opened."),
            closed: counter("connections_closed_total", "Connections closed."),
            received: counter("bytes_received_total", "Bytes read from connections."),
            sent: counter("bytes_sent_total", "Bytes written to connections."),
            scrape: Mutex::new(()),
        }
    }
}

impl Collector for TransportCollector {
    fn desc(&self) -> Vec<&Desc> {
        [
            self.open.desc(),
            self.opened.desc(),
            self.closed.desc(),
            self.received.desc(),
            self.sent.desc(),
        ]
        .concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        let s = &self.stats;
        self.open.set(s.open() as i64);
        for (c, v) in [
            (&self.opened, s.opened_total()),
            (&self.closed, s.closed_total()),
            (&self.received, s.bytes_read()),
            (&self.sent, s.bytes_written()),
        ] {
            c.reset();
            c.inc_by(v);
        }
        [
            self.open.collect(),
            self.opened.collect(),
            self.closed.collect(),
            self.received.collect(),
            self.sent.collect(),
        ]
        .concat()
    }
}

impl fmt::Debug for TransportCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportCollector")
            .field("stats", &self.stats)
            .finish()
    }
}
