//! CompressionLayer end to end: the bytes on the wire (TransportStats) really
//! shrink, in both directions, for unary and streaming calls; negotiation; a
//! corrupt compressed payload fails with a clear error.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use tower::{Service, ServiceBuilder, ServiceExt};
use trpc::server::{client_streaming, server_streaming, unary, Router, Server};
use trpc::stats::TransportStats;
use trpc::{Body, Client, Code, Payload, Request, Response, Status, Streaming};
use trpc_integration::client::endpoint;
use trpc_integration::messages::EchoMsg;
use trpc_integration::server::{serve_with, TestServer};
use trpc_integration::{within, SOON};
use trpc_layers::compression::{Encoding, ACCEPT_ENCODING, ENCODING};
use trpc_layers::CompressionLayer;

const MIB: usize = 1024 * 1024;

/// Very compressible text of `len` bytes.
fn text(len: usize) -> String {
    let mut s = "the quick brown fox jumps over the lazy dog; ".repeat(len / 45 + 1);
    s.truncate(len);
    s
}

fn router() -> Router {
    let echo =
        |req: Request<EchoMsg>| async move { Ok::<_, Status>(Response::new(req.into_inner())) };
    let download = |req: Request<EchoMsg>| async move {
        let n: usize = req.into_inner().message.parse().unwrap_or(0);
        Ok::<_, Status>(Response::new(stream::iter(
            (0..n).map(|i| Ok(EchoMsg::new(format!("{i}: {}", text(256 * 1024))))),
        )))
    };
    let upload = |req: Request<Streaming<EchoMsg>>| async move {
        let mut s = req.into_inner();
        let (mut count, mut bytes) = (0, 0);
        while let Some(m) = s.message().await? {
            count += 1;
            bytes += m.message.len();
        }
        Ok::<_, Status>(Response::new(EchoMsg::new(format!(
            "{count} messages, {bytes} bytes"
        ))))
    };
    Router::new()
        .route("zip.Echo/Say", unary(echo))
        .route("zip.Echo/Download", server_streaming(download))
        .route("zip.Echo/Upload", client_streaming(upload))
}

async fn server(stats: Arc<TransportStats>) -> TestServer {
    serve_with(
        Server::builder()
            .transport_stats(stats)
            .layer(CompressionLayer::server()),
        router(),
    )
    .await
}

/// Bytes (sent, received) by a client while it makes one 1 MiB echo call.
async fn echo_bytes(server: &TestServer, layer: Option<CompressionLayer>) -> (u64, u64) {
    let stats = TransportStats::new();
    let channel = within(
        SOON,
        "connect",
        endpoint(server.addr)
            .transport_stats(stats.clone())
            .connect(),
    )
    .await
    .unwrap();
    let (w0, r0) = (stats.bytes_written(), stats.bytes_read());
    let msg = EchoMsg::new(text(MIB));
    let reply: EchoMsg = match layer {
        Some(layer) => {
            let mut client = Client::new(ServiceBuilder::new().layer(layer).service(channel));
            within(
                SOON,
                "echo",
                client.unary_message("zip.Echo/Say", msg.clone()),
            )
            .await
        }
        None => {
            within(
                SOON,
                "echo",
                Client::new(channel).unary_message("zip.Echo/Say", msg.clone()),
            )
            .await
        }
    }
    .expect("echo");
    assert_eq!(reply, msg);
    (stats.bytes_written() - w0, stats.bytes_read() - r0)
}

