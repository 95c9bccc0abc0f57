//! Streaming calls through the full layer stacks on both sides: trace, metrics,
//! timeout, auth and compression all apply to streams (per message where that
//! makes sense, over the whole stream for the deadline).

use std::time::Duration;

use futures_util::{stream, StreamExt};
use prometheus::Registry;
use tower::ServiceBuilder;
use trpc::server::{bidi_streaming, server_streaming, Router, Server};
use trpc::stats::TransportStats;
use trpc::{Client, Code, Request, Response, Status, Streaming};
use trpc_integration::client::connect;
use trpc_integration::http::{sample, scrape};
use trpc_integration::messages::EchoMsg;
use trpc_integration::server::serve_with;
use trpc_integration::{within, SOON};
use trpc_layers::auth::{Identity, StaticKeys};
use trpc_layers::trace::TraceContext;
use trpc_layers::{
    AuthLayer, CompressionLayer, MetricsLayer, RequireAuthLayer, TimeoutLayer, TraceLayer,
};

const TOKEN: &str = "stream-token";

fn router() -> Router {
    // Echoes each message back, tagged with the caller's trace id.
    let echo = |req: Request<Streaming<EchoMsg>>| async move {
        let trace = req
            .extensions()
            .get::<TraceContext>()
            .map(|t| t.trace_id().to_string())
            .unwrap_or_default();
        let out = req
            .into_inner()
            .map(move |m| m.map(|m| EchoMsg::new(format!("{trace} {}", m.message))));
        Ok::<_, Status>(Response::new(out))
    };
    // A long stream of large compressible messages, slowly.
    let slow = |_req: Request<EchoMsg>| async move {
        let s = stream::unfold(0u32, |n| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Some((Ok::<_, Status>(EchoMsg::new("x".repeat(64 * 1024))), n + 1))
        });
        Ok::<_, Status>(Response::new(s))
    };
    Router::new()
        .route("s.S/Echo", bidi_streaming(echo))
        .route("s.S/Slow", server_streaming(slow))
}

#[tokio::test]
async fn a_bidi_stream_runs_through_every_layer_on_both_sides() {
    let registry = Registry::new();
    let server_stats = TransportStats::new();
    let keys = StaticKeys::new().bearer(TOKEN, Identity::new("streamer"));
    let server = Server::builder()
        .transport_stats(server_stats.clone())
        .layer(
            ServiceBuilder::new()
                .layer(TraceLayer::server())
                .layer(MetricsLayer::server(&registry).expect("server metrics"))
                .layer(TimeoutLayer::new(Duration::from_secs(10)))
                .layer(RequireAuthLayer::new(keys))
                .layer(CompressionLayer::server()),
        );
    let srv = serve_with(server, router()).await;
    let stack = ServiceBuilder::new()
        .layer(TraceLayer::client())
        .layer(MetricsLayer::client(&registry).expect("client metrics"))
        .layer(TimeoutLayer::new(Duration::from_secs(10)))
        .layer(AuthLayer::bearer(TOKEN))
        .layer(CompressionLayer::client().min_size(1))
        .service(connect(srv.addr).await);
    let mut client = Client::new(stack);

    // 20 large, compressible messages each way.
    let big = "abcd".repeat(16 * 1024);
    let outgoing = stream::iter((0..20).map(move |i| EchoMsg::new(format!("{i} {big}"))));
    let mut replies = within(
        SOON,
        "open the stream",
        client.bidi_streaming::<EchoMsg, EchoMsg, _>("s.S/Echo", Request::new(outgoing)),
    )
    .await
    .expect("stream opens")
    .into_inner();
    let mut trace_ids = Vec::new();
    let mut n = 0;
    while let Some(m) = within(SOON, "next reply", replies.message())
        .await
        .expect("reply")
    {
        let (trace, rest) = m.message.split_once(' ').expect("tagged reply");
        assert!(rest.starts_with(&format!("{n} ")), "in order");
        trace_ids.push(trace.to_string());
        n += 1;
    }
    assert_eq!(n, 20);
    // The handler saw a trace context (propagated from the client).
    assert!(!trace_ids[0].is_empty());
    assert!(trace_ids.iter().all(|t| t == &trace_ids[0]));

    // Compression applied per message: the wire carried far less than the
    // 2 × 20 × 64 KiB of payload.
    let wire = server_stats.bytes_read() + server_stats.bytes_written();
    assert!(
        wire < 256 * 1024,
        "{wire} bytes on the wire: not compressed"
    );

    // Metrics saw one call and every message, on both sides.
    let text = scrape(&registry);
    for side in ["client", "server"] {
        let calls = sample(
            &text,
            &format!("trpc_{side}_calls_total"),
            &[("method", "s.S/Echo"), ("code", "OK"), ("protocol", "trpc")],
        );
        assert_eq!(calls, Some(1.0), "{side} calls in:\n{text}");
        let sent = sample(
            &text,
            &format!("trpc_{side}_request_messages_total"),
            &[("method", "s.S/Echo"), ("protocol", "trpc")],
        );
        assert_eq!(sent, Some(20.0), "{side} request messages in:\n{text}");
        let received = sample(
            &text,
            &format!("trpc_{side}_response_messages_total"),
            &[("method", "s.S/Echo"), ("protocol", "trpc")],
        );
        assert_eq!(received, Some(20.0), "{side} response messages in:\n{text}");
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn a_stream_without_credentials_is_rejected_before_any_message() {
    let keys = StaticKeys::new().bearer(TOKEN, Identity::new("streamer"));
    let srv = serve_with(
        Server::builder().layer(RequireAuthLayer::new(keys)),
        router(),
    )
    .await;
    let mut client = Client::new(connect(srv.addr).await);
    let err = within(
        SOON,
        "rejected stream",
        client.bidi_streaming::<EchoMsg, EchoMsg, _>(
            "s.S/Echo",
            Request::new(stream::iter(vec![EchoMsg::new("hi")])),
        ),
    )
    .await
    .expect_err("no credentials");
    assert_eq!(err.code(), Code::Unauthenticated);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_client_timeout_layer_bounds_the_whole_stream() {
    let srv = serve_with(Server::builder(), router()).await;
    let stack = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_millis(300)))
        .layer(CompressionLayer::client())
        .service(connect(srv.addr).await);
    let mut client = Client::new(stack);
    let started = tokio::time::Instant::now();
    let mut s = within(
        SOON,
        "open the stream",
        client.server_streaming::<EchoMsg, EchoMsg>("s.S/Slow", Request::new(EchoMsg::new("go"))),
    )
    .await
    .expect("stream opens")
    .into_inner();
    let mut received = 0;
    let err = loop {
        match within(SOON, "next message", s.message()).await {
            Ok(Some(_)) => received += 1,
            Ok(None) => panic!("an endless stream ended"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(received > 0);
    assert!(started.elapsed() < Duration::from_secs(5));
    srv.shutdown().await;
}
