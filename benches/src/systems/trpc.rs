//! trpc: the bare stack (a [`Router`] behind [`Server`], a [`Channel`] behind
//! [`trpc::Client`]) with the protobuf codec.

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use tokio::net::TcpListener;
use trpc::codec::Proto;
use trpc::server::{server_streaming, unary, Router, Server};
use trpc::{Channel, Endpoint, Request, Response, Status};

use super::MAX_MESSAGE;
use crate::messages::{chunks, DownloadRequest, EchoMsg};

/// The echo method.
pub(crate) const ECHO: &str = "bench.Echo/Echo";

async fn echo(req: Request<EchoMsg>) -> Result<Response<EchoMsg>, Status> {
    Ok(Response::new(req.into_inner()))
}

/// The server-streaming download method.
pub(crate) const DOWNLOAD: &str = "bench.Echo/Download";

async fn download(
    req: Request<DownloadRequest>,
) -> Result<Response<impl futures::Stream<Item = Result<EchoMsg, Status>>>, Status> {
    let DownloadRequest { total, chunk } = req.into_inner();
    Ok(Response::new(chunks(total, chunk)))
}

/// The methods every trpc server variant serves.
pub(crate) fn router() -> Router {
    Router::new()
        .route(ECHO, unary(echo).codec(Proto))
        .route(DOWNLOAD, server_streaming(download).codec(Proto))
}

/// Serves the bare stack forever (`inline`: handlers polled in the
/// connection's task instead of a task each).
pub(crate) async fn serve(listener: TcpListener, inline: bool) -> io::Result<()> {
    Server::builder()
        .max_message_size(MAX_MESSAGE)
        .inline_handlers(inline)
        .serve_with_listener(listener, router(), std::future::pending())
        .await
}

/// Opens a channel (one connection) with the bench's message limit.
pub(crate) async fn channel(addr: SocketAddr) -> Result<Channel, Status> {
    Endpoint::new(format!("tcp://{addr}"))?
        .max_message_size(MAX_MESSAGE)
        .connect()
        .await
}

/// A typed client over the bare channel.
pub(crate) type Client = trpc::Client<Channel, Proto>;

/// Connects a bare client.
pub(crate) async fn connect(addr: SocketAddr) -> Result<Client, Status> {
    Ok(trpc::Client::with_codec(channel(addr).await?, Proto))
}

/// One echo call over any trpc stack.
pub(crate) async fn call<S>(
    client: &mut trpc::Client<S, Proto>,
    payload: &Bytes,
) -> Result<Bytes, String>
where
    S: tower::Service<Request<trpc::Body>, Response = Response<trpc::Body>>,
    S::Error: Into<trpc::BoxError>,
{
    let reply: EchoMsg = client
        .unary_message(
            ECHO,
            EchoMsg {
                payload: payload.clone(),
            },
        )
        .await
        .map_err(|s| format!("trpc: {s}"))?;
    Ok(reply.payload)
}

/// A server-streaming download over any trpc stack; returns the payload bytes
/// received.
pub(crate) async fn download_call<S>(
    client: &mut trpc::Client<S, Proto>,
    total: u64,
    chunk: u32,
) -> Result<u64, String>
where
    S: tower::Service<Request<trpc::Body>, Response = Response<trpc::Body>>,
    S::Error: Into<trpc::BoxError>,
{
    let mut stream = client
        .server_streaming::<DownloadRequest, EchoMsg>(
            DOWNLOAD,
            Request::new(DownloadRequest { total, chunk }),
        )
        .await
        .map_err(|s| format!("trpc: {s}"))?
        .into_inner();
    let mut got = 0u64;
    while let Some(msg) = stream.message().await.map_err(|s| format!("trpc: {s}"))? {
        got += msg.payload.len() as u64;
    }
    Ok(got)
}
