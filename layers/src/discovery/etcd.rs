//! The etcd registry (feature `etcd`, through the `etcd-client` crate):
//! servers [`register`](Etcd::register) themselves with a lease kept alive,
//! clients [`discover`](Etcd::discover) a service by watching its prefix.
//!
//! ## Key layout
//!
//! ```text
//! {prefix}/{service}/{addr}  →  {"addr":"{addr}","weight":100,"zone":"…","version":"…","tags":[…]}
//! ```
//!
//! The default prefix is `/trpc/services`, so the replica `127.0.0.1:7001` of
//! `echo` lives at `/trpc/services/echo/127.0.0.1:7001`. The value is the JSON
//! of an [`Instance`]; the key's last segment is the address (it wins over the
//! value's `addr`). Every key is attached to a lease of its server
//! ([`Etcd::lease_ttl`], default 10 s) that the server keeps alive every third
//! of the TTL: a server that dies stops renewing and etcd deletes its key when
//! the lease expires; a server that shuts down revokes the lease first
//! (deleting the key at once).
//!
//! ## Clients
//!
//! [`Etcd::discover`] lists the prefix, then watches it from the listed
//! revision: a change reaches the balancer as soon as etcd sends the event.
//! When etcd goes away the last known instances stay in use; the watcher
//! reconnects with backoff and, once etcd answers again, lists the prefix anew
//! and emits the difference (a replica added or removed meanwhile is seen).
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use trpc_layers::discovery::{etcd::Etcd, Instance};
//!
//! let etcd = Etcd::new(["http://127.0.0.1:2379"]).lease_ttl(Duration::from_secs(5));
//! // A server:
//! let registration = etcd.register("echo", Instance::new("127.0.0.1:7001").zone("eu-1"));
//! // A client:
//! let discovery = etcd.discover("echo").await?;
//! // At shutdown, before draining:
//! registration.deregister().await;
//! # drop(discovery); Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tower::discover::Change;

use super::{diff, ChangeSender, Discovery, Instance, InstanceChange};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/trpc/services";

/// Connection settings for an etcd cluster, shared by registrations and
/// discoveries. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Etcd {
    endpoints: Vec<String>,
    prefix: String,
    lease_ttl: Duration,
    timeout: Duration,
    backoff_max: Duration,
}

/// An etcd operation failed or timed out.
#[derive(Debug)]
pub struct EtcdError {
    what: String,
    source: Option<etcd_client::Error>,
}

impl EtcdError {
    fn new(what: impl Into<String>, source: Option<etcd_client::Error>) -> Self {
        EtcdError {
            what: what.into(),
            source,
        }
    }
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(e) => write!(f, "etcd: {}: {e}", self.what),
            None => write!(f, "etcd: {}", self.what),
        }
    }
}

impl std::error::Error for EtcdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

