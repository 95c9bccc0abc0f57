//! trpc over gRPC: the bare trpc server (native and gRPC on one port) called
//! by trpc's gRPC client (`grpc://`), protobuf, one HTTP/2 connection — the
//! same wire and message as the tonic system.

use std::net::SocketAddr;

use trpc::codec::Proto;
use trpc::{Channel, Endpoint, Status};

use super::MAX_MESSAGE;

/// A typed client over a gRPC channel.
pub(crate) type Client = trpc::Client<Channel, Proto>;

/// Connects one HTTP/2 connection to a trpc server (see `trpc::serve`).
pub(crate) async fn connect(addr: SocketAddr) -> Result<Client, Status> {
    let channel = Endpoint::new(format!("grpc://{addr}"))?
        .max_message_size(MAX_MESSAGE)
        .connect()
        .await?;
    Ok(trpc::Client::with_codec(channel, Proto))
}
