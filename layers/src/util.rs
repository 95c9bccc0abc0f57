//! Small helpers shared by the layers: error classification, random numbers,
//! method patterns.
#![cfg_attr(
    not(all(
        feature = "retry",
        feature = "trace",
        feature = "metrics",
        feature = "auth"
    )),
    allow(dead_code)
)]

use std::error::Error as StdError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use trpc::{Code, Status};

/// The first [`Status`] in `err` or its `source()` chain.
pub(crate) fn find_status<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a Status> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(s) = e.downcast_ref::<Status>() {
            return Some(s);
        }
        cur = e.source();
    }
    None
}

/// The outcome of a call whose future (or response stream) was dropped before
/// it finished: `DEADLINE_EXCEEDED` if its deadline has passed (the core or an
/// outer layer gave up on it), else `CANCELLED` (the caller went away).
pub(crate) fn dropped_outcome(deadline: Option<tokio::time::Instant>) -> (Code, &'static str) {
    if deadline.is_some_and(|d| d <= tokio::time::Instant::now()) {
        (
            Code::DeadlineExceeded,
            "deadline exceeded: the call was dropped",
        )
    } else {
        (
            Code::Cancelled,
            "cancelled: the call was dropped before it finished",
        )
    }
}

/// A fast, well-mixed pseudo-random `u64` (splitmix64 over a per-thread
/// counter, each thread's seeded from the process's random hash keys, so no
/// two threads share a cache line). Good for jitter and trace ids; not for keys.
pub(crate) fn random_u64() -> u64 {
    use std::cell::Cell;
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static THREADS: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let seed = *SEED.get_or_init(|| {
                use std::hash::{BuildHasher, Hasher};
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u64(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos() as u64)
                        .unwrap_or(0),
                );
                h.finish()
            });
            // Threads start far apart in the sequence.
            seed ^ mix(THREADS.fetch_add(1, Ordering::Relaxed).wrapping_add(1))
        });
    }
    STATE.with(|s| {
        let n = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(n);
        mix(n)
    })
}

/// The splitmix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The slot of the current thread among [`slots`]: threads are numbered as
/// they first ask, so up to `slots()` threads never share one. Per-thread
/// copies of shared state (metric stripes, identities) indexed by it are
/// written or reference-counted by one thread only.
pub(crate) fn slot() -> usize {
    thread_local! {
        static SLOT: usize = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
    }
    static NEXT_SLOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    SLOT.with(|s| *s) & (slots() - 1)
}

/// How many slots [`slot`] hands out: twice the CPUs, a power of two in 4..=64.
pub(crate) fn slots() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
        (2 * cpus).next_power_of_two().clamp(4, 64)
    })
}

/// A set of method patterns: `pkg.Service/Method` (exact), `pkg.Service/*`
/// (every method of a service) or `*` (everything).
#[derive(Clone, Debug, Default)]
pub(crate) struct MethodSet {
    patterns: Arc<[Box<str>]>,
}

impl MethodSet {
    /// The set with `pattern` added.
    pub(crate) fn with(&self, pattern: &str) -> MethodSet {
        let mut v: Vec<Box<str>> = self.patterns.iter().cloned().collect();
        v.push(pattern.into());
        MethodSet { patterns: v.into() }
    }

    /// True if `method` matches a pattern.
    pub(crate) fn matches(&self, method: &str) -> bool {
        self.patterns.iter().any(|p| pattern_matches(p, method))
    }

    /// The patterns, in the order added.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.patterns.iter().map(|p| &**p)
    }
}

/// True if `method` matches `pattern` (see [`MethodSet`]).
pub(crate) fn pattern_matches(pattern: &str, method: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix("/*") {
        Some(service) => method
            .strip_prefix(service)
            .is_some_and(|rest| rest.starts_with('/')),
        None => pattern == method,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_patterns_match_exact_service_and_all() {
        assert!(pattern_matches("a.B/C", "a.B/C"));
        assert!(!pattern_matches("a.B/C", "a.B/D"));
        assert!(pattern_matches("a.B/*", "a.B/D"));
        assert!(!pattern_matches("a.B/*", "a.BB/D"));
        assert!(pattern_matches("*", "x.Y/Z"));
        let set = MethodSet::default().with("a.B/*").with("c.D/E");
        assert!(set.matches("c.D/E") && set.matches("a.B/X") && !set.matches("c.D/F"));
    }

    #[test]
    fn random_numbers_differ_within_and_across_threads() {
        let a = random_u64();
        let b = random_u64();
        assert_ne!(a, b);
        let c = std::thread::spawn(random_u64).join().unwrap();
        assert!(c != a && c != b);
    }

    #[test]
    fn slots_are_in_range_and_stable_per_thread() {
        let s = slot();
        assert!(s < slots());
        assert_eq!(slot(), s);
        assert!(slots().is_power_of_two());
    }
}
