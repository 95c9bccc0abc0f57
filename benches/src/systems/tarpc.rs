//! tarpc 0.38: bincode over tokio-util's `LengthDelimitedCodec` (its
//! `serde_transport`), on sockets with TCP_NODELAY like every other system.

use std::net::SocketAddr;

use bytes::Bytes;
use futures::StreamExt;
use tarpc::server::{BaseChannel, Channel as _};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::{client, context, serde_transport};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::LengthDelimitedCodec;

use super::MAX_MESSAGE;

#[allow(unreachable_pub, missing_docs, missing_debug_implementations)]
mod service {
    /// The echo service.
    #[tarpc::service]
    pub trait BenchEcho {
        /// Returns the payload.
        async fn echo(payload: bytes::Bytes) -> bytes::Bytes;
    }
}

use service::{BenchEcho, BenchEchoClient};

#[derive(Clone, Debug)]
struct EchoServer;

impl BenchEcho for EchoServer {
    async fn echo(self, _: context::Context, payload: Bytes) -> Bytes {
        payload
    }
}

fn framing() -> tokio_util::codec::length_delimited::Builder {
    let mut b = LengthDelimitedCodec::builder();
    b.max_frame_length(MAX_MESSAGE + 1024);
    b
}

/// Serves forever: one `BaseChannel` per connection, one task per request
/// (tarpc's documented way).
pub(crate) async fn serve(listener: TcpListener) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                eprintln!("tarpc: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let transport = serde_transport::new(framing().new_framed(tcp), Bincode::default());
        let channel = BaseChannel::with_defaults(transport);
        tokio::spawn(channel.execute(EchoServer.serve()).for_each(|call| async {
            tokio::spawn(call);
        }));
    }
}

/// A client on one connection; clones share it.
pub(crate) type Client = BenchEchoClient;

/// Connects one connection and spawns the client's dispatch task.
pub(crate) async fn connect(addr: SocketAddr) -> Result<Client, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("tarpc: connect to {addr}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let transport = serde_transport::new(framing().new_framed(tcp), Bincode::default());
    Ok(BenchEchoClient::new(client::Config::default(), transport).spawn())
}

/// One echo call.
pub(crate) async fn call(client: &Client, payload: &Bytes) -> Result<Bytes, String> {
    client
        .echo(context::current(), payload.clone())
        .await
        .map_err(|e| format!("tarpc: {e}"))
}
