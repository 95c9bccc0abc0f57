//! Helpers of the discovery, balancing and failure tests: in-process
//! replicas, a load generator that records who served each call, and waits.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::replica::Say;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::Service;
use trpc::{Body, BoxError, Client, Request, Response, Status};
use trpc_layers::balance::Balance;

pub use crate::SOON;

/// One call's record.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// When the call was sent.
    pub started: Instant,
    /// Who served it (`served-by`), or the error.
    pub result: Result<String, Status>,
}

/// Calls `echo.Echo/Say` and returns who served it.
pub async fn say<S>(svc: S, millis: u64) -> Result<String, Status>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: Into<BoxError>,
{
    let mut client = Client::new(svc);
    let mut req = Request::new(Say {
        message: "hi".into(),
        millis,
    });
    req.set_timeout(Duration::from_secs(10));
    let resp = client.unary::<Say, Say>("echo.Echo/Say", req).await?;
    Ok(resp.metadata().get("served-by").unwrap_or("?").to_string())
}

/// Tally of replies per `served-by`.
pub fn tally<'a>(
    results: impl IntoIterator<Item = &'a Result<String, Status>>,
) -> BTreeMap<String, usize> {
    let mut t = BTreeMap::new();
    for r in results {
        let k = match r {
            Ok(by) => by.clone(),
            Err(e) => format!("error {}", e.code().as_str()),
        };
        *t.entry(k).or_insert(0) += 1;
    }
    t
}

/// `workers` tasks calling through clones of `svc` until stopped (or a
/// bounded number of calls each).
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `workers` tasks, each calling `echo.Echo/Say` (handlers that
    /// take `millis`) back to back through its own clone of `svc`.
    pub fn start<S>(svc: S, workers: usize, millis: u64) -> Load
    where
        S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..workers)
            .map(|_| {
                let (svc, stop, outcomes) = (svc.clone(), stop.clone(), outcomes.clone());
                tokio::spawn(async move {
                    // Bounded: at most 100k calls per worker.
                    for _ in 0..100_000 {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let started = Instant::now();
                        let result = say(svc.clone(), millis).await;
                        outcomes.lock().unwrap().push(Outcome { started, result });
                    }
                })
            })
            .collect();
        Load {
            stop,
            outcomes,
            tasks,
        }
    }

    /// Calls completed so far.
    pub fn count(&self) -> usize {
        self.outcomes.lock().unwrap().len()
    }

    /// Waits until `n` more calls have completed.
    pub async fn wait_for_more(&self, n: usize) {
        let target = self.count() + n;
        let deadline = Instant::now() + SOON;
        while self.count() < target {
            assert!(
                Instant::now() < deadline,
                "load stalled at {} calls",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the workers and returns every outcome.
    pub async fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            tokio::time::timeout(SOON, t)
                .await
                .expect("load worker stopped")
                .expect("load worker panicked");
        }
        Arc::try_unwrap(self.outcomes)
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

/// Asserts that no call failed, printing the tally otherwise.
pub fn assert_no_failures(outcomes: &[Outcome]) {
    let failed: Vec<_> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} calls failed: first {:?}; tally {:?}",
        failed.len(),
        outcomes.len(),
        failed[0].result,
        tally(outcomes.iter().map(|o| &o.result))
    );
}

/// Waits until the balancer's endpoint set satisfies `f`; returns when it
/// first did.
pub async fn wait_endpoints(
    balance: &Balance,
    what: &str,
    f: impl Fn(&[String]) -> bool,
) -> Instant {
    let mut changes = balance.watch_changes();
    let deadline = Instant::now() + SOON;
    loop {
        if f(&balance.addrs()) {
            return Instant::now();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, changes.changed()).await.is_err() {
            panic!(
                "{what}: not within {SOON:?}; endpoints {:?}",
                balance.addrs()
            );
        }
    }
}

/// Serves the replica echo service (plus `extra` routes) in process on a
/// fresh port.
pub async fn in_process(
    extra: Option<trpc::server::Router>,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut router = crate::replica::router(addr);
    if let Some(extra) = extra {
        router = router.merge(extra);
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        trpc::Server::builder().serve_with_listener(listener, router, async move {
            let _ = rx.await;
        }),
    );
    (addr, tx)
}

/// Calls through `svc` `n` times in sequence; the tally.
pub async fn spread<S>(svc: &S, n: usize) -> BTreeMap<String, usize>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone,
    S::Error: Into<BoxError>,
{
    let mut results = Vec::with_capacity(n);
    for _ in 0..n {
        results.push(say(svc.clone(), 0).await);
    }
    tally(results.iter())
}
