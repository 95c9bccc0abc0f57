//! Client-side load balancing: [`BalanceLayer`] turns a discovered endpoint
//! set (a [`Discover`] of [`Instance`]s, e.g. a
//! [`Discovery`](crate::discovery::Discovery)) into one cheap-to-clone
//! `Service<Request<Body>>` that spreads calls over a [`trpc::Channel`] per endpoint.
//!
//! ```no_run
//! # #[cfg(all(feature = "retry", feature = "etcd"))]
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use tower::ServiceBuilder;
//! use trpc_layers::{balance::BalanceLayer, discovery::Discovery, RetryLayer};
//!
//! let svc = ServiceBuilder::new()
//!     .layer(RetryLayer::exponential(3))
//!     .layer(BalanceLayer::p2c_peak_ewma())    // or round_robin(), weighted(), consistent_hash(key_fn), ...
//!     .service(Discovery::etcd("http://127.0.0.1:2379", "echo").await?);
//! let mut client = trpc::Client::new(svc);
//! # Ok(()) }
//! ```
//!
//! ## Policies
//!
//! | constructor | picks |
//! |---|---|
//! | [`BalanceLayer::round_robin`] | each endpoint in turn |
//! | [`BalanceLayer::random`] | uniformly at random |
//! | [`BalanceLayer::weighted`] | at random in proportion to the discovery `weight`, scaled down by the utilization the server reports ([`crate::load_report`]) |
//! | [`BalanceLayer::least_outstanding`] | the endpoint with the fewest calls in flight |
//! | [`BalanceLayer::p2c_peak_ewma`] | the cheaper of two random endpoints; cost = (peak-EWMA latency + 50 µs) × (calls in flight + 1) × (1 + reported utilization). The latency estimate decays while an endpoint gets no replies, and starts at 0, so new endpoints are tried first |
//! | [`BalanceLayer::consistent_hash`] | by a key from each request (a closure, or [`BalanceLayer::consistent_hash_by_metadata`]): rendezvous hashing, weighted; when one of N endpoints leaves only its ~1/N of the keys move. Requests without a key go to a random endpoint |
//!
//! ## Endpoint life cycle
//!
//! A new endpoint gets its channel and connection in the background; calls go
//! to endpoints that are connected first. A removed endpoint leaves the
//! rotation at once while its calls in flight finish on its channel (no call
//! fails because its endpoint was removed); the channel closes when the last
//! one completes. A call failing with `UNAVAILABLE` marks its endpoint down
//! until a background reconnect succeeds (and tells DNS discovery to
//! re-resolve).
//!
//! ## Health
//!
//! * Active: [`BalanceLayer::health_check`] calls `grpc.health.v1.Health/Check`
//!   on every endpoint on an interval; an endpoint not `SERVING` gets no calls.
//! * Passive: [`OutlierDetection`] ejects endpoints whose calls keep failing,
//!   for a growing period, never more than a share of them.
//!
//! Picks prefer endpoints that are connected, healthy and not ejected; if none
//! is, endpoints still connecting; if every endpoint is unhealthy, any of
//! them (degrading rather than failing every call). With no endpoint at all,
//! a call waits for discovery up to [`BalanceLayer::discovery_wait`] (within
//! its deadline), then fails with `UNAVAILABLE`.
//!
//! ## Where it goes in a stack
//!
//! Per-call layers (trace, call metrics, the call's deadline, retry, auth) go
//! outside the balancer; each retry attempt is balanced again, so a retried
//! call usually lands on another endpoint. Per-attempt layers (attempt
//! timeout, compression) go between the retry layer and the balancer (see
//! docs/LAYERS.md).

mod future;
mod health_check;
mod node;
mod outlier;
mod pick;

pub use future::ResponseFuture;
pub use health_check::HealthCheck;
pub use outlier::OutlierDetection;

use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::discover::{Change, Discover};
use tower_layer::Layer;
use tower_service::Service;
use trpc::{Body, BoxError, Endpoint, Request, Status};

use self::node::Node;
use self::pick::Tier;
use crate::discovery::Instance;

type KeyFn = Arc<dyn Fn(&Request<Body>) -> Option<u64> + Send + Sync>;
type EndpointFn = Arc<dyn Fn(&str) -> Result<Endpoint, Status> + Send + Sync>;

/// A balancing policy (see the [module docs](self)).
#[derive(Clone)]
enum Policy {
    RoundRobin,
    Random,
    Weighted,
    LeastOutstanding,
    P2cPeakEwma,
    ConsistentHash(KeyFn),
}