#[tokio::test]
async fn a_compressible_mebibyte_shrinks_on_the_wire_both_ways() {
    let server_stats = TransportStats::new();
    let server = server(server_stats.clone()).await;
    let (plain_sent, plain_received) = echo_bytes(&server, None).await;
    assert!(plain_sent > MIB as u64 && plain_received > MIB as u64);
    for &enc in Encoding::ALL {
        let (sent, received) =
            echo_bytes(&server, Some(CompressionLayer::client().encoding(enc))).await;
        assert!(
            sent * 10 < plain_sent && received * 10 < plain_received,
            "{enc}: sent {sent} / received {received} bytes vs {plain_sent} / {plain_received} uncompressed"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn streamed_messages_are_compressed_one_by_one_in_both_directions() {
    let server = server(TransportStats::new()).await;
    let stats = TransportStats::new();
    let channel = within(
        SOON,
        "connect",
        endpoint(server.addr)
            .transport_stats(stats.clone())
            .connect(),
    )
    .await
    .unwrap();
    let mut client = Client::new(
        ServiceBuilder::new()
            .layer(CompressionLayer::client())
            .service(channel),
    );
    // Download: 8 messages of 256 KiB.
    let r0 = stats.bytes_read();
    let mut s = within(
        SOON,
        "download",
        client.server_streaming::<EchoMsg, EchoMsg>(
            "zip.Echo/Download",
            Request::new(EchoMsg::new("8")),
        ),
    )
    .await
    .unwrap()
    .into_inner();
    let mut n = 0;
    while let Some(m) = within(SOON, "message", s.message()).await.unwrap() {
        assert!(m.message.starts_with(&format!("{n}: the quick")));
        n += 1;
    }
    assert_eq!(n, 8);
    let received = stats.bytes_read() - r0;
    assert!(
        received < (MIB as u64) / 10,
        "download took {received} bytes for 2 MiB"
    );

    // Upload: 8 messages of 256 KiB.
    let w0 = stats.bytes_written();
    let msgs = stream::iter((0..8).map(|_| EchoMsg::new(text(256 * 1024))));
    let reply: Response<EchoMsg> = within(
        SOON,
        "upload",
        client.client_streaming("zip.Echo/Upload", Request::new(msgs)),
    )
    .await
    .unwrap();
    assert_eq!(
        reply.get_ref().message,
        format!("8 messages, {} bytes", 8 * 256 * 1024)
    );
    let sent = stats.bytes_written() - w0;
    assert!(
        sent < (MIB as u64) / 10,
        "upload took {sent} bytes for 2 MiB"
    );
    server.shutdown().await;
}

/// A raw call: the payload and metadata exactly as given.
async fn raw_call(
    server: &TestServer,
    payload: Payload,
    metadata: &[(&str, &str)],
) -> Result<Response<Body>, Status> {
    let mut channel = within(SOON, "connect", endpoint(server.addr).connect())
        .await
        .unwrap();
    let mut req = Request::new(Body::once(payload)).with_method("zip.Echo/Say");
    for (k, v) in metadata {
        req.metadata_mut().try_insert(k, v).unwrap();
    }
    within(SOON, "raw call", async {
        channel.ready().await?;
        channel.call(req).await
    })
    .await
}

#[tokio::test]
async fn the_server_answers_only_in_an_encoding_the_client_accepts() {
    let server = server(TransportStats::new()).await;
    let body = Bytes::from(serde_json::to_vec(&EchoMsg::new(text(64 * 1024))).unwrap());
    for &enc in Encoding::ALL {
        let resp = raw_call(
            &server,
            Payload::new(body.clone()),
            &[(ACCEPT_ENCODING, enc.as_str())],
        )
        .await
        .unwrap();
        assert_eq!(resp.metadata().get(ENCODING), Some(enc.as_str()));
        let p = resp.get_ref().as_once().unwrap();
        assert!(p.compressed && p.len() < body.len() / 10);
    }
    // A client that accepts nothing (or nothing known) gets plain replies.
    for accept in [None, Some("br")] {
        let md: Vec<(&str, &str)> = accept.map(|a| (ACCEPT_ENCODING, a)).into_iter().collect();
        let resp = raw_call(&server, Payload::new(body.clone()), &md)
            .await
            .unwrap();
        assert_eq!(resp.metadata().get(ENCODING), None);
        let p = resp.get_ref().as_once().unwrap();
        assert!(!p.compressed);
        assert_eq!(p.bytes, body);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_corrupt_compressed_request_is_invalid_argument() {
    let server = server(TransportStats::new()).await;
    let junk = Payload {
        bytes: Bytes::from_static(b"\x1f\x8b\x08\x00 this is not gzip at all"),
        compressed: true,
    };
    let err = raw_call(&server, junk, &[(ENCODING, Encoding::ALL[0].as_str())])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("corrupt"), "{err}");
    // The connection and server carry on.
    let ok = raw_call(&server, Payload::new(r#"{"message":"still here"}"#), &[]).await;
    assert!(ok.is_ok());
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_without_the_layer_rejects_compressed_messages_clearly() {
    let server = serve_with(Server::builder(), router()).await;
    let mut client = Client::new(
        ServiceBuilder::new()
            .layer(CompressionLayer::client())
            .service(
                within(SOON, "connect", endpoint(server.addr).connect())
                    .await
                    .unwrap(),
            ),
    );
    let err = within(
        SOON,
        "call",
        client.unary_message::<EchoMsg, EchoMsg>("zip.Echo/Say", EchoMsg::new(text(64 * 1024))),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err}");
    // Small messages are under the threshold: not compressed, so they work.
    let small: EchoMsg = within(
        SOON,
        "call",
        client.unary_message("zip.Echo/Say", EchoMsg::new("hi")),
    )
    .await
    .unwrap();
    assert_eq!(small.message, "hi");
    server.shutdown().await;
}
