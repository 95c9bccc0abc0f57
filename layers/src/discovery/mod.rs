//! Service discovery: where the replicas of a service are, as a
//! [`tower::discover::Discover`] of [`Instance`]s keyed by address.
//!
//! A discovery source is any `Stream` of
//! `Result<Change<String, Instance>, E>` (tower implements `Discover` for
//! every such stream): `Change::Insert(addr, instance)` adds an endpoint or
//! replaces its metadata, `Change::Remove(addr)` removes it. [`Discovery`] is
//! the type-erased one every backend here returns, ready to give to
//! [`BalanceLayer`](crate::balance::BalanceLayer):
//!
//! | backend | constructor | changes |
//! |---|---|---|
//! | static list | [`Discovery::fixed`], [`Discovery::instances`] | none |
//! | your code | [`Discovery::manual`] → [`Registry`] handle | insert/remove by hand |
//! | DNS (A and AAAA) | [`Discovery::dns`], [`Dns`] | re-resolved on an interval and when a connection fails |
//! | etcd (feature `etcd`) | [`Discovery::etcd`], [`etcd::Etcd`] | watched; applied as soon as etcd reports them |
//! | polling registries | [`Discovery::from_snapshots`] | each snapshot diffed against the last |
//!
//! The same backends by URI (as `trpc call` takes them): [`Discovery::from_target`]
//! with `static://a:1,b:2`, `dns://host:port` (or `dns:///host:port`),
//! `etcd://host:port/name` or a plain `host:port`.
//!
//! docs/DISCOVERY.md describes the etcd key layout and walks through writing
//! another registry.
//!
//! ```
//! # async fn f() {
//! use tower::ServiceBuilder;
//! use trpc_layers::{balance::BalanceLayer, discovery::Discovery};
//!
//! let balanced = ServiceBuilder::new()
//!     .layer(BalanceLayer::round_robin())
//!     .service(Discovery::fixed(["127.0.0.1:7001", "127.0.0.1:7002"]));
//! # drop(balanced); }
//! ```

mod dns;
#[cfg(feature = "etcd")]
pub mod etcd;
mod instance;
mod target;

pub use dns::Dns;
pub use instance::Instance;
pub use target::Target;

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::mpsc;
use tower::discover::Change;
use trpc::{BoxError, Status};

/// One change of an endpoint set: `Insert(addr, instance)` or `Remove(addr)`.
pub type InstanceChange = Change<String, Instance>;

/// Where background discovery tasks send their changes.
pub(crate) type ChangeSender = mpsc::UnboundedSender<Result<InstanceChange, BoxError>>;
type ChangeReceiver = mpsc::UnboundedReceiver<Result<InstanceChange, BoxError>>;

/// A type-erased discovery source: a `Stream` (hence a
/// [`tower::discover::Discover`]) of [`InstanceChange`]s. See the
/// [module docs](self) for the backends.
pub struct Discovery {
    inner: Pin<Box<dyn Stream<Item = Result<InstanceChange, BoxError>> + Send>>,
    describe: String,
}