impl Policy {
    fn name(&self) -> &'static str {
        match self {
            Policy::RoundRobin => "round_robin",
            Policy::Random => "random",
            Policy::Weighted => "weighted",
            Policy::LeastOutstanding => "least_outstanding",
            Policy::P2cPeakEwma => "p2c_peak_ewma",
            Policy::ConsistentHash(_) => "consistent_hash",
        }
    }
}

/// Balances calls over a discovered endpoint set; see the [module docs](self).
#[derive(Clone)]
pub struct BalanceLayer {
    policy: Policy,
    endpoint: EndpointFn,
    outlier: Option<OutlierDetection>,
    health: Option<HealthCheck>,
    discovery_wait: Duration,
    connect_timeout: Duration,
    ewma_decay: Duration,
}

impl BalanceLayer {
    fn with_policy(policy: Policy) -> Self {
        BalanceLayer {
            policy,
            endpoint: Arc::new(|addr| {
                Ok(Endpoint::new(addr)?
                    .connect_timeout(Duration::from_secs(2))
                    .backoff(Duration::from_millis(50), Duration::from_secs(2)))
            }),
            outlier: Some(OutlierDetection::default()),
            health: None,
            discovery_wait: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(2),
            ewma_decay: Duration::from_secs(10),
        }
    }

    /// Each endpoint in turn.
    pub fn round_robin() -> Self {
        Self::with_policy(Policy::RoundRobin)
    }

    /// Uniformly at random.
    pub fn random() -> Self {
        Self::with_policy(Policy::Random)
    }

    /// At random in proportion to each instance's `weight`, scaled down by
    /// the utilization its server reports.
    pub fn weighted() -> Self {
        Self::with_policy(Policy::Weighted)
    }

    /// The endpoint with the fewest calls in flight.
    pub fn least_outstanding() -> Self {
        Self::with_policy(Policy::LeastOutstanding)
    }

    /// Power of two choices over peak-EWMA latency × load.
    pub fn p2c_peak_ewma() -> Self {
        Self::with_policy(Policy::P2cPeakEwma)
    }

    /// Consistent hashing on the key `key_fn` takes from each request
    /// (requests where it returns `None` go to a random endpoint).
    ///
    /// ```
    /// use trpc_layers::balance::BalanceLayer;
    /// let by_user = BalanceLayer::consistent_hash(|req: &trpc::Request<trpc::Body>| {
    ///     req.metadata().get("x-user-id").map(str::to_owned)
    /// });
    /// ```
    pub fn consistent_hash<F, K>(key_fn: F) -> Self
    where
        F: Fn(&Request<Body>) -> Option<K> + Send + Sync + 'static,
        K: Hash,
    {
        Self::with_policy(Policy::ConsistentHash(Arc::new(move |req| {
            key_fn(req).map(|k| pick::stable_hash(&k))
        })))
    }

    /// Consistent hashing on the value of request metadata `key`.
    pub fn consistent_hash_by_metadata(key: &str) -> Self {
        let key = key.to_ascii_lowercase();
        Self::consistent_hash(move |req: &Request<Body>| {
            req.metadata().get(&key).map(str::to_owned)
        })
    }

    /// How a channel to each address is configured (default: a 2 s connect
    /// timeout and a 50 ms .. 2 s reconnect backoff).
    pub fn endpoint<F>(mut self, f: F) -> Self
    where
        F: Fn(&str) -> Result<Endpoint, Status> + Send + Sync + 'static,
    {
        self.endpoint = Arc::new(f);
        self
    }

    /// Passive outlier ejection (default: [`OutlierDetection::default`]).
    pub fn outlier_detection(mut self, config: OutlierDetection) -> Self {
        self.outlier = Some(config);
        self
    }

    /// Turns outlier ejection off.
    pub fn no_outlier_detection(mut self) -> Self {
        self.outlier = None;
        self
    }

    /// Active health checks (default: none).
    pub fn health_check(mut self, check: HealthCheck) -> Self {
        self.health = Some(check);
        self
    }

    /// How long a call waits for discovery to name a first endpoint (default
    /// 3 s, and never past the call's deadline).
    pub fn discovery_wait(mut self, d: Duration) -> Self {
        self.discovery_wait = d;
        self
    }

    /// The decay time of the peak-EWMA latency (default 10 s).
    pub fn ewma_decay(mut self, d: Duration) -> Self {
        self.ewma_decay = d.max(Duration::from_millis(1));
        self
    }

    /// The policy's name, e.g. `p2c_peak_ewma`.
    pub fn policy_name(&self) -> &'static str {
        self.policy.name()
    }
}

