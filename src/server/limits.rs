//! Per-connection abuse limits of the server.

use std::time::Duration;

use tokio::time::Instant;

/// Rapid-reset defence: a token bucket of client cancellations (CANCEL
/// frames that abort a call in flight, and calls the server had to reset
/// because the client broke a stream rule). It holds `max` tokens and
/// refills `max` per `per`; a connection that empties it is closed with
/// GOAWAY(ENHANCE_YOUR_CALM).
#[derive(Debug)]
pub(crate) struct CancelBudget {
    tokens: f64,
    max: f64,
    per_sec: f64,
    at: Instant,
}

impl CancelBudget {
    pub(crate) fn new(max: u32, per: Duration, now: Instant) -> Self {
        let max = f64::from(max.max(1));
        CancelBudget {
            tokens: max,
            max,
            per_sec: max / per.as_secs_f64().max(1e-3),
            at: now,
        }
    }

    /// Takes one token; false when the bucket is empty.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.max);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_budget_empties_and_refills_over_time() {
        let start = Instant::now();
        let mut b = CancelBudget::new(3, Duration::from_secs(1), start);
        assert!(b.take(start) && b.take(start) && b.take(start));
        assert!(!b.take(start));
        assert!(b.take(start + Duration::from_millis(400)));
        assert!(!b.take(start + Duration::from_millis(400)));
    }
}
