//! [`Dns`]: endpoints from a host name's A and AAAA records, re-resolved on an
//! interval and when a connection to one of them fails.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use trpc::{BoxError, Status};

use super::{diff, Discovery, Instance, InstanceChange};

/// DNS discovery of `host:port`: every address the host resolves to (A and
/// AAAA, through the system resolver) is an endpoint on `port`.
///
/// The name is resolved at once, then every [`interval`](Dns::interval)
/// (default 30 s) and, at most once per [`min_interval`](Dns::min_interval)
/// (default 1 s), as soon as a balancer reports that an endpoint could not be
/// reached. A failed lookup keeps the last known addresses.
///
/// ```
/// # async fn f() -> Result<(), trpc::Status> {
/// use std::time::Duration;
/// let discovery = trpc_layers::discovery::Dns::new("localhost:7000")?
///     .interval(Duration::from_secs(10))
///     .discover();
/// # drop(discovery); Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Dns {
    host: String,
    port: u16,
    interval: Duration,
    min_interval: Duration,
}

impl Dns {
    /// Parses `host:port` (`[v6]:port` for a literal IPv6 address).
    pub fn new(host_port: &str) -> Result<Dns, Status> {
        let (host, port) = host_port
            .rsplit_once(':')
            .ok_or_else(|| Status::invalid_argument(format!("{host_port:?} has no :port")))?;
        let port = port
            .parse()
            .map_err(|_| Status::invalid_argument(format!("bad port in {host_port:?}")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(Status::invalid_argument(format!(
                "{host_port:?} has no host"
            )));
        }
        Ok(Dns {
            host: host.to_string(),
            port,
            interval: Duration::from_secs(30),
            min_interval: Duration::from_secs(1),
        })
    }

    /// How often the name is resolved again (default 30 s).
    pub fn interval(mut self, d: Duration) -> Self {
        self.interval = d.max(Duration::from_millis(10));
        self
    }

    /// The least time between two lookups triggered by failures (default 1 s).
    pub fn min_interval(mut self, d: Duration) -> Self {
        self.min_interval = d;
        self
    }

    /// Starts resolving in a background task (stopped when the discovery is
    /// dropped).
    pub fn discover(self) -> Discovery {
        let (tx, rx) = mpsc::channel(64);
        let describe = format!("dns://{}:{}", self.host, self.port);
        tokio::spawn(self.run(tx));
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|c| (c, rx)) },
            );
        Discovery::new(describe, stream)
    }

    async fn run(self, tx: mpsc::Sender<Result<InstanceChange, BoxError>>) {
        let failed = Arc::new(Notify::new());
        let mut known = HashMap::new();
        loop {
            match self.resolve(&failed).await {
                Ok(now) => {
                    for change in diff(&mut known, now) {
                        if tx.send(Ok(change)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(host = %self.host, error = %e, "DNS lookup failed; keeping the last known addresses");
                }
            }
            let min = tokio::time::sleep(self.min_interval);
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(self.interval) => continue,
                _ = async { failed.notified().await; min.await } => {
                    tracing::debug!(host = %self.host, "an endpoint failed; resolving again");
                }
            }
        }
    }

    async fn resolve(&self, failed: &Arc<Notify>) -> std::io::Result<Vec<Instance>> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .collect();
        let mut seen = std::collections::HashSet::new();
        Ok(addrs
            .into_iter()
            .filter(|a| seen.insert(*a))
            .map(|a| Instance::new(a.to_string()).on_failure(failed.clone()))
            .collect())
    }
}
