//! Message size limits: a 64 MiB message round-trips when both sides raise the
//! limit; with the default 4 MiB limit oversized messages fail with
//! RESOURCE_EXHAUSTED for that call only, and absurd length claims do not hurt
//! the server.

use std::time::Duration;

use bytes::BytesMut;
use trpc::codec::Proto;
use trpc::frame::{put_header, Flags, FrameType, Settings};
use trpc::server::{unary, Router, Server};
use trpc::stats::TransportStats;
use trpc::{Client, Code, Request, Response, Status};

use trpc_integration::client::{connect, endpoint};
use trpc_integration::fake_server::FakeServer;
use trpc_integration::frames::{metadata_block, reply, unary_request};
use trpc_integration::messages::{pattern, Ask, Blob, EchoMsg};
use trpc_integration::peer::Peer;
use trpc_integration::server::{echo_router, serve, serve_with};
use trpc_integration::{within, SOON};

const MIB: usize = 1 << 20;

/// `blob.Blob/Echo` returns the blob; `blob.Blob/Make` returns `len` bytes.
fn blob_router() -> Router {
    Router::new()
        .route(
            "blob.Blob/Echo",
            unary(|req: Request<Blob>| async move {
                Ok::<_, Status>(Response::new(req.into_inner()))
            })
            .codec(Proto),
        )
        .route(
            "blob.Blob/Make",
            unary(|req: Request<Ask>| async move {
                let len = req.get_ref().len as usize;
                Ok::<_, Status>(Response::new(Blob { data: pattern(len) }))
            })
            .codec(Proto),
        )
        .merge(echo_router())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_of_64_mib_round_trips_when_both_sides_raise_the_limit() {
    let limit = 65 * MIB;
    let server = serve_with(Server::builder().max_message_size(limit), blob_router()).await;
    let channel = within(
        SOON,
        "connect",
        endpoint(server.addr).max_message_size(limit).connect(),
    )
    .await
    .expect("connect");
    let mut client = Client::with_codec(channel, Proto);
    let data = pattern(64 * MIB);
    let reply: Blob = within(
        Duration::from_secs(60),
        "64 MiB round trip",
        client.unary_message("blob.Blob/Echo", Blob { data: data.clone() }),
    )
    .await
    .expect("64 MiB call");
    assert_eq!(reply.data.len(), data.len());
    assert!(reply.data == data, "64 MiB payload came back different");
    server.shutdown().await;
}

#[tokio::test]
async fn request_over_the_server_limit_fails_locally_and_sends_nothing() {
    // The server keeps the default 4 MiB; the client would accept 16 MiB, so
    // the limit that applies is the one the server announced in SETTINGS.
    let server = serve(blob_router()).await;
    let stats = TransportStats::new();
    let channel = within(
        SOON,
        "connect",
        endpoint(server.addr)
            .max_message_size(16 * MIB)
            .transport_stats(stats.clone())
            .connect(),
    )
    .await
    .expect("connect");
    let mut client = Client::with_codec(channel.clone(), Proto);
    let written_before = stats.bytes_written();

    let err = within(
        SOON,
        "oversized call",
        client.unary_message::<_, Blob>(
            "blob.Blob/Echo",
            Blob {
                data: pattern(4 * MIB + 1),
            },
        ),
    )
    .await
    .expect_err("a message over the server's limit must not be sent");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains(&(4 * MIB).to_string()),
        "the error names the limit: {err:?}"
    );
    assert!(
        stats.bytes_written() - written_before < 64 * 1024,
        "the oversized message was written: {} bytes sent",
        stats.bytes_written() - written_before
    );

    // The channel is fine: a message just under the limit goes through.
    let reply: Blob = within(
        SOON,
        "call under the limit",
        client.unary_message(
            "blob.Blob/Echo",
            Blob {
                data: pattern(4 * MIB - 16),
            },
        ),
    )
    .await
    .expect("a message under the limit");
    assert_eq!(reply.data.len(), 4 * MIB - 16);
    // The byte counter works: that message did go out.
    assert!(stats.bytes_written() - written_before >= (4 * MIB - 16) as u64);
    assert_eq!(channel.connections(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_request_frame_fails_its_stream_and_the_connection_serves_on() {
    let server = serve(blob_router()).await;
    let mut raw = Peer::connect(server.addr).await;
    let settings = raw.exchange_settings().await;
    assert_eq!(settings.max_message_size, Some(4 << 20));

    // Stream 1: a HEADERS frame whose payload is one byte over the limit.
    let big = unary_request(
        1,
        "blob.Blob/Echo",
        &[("trpc-codec", b"proto")],
        vec![7u8; 4 * MIB + 1],
    );
    raw.send(&big).await;
    let r = raw.response().await;
    assert_eq!(r.stream_id, 1);
    assert_eq!(r.status, Code::ResourceExhausted as u32, "{}", r.message);
    assert!(r.message.contains("exceeds"), "{}", r.message);

    // Stream 3 on the same connection: a normal call.
    let body = serde_json::to_vec(&EchoMsg::new("still here")).expect("json");
    raw.send(&unary_request(3, "echo.Echo/Say", &[], body))
        .await;
    let r = raw.response().await;
    assert_eq!((r.stream_id, r.status), (3, 0), "{}", r.message);
    let reply: EchoMsg = serde_json::from_slice(&r.payload).expect("json");
    assert_eq!(reply.message, "still here");
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_request_metadata_fails_its_stream_and_the_connection_serves_on() {
    let server = serve(echo_router()).await;
    let mut raw = Peer::connect(server.addr).await;
    let settings = raw.exchange_settings().await;
    assert_eq!(settings.max_metadata_size, Some(16 << 10));

    let big_value = vec![b'v'; 20 << 10];
    let body = serde_json::to_vec(&EchoMsg::new("x")).expect("json");
    raw.send(&unary_request(
        1,
        "echo.Echo/Say",
        &[("x-big", &big_value)],
        body.clone(),
    ))
    .await;
    let r = raw.response().await;
    assert_eq!(r.stream_id, 1);
    assert_eq!(r.status, Code::ResourceExhausted as u32, "{}", r.message);

    raw.send(&unary_request(3, "echo.Echo/Say", &[], body))
        .await;
    let r = raw.response().await;
    assert_eq!((r.stream_id, r.status), (3, 0), "{}", r.message);
    server.shutdown().await;
}

#[tokio::test]
async fn response_over_the_client_limit_is_resource_exhausted_and_the_channel_works_on() {
    // The server may send up to 16 MiB; the client accepts the default 4 MiB.
    let server = serve_with(Server::builder().max_message_size(16 * MIB), blob_router()).await;
    let channel = connect(server.addr).await;
    let mut client = Client::with_codec(channel.clone(), Proto);

    let err = within(
        SOON,
        "oversized response",
        client.unary_message::<_, Blob>(
            "blob.Blob/Make",
            Ask {
                len: 5 * MIB as u64,
                millis: 0,
            },
        ),
    )
    .await
    .expect_err("a response over the client's limit");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    let reply: Blob = within(
        SOON,
        "small response",
        client.unary_message(
            "blob.Blob/Make",
            Ask {
                len: 1000,
                millis: 0,
            },
        ),
    )
    .await
    .expect("small response after the oversized one");
    assert_eq!(reply.data, pattern(1000));
    assert_eq!(channel.connections(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_response_frame_fails_only_its_call_on_the_client() {
    // A fake server that ignores the client's announced limit: it answers the
    // first call with a 5 MiB message and echoes the next.
    let fake = FakeServer::bind().await;
    let settings = Settings {
        max_message_size: Some(64 << 20),
        ..Settings::default()
    };
    let (channel, mut conn) = fake.connect_with(fake.endpoint(), settings).await;
    let mut client = Client::new(channel.clone());

    let first = tokio::spawn({
        let mut client = client.clone();
        async move {
            client
                .unary_message::<_, EchoMsg>("echo.Echo/Say", EchoMsg::new("first"))
                .await
        }
    });
    let req = conn.request().await;
    conn.send(&reply(req.stream_id, Code::Ok, &vec![1u8; 5 * MIB]))
        .await;
    let err = within(SOON, "oversized answer", first)
        .await
        .expect("call task")
        .expect_err("a 5 MiB answer is over the client's 4 MiB limit");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    let second = tokio::spawn(async move {
        client
            .unary_message::<_, EchoMsg>("echo.Echo/Say", EchoMsg::new("second"))
            .await
    });
    let req = conn.request().await;
    conn.send(&reply(req.stream_id, Code::Ok, &req.payload))
        .await;
    let reply: EchoMsg = within(SOON, "next call", second)
        .await
        .expect("call task")
        .expect("the connection carries on after the oversized frame");
    assert_eq!(reply.message, "second");
    assert_eq!(channel.connections(), 1);
}

#[tokio::test]
async fn length_claim_of_4_gib_does_not_hurt_the_server() {
    let server = serve(echo_router()).await;
    let mut raw = Peer::connect(server.addr).await;
    raw.exchange_settings().await;

    // A HEADERS frame claiming 0xFFFFFFFF payload bytes, followed by a trickle.
    let mut b = BytesMut::new();
    let md = metadata_block(&[(":path", b"echo.Echo/Say")]);
    put_header(
        &mut b,
        FrameType::Headers,
        Flags::MESSAGE.with(Flags::END_STREAM),
        1,
        md.len(),
        u32::MAX as usize,
    );
    b.extend_from_slice(&md);
    b.extend_from_slice(&[0u8; 4096]);
    raw.send(&b).await;
    let r = raw.response().await;
    assert_eq!(r.stream_id, 1);
    assert_eq!(r.status, Code::ResourceExhausted as u32, "{}", r.message);

    // The server is healthy and answers another client.
    let mut client = Client::new(connect(server.addr).await);
    let reply: EchoMsg = within(
        SOON,
        "second client",
        client.unary_message("echo.Echo/Say", EchoMsg::new("healthy")),
    )
    .await
    .expect("second client");
    assert_eq!(reply.message, "healthy");
    drop(raw);
    server.shutdown().await;
}

#[tokio::test]
async fn json_message_over_the_default_limit_is_resource_exhausted() {
    // The same check through the default codec and default limits on both sides.
    let server = serve(echo_router()).await;
    let mut client = Client::new(connect(server.addr).await);
    let err = within(
        SOON,
        "oversized json call",
        client.unary_message::<_, EchoMsg>("echo.Echo/Say", EchoMsg::new("x".repeat(5 * MIB))),
    )
    .await
    .expect_err("5 MiB over a 4 MiB limit");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    server.shutdown().await;
}
