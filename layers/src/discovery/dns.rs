//! [`Dns`]: endpoints from a host name's A and AAAA records, re-resolved on an
//! interval and when a connection to one of them fails.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use trpc::Status;

use super::{diff, ChangeSender, Discovery, Instance};

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
#[derive(Clone)]
pub struct Dns {
    host: String,
    port: u16,
    interval: Duration,
    min_interval: Duration,
    resolver: Resolver,
}

type Lookup = Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>;
type Resolver = Arc<dyn Fn(&str, u16) -> Lookup + Send + Sync>;

fn system_resolver() -> Resolver {
    Arc::new(|host: &str, port: u16| {
        let host = host.to_string();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    })
}

impl fmt::Debug for Dns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dns")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("interval", &self.interval)
            .field("min_interval", &self.min_interval)
            .finish_non_exhaustive()
    }
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
            resolver: system_resolver(),
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

    /// Replaces the system resolver (`getaddrinfo` through
    /// `tokio::net::lookup_host`) with `f(host, port)`: a resolver of your
    /// own, or a fake one in tests.
    pub fn resolver<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(&str, u16) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'static,
    {
        self.resolver = Arc::new(move |host: &str, port: u16| Box::pin(f(host, port)) as Lookup);
        self
    }

    /// Starts resolving in a background task (stopped when the discovery is
    /// dropped).
    pub fn discover(self) -> Discovery {
        let (tx, rx) = mpsc::unbounded_channel();
        let describe = format!("dns://{}:{}", self.host, self.port);
        tokio::spawn(self.run(tx));
        Discovery::from_receiver(describe, rx)
    }

    async fn run(self, tx: ChangeSender) {
        let failed = Arc::new(Notify::new());
        let mut known = HashMap::new();
        loop {
            match self.resolve(&failed).await {
                Ok(now) => {
                    for change in diff(&mut known, now) {
                        if tx.send(Ok(change)).is_err() {
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
        let addrs = (self.resolver)(&self.host, self.port).await?;
        let mut seen = std::collections::HashSet::new();
        Ok(addrs
            .into_iter()
            .filter(|a| seen.insert(*a))
            .map(|a| Instance::new(a.to_string()).on_failure(failed.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures_util::StreamExt;
    use tokio::time::Instant;
    use tower::discover::Change;

    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 7000))
    }

    #[tokio::test(start_paused = true)]
    async fn re_resolves_on_the_interval_and_early_when_an_endpoint_fails() {
        let answer = Arc::new(Mutex::new(vec![addr(1)]));
        let fake = answer.clone();
        let mut d = Dns::new("svc.test:7000")
            .unwrap()
            .interval(Duration::from_secs(30))
            .min_interval(Duration::from_secs(1))
            .resolver(move |_host: &str, _port| {
                let now = fake.lock().unwrap().clone();
                async move { Ok(now) }
            })
            .discover();
        let first = match d.next().await {
            Some(Ok(Change::Insert(k, i))) => {
                assert_eq!(k, addr(1).to_string());
                i
            }
            other => panic!("unexpected {other:?}"),
        };
        // The interval: the new answer shows up 30 s later.
        *answer.lock().unwrap() = vec![addr(2)];
        let t = Instant::now();
        assert!(matches!(d.next().await, Some(Ok(Change::Remove(k))) if k == addr(1).to_string()));
        assert!(
            matches!(d.next().await, Some(Ok(Change::Insert(k, _))) if k == addr(2).to_string())
        );
        assert_eq!(t.elapsed(), Duration::from_secs(30));
        // A failure: resolved again after the minimum interval, not 30 s.
        *answer.lock().unwrap() = vec![addr(3)];
        let t = Instant::now();
        first.report_failure();
        assert!(matches!(d.next().await, Some(Ok(Change::Remove(k))) if k == addr(2).to_string()));
        assert!(t.elapsed() <= Duration::from_secs(1), "{:?}", t.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_lookup_keeps_the_last_addresses() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = fail.clone();
        let mut d = Dns::new("svc.test:7000")
            .unwrap()
            .interval(Duration::from_secs(5))
            .resolver(move |_host: &str, _port| {
                let fail = flag.load(std::sync::atomic::Ordering::Relaxed);
                async move {
                    if fail {
                        Err(std::io::Error::other("SERVFAIL"))
                    } else {
                        Ok(vec![addr(1)])
                    }
                }
            })
            .discover();
        assert!(matches!(d.next().await, Some(Ok(Change::Insert(_, _)))));
        fail.store(true, std::sync::atomic::Ordering::Relaxed);
        // Several failed lookups later, still no removal.
        let nothing = tokio::time::timeout(Duration::from_secs(60), d.next()).await;
        assert!(nothing.is_err(), "a failed lookup emitted {nothing:?}");
    }
}