impl fmt::Debug for BalanceLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalanceLayer")
            .field("policy", &self.policy.name())
            .field("outlier", &self.outlier)
            .field("health", &self.health)
            .field("discovery_wait", &self.discovery_wait)
            .finish()
    }
}

impl<D> Layer<D> for BalanceLayer
where
    D: Discover<Key = String, Service = Instance> + Send + Unpin + 'static,
    D::Error: Into<BoxError>,
{
    type Service = Balance;

    /// Starts driving `discovery` in a background task (a tokio runtime must
    /// be running).
    fn layer(&self, discovery: D) -> Balance {
        Balance::new(self.clone(), discovery)
    }
}

/// The balancing service made by [`BalanceLayer`]. Cheap to clone: clones
/// share the endpoint set; the background work stops when the last clone is
/// dropped.
#[derive(Clone)]
pub struct Balance {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    config: BalanceLayer,
    nodes: RwLock<Arc<[Arc<Node>]>>,
    rr: AtomicUsize,
    /// Woken when the endpoint set changes.
    changed: Notify,
    /// The number of changes applied so far.
    generation: watch::Sender<u64>,
    driver: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(task) = self.driver.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
        for node in self.nodes.read().unwrap_or_else(|e| e.into_inner()).iter() {
            node.removed.store(true, Ordering::Relaxed);
        }
    }
}

/// What a balancer knows of one endpoint ([`Balance::endpoints`]).
#[derive(Clone, Debug)]
pub struct EndpointStatus {
    /// The instance as discovered.
    pub instance: Instance,
    /// A connection is established.
    pub connected: bool,
    /// The last active health check passed (true without checks).
    pub healthy: bool,
    /// Ejected by outlier detection.
    pub ejected: bool,
    /// Calls in flight through this balancer.
    pub in_flight: usize,
    /// Calls completed through this balancer.
    pub completed: u64,
    /// Peak-EWMA latency.
    pub latency: Duration,
    /// Utilization last reported by the server (0 without reports).
    pub utilization: f64,
}

impl Balance {
    fn new<D>(config: BalanceLayer, discovery: D) -> Balance
    where
        D: Discover<Key = String, Service = Instance> + Send + Unpin + 'static,
        D::Error: Into<BoxError>,
    {
        let shared = Arc::new(Shared {
            config,
            nodes: RwLock::new(Arc::from(Vec::new())),
            rr: AtomicUsize::new(0),
            changed: Notify::new(),
            generation: watch::Sender::new(0),
            driver: std::sync::Mutex::new(None),
        });
        let task = tokio::spawn(drive(Arc::downgrade(&shared), discovery));
        *shared.driver.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Balance { shared }
    }

    /// The endpoints and what is known of each, sorted by address.
    pub fn endpoints(&self) -> Vec<EndpointStatus> {
        let now = Instant::now();
        self.shared
            .snapshot()
            .iter()
            .map(|n| EndpointStatus {
                instance: n.instance.clone(),
                connected: n.up.load(Ordering::Relaxed),
                healthy: n.healthy.load(Ordering::Relaxed),
                ejected: n.is_ejected(now),
                in_flight: n.in_flight.load(Ordering::Relaxed),
                completed: n.completed.load(Ordering::Relaxed),
                latency: Duration::from_nanos(
                    n.latency_ns(now, self.shared.config.ewma_decay) as u64
                ),
                utilization: n.utilization(),
            })
            .collect()
    }

    /// The addresses of the current endpoints, sorted.
    pub fn addrs(&self) -> Vec<String> {
        self.shared
            .snapshot()
            .iter()
            .map(|n| n.addr().to_string())
            .collect()
    }

    /// A receiver of the number of discovery changes applied so far: await
    /// `changed()` on it to learn when the endpoint set changes.
    pub fn watch_changes(&self) -> watch::Receiver<u64> {
        self.shared.generation.subscribe()
    }

    /// The policy's name.
    pub fn policy_name(&self) -> &'static str {
        self.shared.config.policy.name()
    }
}

