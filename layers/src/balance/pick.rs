//! The balancing policies: which endpoint of a set gets the next call.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::time::Instant;

use super::node::Node;
use crate::util::random_u64;

/// A well-mixed 64-bit hash (splitmix64 finaliser).
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stable hash of any hashable key (the same in every process: no random
/// seed), for consistent hashing.
pub(crate) fn stable_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    key.hash(&mut h);
    mix(h.finish())
}

/// Rendezvous (highest random weight) hashing: the candidate with the highest
/// `weight / -ln(u)` where `u` is a uniform hash of (key, candidate). When a
/// candidate leaves, only the keys it held move (about 1/N of them).
pub(crate) fn rendezvous(
    key: u64,
    candidates: impl Iterator<Item = (usize, u64, u32)>,
) -> Option<usize> {
    let mut best: Option<(f64, usize)> = None;
    for (i, id_hash, weight) in candidates {
        let h = mix(key ^ id_hash);
        // u in (0, 1): never 0, so ln is finite.
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = weight.max(1) as f64 / -u.ln();
        if best.map_or(true, |(s, _)| score > s) {
            best = Some((score, i));
        }
    }
    best.map(|(_, i)| i)
}

fn random_below(n: usize) -> usize {
    (((random_u64() >> 32) * n as u64) >> 32) as usize
}

/// Which nodes a pick may use, loosened step by step when none qualifies:
/// connected and healthy and not ejected; then healthy and not ejected
/// (still connecting); then any (every endpoint is unhealthy: degrade rather
/// than fail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tier {
    Available,
    Eligible,
    Any,
}

impl Tier {
    pub(crate) const ALL: [Tier; 3] = [Tier::Available, Tier::Eligible, Tier::Any];

    pub(crate) fn admits(self, node: &Node, now: Instant) -> bool {
        match self {
            Tier::Available => node.is_available(now),
            Tier::Eligible => node.is_eligible(now),
            Tier::Any => true,
        }
    }
}

pub(crate) fn round_robin(
    nodes: &[Arc<Node>],
    counter: &AtomicUsize,
    ok: impl Fn(&Node) -> bool,
) -> Option<usize> {
    let n = nodes.len();
    let start = counter.fetch_add(1, Ordering::Relaxed);
    (0..n).map(|k| (start + k) % n).find(|&i| ok(&nodes[i]))
}

pub(crate) fn random(nodes: &[Arc<Node>], ok: impl Fn(&Node) -> bool) -> Option<usize> {
    let n = nodes.len();
    for _ in 0..3 {
        let i = random_below(n);
        if ok(&nodes[i]) {
            return Some(i);
        }
    }
    let start = random_below(n);
    (0..n).map(|k| (start + k) % n).find(|&i| ok(&nodes[i]))
}

/// The effective weight: discovery weight scaled down by the utilization the
/// server reports (never below 5%).
pub(crate) fn effective_weight(node: &Node) -> f64 {
    let util = node.utilization().clamp(0.0, 1.0);
    node.instance.weight as f64 * (1.0 - util).max(0.05)
}

pub(crate) fn weighted(nodes: &[Arc<Node>], ok: impl Fn(&Node) -> bool) -> Option<usize> {
    let total: f64 = nodes
        .iter()
        .filter(|n| ok(n))
        .map(|n| effective_weight(n))
        .sum();
    if total <= 0.0 {
        return random(nodes, ok);
    }
    let mut r = (random_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
    let mut last = None;
    for (i, n) in nodes.iter().enumerate() {
        if !ok(n) {
            continue;
        }
        let w = effective_weight(n);
        if w <= 0.0 {
            continue;
        }
        last = Some(i);
        if r < w {
            return Some(i);
        }
        r -= w;
    }
    last
}

pub(crate) fn least_outstanding(nodes: &[Arc<Node>], ok: impl Fn(&Node) -> bool) -> Option<usize> {
    let n = nodes.len();
    let start = random_below(n);
    (0..n)
        .map(|k| (start + k) % n)
        .filter(|&i| ok(&nodes[i]))
        .min_by_key(|&i| nodes[i].in_flight.load(Ordering::Relaxed))
}

pub(crate) fn p2c(
    nodes: &[Arc<Node>],
    now: Instant,
    decay: std::time::Duration,
    ok: impl Fn(&Node) -> bool,
) -> Option<usize> {
    let cost = |i: usize| nodes[i].cost(now, decay);
    let n = nodes.len();
    if n == 1 {
        return ok(&nodes[0]).then_some(0);
    }
    // Two distinct random candidates; fall back to a scan when the sample
    // misses (few admissible nodes).
    for _ in 0..3 {
        let a = random_below(n);
        let b = (a + 1 + random_below(n - 1)) % n;
        match (ok(&nodes[a]), ok(&nodes[b])) {
            (true, true) => {
                return Some(if cost(a) <= cost(b) { a } else { b });
            }
            (true, false) => return Some(a),
            (false, true) => return Some(b),
            (false, false) => {}
        }
    }
    (0..n)
        .filter(|&i| ok(&nodes[i]))
        .min_by(|&a, &b| cost(a).total_cmp(&cost(b)))
}

pub(crate) fn consistent(
    nodes: &[Arc<Node>],
    key: u64,
    ok: impl Fn(&Node) -> bool,
) -> Option<usize> {
    rendezvous(
        key,
        nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| ok(n))
            .map(|(i, n)| (i, n.addr_hash, n.instance.weight)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(key: u64, addrs: &[String]) -> String {
        let i = rendezvous(
            key,
            addrs
                .iter()
                .enumerate()
                .map(|(i, a)| (i, stable_hash(a.as_str()), 100)),
        )
        .unwrap();
        addrs[i].clone()
    }

    #[test]
    fn rendezvous_moves_about_one_nth_of_keys_when_a_node_leaves() {
        let n = 5;
        let addrs: Vec<String> = (0..n).map(|i| format!("10.0.0.{i}:7000")).collect();
        let keys: Vec<u64> = (0..20_000u64).map(|k| stable_hash(&k)).collect();
        let before: Vec<String> = keys.iter().map(|&k| owner(k, &addrs)).collect();
        // Spread: every node owns roughly 1/N.
        for a in &addrs {
            let share = before.iter().filter(|o| *o == a).count() as f64 / keys.len() as f64;
            assert!((share - 0.2).abs() < 0.03, "{a} owns {share}");
        }
        let gone = addrs[2].clone();
        let rest: Vec<String> = addrs.iter().filter(|a| **a != gone).cloned().collect();
        let mut moved = 0;
        for (k, old) in keys.iter().zip(&before) {
            let new = owner(*k, &rest);
            if *old != gone {
                assert_eq!(&new, old, "a key of a remaining node moved");
            } else {
                moved += 1;
            }
        }
        let frac = moved as f64 / keys.len() as f64;
        assert!((frac - 1.0 / n as f64).abs() < 0.03, "moved {frac}");
    }

    #[test]
    fn rendezvous_follows_weights() {
        let addrs = ["a:1", "b:1"];
        let mut heavy = 0;
        let total = 20_000u64;
        for k in 0..total {
            let i = rendezvous(
                stable_hash(&k),
                addrs
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (i, stable_hash(*a), if i == 0 { 300 } else { 100 })),
            )
            .unwrap();
            heavy += (i == 0) as u64;
        }
        let share = heavy as f64 / total as f64;
        assert!((share - 0.75).abs() < 0.03, "weight 3:1 gave {share}");
    }

    #[test]
    fn random_below_stays_in_range() {
        for n in 1..50 {
            for _ in 0..100 {
                assert!(random_below(n) < n);
            }
        }
    }
}
