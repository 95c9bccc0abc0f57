//! One stream's state: where it is in its life ([`StreamState`]), its flow
//! control windows, the queue of messages received on it, and what the role
//! keeps about it.

use std::sync::Arc;
use std::task::Waker;

use tokio::time::Instant;

use super::flow::{RecvWindow, SendWindow};
use crate::stream::InboundShared;

/// Where a stream is in its life (h2's `streams/state.rs`, simplified: HEADERS
/// opens a stream, and a stream that is closed is removed from the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamState {
    /// Both sides may send.
    Open,
    /// We sent END_STREAM; the peer may still send.
    HalfClosedLocal,
    /// The peer sent END_STREAM; we may still send.
    HalfClosedRemote,
    /// Both sides are done, or the stream was reset.
    Closed,
}

impl StreamState {
    /// The state once we have sent END_STREAM.
    pub(crate) fn close_local(self) -> StreamState {
        match self {
            StreamState::Open => StreamState::HalfClosedLocal,
            _ => StreamState::Closed,
        }
    }

    /// The state once the peer has sent END_STREAM.
    pub(crate) fn close_remote(self) -> StreamState {
        match self {
            StreamState::Open => StreamState::HalfClosedRemote,
            _ => StreamState::Closed,
        }
    }

    /// True while we may send on the stream.
    pub(crate) fn can_send(self) -> bool {
        matches!(self, StreamState::Open | StreamState::HalfClosedRemote)
    }

    /// True while the peer may send on the stream.
    pub(crate) fn can_recv(self) -> bool {
        matches!(self, StreamState::Open | StreamState::HalfClosedLocal)
    }
}

/// One open stream of a connection; `X` is what the role keeps about it.
#[derive(Debug)]
pub(crate) struct Stream<X> {
    pub(crate) state: StreamState,
    /// What we may still send (DATA payload bytes).
    pub(crate) send: SendWindow,
    /// What the peer may still send.
    pub(crate) recv: RecvWindow,
    /// The sender waiting for this stream's window to open.
    pub(crate) send_waker: Option<Waker>,
    /// Messages received on the stream, while its reader may read them.
    pub(crate) inbound: Option<Arc<InboundShared>>,
    /// The stream's deadline (its entry in the connection's
    /// [`Deadlines`](super::deadlines::Deadlines)).
    pub(crate) deadline: Option<Instant>,
    /// The role's part.
    pub(crate) ext: X,
}

impl<X> Stream<X> {
    /// A stream opened now, with the given initial windows.
    pub(crate) fn new(send_window: u32, recv_window: u32, ext: X) -> Self {
        Stream {
            state: StreamState::Open,
            send: SendWindow::new(send_window),
            recv: RecvWindow::new(recv_window),
            send_waker: None,
            inbound: None,
            deadline: None,
            ext,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StreamState::*;

    #[test]
    fn a_stream_closes_when_both_sides_are_done() {
        assert_eq!(Open.close_local(), HalfClosedLocal);
        assert_eq!(Open.close_remote(), HalfClosedRemote);
        assert_eq!(HalfClosedLocal.close_remote(), Closed);
        assert_eq!(HalfClosedRemote.close_local(), Closed);
        assert!(HalfClosedRemote.can_send() && !HalfClosedRemote.can_recv());
        assert!(HalfClosedLocal.can_recv() && !HalfClosedLocal.can_send());
        assert!(!Closed.can_send() && !Closed.can_recv());
    }
}
