//! Keepalive (docs/PROTOCOL.md §5.5): PING a silent peer, give up on one that
//! answers nothing at all within the timeout.

use std::time::Duration;

use tokio::time::Instant;

/// The 8 bytes our PINGs carry.
pub(crate) const PING_DATA: [u8; 8] = *b"trpcping";

/// What keepalive wants done now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Nothing yet.
    Nothing,
    /// Send a PING.
    Ping,
    /// The peer answered nothing within the timeout after our PING.
    Dead(Duration),
}

/// Keepalive state of one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keepalive {
    config: Option<(Duration, Duration)>,
    ping_sent: Option<Instant>,
}

impl Keepalive {
    /// PING after `interval` of silence, give up `timeout` later; `None`
    /// disables keepalive.
    pub(crate) fn new(config: Option<(Duration, Duration)>) -> Self {
        Keepalive {
            config,
            ping_sent: None,
        }
    }

    /// A PONG arrived.
    pub(crate) fn on_pong(&mut self) {
        self.ping_sent = None;
    }

    /// When to look again, given when the last frame was read.
    pub(crate) fn next_check(&self, last_read: Instant) -> Option<Instant> {
        let (interval, timeout) = self.config?;
        Some(match self.ping_sent {
            Some(sent) => sent + timeout,
            None => last_read + interval,
        })
    }

    /// What is due at `now`. Any frame read after our PING counts as an
    /// answer.
    pub(crate) fn poll(&mut self, now: Instant, last_read: Instant) -> Due {
        let Some((interval, timeout)) = self.config else {
            return Due::Nothing;
        };
        if let Some(sent) = self.ping_sent {
            if last_read > sent {
                self.ping_sent = None;
            } else if now >= sent + timeout {
                return Due::Dead(timeout);
            } else {
                return Due::Nothing;
            }
        }
        if now >= last_read + interval {
            self.ping_sent = Some(now);
            return Due::Ping;
        }
        Due::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pings_after_silence_and_declares_the_peer_dead_after_the_timeout() {
        let start = Instant::now();
        let mut k = Keepalive::new(Some((Duration::from_secs(10), Duration::from_secs(3))));
        assert_eq!(k.poll(start + Duration::from_secs(5), start), Due::Nothing);
        let t = start + Duration::from_secs(10);
        assert_eq!(k.poll(t, start), Due::Ping);
        assert_eq!(k.next_check(start), Some(t + Duration::from_secs(3)));
        assert_eq!(k.poll(t + Duration::from_secs(2), start), Due::Nothing);
        assert_eq!(
            k.poll(t + Duration::from_secs(3), start),
            Due::Dead(Duration::from_secs(3))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn any_frame_after_the_ping_is_an_answer() {
        let start = Instant::now();
        let mut k = Keepalive::new(Some((Duration::from_secs(1), Duration::from_secs(1))));
        let t = start + Duration::from_secs(1);
        assert_eq!(k.poll(t, start), Due::Ping);
        let read = t + Duration::from_millis(10);
        assert_eq!(k.poll(t + Duration::from_secs(1), read), Due::Nothing);
        assert_eq!(k.next_check(read), Some(read + Duration::from_secs(1)));
        assert_eq!(Keepalive::new(None).poll(t, start), Due::Nothing);
    }
}
