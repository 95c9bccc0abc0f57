//! One timer per connection, armed for the earliest of its deadlines
//! (keepalive, idle, slow frames, write stall, handshake...).

use std::future::Future;
use std::pin::Pin;
use std::task::Context;

use tokio::time::{Instant, Sleep};

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
