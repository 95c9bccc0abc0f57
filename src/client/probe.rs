//! [`DeadlineProbe`]: how a client layer learns that the transport below it
//! enforces a call's deadline, so it needs no timer of its own.
//!
//! A [`Channel`](super::Channel) enforces `req.deadline()` itself, with one
//! timer per connection for all of its calls. A deadline layer above it (for
//! example `trpc_layers::TimeoutLayer`) would only duplicate that work with a
//! timer per call — unless something between the two defers the call (a
//! `tower::buffer::Buffer` hands it to a worker task that may wait for
//! readiness long past the deadline). The layer cannot know the stack below
//! it, so it asks: it starts a probe, makes the inner `call`, and finishes the
//! probe. A transport that took the call on *synchronously, inside that
//! `call`*, with a deadline at or before the layer's, has said so through
//! [`DeadlineProbe::enforced`]; anything else (a deferred call, a service that
//! knows nothing of probes) leaves the probe empty, and the layer keeps its
//! own timer. The answer travels through a thread-local slot, so asking costs
//! two thread-local accesses and nothing is allocated.

use std::cell::Cell;
use std::marker::PhantomData;

use tokio::time::Instant;

thread_local! {
    /// The deadline enforced for the call being made on this thread, if a
    /// transport (or a layer's own timer) took it on.
    static ENFORCED: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Asks whether the service called between [`start`](DeadlineProbe::start)
/// and [`finish`](DeadlineProbe::finish) enforces the call's deadline; see the
/// [module docs](self).
///
/// ```
/// use std::time::Duration;
/// use tokio::time::Instant;
/// use trpc::client::DeadlineProbe;
///
/// let deadline = Instant::now() + Duration::from_secs(1);
/// let probe = DeadlineProbe::start();
/// // ... inner.call(req) with `deadline` on the request; a Channel reports:
/// DeadlineProbe::enforced(deadline);
/// assert!(probe.finish().is_some_and(|d| d <= deadline));
///
/// // Nothing below reported: keep a timer.
/// assert_eq!(DeadlineProbe::start().finish(), None);
/// ```
#[derive(Debug)]
#[must_use = "finish the probe to learn the answer"]
pub struct DeadlineProbe {
    // Started and finished on one thread, around one synchronous call.
    _not_send: PhantomData<*const ()>,
}

impl DeadlineProbe {
    /// Starts asking: forgets what an earlier call on this thread reported.
    pub fn start() -> DeadlineProbe {
        ENFORCED.with(|e| e.set(None));
        DeadlineProbe {
            _not_send: PhantomData,
        }
    }

    /// The deadline that something below enforces for the call made since
    /// [`start`](DeadlineProbe::start), if any. The answer stays visible to a
    /// probe around this one (an outer layer), so a call enforced below is
    /// timed by no layer above.
    pub fn finish(self) -> Option<Instant> {
        ENFORCED.with(Cell::get)
    }

    /// Reports that `deadline` is enforced for the call being made on this
    /// thread: by a transport that took it on, or by a layer that keeps a
    /// timer of its own (so layers above it need none).
    pub fn enforced(deadline: Instant) {
        ENFORCED.with(|e| e.set(Some(deadline)));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_enforced_deadline_is_seen_by_every_enclosing_probe() {
        let d = Instant::now() + Duration::from_secs(1);
        let outer = DeadlineProbe::start();
        let inner = DeadlineProbe::start();
        DeadlineProbe::enforced(d);
        assert_eq!(inner.finish(), Some(d));
        assert_eq!(outer.finish(), Some(d));
    }

    #[test]
    fn a_new_probe_forgets_an_earlier_answer() {
        DeadlineProbe::enforced(Instant::now());
        assert_eq!(DeadlineProbe::start().finish(), None);
    }
}
