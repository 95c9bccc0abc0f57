//! Flow control (docs/PROTOCOL.md §5.4): the windows of DATA payload bytes a
//! side may send and is willing to receive, for one stream or a whole
//! connection, and the rules for WINDOW_UPDATE.

use crate::frame::MAX_WINDOW;

/// A WINDOW_UPDATE that breaks the rules: an increment of 0, or one that
/// pushes the window above 2^31 - 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadIncrement;

/// What we may still send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendWindow(i64);

impl SendWindow {
    pub(crate) fn new(initial: u32) -> Self {
        SendWindow(i64::from(initial))
    }

    /// True when a DATA frame may be sent now (the window is positive; a
    /// message larger than the window is sent whole and drives it negative).
    pub(crate) fn is_open(&self) -> bool {
        self.0 > 0
    }

    /// Counts `n` sent bytes.
    pub(crate) fn consume(&mut self, n: usize) {
        self.0 -= n as i64;
    }

    /// Applies a received WINDOW_UPDATE; `Ok(true)` when the window just
    /// opened (waiting senders can go on).
    pub(crate) fn apply(&mut self, increment: u32) -> Result<bool, BadIncrement> {
        let was_open = self.is_open();
        let next = self.0 + i64::from(increment);
        if increment == 0 || next > MAX_WINDOW {
            return Err(BadIncrement);
        }
        self.0 = next;
        Ok(!was_open && self.is_open())
    }
}

/// What the peer may still send us, and the consumed bytes we have not yet
/// given back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecvWindow {
    window: i64,
    unacked: usize,
    threshold: usize,
}

impl RecvWindow {
    /// A window of `initial` bytes, given back in increments of at least half
    /// of it (fewer, larger WINDOW_UPDATEs).
    pub(crate) fn new(initial: u32) -> Self {
        RecvWindow {
            window: i64::from(initial),
            unacked: 0,
            threshold: (initial as usize / 2).max(1),
        }
    }

    /// Counts a received DATA payload of `len` bytes. `Err` when the peer had
    /// no window left: it sent more than we allowed (beyond the one message a
    /// sender may overshoot by).
    pub(crate) fn receive(&mut self, len: usize) -> Result<(), ()> {
        if len > 0 && self.window <= 0 {
            return Err(());
        }
        self.window -= len as i64;
        Ok(())
    }

    /// `n` received bytes were consumed (or discarded): returns the increment
    /// to announce now, if enough is owed.
    pub(crate) fn release(&mut self, n: usize) -> Option<u32> {
        self.unacked += n;
        if self.unacked < self.threshold {
            return None;
        }
        Some(self.take_unacked())
    }

    /// Like [`RecvWindow::release`], without batching: the increment to send
    /// now for `n` bytes (`None` for 0).
    pub(crate) fn release_now(&mut self, n: usize) -> Option<u32> {
        self.unacked += n;
        (self.unacked > 0).then(|| self.take_unacked())
    }

    fn take_unacked(&mut self) -> u32 {
        let inc = self.unacked.min(MAX_WINDOW as usize);
        self.unacked -= inc;
        self.window += inc as i64;
        inc as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_window_opens_and_rejects_bad_increments() {
        let mut w = SendWindow::new(10);
        w.consume(25);
        assert!(!w.is_open());
        assert_eq!(w.apply(10), Ok(false));
        assert_eq!(w.apply(6), Ok(true));
        assert_eq!(w.apply(0), Err(BadIncrement));
        assert_eq!(w.apply(u32::MAX), Err(BadIncrement));
    }

    #[test]
    fn receive_window_allows_one_overshooting_message_then_refuses() {
        let mut w = RecvWindow::new(10);
        assert_eq!(w.receive(25), Ok(()));
        assert_eq!(w.receive(1), Err(()));
        assert_eq!(w.receive(0), Ok(()), "an empty message costs nothing");
    }

    #[test]
    fn credit_is_given_back_in_batches_of_half_the_window() {
        let mut w = RecvWindow::new(100);
        w.receive(100).unwrap();
        assert_eq!(w.release(30), None);
        assert_eq!(w.release(30), Some(60));
        assert_eq!(w.release_now(5), Some(5));
        assert_eq!(w.release_now(0), None);
        assert_eq!(w.receive(65), Ok(()));
    }
}
