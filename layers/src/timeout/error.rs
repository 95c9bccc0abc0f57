//! Error types of the timeout layer.

use std::fmt;
use std::time::Duration;

use trpc::Status;

/// The call's deadline passed before it finished.
///
/// The layer reports it as a `DEADLINE_EXCEEDED` [`Status`] whose `source()`
/// is this error.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(());

impl Elapsed {
    /// A new `Elapsed`.
    pub const fn new() -> Self {
        Elapsed(())
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline elapsed")
    }
}

impl std::error::Error for Elapsed {}

/// Whose deadline a call ran out of, for a message that says what happened
/// from where it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// A client call: the caller gave up waiting.
    Client,
    /// A server call, stopped at the server's own timeout.
    ServerTimeout(Duration),
    /// A server call, stopped at the (earlier) deadline the caller sent.
    CallerDeadline,
}

impl Expiry {
    /// The status a call fails with when its deadline passes, before its
    /// response (`stream == false`) or during its response stream.
    pub(crate) fn status(self, stream: bool) -> Status {
        let message = match (self, stream) {
            (Expiry::Client, false) => "deadline exceeded before the response arrived".to_owned(),
            (Expiry::Client, true) => "deadline exceeded during the response stream".to_owned(),
            (Expiry::ServerTimeout(t), false) => {
                format!("deadline exceeded: the server's {t:?} timeout passed before the handler finished")
            }
            (Expiry::ServerTimeout(t), true) => {
                format!("deadline exceeded: the server's {t:?} timeout passed during the response stream")
            }
            (Expiry::CallerDeadline, false) => {
                "deadline exceeded: the caller's deadline passed before the handler finished"
                    .to_owned()
            }
            (Expiry::CallerDeadline, true) => {
                "deadline exceeded: the caller's deadline passed during the response stream"
                    .to_owned()
            }
        };
        Status::deadline_exceeded(message).with_source(Elapsed::new())
    }
}