impl Shared {
    fn snapshot(&self) -> Arc<[Arc<Node>]> {
        self.nodes.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Picks an endpoint for `req`, loosening the tiers until one qualifies.
    fn pick(&self, req: &Request<Body>) -> Option<Arc<Node>> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        if nodes.is_empty() {
            return None;
        }
        let now = Instant::now();
        let key = match &self.config.policy {
            Policy::ConsistentHash(f) => f(req),
            _ => None,
        };
        for tier in Tier::ALL {
            let ok = |n: &Node| tier.admits(n, now);
            let i = match &self.config.policy {
                Policy::RoundRobin => pick::round_robin(&nodes, &self.rr, ok),
                Policy::Random => pick::random(&nodes, ok),
                Policy::Weighted => pick::weighted(&nodes, ok),
                Policy::LeastOutstanding => pick::least_outstanding(&nodes, ok),
                Policy::P2cPeakEwma => pick::p2c(&nodes, now, self.config.ewma_decay, ok),
                Policy::ConsistentHash(_) => match key {
                    Some(k) => pick::consistent(&nodes, k, ok),
                    None => pick::random(&nodes, ok),
                },
            };
            if let Some(i) = i {
                return Some(nodes[i].clone());
            }
        }
        None
    }

    /// Whether one more endpoint may be ejected now.
    fn may_eject(&self, config: &OutlierDetection) -> bool {
        let nodes = self.snapshot();
        let now = Instant::now();
        let ejected = nodes.iter().filter(|n| n.is_ejected(now)).count();
        ejected < config.max_ejected(nodes.len())
    }

    fn apply(&self, change: Change<String, Instance>) {
        let mut nodes: Vec<Arc<Node>> = self.snapshot().iter().cloned().collect();
        match change {
            Change::Insert(key, mut instance) => {
                if instance.addr.is_empty() {
                    instance.addr = key;
                }
                let existing = nodes.iter().position(|n| n.addr() == instance.addr);
                if let Some(i) = existing {
                    if nodes[i].instance == instance {
                        return;
                    }
                    // New metadata, same channel and connection state.
                    let old = &nodes[i];
                    let node = Node::new(instance, old.channel.clone());
                    node.up
                        .store(old.up.load(Ordering::Relaxed), Ordering::Relaxed);
                    old.removed.store(true, Ordering::Relaxed);
                    nodes[i] = Arc::new(node);
                } else {
                    let channel = match (self.config.endpoint)(&instance.addr) {
                        Ok(e) => e.connect_lazy(),
                        Err(e) => {
                            tracing::warn!(addr = %instance.addr, error = %e, "ignoring an endpoint with a bad address");
                            return;
                        }
                    };
                    tracing::debug!(addr = %instance.addr, "endpoint added");
                    nodes.push(Arc::new(Node::new(instance, channel)));
                }
            }
            Change::Remove(key) => {
                let before = nodes.len();
                nodes.retain(|n| {
                    let keep = n.addr() != key;
                    if !keep {
                        n.removed.store(true, Ordering::Relaxed);
                    }
                    keep
                });
                if nodes.len() == before {
                    return;
                }
                tracing::debug!(addr = %key, "endpoint removed; its calls in flight finish");
            }
        }
        nodes.sort_by(|a, b| a.addr().cmp(b.addr()));
        for n in &nodes {
            if !n.up.load(Ordering::Relaxed) {
                node::spawn_connect(n, self.config.connect_timeout);
            }
            if let Some(check) = &self.config.health {
                check.spawn(n);
            }
        }
        *self.nodes.write().unwrap_or_else(|e| e.into_inner()) = Arc::from(nodes);
        self.changed.notify_waiters();
        self.generation.send_modify(|g| *g += 1);
    }
}

/// Applies discovery changes until the discovery ends or the balancer is
/// dropped.
async fn drive<D>(shared: Weak<Shared>, mut discovery: D)
where
    D: Discover<Key = String, Service = Instance> + Send + Unpin + 'static,
    D::Error: Into<BoxError>,
{
    let mut stream = std::pin::pin!(futures_util::stream::poll_fn(move |cx| {
        Discover::poll_discover(std::pin::Pin::new(&mut discovery), cx)
    }));
    while let Some(item) = stream.next().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match item {
            Ok(change) => shared.apply(change),
            Err(e) => {
                let e: BoxError = e.into();
                tracing::warn!(error = %e, "discovery error; keeping the current endpoints");
            }
        }
    }
    tracing::debug!("discovery ended; the endpoint set stays as it is");
}

impl fmt::Debug for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("policy", &self.shared.config.policy.name())
            .field("endpoints", &self.addrs())
            .finish()
    }
}

impl Service<Request<Body>> for Balance {
    type Response = trpc::Response<Body>;
    type Error = Status;
    type Future = ResponseFuture;

    /// Always ready: a call with no endpoint to go to waits for discovery
    /// (bounded) or fails.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> ResponseFuture {
        match self.shared.pick(&req) {
            Some(node) => ResponseFuture::start(&self.shared, node, req),
            None => ResponseFuture::wait(self.shared.clone(), req),
        }
    }
}
