//! Targets: what `trpc call` and `trpc health` connect to. One address
//! (`host:port`, `tcp://host:port`) is a plain channel; `static://a:1,b:2`,
//! `dns://host:port` and `etcd://host:port/name` are balanced over the
//! discovered replicas (`trpc_layers::discovery::Target`).

use std::time::Duration;

use tower::util::BoxCloneService;
use trpc::{Body, Channel, Endpoint, Request, Response, Status};
use trpc_layers::balance::{Balance, BalanceLayer};
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

/// A connected target.
pub(crate) enum Connected {
    /// One address: a channel.
    Channel(Channel),
    /// A discovered service: a balancer over its replicas.
    Balanced(Balance),
}

impl Connected {
    /// The target as one service.
    pub(crate) fn service(&self) -> TargetService {
        match self {
            Connected::Channel(c) => BoxCloneService::new(c.clone()),
            Connected::Balanced(b) => BoxCloneService::new(b.clone()),
        }
    }

    /// The channel of a single-address target (reflection needs one server).
    pub(crate) fn channel(&self) -> Option<&Channel> {
        match self {
            Connected::Channel(c) => Some(c),
            Connected::Balanced(_) => None,
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
) -> Result<Connected, Status> {
    let parsed = Target::parse(target)?;
    if let Some(addr) = parsed.single() {
        let endpoint = Endpoint::new(addr)?.connect_timeout(connect_timeout);
        let channel = tls.apply(endpoint)?.connect().await?;
        return Ok(Connected::Channel(channel));
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
    Ok(Connected::Balanced(tower::Layer::layer(&layer, discovery)))
}
