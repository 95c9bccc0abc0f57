//! How a connection ends: [`Exit`] when it closes on purpose, [`ConnError`]
//! when the peer broke the protocol or the transport failed.

use std::fmt;
use std::io;

use crate::frame::{FrameError, GoawayCode};
use crate::status::Status;

/// A connection that closed on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Drained, idle, or the peer went away cleanly: the reason, for logs.
    Graceful(&'static str),
    /// The server's shutdown grace period ended with calls still running.
    Forced,
}

/// A connection error: the connection ends and every open stream fails.
#[derive(Debug)]
pub(crate) enum ConnError {
    /// The peer broke the protocol (or abused it): we say so with a GOAWAY
    /// carrying `code` and `reason`, then close.
    Goaway {
        /// The GOAWAY error code.
        code: GoawayCode,
        /// The debug text.
        reason: String,
    },
    /// The peer is unreachable or unresponsive (keepalive, write timeout):
    /// closed without a GOAWAY, which it could not read anyway.
    Gone(String),
    /// The transport failed.
    Io(io::Error),
}

impl ConnError {
    /// A GOAWAY-reported error.
    pub(crate) fn goaway(code: GoawayCode, reason: impl Into<String>) -> Self {
        ConnError::Goaway {
            code,
            reason: reason.into(),
        }
    }

    /// A PROTOCOL_ERROR.
    pub(crate) fn protocol(reason: impl Into<String>) -> Self {
        ConnError::goaway(GoawayCode::ProtocolError, reason)
    }

    /// A FLOW_CONTROL_ERROR.
    pub(crate) fn flow_control(reason: impl Into<String>) -> Self {
        ConnError::goaway(GoawayCode::FlowControlError, reason)
    }

    /// The status the open calls of the connection fail with (client side),
    /// naming the peer.
    pub(crate) fn into_status(self, peer: impl fmt::Display) -> Status {
        match self {
            ConnError::Goaway { reason, .. } => {
                Status::internal(format!("protocol error from {peer}: {reason}"))
            }
            ConnError::Gone(why) => Status::unavailable(why),
            ConnError::Io(e) => Status::from_io_error(&e).with_source(e),
        }
    }
}

impl From<FrameError> for ConnError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => ConnError::Io(e),
            e => ConnError::goaway(e.goaway_code(), e.to_string()),
        }
    }
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        ConnError::Io(e)
    }
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Goaway { code, reason } => write!(f, "{reason} ({code:?})"),
            ConnError::Gone(why) => f.write_str(why),
            ConnError::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}
