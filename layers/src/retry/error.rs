//! Error types of the retry layer.

use std::fmt;

use trpc::{BoxError, Status};

/// A failed call was not retried because the retry budget had no token left
/// (the budget caps retries so a struggling server is not hit by a storm).
///
/// The call fails with a [`Status`] that keeps the code and message of the
/// last attempt's error, adds `(not retried: the retry budget is exhausted)`
/// to the message, and has this error as its `source()`; this error's own
/// source is the last attempt's error.
#[derive(Debug)]
pub struct BudgetExhausted {
    attempts: u32,
    source: BoxError,
}

impl BudgetExhausted {
    pub(crate) fn new(attempts: u32, source: BoxError) -> Self {
        BudgetExhausted { attempts, source }
    }

    /// Attempts made before the budget ran out.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

impl fmt::Display for BudgetExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "retry budget exhausted after {} attempt{}",
            self.attempts,
            if self.attempts == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for BudgetExhausted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl BudgetExhausted {
    /// The status the caller sees: the last error's code and message, with
    /// the reason it was not retried.
    pub(crate) fn into_status(self) -> Status {
        const WHY: &str = "(not retried: the retry budget is exhausted)";
        let status = match crate::util::find_status(&*self.source) {
            Some(s) => Status::new(s.code(), format!("{} {WHY}", s.message()))
                .with_details(s.details().clone())
                .with_metadata(s.metadata().clone()),
            None => Status::new(
                Status::code_of(&*self.source),
                format!("{} {WHY}", self.source),
            ),
        };
        status.with_source(self)
    }
}
