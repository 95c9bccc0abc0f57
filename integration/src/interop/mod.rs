//! The gRPC interop suite's `grpc.testing.TestService` on trpc: the messages
//! (hand-written prost structs matching `integration/interop/proto/`), the
//! server (`examples/interop_server.rs`) and the client test cases
//! (`examples/interop_client.rs`), shared with the tests in
//! `integration/tests/grpc_interop.rs`.

pub mod client;
pub mod messages;
pub mod server;
