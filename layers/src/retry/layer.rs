//! [`RetryLayer`]: the retry policy and budget.

use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::TpsBudget;
use tower_layer::Layer;
use trpc::Code;

use super::policy::{CodeSet, Policy};
use super::Retry;
use crate::util::MethodSet;

/// Applies [`Retry`]; see the [module docs](super) for when a call is retried.
///
/// Clones share the retry budget.
#[derive(Clone, Debug)]
pub struct RetryLayer {
    pub(super) policy: Arc<Policy>,
    pub(super) budget: Option<Arc<TpsBudget>>,
}

impl RetryLayer {
    /// Up to `max_attempts` attempts in all (the first included), with backoff
    /// from 50 ms to 1 s, retrying `UNAVAILABLE`, with the default budget
    /// (`TpsBudget::default()`: 20% of calls plus 10 retries per second over 10 s).
    pub fn exponential(max_attempts: u32) -> Self {
        RetryLayer {
            policy: Arc::new(Policy {
                max_attempts: max_attempts.max(1),
                initial_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(1),
                retryable: CodeSet::of([Code::Unavailable]),
                idempotent: MethodSet::default(),
            }),
            budget: Some(Arc::new(TpsBudget::default())),
        }
    }

    fn policy_mut(&mut self) -> &mut Policy {
        Arc::make_mut(&mut self.policy)
    }

    /// Backoff before the first retry is at most `initial`, doubling each
    /// retry, never more than `max`.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        let p = self.policy_mut();
        p.initial_backoff = initial;
        p.max_backoff = max.max(initial);
        self
    }

    /// The codes that are retried (replaces the default, `UNAVAILABLE`).
    pub fn retry_on(mut self, codes: impl IntoIterator<Item = Code>) -> Self {
        self.policy_mut().retryable = CodeSet::of(codes);
        self
    }

    /// Marks methods as idempotent, so their failures are retried even when
    /// the server may have processed them: `pkg.Service/Method`,
    /// `pkg.Service/*` or `*`. May be called several times.
    pub fn idempotent(mut self, pattern: &str) -> Self {
        let p = self.policy_mut();
        p.idempotent = p.idempotent.with(pattern);
        self
    }

    /// Replaces the retry budget (shared by every service of this layer).
    pub fn budget(mut self, budget: TpsBudget) -> Self {
        self.budget = Some(Arc::new(budget));
        self
    }

    /// Retries without a budget (not recommended outside tests).
    pub fn no_budget(mut self) -> Self {
        self.budget = None;
        self
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry::new(inner, self.clone())
    }
}
