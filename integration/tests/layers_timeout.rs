//! TimeoutLayer end to end: the client's deadline reaches the handler, the
//! server narrows it to its own timeout and drops the handler when it passes,
//! and the deadline covers a whole response stream.

use std::time::Duration;

use futures_util::stream;
use tokio::time::Instant;
use tower::ServiceBuilder;
use trpc::server::{server_streaming, unary, Router, Server};
use trpc::{Client, Code, Request, Response, Status};
use trpc_integration::client::connect;
use trpc_integration::messages::EchoMsg;
use trpc_integration::probe::{Event, Probe};
use trpc_integration::server::serve_with;
use trpc_integration::{within, SOON};
use trpc_layers::TimeoutLayer;

/// `d.Svc/Hang` reports to `probe` and never answers.
fn router(probe: Probe) -> Router {
    // Replies with the time the handler has left, in whole milliseconds.
    let remaining = |req: Request<EchoMsg>| async move {
        let left = req
            .time_remaining()
            .map_or("none".to_owned(), |d| d.as_millis().to_string());
        Ok::<_, Status>(Response::new(EchoMsg::new(left)))
    };
    let hang = move |_req: Request<EchoMsg>| {
        let guard = probe.enter();
        async move {
            std::future::pending::<()>().await;
            guard.finish();
            Ok::<_, Status>(Response::new(EchoMsg::new("never")))
        }
    };
    let ticks = |_req: Request<EchoMsg>| async move {
        let ticks = stream::unfold(0u32, |n| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Some((Ok::<_, Status>(EchoMsg::new(n.to_string())), n + 1))
        });
        Ok::<_, Status>(Response::new(ticks))
    };
    Router::new()
        .route("d.Svc/Remaining", unary(remaining))
        .route("d.Svc/Hang", unary(hang))
        .route("d.Svc/Ticks", server_streaming(ticks))
}

#[tokio::test]
async fn the_clients_deadline_reaches_the_handler() {
    let (probe, _events) = Probe::new();
    let server = serve_with(Server::builder(), router(probe)).await;
    let mut client = Client::new(
        ServiceBuilder::new()
            .layer(TimeoutLayer::new(Duration::from_millis(800)))
            .service(connect(server.addr).await),
    );
    let left: EchoMsg = within(
        SOON,
        "call",
        client.unary_message("d.Svc/Remaining", EchoMsg::new("")),
    )
    .await
    .unwrap();
    let left: u64 = left.message.parse().expect("the handler has a deadline");
    assert!(left > 0 && left <= 800, "{left} ms left");
    server.shutdown().await;
}

#[tokio::test]
async fn the_server_narrows_the_deadline_and_drops_the_handler_when_it_passes() {
    let (probe, mut events) = Probe::new();
    let server = serve_with(
        Server::builder().layer(TimeoutLayer::new(Duration::from_millis(100))),
        router(probe),
    )
    .await;
    let mut client = Client::new(
        ServiceBuilder::new()
            .layer(TimeoutLayer::new(Duration::from_secs(30)))
            .service(connect(server.addr).await),
    );
    let left: EchoMsg = within(
        SOON,
        "call",
        client.unary_message("d.Svc/Remaining", EchoMsg::new("")),
    )
    .await
    .unwrap();
    let left: u64 = left.message.parse().unwrap();
    assert!(
        left <= 100,
        "the handler sees {left} ms, not min(30 s, 100 ms)"
    );

    let start = Instant::now();
    let err = within(
        SOON,
        "hanging call",
        client.unary_message::<EchoMsg, EchoMsg>("d.Svc/Hang", EchoMsg::new("")),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    // The server says it gave up, not what a client would say.
    assert!(err.message().contains("server"), "{err}");
    assert!(
        !err.message().contains("before the response arrived"),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    events.expect(Event::Started, SOON).await;
    events.expect(Event::Dropped, SOON).await;
    server.shutdown().await;
}

#[tokio::test]
async fn over_a_channel_the_client_deadline_is_enforced_by_the_channel() {
    let (probe, mut events) = Probe::new();
    let server = serve_with(Server::builder(), router(probe)).await;
    let mut client = Client::new(
        ServiceBuilder::new()
            .layer(TimeoutLayer::new(Duration::from_millis(100)))
            .service(connect(server.addr).await),
    );
    let start = Instant::now();
    let err = within(
        SOON,
        "hanging call",
        client.unary_message::<EchoMsg, EchoMsg>("d.Svc/Hang", EchoMsg::new("")),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(start.elapsed() >= Duration::from_millis(100));
    // The channel's timer ended the call (the layer keeps none when the
    // channel takes the deadline on), and the server dropped the handler.
    assert_ne!(
        err.message(),
        "deadline exceeded before the response arrived",
        "the layer timed the call"
    );
    events.expect(Event::Started, SOON).await;
    events.expect(Event::Dropped, SOON).await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_deadline_covers_the_whole_response_stream() {
    let (probe, _events) = Probe::new();
    let server = serve_with(
        Server::builder().layer(TimeoutLayer::new(Duration::from_millis(150))),
        router(probe),
    )
    .await;
    let mut client = Client::new(connect(server.addr).await);
    let mut s = within(
        SOON,
        "call",
        client.server_streaming::<EchoMsg, EchoMsg>("d.Svc/Ticks", Request::new(EchoMsg::new(""))),
    )
    .await
    .unwrap()
    .into_inner();
    let mut got = 0;
    let end = loop {
        match within(SOON, "next tick", s.message()).await {
            Ok(Some(_)) => got += 1,
            Ok(None) => panic!("an endless stream ended without error"),
            Err(e) => break e,
        }
    };
    assert_eq!(end.code(), Code::DeadlineExceeded, "{end}");
    assert!(got >= 1, "no message before the deadline");
    server.shutdown().await;
}