impl Discovery {
    /// Wraps any stream of changes.
    pub fn new<S, E>(describe: impl Into<String>, stream: S) -> Discovery
    where
        S: Stream<Item = Result<InstanceChange, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        use futures_util::TryStreamExt;
        Discovery {
            inner: Box::pin(stream.map_err(Into::into)),
            describe: describe.into(),
        }
    }

    /// A fixed list of addresses (`host:port`), each with default metadata.
    pub fn fixed<I, A>(addrs: I) -> Discovery
    where
        I: IntoIterator<Item = A>,
        A: Into<String>,
    {
        Discovery::instances(addrs.into_iter().map(Instance::new))
    }

    /// A fixed list of instances.
    pub fn instances(instances: impl IntoIterator<Item = Instance>) -> Discovery {
        let changes: Vec<_> = instances
            .into_iter()
            .map(|i| Ok::<_, BoxError>(Change::Insert(i.addr.clone(), i)))
            .collect();
        let describe = format!("static ({} endpoints)", changes.len());
        // The stream stays open: a finished stream would read as "discovery
        // ended".
        use futures_util::StreamExt;
        let stream = futures_util::stream::iter(changes).chain(futures_util::stream::pending());
        Discovery::new(describe, stream)
    }

    /// An endpoint set changed by hand through the returned [`Registry`]
    /// (tests, examples, or glue to a registry of your own).
    pub fn manual() -> (Registry, Discovery) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Registry { tx }, Discovery::from_receiver("manual", rx))
    }

    /// The changes a background task sends through `rx`.
    pub(crate) fn from_receiver(describe: impl Into<String>, rx: ChangeReceiver) -> Discovery {
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|c| (c, rx)) },
            );
        Discovery::new(describe, stream)
    }

    /// Turns a stream of full snapshots (every instance each time, e.g. from
    /// polling a registry's HTTP API) into changes: each snapshot is diffed
    /// against the one before. An `Err` item is passed on and the last
    /// snapshot kept.
    pub fn from_snapshots<S, E>(describe: impl Into<String>, snapshots: S) -> Discovery
    where
        S: Stream<Item = Result<Vec<Instance>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        use futures_util::StreamExt;
        let stream = snapshots
            .scan(HashMap::new(), |known, snapshot| {
                let out: Vec<Result<InstanceChange, BoxError>> = match snapshot {
                    Ok(all) => diff(known, all).into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e.into())],
                };
                std::future::ready(Some(futures_util::stream::iter(out)))
            })
            .flatten();
        Discovery::new(describe, stream)
    }

    /// DNS discovery of `host:port` with the default settings of [`Dns`].
    pub fn dns(host_port: &str) -> Result<Discovery, Status> {
        Ok(Dns::new(host_port)?.discover())
    }

    /// Watches the instances of service `name` registered in etcd at
    /// `endpoint` (e.g. `http://127.0.0.1:2379`) under the default prefix;
    /// see [`etcd::Etcd`] for the key layout and options.
    ///
    /// Fails if etcd cannot be reached now; afterwards the last known
    /// instances are kept while etcd is down, and resynced when it is back.
    #[cfg(feature = "etcd")]
    pub async fn etcd(endpoint: &str, name: &str) -> Result<Discovery, etcd::EtcdError> {
        etcd::Etcd::new([endpoint]).discover(name).await
    }

    /// The backend named by a target URI; see [`Target`].
    pub async fn from_target(target: &str) -> Result<Discovery, Status> {
        Target::parse(target)?.discover().await
    }
}

impl Stream for Discovery {
    type Item = Result<InstanceChange, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Discovery").field(&self.describe).finish()
    }
}

/// The handle of a [`Discovery::manual`] endpoint set. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Registry {
    tx: ChangeSender,
}

impl Registry {
    /// Adds `instance` (or replaces the one with the same address). Returns
    /// false when the discovery was dropped.
    pub fn insert(&self, instance: Instance) -> bool {
        self.tx
            .send(Ok(Change::Insert(instance.addr.clone(), instance)))
            .is_ok()
    }

    /// Removes the instance at `addr`.
    pub fn remove(&self, addr: &str) -> bool {
        self.tx.send(Ok(Change::Remove(addr.to_string()))).is_ok()
    }
}

/// The changes that turn the set `known` into `now` (and updates `known`).
pub(crate) fn diff(
    known: &mut HashMap<String, Instance>,
    now: Vec<Instance>,
) -> Vec<InstanceChange> {
    let mut changes = Vec::new();
    let now: HashMap<String, Instance> = now.into_iter().map(|i| (i.addr.clone(), i)).collect();
    known.retain(|addr, _| {
        let keep = now.contains_key(addr);
        if !keep {
            changes.push(Change::Remove(addr.clone()));
        }
        keep
    });
    let mut inserts: Vec<_> = now
        .into_iter()
        .filter(|(addr, i)| known.get(addr) != Some(i))
        .collect();
    inserts.sort_by(|a, b| a.0.cmp(&b.0));
    for (addr, i) in inserts {
        known.insert(addr.clone(), i.clone());
        changes.push(Change::Insert(addr, i));
    }
    changes
}

#[cfg(test)]
mod tests;
