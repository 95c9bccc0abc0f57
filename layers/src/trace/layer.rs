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
    /// The levels `level_for` gives some code (a bit per level).
    end_levels: u8,
}

/// [`default_level`] gives INFO, WARN and ERROR.
const DEFAULT_END_LEVELS: u8 = bit(Level::INFO) | bit(Level::WARN) | bit(Level::ERROR);

const fn bit(level: Level) -> u8 {
    match level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 4,
        Level::DEBUG => 8,
        _ => 16,
    }
}

/// True if a subscriber takes events or spans of this layer at `level`.
fn enabled_at(level: Level) -> bool {
    match level {
        Level::ERROR => tracing::enabled!(target: "trpc_layers::trace", Level::ERROR),
        Level::WARN => tracing::enabled!(target: "trpc_layers::trace", Level::WARN),
        Level::INFO => tracing::enabled!(target: "trpc_layers::trace", Level::INFO),
        Level::DEBUG => tracing::enabled!(target: "trpc_layers::trace", Level::DEBUG),
        _ => tracing::enabled!(target: "trpc_layers::trace", Level::TRACE),
    }
}

impl TraceLayer {
    /// For client stacks: sends `traceparent`, spans named `rpc` with
    /// `otel.kind = "client"`.
    pub const fn client() -> Self {
        TraceLayer {
            side: Side::Client,
            span_level: Level::INFO,
            level_for: default_level,
            end_levels: DEFAULT_END_LEVELS,
        }
    }

    /// For server stacks: reads `traceparent`, gives handlers the
    /// [`TraceContext`](super::TraceContext), spans with `otel.kind = "server"`.
    pub const fn server() -> Self {
        TraceLayer {
            side: Side::Server,
            span_level: Level::INFO,
            level_for: default_level,
            end_levels: DEFAULT_END_LEVELS,
        }
    }

    /// The level of the per-call span (default INFO).
    pub const fn span_level(mut self, level: Level) -> Self {
        self.span_level = level;
        self
    }

    /// How the end of a call is logged: the level for each code (default
    /// [`default_level`]).
    pub fn level_for(mut self, f: fn(Code) -> Level) -> Self {
        self.level_for = f;
        self.end_levels = Code::ALL.iter().fold(0, |m, &c| m | bit(f(c)));
        self
    }

    /// The side this layer serves.
    pub const fn side(&self) -> Side {
        self.side
    }

    /// True if a subscriber takes the span or some end-of-call event of this
    /// layer; when none does, the layer only propagates the trace context.
    pub(super) fn logs_enabled(&self) -> bool {
        [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ]
        .into_iter()
        .any(|l| (self.end_levels & bit(l) != 0 || l == self.span_level) && enabled_at(l))
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace::new(inner, *self)
    }
}
