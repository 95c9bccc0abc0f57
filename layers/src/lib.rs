//! # trpc-layers
//!
//! The middleware of [trpc] as [tower] layers: each feature is a `Layer` you
//! stack with `tower::ServiceBuilder` around a [`trpc::Channel`] (client) or a
//! [`trpc::server::Router`] (server), next to any stock tower middleware.
//!
//! | layer | module | cargo feature | sides |
//! |---|---|---|---|
//! | [`TimeoutLayer`] | [`timeout`] | `timeout` | client (sets the deadline), server (enforces min(caller, server)) |
//! | [`RetryLayer`] | [`retry`] | `retry` | client |
//! | [`TraceLayer`] | [`trace`] | `trace` | client and server |
//! | [`MetricsLayer`] | [`metrics`] | `metrics` | client and server |
//! | [`Admin`](admin::Admin) (HTTP: `/metrics`, `/healthz`, `/readyz`) | [`admin`] | `admin` | server process |
//! | [`AuthLayer`], [`RequireAuthLayer`] | [`auth`] | `auth` | client, server |
//! | [`CompressionLayer`] | [`compression`] | `compression` = `gzip` + `snappy` + `zstd` (any one enables the module) | client and server |
//! | [`BalanceLayer`] over a [`Discovery`] | [`balance`], [`discovery`] | `balance`, `discovery`; `etcd` (off by default) for the etcd registry | client |
//! | [`LoadReportLayer`] | [`load_report`] | `load-report` | server (read by the balancer) |
//!
//! Every feature but `etcd` is on by default. Every layer works on unary and streaming
//! calls: streaming bodies are wrapped message by message, never buffered.
//!
//! ## Stack order
//!
//! The first layer added is the outermost. Per-call concerns go outside the
//! load balancer and per-attempt concerns inside it (see `docs/LAYERS.md`):
//!
//! ```no_run
//! # #[cfg(all(feature = "timeout", feature = "retry", feature = "trace", feature = "metrics", feature = "auth", feature = "gzip"))]
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use trpc_layers::{AuthLayer, CompressionLayer, MetricsLayer, RetryLayer, TimeoutLayer, TraceLayer};
//!
//! let registry = prometheus::Registry::new();
//! let channel = trpc::Endpoint::from_static("tcp://127.0.0.1:7000").connect().await?;
//! let stack = ServiceBuilder::new()
//!     .layer(TraceLayer::client())                       // one span per call, traceparent
//!     .layer(MetricsLayer::client(&registry)?)           // calls, latency, bytes
//!     .layer(TimeoutLayer::new(Duration::from_secs(2)))  // the call's deadline
//!     .layer(AuthLayer::bearer("s3cret"))                // credentials
//!     .layer(RetryLayer::exponential(3))                 // retries within the deadline
//!     // (a load balancer goes here)
//!     .layer(TimeoutLayer::new(Duration::from_millis(500))) // each attempt
//!     .layer(CompressionLayer::client())                 // per message
//!     .service(channel);
//! let mut client = trpc::Client::new(stack);
//! # Ok(()) }
//! ```
//!
//! Errors cross layers as [`BoxError`](trpc::BoxError); layers that fail a call
//! themselves return a [`Status`](trpc::Status) with the right code (with a
//! typed error of the layer as its `source()`), so `Status::from_error` gives
//! the caller the right code whatever the stack.
//!
//! [trpc]: https://docs.rs/trpc
//! [tower]: https://docs.rs/tower

mod side;
mod util;

#[cfg(feature = "admin")]
pub mod admin;
#[cfg(feature = "auth")]
pub mod auth;
#[cfg(feature = "balance")]
pub mod balance;
#[cfg(any(feature = "gzip", feature = "snappy", feature = "zstd"))]
pub mod compression;
#[cfg(feature = "discovery")]
pub mod discovery;
#[cfg(feature = "load-report")]
pub mod load_report;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "retry")]
pub mod retry;
#[cfg(feature = "timeout")]
pub mod timeout;
#[cfg(feature = "trace")]
pub mod trace;

#[cfg(test)]
mod test_util;

pub use side::Side;

#[cfg(feature = "auth")]
pub use auth::{AuthLayer, RequireAuthLayer};
#[cfg(feature = "balance")]
pub use balance::BalanceLayer;
#[cfg(any(feature = "gzip", feature = "snappy", feature = "zstd"))]
pub use compression::CompressionLayer;
#[cfg(feature = "discovery")]
pub use discovery::Discovery;
#[cfg(feature = "load-report")]
pub use load_report::LoadReportLayer;
#[cfg(feature = "metrics")]
pub use metrics::MetricsLayer;
#[cfg(feature = "retry")]
pub use retry::RetryLayer;
#[cfg(feature = "timeout")]
pub use timeout::TimeoutLayer;
#[cfg(feature = "trace")]
pub use trace::TraceLayer;
