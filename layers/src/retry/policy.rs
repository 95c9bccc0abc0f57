//! The retry policy: which failures are retried and how long to wait.

use std::time::Duration;

use trpc::Code;

use crate::util::{random_u64, MethodSet};

/// A set of status codes (a bit per code).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct CodeSet(u32);

impl CodeSet {
    pub(crate) fn of(codes: impl IntoIterator<Item = Code>) -> CodeSet {
        CodeSet(codes.into_iter().fold(0, |bits, c| bits | 1 << (c as u32)))
    }

    pub(crate) fn contains(self, code: Code) -> bool {
        self.0 & (1 << (code as u32)) != 0
    }
}

impl std::fmt::Debug for CodeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(Code::ALL.iter().filter(|c| self.contains(**c)))
            .finish()
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Policy {
    /// Attempts in total, the first included (≥ 1).
    pub(crate) max_attempts: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) retryable: CodeSet,
    pub(crate) idempotent: MethodSet,
}

impl Policy {
    /// The backoff cap before retry number `retry` (1 for the first retry).
    pub(crate) fn backoff_cap(&self, retry: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << (retry.saturating_sub(1)).min(30));
        exp.min(self.max_backoff)
    }

    /// A full-jitter backoff: uniform in `[0, backoff_cap(retry)]`.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let r = (random_u64() >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
        self.backoff_cap(retry).mul_f64(r)
    }
}
