//! [`MetricsLayer`] and its builder.

use prometheus::Registry;
use tower_layer::Layer;

use super::families::RpcMetrics;
use super::Metrics;
use crate::Side;

/// Applies [`Metrics`]. Clones share the metrics.
///
/// Registering the same side twice in one registry fails (prometheus rejects
/// duplicate families): build the layer once and clone it for every stack of
/// that side.
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    metrics: RpcMetrics,
}

impl MetricsLayer {
    /// Client metrics (`trpc_client_*`) registered in `registry`.
    pub fn client(registry: &Registry) -> prometheus::Result<Self> {
        MetricsBuilder::new().client(registry)
    }

    /// Server metrics (`trpc_server_*`) registered in `registry`.
    pub fn server(registry: &Registry) -> prometheus::Result<Self> {
        MetricsBuilder::new().server(registry)
    }

    /// Options: namespace, histogram buckets, method limit.
    pub fn builder() -> MetricsBuilder {
        MetricsBuilder::new()
    }

    /// A layer recording into existing metrics.
    pub fn new(metrics: RpcMetrics) -> Self {
        MetricsLayer { metrics }
    }

    /// The metrics this layer records into.
    pub fn metrics(&self) -> &RpcMetrics {
        &self.metrics
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics::new(inner, self.clone())
    }
}

/// Builds a [`MetricsLayer`] with non-default options.
///
/// ```
/// let registry = prometheus::Registry::new();
/// let layer = trpc_layers::MetricsLayer::builder()
///     .namespace("shop")
///     .buckets(vec![0.001, 0.01, 0.1, 1.0])
///     .client(&registry)
///     .unwrap();
/// # drop(layer);
/// ```
#[derive(Clone, Debug)]
pub struct MetricsBuilder {
    namespace: String,
    buckets: Vec<f64>,
    max_methods: usize,
}

impl Default for MetricsBuilder {
    fn default() -> Self {
        MetricsBuilder::new()
    }
}

impl MetricsBuilder {
    /// The defaults: namespace `trpc`, buckets from 0.5 ms to 10 s, 1000 methods.
    pub fn new() -> Self {
        MetricsBuilder {
            namespace: "trpc".into(),
            buckets: vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ],
            max_methods: 1000,
        }
    }

    /// The metric name prefix (default `trpc`): `{namespace}_client_calls_total`.
    /// Use a different one to register a second set of the same side, e.g.
    /// per-attempt metrics inside a retry layer.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Latency histogram buckets, in seconds.
    pub fn buckets(mut self, buckets: Vec<f64>) -> Self {
        self.buckets = buckets;
        self
    }

    /// Distinct method labels before further methods share `method="other"`.
    pub fn max_methods(mut self, n: usize) -> Self {
        self.max_methods = n;
        self
    }

    /// Registers client metrics.
    pub fn client(self, registry: &Registry) -> prometheus::Result<MetricsLayer> {
        self.build(registry, Side::Client)
    }

    /// Registers server metrics.
    pub fn server(self, registry: &Registry) -> prometheus::Result<MetricsLayer> {
        self.build(registry, Side::Server)
    }

    fn build(self, registry: &Registry, side: Side) -> prometheus::Result<MetricsLayer> {
        let metrics = RpcMetrics::register(
            registry,
            &self.namespace,
            side,
            self.buckets,
            self.max_methods,
        )?;
        Ok(MetricsLayer::new(metrics))
    }
}
