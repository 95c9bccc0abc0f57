//! Small internal helpers.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A hasher for small integer keys (stream ids): one multiply, no SipHash.
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100000001b3);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A `HashMap` keyed by stream id.
pub(crate) type IdMap<V> = std::collections::HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// Sizes a connection's read buffer to its traffic: small for small calls
/// (an idle connection holds little, and little is left fragmented behind),
/// growing while reads fill the buffer, shrinking when they stop doing so.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadSizer {
    hint: usize,
}

impl ReadSizer {
    const MIN: usize = 1024;
    const MAX: usize = 64 * 1024;

    pub(crate) const fn new() -> Self {
        ReadSizer { hint: Self::MIN }
    }

    /// Makes room for the next read; returns the room offered.
    pub(crate) fn reserve(&self, buf: &mut bytes::BytesMut) -> usize {
        if buf.capacity() - buf.len() < Self::MIN / 4 {
            buf.reserve(self.hint);
        }
        buf.capacity() - buf.len()
    }

    /// Learns from a read of `n` bytes into `room` bytes of space.
    pub(crate) fn observe(&mut self, n: usize, room: usize) {
        if n >= room {
            self.hint = (self.hint * 2).min(Self::MAX);
        } else if n < self.hint / 4 {
            self.hint = (self.hint / 2).max(Self::MIN);
        }
    }
}

/// A cheap process-wide pseudo-random number (xorshift), for jitter only.
pub(crate) fn fast_random() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x2545F4914F6CDD1D)
            | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    x
}

/// `d` scaled by a random factor in `[1 - spread, 1 + spread]`.
pub(crate) fn jitter(d: Duration, spread: f64) -> Duration {
    let r = (fast_random() % 10_000) as f64 / 10_000.0; // [0, 1)
    d.mul_f64(1.0 - spread + 2.0 * spread * r)
}

/// Formats a duration for messages: `250ms`, `1.5s`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{}µs", d.as_micros())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

/// Parses durations like `500ms`, `2s`, `1.5s`, `1m`, `100us`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_duration_opt(s).ok_or_else(|| format!("invalid duration {s:?} (try 500ms, 2s, 1m)"))
}

fn parse_duration_opt(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "ns" => n / 1e9,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

/// Replaces each empty collection with a new one, giving its capacity back
/// (what an idle connection does with the buffers of its busy times).
macro_rules! release_empty {
    ($($c:expr),+ $(,)?) => {
        $(
            if $c.is_empty() {
                $c = Default::default();
            }
        )+
    };
}
pub(crate) use release_empty;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn the_read_buffer_grows_with_full_reads_and_shrinks_back() {
        let mut sizer = ReadSizer::new();
        let mut buf = bytes::BytesMut::new();
        let room = sizer.reserve(&mut buf);
        assert!((1024..4096).contains(&room));
        for _ in 0..10 {
            sizer.observe(room, room);
        }
        assert_eq!(sizer.hint, ReadSizer::MAX);
        for _ in 0..10 {
            sizer.observe(10, 64 * 1024);
        }
        assert_eq!(sizer.hint, ReadSizer::MIN);
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..1000 {
            let d = jitter(Duration::from_millis(100), 0.2);
            assert!(d >= Duration::from_millis(80) && d <= Duration::from_millis(120));
        }
    }
}
