//! Passive outlier ejection: endpoints whose calls keep failing are taken out
//! of rotation for a growing period.

use std::time::Duration;

use tokio::time::Instant;
use trpc::Code;

/// When an endpoint is ejected, and for how long (see
/// [`BalanceLayer::outlier_detection`](super::BalanceLayer::outlier_detection)).
///
/// An endpoint is ejected after `consecutive_failures` failed calls in a row,
/// or when at least `min_requests` calls in the last `window` failed at a rate
/// of `error_rate` or more. It stays out for `base_ejection × 2ⁿ` (n: how
/// often it was ejected before, reset after `max_ejection` without one),
/// at most `max_ejection`, then gets traffic again. Never more than
/// `max_ejected_percent` of the endpoints are ejected at once (so one
/// endpoint alone is never ejected).
///
/// A failure is a call ending with one of `failure_codes` (default
/// `UNAVAILABLE`, `INTERNAL`, `UNKNOWN`, `DATA_LOSS`): errors of the endpoint,
/// not of the request.
#[derive(Clone, Debug)]
pub struct OutlierDetection {
    /// Failures in a row that eject (default 5; 0 disables).
    pub consecutive_failures: u32,
    /// Failure rate over the window that ejects (default 0.5; `None` disables).
    pub error_rate: Option<f64>,
    /// Calls the window needs before its rate counts (default 20).
    pub min_requests: u32,
    /// The error-rate window (default 10 s).
    pub window: Duration,
    /// First ejection period (default 5 s).
    pub base_ejection: Duration,
    /// Longest ejection period (default 60 s).
    pub max_ejection: Duration,
    /// Most endpoints ejected at once, in percent (default 50).
    pub max_ejected_percent: u32,
    /// Codes that count as failures.
    pub failure_codes: Vec<Code>,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_failures: 5,
            error_rate: Some(0.5),
            min_requests: 20,
            window: Duration::from_secs(10),
            base_ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(60),
            max_ejected_percent: 50,
            failure_codes: vec![
                Code::Unavailable,
                Code::Internal,
                Code::Unknown,
                Code::DataLoss,
            ],
        }
    }
}

impl OutlierDetection {
    /// Whether a call ending with `code` counts as a failure.
    pub fn is_failure(&self, code: Code) -> bool {
        self.failure_codes.contains(&code)
    }

    /// How many of `total` endpoints may be ejected at once.
    pub fn max_ejected(&self, total: usize) -> usize {
        total * self.max_ejected_percent.min(100) as usize / 100
    }
}

/// The outlier state of one endpoint.
#[derive(Debug, Default)]
pub(crate) struct OutlierState {
    consecutive: u32,
    window_start: Option<Instant>,
    window_calls: u32,
    window_failures: u32,
    times_ejected: u32,
    ejected_until: Option<Instant>,
    last_ejection: Option<Instant>,
}

impl OutlierState {
    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|t| now < t)
    }

    /// When the current (or last) ejection ends.
    pub(crate) fn ejected_until(&self) -> Option<Instant> {
        self.ejected_until
    }

    /// Counts one outcome; ejects when a threshold is crossed and
    /// `may_eject()` allows it. Returns true if it ejected.
    pub(crate) fn observe(
        &mut self,
        failed: bool,
        now: Instant,
        config: &OutlierDetection,
        may_eject: impl FnOnce() -> bool,
    ) -> bool {
        if self.is_ejected(now) {
            return false;
        }
        if self
            .last_ejection
            .is_some_and(|t| now.saturating_duration_since(t) > config.max_ejection * 2)
        {
            self.times_ejected = 0;
            self.last_ejection = None;
        }
        match self.window_start {
            Some(start) if now.saturating_duration_since(start) < config.window => {}
            _ => {
                self.window_start = Some(now);
                self.window_calls = 0;
                self.window_failures = 0;
            }
        }
        self.window_calls += 1;
        if !failed {
            self.consecutive = 0;
            return false;
        }
        self.consecutive += 1;
        self.window_failures += 1;
        let by_streak =
            config.consecutive_failures > 0 && self.consecutive >= config.consecutive_failures;
        let by_rate = config.error_rate.is_some_and(|rate| {
            self.window_calls >= config.min_requests.max(1)
                && self.window_failures as f64 >= rate * self.window_calls as f64
        });
        if !(by_streak || by_rate) || !may_eject() {
            return false;
        }
        let period = config
            .base_ejection
            .saturating_mul(1u32 << self.times_ejected.min(20))
            .min(config.max_ejection);
        self.ejected_until = Some(now + period);
        self.last_ejection = Some(now);
        self.times_ejected += 1;
        self.consecutive = 0;
        self.window_start = None;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OutlierDetection {
        OutlierDetection {
            consecutive_failures: 3,
            error_rate: None,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(4),
            ..OutlierDetection::default()
        }
    }

    #[test]
    fn consecutive_failures_eject_for_a_growing_period() {
        let c = config();
        let mut s = OutlierState::default();
        let t0 = Instant::now();
        assert!(!s.observe(true, t0, &c, || true));
        assert!(!s.observe(true, t0, &c, || true));
        assert!(s.observe(true, t0, &c, || true));
        assert!(s.is_ejected(t0 + Duration::from_millis(999)));
        assert!(!s.is_ejected(t0 + Duration::from_secs(1)));
        // Second ejection: twice as long.
        let t1 = t0 + Duration::from_secs(2);
        for _ in 0..3 {
            s.observe(true, t1, &c, || true);
        }
        assert!(s.is_ejected(t1 + Duration::from_millis(1999)));
        assert!(!s.is_ejected(t1 + Duration::from_secs(2)));
        // Capped at max_ejection.
        let mut t = t1 + Duration::from_secs(3);
        for _ in 0..5 {
            for _ in 0..3 {
                s.observe(true, t, &c, || true);
            }
            assert!(!s.is_ejected(t + c.max_ejection));
            t += c.max_ejection;
        }
    }

    #[test]
    fn a_success_resets_the_streak() {
        let c = config();
        let mut s = OutlierState::default();
        let t = Instant::now();
        s.observe(true, t, &c, || true);
        s.observe(true, t, &c, || true);
        s.observe(false, t, &c, || true);
        assert!(!s.observe(true, t, &c, || true));
        assert!(!s.is_ejected(t));
    }

    #[test]
    fn error_rate_ejects_once_the_window_has_enough_calls() {
        let c = OutlierDetection {
            consecutive_failures: 0,
            error_rate: Some(0.5),
            min_requests: 10,
            ..OutlierDetection::default()
        };
        let mut s = OutlierState::default();
        let t = Instant::now();
        let mut ejected = false;
        for i in 0..10 {
            ejected = s.observe(i % 2 == 0, t, &c, || true);
        }
        assert!(!ejected, "5 of 10 failing, the last call succeeded");
        assert!(s.observe(true, t, &c, || true));
    }

    #[test]
    fn the_share_limit_prevents_ejection() {
        let c = config();
        let mut s = OutlierState::default();
        let t = Instant::now();
        for _ in 0..10 {
            assert!(!s.observe(true, t, &c, || false));
        }
        assert!(!s.is_ejected(t));
        assert_eq!(c.max_ejected(1), 0);
        assert_eq!(c.max_ejected(3), 1);
        assert_eq!(c.max_ejected(4), 2);
    }
}
