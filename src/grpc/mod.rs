//! gRPC: the same trpc services and clients over gRPC's HTTP/2 protocol.
//!
//! * **Server**: a trpc [`Server`](crate::Server) answers gRPC on its own
//!   port: connections that start with the HTTP/2 preface (or negotiate ALPN
//!   `h2` under TLS) are served by hyper's HTTP/2 server with the same
//!   service stack — the `Router` behind the server's layers — as native
//!   connections. Requests carry [`Protocol::Grpc`](crate::Protocol::Grpc).
//! * **Client**: an [`Endpoint`](crate::Endpoint) with a `grpc://`, `http://`
//!   (cleartext HTTP/2) or `https://` (TLS, ALPN `h2`) target yields the same
//!   [`Channel`](crate::Channel) type, so layers and the typed
//!   [`Client`](crate::Client) work against any gRPC server.
//! * **HTTP**: [`crate::http::HttpService`] is the piece both use on the
//!   server side, usable on its own (in axum, for instance).
//!
//! How trpc's metadata, deadlines, statuses and compression map onto gRPC's
//! headers and trailers is in docs/GRPC.md.
//!
//! ```no_run
//! # async fn f() -> Result<(), trpc::Status> {
//! #[derive(Clone, PartialEq, prost::Message)]
//! struct Hello { #[prost(string, tag = "1")] name: String }
//!
//! let channel = trpc::Endpoint::from_static("grpc://127.0.0.1:50051").connect().await?;
//! let mut client = trpc::Client::with_codec(channel, trpc::codec::Proto);
//! let reply: Hello = client
//!     .unary_message("helloworld.Greeter/SayHello", Hello { name: "trpc".into() })
//!     .await?;
//! # Ok(()) }
//! ```

pub(crate) mod body;
pub(crate) mod client;
pub(crate) mod codec;
pub(crate) mod metadata;
pub(crate) mod server;
pub(crate) mod status;
pub(crate) mod timeout;
