//! [`HealthCheck`]: what `/healthz` and `/readyz` ask.

use std::fmt;
use std::sync::Arc;

/// A source of health for `/healthz` (liveness) or `/readyz` (readiness):
/// `Ok(())` when healthy, `Err(reason)` otherwise.
///
/// Implemented for closures `Fn() -> Result<(), String>`; a component with a
/// health state of its own (a server's health reporter, a connection pool)
/// implements it directly. Checks run on every request to their endpoint, so
/// they should read state, not do I/O.
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::Arc;
/// use trpc_layers::admin::HealthCheck;
///
/// let warm = Arc::new(AtomicBool::new(false));
/// let check = {
///     let warm = warm.clone();
///     move || if warm.load(Ordering::Relaxed) { Ok(()) } else { Err("cache warming".to_string()) }
/// };
/// assert_eq!(check.check(), Err("cache warming".to_string()));
/// warm.store(true, Ordering::Relaxed);
/// assert_eq!(check.check(), Ok(()));
/// ```
pub trait HealthCheck: Send + Sync + 'static {
    /// `Ok(())` when healthy, else why not.
    fn check(&self) -> Result<(), String>;
}

impl<F> HealthCheck for F
where
    F: Fn() -> Result<(), String> + Send + Sync + 'static,
{
    fn check(&self) -> Result<(), String> {
        self()
    }
}

/// A named check of one endpoint.
#[derive(Clone)]
pub(crate) struct Named {
    pub(crate) name: Box<str>,
    pub(crate) check: Arc<dyn HealthCheck>,
}

impl fmt::Debug for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Runs `checks` and renders the answer the way Kubernetes' own endpoints
/// do: `ok` when all pass; otherwise (or with `verbose`) one line per check,
/// `[+]name ok` or `[-]name failed: reason`, then the verdict.
pub(crate) fn report(checks: &[Named], what: &str, verbose: bool) -> (bool, String) {
    let mut healthy = true;
    let mut lines = String::new();
    for c in checks {
        match c.check.check() {
            Ok(()) => lines.push_str(&format!("[+]{} ok\n", c.name)),
            Err(why) => {
                healthy = false;
                lines.push_str(&format!("[-]{} failed: {why}\n", c.name));
            }
        }
    }
    let body = match (healthy, verbose) {
        (true, false) => "ok\n".to_owned(),
        (true, true) => format!("{lines}{what} check passed\n"),
        (false, _) => format!("{lines}{what} check failed\n"),
    };
    (healthy, body)
}

/// A server's [`HealthReporter`](trpc::health::HealthReporter) answers
/// `/readyz` the way it answers `grpc.health.v1.Health/Check` for the whole
/// server: ready while `""` is `SERVING`, not once the server drains.
///
/// ```
/// use trpc::health::HealthReporter;
/// use trpc_layers::admin::HealthCheck;
///
/// let health = HealthReporter::new();
/// assert_eq!(health.check(), Ok(()));
/// health.shutdown();
/// assert_eq!(health.check(), Err("shutting down".to_string()));
/// ```
impl HealthCheck for trpc::health::HealthReporter {
    fn check(&self) -> Result<(), String> {
        self.readiness()
    }
}
