//! [`TraceLayer`]: the configuration of the trace layer.

use tower_layer::Layer;
use tracing::Level;
use trpc::Code;

use super::Trace;
use crate::Side;

/// The level at which the end of a call with `code` is logged by default:
/// `OK` at INFO; errors of the caller or expected conditions
/// (`CANCELLED`, `INVALID_ARGUMENT`, `NOT_FOUND`, `ALREADY_EXISTS`,
/// `PERMISSION_DENIED`, `UNAUTHENTICATED`, `FAILED_PRECONDITION`, `ABORTED`,
/// `OUT_OF_RANGE`, `RESOURCE_EXHAUSTED`, `DEADLINE_EXCEEDED`, and
/// `UNIMPLEMENTED`: a caller asking for a method the server does not have) at
/// WARN; server faults (`UNKNOWN`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS`) at
/// ERROR.
pub fn default_level(code: Code) -> Level {
    match code {
        Code::Ok => Level::INFO,
        Code::Unknown | Code::Internal | Code::Unavailable | Code::DataLoss => Level::ERROR,
        _ => Level::WARN,
    }
}

/// Applies [`Trace`]: one span per call, W3C trace context propagation, an
/// event when the call ends.
#[derive(Clone, Copy, Debug)]
pub struct TraceLayer {
    pub(super) side: Side,
    pub(super) span_level: Level,
    pub(super) level_for: fn(Code) -> Level,
}

impl TraceLayer {
    /// For client stacks: sends `traceparent`, spans named `rpc` with
    /// `otel.kind = "client"`.
    pub const fn client() -> Self {
        TraceLayer {
            side: Side::Client,
            span_level: Level::INFO,
            level_for: default_level,
        }
    }

    /// For server stacks: reads `traceparent`, gives handlers the
    /// [`TraceContext`](super::TraceContext), spans with `otel.kind = "server"`.
    pub const fn server() -> Self {
        TraceLayer {
            side: Side::Server,
            span_level: Level::INFO,
            level_for: default_level,
        }
    }

    /// The level of the per-call span (default INFO).
    pub const fn span_level(mut self, level: Level) -> Self {
        self.span_level = level;
        self
    }

    /// How the end of a call is logged: the level for each code (default
    /// [`default_level`]).
    pub const fn level_for(mut self, f: fn(Code) -> Level) -> Self {
        self.level_for = f;
        self
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace::new(inner, *self)
    }
}
