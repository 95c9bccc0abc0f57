//! The systems under test: each has a server (run in its own process by
//! `bench-server`) and a client the load generator drives.
//!
//! Adding a system: a module here with `serve(listener)` and a client type
//! with `echo(&payload)` (and `download` if it streams); a [`System`] variant
//! with its name and label; an arm in [`serve`], [`Client::connect`],
//! [`Client::echo`] and [`Client::download`]. Add it to [`System::ALL`] to
//! include it in the default run (raw stays first: ratios are against it).

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;
use tokio::net::TcpListener;

pub(crate) mod raw;
pub(crate) mod tarpc;
pub(crate) mod tonic;
pub(crate) mod trpc;
pub(crate) mod trpc_grpc;
pub(crate) mod trpc_std;

/// Largest message any system accepts (the 16 MiB round trip plus envelope).
pub(crate) const MAX_MESSAGE: usize = 32 << 20;

/// A system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum System {
    /// A raw echo over length-prefixed frames, batching both sides with no
    /// allocation per call: the limit (see [`raw`]).
    Raw,
    /// trpc, bare stack.
    Trpc,
    /// trpc, bare stack, handlers polled inside the connection's task.
    TrpcInline,
    /// trpc with the standard stack: timeout, metrics, trace, auth.
    TrpcStd,
    /// tonic 0.14.
    Tonic,
    /// tarpc 0.38.
    Tarpc,
    /// trpc with the timeout layer only.
    TrpcTimeout,
    /// trpc with the metrics layer only.
    TrpcMetrics,
    /// trpc with the trace layer only.
    TrpcTrace,
    /// trpc with the trace layer only, its log lines formatted (into a sink).
    TrpcTraceFmt,
    /// trpc with the auth layer only.
    TrpcAuth,
    /// trpc over gRPC (HTTP/2): trpc's gRPC client, the bare trpc server.
    TrpcGrpc,
}

impl System {
    /// Every system, in table order.
    pub(crate) const ALL: &'static [System] = &[
        System::Raw,
        System::Trpc,
        System::TrpcStd,
        System::TrpcGrpc,
        System::Tonic,
        System::Tarpc,
    ];

    /// The trpc variants that price each layer of the standard stack.
    pub(crate) const LAYERS: &'static [System] = &[
        System::Trpc,
        System::TrpcTimeout,
        System::TrpcMetrics,
        System::TrpcTrace,
        System::TrpcTraceFmt,
        System::TrpcAuth,
        System::TrpcStd,
    ];

    /// The name in tables and on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            System::Raw => "raw",
            System::Trpc => "trpc",
            System::TrpcInline => "trpc-inline",
            System::TrpcStd => "trpc-std",
            System::Tonic => "tonic",
            System::Tarpc => "tarpc",
            System::TrpcTimeout => "trpc-timeout",
            System::TrpcMetrics => "trpc-metrics",
            System::TrpcTrace => "trpc-trace",
            System::TrpcTraceFmt => "trpc-trace-fmt",
            System::TrpcAuth => "trpc-auth",
            System::TrpcGrpc => "trpc-grpc",
        }
    }

    /// The name with what it is, for tables.
    pub(crate) fn label(self) -> &'static str {
        match self {
            System::Raw => "raw (batching echo)",
            System::Trpc => "trpc (bare)",
            System::TrpcInline => "trpc (bare, inline handlers)",
            System::TrpcStd => "trpc (standard stack)",
            System::Tonic => "tonic 0.14",
            System::Tarpc => "tarpc 0.38",
            System::TrpcTimeout => "trpc + timeout",
            System::TrpcMetrics => "trpc + metrics",
            System::TrpcTrace => "trpc + trace",
            System::TrpcTraceFmt => "trpc + trace, log lines formatted",
            System::TrpcAuth => "trpc + auth",
            System::TrpcGrpc => "trpc (gRPC)",
        }
    }

    /// The trpc standard stack (timeout, metrics, trace, auth), when the
    /// layers exist.
    pub(crate) fn standard_stack() -> Option<System> {
        Some(System::TrpcStd)
    }

    /// True if the system has a server-streaming download.
    pub(crate) fn streams(self) -> bool {
        !matches!(self, System::Tarpc)
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Runs the server of `system` on `listener` until the process exits.
pub(crate) async fn serve(system: System, listener: TcpListener) -> Result<(), String> {
    match system {
        System::Raw => {
            raw::serve(listener).await;
            Ok(())
        }
        System::Trpc | System::TrpcGrpc => trpc::serve(listener, false)
            .await
            .map_err(|e| e.to_string()),
        System::TrpcInline => trpc::serve(listener, true).await.map_err(|e| e.to_string()),
        System::TrpcStd
        | System::TrpcTimeout
        | System::TrpcMetrics
        | System::TrpcTrace
        | System::TrpcTraceFmt
        | System::TrpcAuth => trpc_std::serve(system, listener).await,
        System::Tonic => tonic::serve(listener).await.map_err(|e| e.to_string()),
        System::Tarpc => {
            tarpc::serve(listener).await;
            Ok(())
        }
    }
}

/// A connected client of any system. Clones share the connection.
#[derive(Clone)]
pub(crate) enum Client {
    /// Raw framing.
    Raw(raw::Client),
    /// trpc, bare.
    Trpc(trpc::Client),
    /// trpc, standard stack.
    TrpcStd(trpc_std::StdClient),
    /// trpc + timeout.
    TrpcTimeout(trpc_std::TimeoutClient),
    /// trpc + metrics.
    TrpcMetrics(trpc_std::MetricsClient),
    /// trpc + trace.
    TrpcTrace(trpc_std::TraceClient),
    /// trpc + auth.
    TrpcAuth(trpc_std::AuthClient),
    /// trpc over gRPC.
    TrpcGrpc(trpc_grpc::Client),
    /// tonic.
    Tonic(tonic::Client),
    /// tarpc.
    Tarpc(tarpc::Client),
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Client::Raw(_) => "Client::Raw",
            Client::Trpc(_) => "Client::Trpc",
            Client::TrpcStd(_) => "Client::TrpcStd",
            Client::TrpcTimeout(_) => "Client::TrpcTimeout",
            Client::TrpcMetrics(_) => "Client::TrpcMetrics",
            Client::TrpcTrace(_) => "Client::TrpcTrace",
            Client::TrpcAuth(_) => "Client::TrpcAuth",
            Client::TrpcGrpc(_) => "Client::TrpcGrpc",
            Client::Tonic(_) => "Client::Tonic",
            Client::Tarpc(_) => "Client::Tarpc",
        })
    }
}

