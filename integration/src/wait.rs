//! Bounded waits: every wait in a test has a limit, so a broken server fails
//! the test with a message instead of hanging it.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Bound for anything that should happen "soon" on a loaded 2-core machine.
pub const SOON: Duration = Duration::from_secs(15);

/// Awaits `fut`, panicking with `what` if it takes longer than `limit`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use trpc_integration::{within, SOON};
/// assert_eq!(within(SOON, "an answer", async { 42 }).await, 42);
/// # }
/// ```
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {limit:?}"),
    }
}

/// Waits until `cond` holds, checking every 10 ms, for at most `limit`: for
/// server-side state that has no event the test could await (counters of
/// [`trpc::stats::TransportStats`], for instance).
pub async fn until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not true within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
