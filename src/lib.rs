//! # trpc
//!
//! A production-grade RPC framework where every feature is a [tower] `Layer`
//! around a framed-TCP `Service`.
//!
//! * [`Channel`] is the client transport: a cheap-to-clone
//!   `Service<Request<Body>>` multiplexing many calls over a small pool of TCP
//!   connections, with deadlines, cancellation, keepalive and reconnect backoff.
//! * [`Server`] serves any `Service<Request<Body>>` — usually a
//!   [`Router`](server::Router) of typed async handlers — behind any tower
//!   layers, with limits, timeouts and graceful shutdown.
//! * [`Client`] makes typed calls over any stack built on a channel.
//! * [`Status`] is the one error type; [`Status::from_error`] maps the errors
//!   of any tower middleware.
//! * [`health`]: the `grpc.health.v1` health service and the
//!   [`HealthReporter`](health::HealthReporter) handle
//!   ([`Server::health`](server::Server::health) turns it NOT_SERVING when
//!   shutdown starts). `Channel` implements `tower::load::Load`.
//!
//! The wire format is specified in `docs/PROTOCOL.md`; the [`frame`] module
//! implements it. The same services and clients also speak gRPC (one port
//! serves both protocols) and an HTTP/JSON gateway that mounts in axum: see
//! [`grpc`] and [`http`].
//!
//! ## Cargo features
//!
//! * `tls` (default): TLS and mutual TLS with rustls, see `tls`.
//!
//! ```no_run
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Msg { message: String }
//!
//! # async fn f() -> Result<(), trpc::Status> {
//! let channel = trpc::Endpoint::from_static("tcp://127.0.0.1:7000")
//!     .connect_timeout(Duration::from_secs(1))
//!     .connect()
//!     .await?;
//! let stack = ServiceBuilder::new()
//!     .timeout(Duration::from_millis(200))
//!     .service(channel);
//! let mut client = trpc::Client::new(stack);
//! let reply: Msg = client
//!     .unary_message("echo.Echo/Say", Msg { message: "hi".into() })
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! [tower]: https://docs.rs/tower

pub mod body;
pub mod client;
pub mod codec;
pub mod codegen;
pub mod frame;
pub mod grpc;
pub mod health;
pub mod http;
pub mod metadata;
mod proto;
pub mod request;
pub mod server;
pub mod stats;
pub mod status;
pub mod stream;
#[cfg(feature = "tls")]
pub mod tls;
#[doc(hidden)]
pub mod util;
mod wire;

pub use body::{Body, Payload};
pub use client::{Channel, Client, Endpoint};
pub use codegen::{Idempotency, IntoRequest, IntoStreamingRequest, MethodDescriptor, MethodKind};
pub use metadata::MetadataMap;
pub use request::{Method, Protocol, Request, Response};
pub use server::Server;
pub use status::{BoxError, Code, Status};
pub use stream::Streaming;

/// The README's code blocks, compiled (and the runnable ones run) by
/// `cargo test --doc`, so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
