//! Targets: what `trpc call` and `trpc health` connect to. One address
//! (`host:port`, `tcp://host:port`) is a plain channel; `static://a:1,b:2`,
//! `dns://host:port` and `etcd://host:port/name` are balanced over the
//! discovered replicas (`trpc_layers::discovery::Target`).

use std::time::Duration;

use tower::util::BoxCloneService;
use trpc::{Body, Endpoint, Request, Response, Status};
use trpc_layers::balance::BalanceLayer;
use trpc_layers::discovery::Target;

use crate::tls::TlsArgs;

/// A connected target: a channel or a balancer, type-erased.
pub(crate) type TargetService = BoxCloneService<Request<Body>, Response<Body>, Status>;

/// The balancing policies `--policy` accepts.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
pub(crate) enum Policy {
    /// Each replica in turn.
    #[default]
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// In proportion to discovery weights and reported load.
    Weighted,
    /// Fewest calls in flight.
    LeastOutstanding,
    /// Power of two choices over peak-EWMA latency.
    P2c,
}

impl Policy {
    fn layer(self) -> BalanceLayer {
        match self {
            Policy::RoundRobin => BalanceLayer::round_robin(),
            Policy::Random => BalanceLayer::random(),
            Policy::Weighted => BalanceLayer::weighted(),
            Policy::LeastOutstanding => BalanceLayer::least_outstanding(),
            Policy::P2c => BalanceLayer::p2c_peak_ewma(),
        }
    }
}

/// Connects to `target`: a single address gets a channel (connected now,
/// failing fast); anything else a balancer over its discovered replicas.
pub(crate) async fn connect(
    target: &str,
    connect_timeout: Duration,
    policy: Policy,
    tls: &TlsArgs,
) -> Result<TargetService, Status> {
    let parsed = Target::parse(target)?;
    if let Some(addr) = parsed.single() {
        let endpoint = Endpoint::new(addr)?.connect_timeout(connect_timeout);
        let channel = tls.apply(endpoint)?.connect().await?;
        return Ok(BoxCloneService::new(channel));
    }
    let tls = tls.config()?;
    let layer = policy
        .layer()
        .discovery_wait(connect_timeout)
        .endpoint(move |addr| {
            let endpoint = Endpoint::new(addr)?.connect_timeout(connect_timeout);
            match &tls {
                Some(t) => Ok(endpoint.tls_config(t.clone())?),
                None => Ok(endpoint),
            }
        });
    let discovery = tokio::time::timeout(connect_timeout, parsed.discover())
        .await
        .map_err(|_| Status::unavailable(format!("{parsed}: discovery timed out")))??;
    let balance = tower::Layer::layer(&layer, discovery);
    Ok(BoxCloneService::new(balance))
}
