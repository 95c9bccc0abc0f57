//! Error types of the timeout layer.

use std::fmt;

/// The call's deadline passed before it finished.
///
/// The layer reports it as a `DEADLINE_EXCEEDED` [`Status`](trpc::Status)
/// whose `source()` is this error.
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

/// The status a call fails with when its deadline passes.
pub(crate) fn deadline_exceeded(what: &str) -> trpc::Status {
    trpc::Status::deadline_exceeded(format!("deadline exceeded {what}")).with_source(Elapsed::new())
}
