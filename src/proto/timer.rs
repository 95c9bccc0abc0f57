//! One timer per connection, armed for the earliest of its deadlines
//! (keepalive, idle, slow frames, write stall, handshake...).

use std::future::Future;
use std::pin::Pin;
use std::task::Context;

use tokio::time::{Duration, Instant, Sleep};

/// How far away a timer with nothing to wait for is armed.
const IDLE: Duration = Duration::from_secs(30 * 86_400);

/// A re-armable sleep that is polled only when it may have fired or was
/// just re-armed (polling a timer costs more than checking a flag).
#[derive(Debug)]
pub(crate) struct ConnTimer {
    sleep: Pin<Box<Sleep>>,
    at: Instant,
    /// False after a reset, until the next poll registers the new deadline.
    polled: bool,
}

impl ConnTimer {
    pub(crate) fn new(now: Instant) -> Self {
        ConnTimer {
            sleep: Box::pin(tokio::time::sleep_until(now)),
            at: now,
            polled: false,
        }
    }

    /// A timer with nothing to wait for yet (armed far in the future, so
    /// that the first [`ensure`](Self::ensure) arms it).
    pub(crate) fn idle(now: Instant) -> Self {
        let mut t = Self::new(now + IDLE);
        t.polled = true;
        t
    }

    /// Disarms: nothing to wait for until the next [`ensure`](Self::ensure).
    pub(crate) fn reset_idle(&mut self, now: Instant) {
        self.reset(now + IDLE);
    }

    /// Fires at `at` (earlier or later than before).
    pub(crate) fn reset(&mut self, at: Instant) {
        self.at = at;
        self.sleep.as_mut().reset(at);
        self.polled = false;
    }

    /// Fires at `at` if that is earlier than the current deadline.
    pub(crate) fn ensure(&mut self, at: Instant) {
        if at < self.at {
            self.reset(at);
        }
    }

    /// True when the deadline passed; registers the task for it otherwise.
    pub(crate) fn poll_fired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.polled && !self.sleep.is_elapsed() {
            return false;
        }
        self.polled = true;
        self.sleep.as_mut().poll(cx).is_ready()
    }
}
