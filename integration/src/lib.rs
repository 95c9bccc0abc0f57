//! The test-support library of trpc's end-to-end tests (`tests/`), one
//! crate used by every test (h2's `h2-support` idea). Each module has one
//! job:
//!
//! | module | what it gives a test |
//! |---|---|
//! | [`server`] | [`server::TestServer`]: a real server on `127.0.0.1:0` (`serve`, `serve_with`, `shutdown`); [`server::echo_router`] |
//! | [`client`] | an endpoint with a bounded connect timeout, a connected channel |
//! | [`peer`] | [`peer::Peer`]: one raw-frame peer (handshake, send raw or encoded frames, next frame or close, responses, GOAWAY then close, a PING/PONG barrier) |
//! | [`frames`] | frame and metadata builders, well-formed or not |
//! | [`fake_server`] | [`fake_server::FakeServer`]: a scripted server socket that a real `Channel` connects to |
//! | [`pipe`] | a client and a server connected over an in-memory pipe, for paused-time tests |
//! | [`h2`] | a raw HTTP/2 peer (hand-built frames and HPACK literals) for gRPC tests |
//! | [`hostile`] | a server with short timeouts and slow/large methods, and a [`hostile::Bystander`] client that must be served throughout |
//! | [`probe`] | handler probes: started, finished, dropped |
//! | [`messages`] | the shared test messages (both codecs) and raw request bodies |
//! | [`proc`] | this process's memory and CPU, and the lock serialising memory measurements |
//! | [`http`] | a minimal HTTP GET and a Prometheus sample reader |
//! | [`pki`] | a throwaway certificate authority (also used by the TLS example) |
//! | [`python`] | the Python interop peers: their directory, the grpcio venv, running a script |
//! | [`interop`] | the gRPC interop suite's test service and client cases |
//! | [`etcd`] | a real etcd server per test (`etcd` from Debian's `etcd-server`) |
//! | [`cluster`] | a load generator that records which replica served each call, tallies, waits for a balancer's endpoints |
//! | [`replica`] | replica processes (`trpc-replica`) for failure tests: killed for real |
//!
//! Waits are bounded: [`within`], [`until`], [`SOON`].

pub mod client;
pub mod cluster;
pub mod etcd;
pub mod fake_server;
pub mod frames;
pub mod h2;
pub mod hostile;
pub mod http;
pub mod interop;
pub mod messages;
pub mod peer;
pub mod pipe;
pub mod pki;
pub mod probe;
pub mod proc;
pub mod python;
pub mod replica;
pub mod server;
mod wait;

pub use wait::{until, within, SOON};
