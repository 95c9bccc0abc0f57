//! The deadlines of a connection's streams: one timer for all of them.
//!
//! A min-heap of `(deadline, stream id)` with lazy deletion: a stream that
//! ends (or gets an earlier deadline) leaves its entry behind, and an entry
//! counts only while its stream still has exactly that deadline. Ending a
//! stream costs nothing here, starting one is a heap push; the heap is
//! compacted when stale entries outnumber live ones, so it stays within a
//! few times the open streams. The timer is armed for the earliest entry
//! and, when that call ends early, left alone: for calls with the same
//! timeout (deadlines in the order calls start) it is re-armed about once
//! per timeout, not once per call.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::task::Context;

use tokio::time::Instant;

use super::timer::ConnTimer;

/// Heaps smaller than this are never compacted.
const COMPACT_FROM: usize = 64;

/// Deadlines of open streams; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, u32)>>,
    /// Streams that have a deadline (live entries).
    live: usize,
    timer: ConnTimer,
}

impl Deadlines {
    pub(crate) fn new() -> Self {
        let now = Instant::now();
        Deadlines {
            heap: BinaryHeap::new(),
            live: 0,
            timer: ConnTimer::idle(now),
        }
    }

    /// Streams with a deadline.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// True if no stream has a deadline.
    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Stream `id`, whose deadline is `current`, must end by `at`: returns
    /// its new deadline (an earlier one replaces a later one).
    pub(crate) fn tighten(&mut self, id: u32, current: Option<Instant>, at: Instant) -> Instant {
        match current {
            Some(cur) if cur <= at => return cur,
            Some(_) => {}
            None => self.live += 1,
        }
        self.heap.push(Reverse((at, id)));
        self.timer.ensure(at);
        at
    }

    /// A stream with a deadline ended (`current(id)`: the deadline of each
    /// stream still open). Drops the stale entries once they outnumber the
    /// live ones.
    pub(crate) fn removed(&mut self, current: impl Fn(u32) -> Option<Instant>) {
        self.live = self.live.saturating_sub(1);
        if self.heap.len() >= COMPACT_FROM && self.heap.len() > 4 * self.live {
            self.heap
                .retain(|Reverse((at, id))| current(*id) == Some(*at));
        }
    }

    /// The next stream whose deadline has passed, if any (`current(id)`:
    /// the stream's deadline now; the caller clears it). Registers the task
    /// for the earliest deadline otherwise.
    pub(crate) fn poll_expired(
        &mut self,
        cx: &mut Context<'_>,
        current: impl Fn(u32) -> Option<Instant>,
    ) -> Option<u32> {
        if !self.timer.poll_fired(cx) {
            return None;
        }
        loop {
            let now = Instant::now();
            let Some(&Reverse((at, id))) = self.heap.peek() else {
                // Nothing left: disarm until the next deadline.
                self.timer.reset_idle(now);
                return None;
            };
            if at > now {
                // The call the timer was armed for ended early: re-arm, and
                // poll once to register the task for the new time.
                self.timer.reset(at);
                if !self.timer.poll_fired(cx) {
                    return None;
                }
                continue;
            }
            self.heap.pop();
            if current(id) == Some(at) {
                self.live = self.live.saturating_sub(1);
                return Some(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::future::poll_fn;
    use std::task::Poll;
    use std::time::Duration;

    use super::*;

    /// Streams and their deadlines, as the connection's table holds them.
    #[derive(Default)]
    struct Table(HashMap<u32, Instant>);

    impl Table {
        fn tighten(&mut self, q: &mut Deadlines, id: u32, at: Instant) {
            let cur = self.0.get(&id).copied();
            self.0.insert(id, q.tighten(id, cur, at));
        }

        fn end(&mut self, q: &mut Deadlines, id: u32) {
            if self.0.remove(&id).is_some() {
                q.removed(|id| self.0.get(&id).copied());
            }
        }

        /// Every stream that expires at or before now, in order.
        async fn expired(&mut self, q: &mut Deadlines) -> Vec<u32> {
            poll_fn(|cx| {
                let mut out = Vec::new();
                while let Some(id) = q.poll_expired(cx, |id| self.0.get(&id).copied()) {
                    self.0.remove(&id);
                    out.push(id);
                }
                Poll::Ready(out)
            })
            .await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expires_in_deadline_order_and_skips_ended_and_replaced_entries() {
        let (mut q, mut t) = (Deadlines::new(), Table::default());
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        t.tighten(&mut q, 1, t0 + ms(30));
        t.tighten(&mut q, 3, t0 + ms(10));
        t.tighten(&mut q, 5, t0 + ms(20));
        t.tighten(&mut q, 7, t0 + ms(40));
        // A later deadline does not replace an earlier one; an earlier does.
        t.tighten(&mut q, 3, t0 + ms(50));
        t.tighten(&mut q, 7, t0 + ms(5));
        t.end(&mut q, 5);
        assert_eq!(q.len(), 3);
        assert_eq!(t.expired(&mut q).await, Vec::<u32>::new());
        tokio::time::sleep_until(t0 + ms(10)).await;
        assert_eq!(t.expired(&mut q).await, [7, 3]);
        tokio::time::sleep_until(t0 + ms(25)).await;
        assert_eq!(t.expired(&mut q).await, Vec::<u32>::new(), "5 ended");
        tokio::time::sleep_until(t0 + ms(45)).await;
        assert_eq!(t.expired(&mut q).await, [1], "7's old entry is stale");
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_wakes_the_task_for_the_next_deadline_after_an_early_end() {
        let (mut q, mut t) = (Deadlines::new(), Table::default());
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        t.tighten(&mut q, 1, t0 + ms(10));
        t.tighten(&mut q, 3, t0 + ms(20));
        t.end(&mut q, 1);
        // The timer, armed for 10 ms, fires and re-arms for 20 ms; the task
        // is woken then, without being polled in between.
        let woke = poll_fn(|cx| match q.poll_expired(cx, |id| t.0.get(&id).copied()) {
            Some(id) => Poll::Ready((id, Instant::now())),
            None => Poll::Pending,
        })
        .await;
        assert_eq!(woke, (3, t0 + ms(20)));
    }

    #[tokio::test(start_paused = true)]
    async fn stale_entries_are_dropped_once_they_outnumber_live_ones() {
        let (mut q, mut t) = (Deadlines::new(), Table::default());
        let t0 = Instant::now();
        let mut id = 1;
        // Calls with the same timeout, 8 open at a time, 10,000 in all.
        for _ in 0..10_000 {
            t.tighten(&mut q, id, t0 + Duration::from_secs(30));
            if id > 16 {
                t.end(&mut q, id - 16);
            }
            id += 2;
            assert!(q.heap.len() <= COMPACT_FROM.max(4 * q.len() + 1));
        }
        assert_eq!(q.len(), 8);
    }
}