impl Client {
    /// Opens one connection to a `system` server at `addr`.
    pub(crate) async fn connect(system: System, addr: SocketAddr) -> Result<Client, String> {
        Ok(match system {
            System::Raw => Client::Raw(
                raw::Client::connect(addr)
                    .await
                    .map_err(|e| format!("raw: connect to {addr}: {e}"))?,
            ),
            System::Trpc | System::TrpcInline => Client::Trpc(
                trpc::connect(addr)
                    .await
                    .map_err(|e| format!("trpc: connect to {addr}: {e}"))?,
            ),
            System::TrpcStd => Client::TrpcStd(trpc_std::standard(addr).await?),
            System::TrpcTimeout => Client::TrpcTimeout(trpc_std::timeout(addr).await?),
            System::TrpcMetrics => Client::TrpcMetrics(trpc_std::metrics(addr).await?),
            System::TrpcTrace | System::TrpcTraceFmt => {
                Client::TrpcTrace(trpc_std::trace(addr).await?)
            }
            System::TrpcAuth => Client::TrpcAuth(trpc_std::auth(addr).await?),
            System::TrpcGrpc => Client::TrpcGrpc(
                trpc_grpc::connect(addr)
                    .await
                    .map_err(|e| format!("trpc-grpc: connect to {addr}: {e}"))?,
            ),
            System::Tonic => Client::Tonic(tonic::connect(addr).await?),
            System::Tarpc => Client::Tarpc(tarpc::connect(addr).await?),
        })
    }

    /// One echo call; returns the reply's payload.
    pub(crate) async fn echo(&mut self, payload: &Bytes) -> Result<Bytes, String> {
        match self {
            Client::Raw(c) => c.echo(payload).await,
            Client::Trpc(c) => trpc::call(c, payload).await,
            Client::TrpcStd(c) => trpc::call(c, payload).await,
            Client::TrpcTimeout(c) => trpc::call(c, payload).await,
            Client::TrpcMetrics(c) => trpc::call(c, payload).await,
            Client::TrpcTrace(c) => trpc::call(c, payload).await,
            Client::TrpcAuth(c) => trpc::call(c, payload).await,
            Client::TrpcGrpc(c) => trpc::call(c, payload).await,
            Client::Tonic(c) => tonic::call(c, payload).await,
            Client::Tarpc(c) => tarpc::call(c, payload).await,
        }
    }

    /// A server-streaming download of `total` bytes in `chunk`-byte messages;
    /// returns the payload bytes received.
    pub(crate) async fn download(&mut self, total: u64, chunk: u32) -> Result<u64, String> {
        match self {
            Client::Raw(c) => c.download(total, chunk).await,
            Client::Tonic(c) => tonic::download(c, total, chunk).await,
            Client::Trpc(c) => trpc::download_call(c, total, chunk).await,
            Client::TrpcStd(c) => trpc::download_call(c, total, chunk).await,
            Client::TrpcTimeout(c) => trpc::download_call(c, total, chunk).await,
            Client::TrpcMetrics(c) => trpc::download_call(c, total, chunk).await,
            Client::TrpcTrace(c) => trpc::download_call(c, total, chunk).await,
            Client::TrpcAuth(c) => trpc::download_call(c, total, chunk).await,
            Client::TrpcGrpc(c) => trpc::download_call(c, total, chunk).await,
            Client::Tarpc(_) => Err("tarpc has no streaming calls".into()),
        }
    }
}