impl Etcd {
    /// A cluster reached at `endpoints` (`http://host:port`).
    pub fn new<I, S>(endpoints: I) -> Etcd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Etcd {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: DEFAULT_PREFIX.to_string(),
            lease_ttl: Duration::from_secs(10),
            timeout: Duration::from_secs(3),
            backoff_max: Duration::from_secs(2),
        }
    }

    /// The key prefix (default [`DEFAULT_PREFIX`]).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().trim_end_matches('/').to_string();
        self
    }

    /// The TTL of registration leases (default 10 s; etcd rounds up to its
    /// minimum, about 2 s): how long the key of a killed server lives.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// Time allowed for each etcd request (default 3 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Longest wait between reconnect attempts while etcd is down (default 2 s).
    pub fn backoff_max(mut self, d: Duration) -> Self {
        self.backoff_max = d.max(Duration::from_millis(10));
        self
    }

    /// The prefix of service `name`'s keys (with a trailing `/`).
    pub fn service_prefix(&self, name: &str) -> String {
        format!("{}/{}/", self.prefix, name)
    }

    /// The key of `addr` in service `name`.
    pub fn key(&self, name: &str, addr: &str) -> String {
        format!("{}{}", self.service_prefix(name), addr)
    }

    async fn connect(&self) -> Result<Client, EtcdError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(self.timeout)
            .with_keep_alive(Duration::from_secs(1), self.timeout);
        self.bounded("connect", Client::connect(&self.endpoints, Some(options)))
            .await
    }

    async fn bounded<T>(
        &self,
        what: &str,
        f: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, EtcdError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => Err(EtcdError::new(what, Some(e))),
            Err(_) => Err(EtcdError::new(format!("{what} timed out"), None)),
        }
    }

    /// Lists service `name`: its instances and the revision they are from.
    async fn list(
        &self,
        client: &mut Client,
        name: &str,
    ) -> Result<(Vec<Instance>, i64), EtcdError> {
        let prefix = self.service_prefix(name);
        let resp = self
            .bounded(
                "list",
                client.get(prefix.as_bytes(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let instances = resp
            .kvs()
            .iter()
            .filter_map(|kv| parse(&prefix, kv.key(), kv.value()))
            .collect();
        Ok((instances, revision))
    }

    /// Lists service `name` and watches it for changes (see the module docs).
    /// Fails if etcd cannot be reached now.
    pub async fn discover(&self, name: &str) -> Result<Discovery, EtcdError> {
        let mut client = self.connect().await?;
        let (instances, revision) = self.list(&mut client, name).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut known = HashMap::new();
        for change in diff(&mut known, instances) {
            let _ = tx.send(Ok(change));
        }
        let watcher = Watcher {
            etcd: self.clone(),
            name: name.to_string(),
            tx,
            known,
        };
        tokio::spawn(watcher.run(client, revision));
        Ok(Discovery::from_receiver(format!("etcd {name}"), rx))
    }

    /// Registers `instance` as a replica of `name` in a background task: a
    /// lease, the key attached to it, keep-alives every third of the TTL.
    /// Anything that fails (etcd down, lease lost) is retried with backoff
    /// until [`Registration::deregister`]. Dropping the handle stops the
    /// keep-alives without deleting the key (it expires with the lease).
    pub fn register(&self, name: &str, instance: Instance) -> Registration {
        let key = self.key(name, &instance.addr);
        let (stop_tx, stop_rx) = oneshot::channel();
        let (state_tx, state_rx) = watch::channel(false);
        let task = tokio::spawn(register_task(
            self.clone(),
            key.clone(),
            instance.to_json(),
            stop_rx,
            state_tx,
        ));
        Registration {
            key,
            stop: Some(stop_tx),
            registered: state_rx,
            task: Some(task),
        }
    }
}

/// The address encoded in `key` under `prefix`, with its instance.
fn parse(prefix: &str, key: &[u8], value: &[u8]) -> Option<Instance> {
    let addr = std::str::from_utf8(key).ok()?.strip_prefix(prefix)?;
    if addr.is_empty() || addr.contains('/') {
        return None;
    }
    match Instance::from_json(value) {
        Ok(mut i) => {
            i.addr = addr.to_string();
            Some(i)
        }
        Err(e) => {
            tracing::warn!(key = %String::from_utf8_lossy(key), error = %e, "ignoring an etcd key whose value is not an instance");
            None
        }
    }
}

struct Watcher {
    etcd: Etcd,
    name: String,
    tx: ChangeSender,
    known: HashMap<String, Instance>,
}

impl Watcher {
    async fn run(mut self, client: Client, revision: i64) {
        let tx = self.tx.clone();
        tokio::select! {
            _ = tx.closed() => {}
            _ = self.watch_forever(client, revision) => {}
        }
    }

    fn send(&mut self, change: InstanceChange) {
        let _ = self.tx.send(Ok(change));
    }

    async fn watch_forever(&mut self, mut client: Client, mut revision: i64) {
        loop {
            if let Err(e) = self.watch(&mut client, &mut revision).await {
                tracing::warn!(service = %self.name, error = %e, "etcd watch lost; keeping the last known instances");
            }
            (client, revision) = self.resync().await;
        }
    }

    /// Applies watch events from `revision + 1` until the watch breaks.
    async fn watch(&mut self, client: &mut Client, revision: &mut i64) -> Result<(), EtcdError> {
        let prefix = self.etcd.service_prefix(&self.name);
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(*revision + 1);
        let mut stream = self
            .etcd
            .bounded("watch", client.watch(prefix.as_bytes(), Some(options)))
            .await?;
        loop {
            let resp = match stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => return Err(EtcdError::new("watch ended", None)),
                Err(e) => return Err(EtcdError::new("watch", Some(e))),
            };
            if resp.canceled() {
                return Err(EtcdError::new(
                    format!("watch cancelled: {}", resp.cancel_reason()),
                    None,
                ));
            }
            if let Some(h) = resp.header() {
                *revision = (*revision).max(h.revision());
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                match event.event_type() {
                    EventType::Put => {
                        if let Some(i) = parse(&prefix, kv.key(), kv.value()) {
                            if self.known.get(&i.addr) != Some(&i) {
                                self.known.insert(i.addr.clone(), i.clone());
                                self.send(Change::Insert(i.addr.clone(), i));
                            }
                        }
                    }
                    EventType::Delete => {
                        let key = String::from_utf8_lossy(kv.key());
                        if let Some(addr) = key.strip_prefix(&prefix) {
                            if self.known.remove(addr).is_some() {
                                self.send(Change::Remove(addr.to_string()));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Reconnects (with backoff) and lists the service again, emitting what
    /// changed while the watch was down.
    async fn resync(&mut self) -> (Client, i64) {
        let mut delay = Duration::from_millis(50);
        loop {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.etcd.backoff_max);
            let attempt = async {
                let mut client = self.etcd.connect().await?;
                let listed = self.etcd.list(&mut client, &self.name).await?;
                Ok::<_, EtcdError>((client, listed))
            };
            match attempt.await {
                Ok((client, (instances, revision))) => {
                    let changes = diff(&mut self.known, instances);
                    tracing::info!(service = %self.name, changes = changes.len(), "etcd is back; resynced");
                    for change in changes {
                        self.send(change);
                    }
                    return (client, revision);
                }
                Err(e) => {
                    tracing::debug!(service = %self.name, error = %e, "etcd still unreachable")
                }
            }
        }
    }
}

/// A server's registration in etcd; see [`Etcd::register`].
pub struct Registration {
    key: String,
    stop: Option<oneshot::Sender<()>>,
    registered: watch::Receiver<bool>,
    task: Option<JoinHandle<()>>,
}

impl Registration {
    /// The registered key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether the key is in etcd with a live lease (as far as this process
    /// knows).
    pub fn is_registered(&self) -> bool {
        *self.registered.borrow()
    }

    /// A receiver of the registration state (true while the key is written
    /// with a live lease).
    pub fn watch_registered(&self) -> watch::Receiver<bool> {
        self.registered.clone()
    }

    /// Waits until the key has been written.
    pub async fn registered(&mut self) {
        let _ = self.registered.wait_for(|r| *r).await;
    }

    /// Stops the keep-alives and revokes the lease, which deletes the key at
    /// once (bounded by the request timeout; if etcd is down the key expires
    /// with its lease instead).
    pub async fn deregister(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// A shutdown signal for `Server::serve_with_shutdown` that deregisters
    /// before the server drains: waits for `signal`, deregisters, then waits
    /// `propagation` (time for clients to apply the removal) before
    /// completing, so no new call is sent to a draining server.
    ///
    /// ```no_run
    /// # async fn f(registration: trpc_layers::discovery::etcd::Registration, router: trpc::server::Router) -> std::io::Result<()> {
    /// use std::time::Duration;
    /// let signal = registration.deregister_on(trpc::server::shutdown_signal(), Duration::from_millis(500));
    /// trpc::Server::builder()
    ///     .serve_with_shutdown("127.0.0.1:7001".parse().unwrap(), router, signal)
    ///     .await
    /// # }
    /// ```
    pub async fn deregister_on<F>(self, signal: F, propagation: Duration)
    where
        F: Future<Output = ()>,
    {
        signal.await;
        let key = self.key.clone();
        self.deregister().await;
        tracing::info!(%key, "deregistered from etcd; draining after the propagation delay");
        tokio::time::sleep(propagation).await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .field("registered", &self.is_registered())
            .finish()
    }
}

enum SessionEnd {
    Stopped,
    Failed(EtcdError),
}

async fn register_task(
    etcd: Etcd,
    key: String,
    value: String,
    mut stop: oneshot::Receiver<()>,
    state: watch::Sender<bool>,
) {
    let mut delay = Duration::from_millis(50);
    loop {
        match session(&etcd, &key, &value, &mut stop, &state).await {
            SessionEnd::Stopped => return,
            SessionEnd::Failed(e) => {
                state.send_replace(false);
                tracing::warn!(%key, error = %e, "etcd registration lost; registering again");
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(etcd.backoff_max);
    }
}

/// One lease: grant, put, keep alive until stopped (revoke) or broken.
async fn session(
    etcd: &Etcd,
    key: &str,
    value: &str,
    stop: &mut oneshot::Receiver<()>,
    state: &watch::Sender<bool>,
) -> SessionEnd {
    let setup = async {
        let mut client = etcd.connect().await?;
        let ttl = etcd.lease_ttl.as_secs().max(1) as i64;
        let lease = etcd
            .bounded("lease grant", client.lease_grant(ttl, None))
            .await?
            .id();
        let put = PutOptions::new().with_lease(lease);
        etcd.bounded("put", client.put(key, value, Some(put)))
            .await?;
        let (keeper, stream) = etcd
            .bounded("keep-alive", client.lease_keep_alive(lease))
            .await?;
        Ok::<_, EtcdError>((client, lease, keeper, stream))
    };
    let (mut client, lease, mut keeper, mut stream) = tokio::select! {
        _ = &mut *stop => return SessionEnd::Stopped,
        r = setup => match r {
            Ok(x) => x,
            Err(e) => return SessionEnd::Failed(e),
        },
    };
    state.send_replace(true);
    tracing::info!(%key, lease, "registered in etcd");
    let mut tick = tokio::time::interval(etcd.lease_ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut *stop => {
                state.send_replace(false);
                if let Err(e) = etcd.bounded("lease revoke", client.lease_revoke(lease)).await {
                    tracing::warn!(%key, error = %e, "could not revoke the lease; the key expires with it");
                }
                return SessionEnd::Stopped;
            }
            _ = tick.tick() => {
                if let Err(e) = etcd.bounded("keep-alive", keeper.keep_alive()).await {
                    return SessionEnd::Failed(e);
                }
            }
            msg = stream.message() => match msg {
                Ok(Some(resp)) if resp.ttl() > 0 => {}
                Ok(Some(_)) => return SessionEnd::Failed(EtcdError::new("lease expired", None)),
                Ok(None) => return SessionEnd::Failed(EtcdError::new("keep-alive stream ended", None)),
                Err(e) => return SessionEnd::Failed(EtcdError::new("keep-alive", Some(e))),
            },
        }
    }
}
