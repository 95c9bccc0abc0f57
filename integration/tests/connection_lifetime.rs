//! How long connections live: a response stream keeps its connection after
//! every `Channel` handle is gone; a server's maximum connection age makes
//! clients reconnect without a failed call; inline mode (handlers polled in
//! the connection's task) serves every call shape.

use std::time::Duration;

use futures_util::{stream, StreamExt};
use trpc::codec::{Json, Proto};
use trpc::server::{bidi_streaming, server_streaming, unary, Router, Server};
use trpc::stats::TransportStats;
use trpc::{Client, Code, Request, Response, Status, Streaming};

use trpc_integration::client::connect;
use trpc_integration::messages::EchoMsg;
use trpc_integration::server::{serve, serve_with};
use trpc_integration::{within, SOON};

/// `s.S/Count`: `n` messages, each after a tick; `s.S/Echo`; `s.S/Upper`
/// (bidi); `s.S/Sleep` (never answers).
fn router() -> Router {
    Router::new()
        .route(
            "s.S/Count",
            server_streaming(|req: Request<EchoMsg>| async move {
                let n: u32 = req.get_ref().message.parse().unwrap_or(3);
                let items = stream::iter(0..n).then(|i| async move {
                    tokio::task::yield_now().await;
                    Ok::<_, Status>(EchoMsg::new(i.to_string()))
                });
                Ok::<_, Status>(Response::new(items))
            })
            .codec((Json, Proto)),
        )
        .route(
            "s.S/Echo",
            unary(|req: Request<EchoMsg>| async move {
                Ok::<_, Status>(Response::new(req.into_inner()))
            }),
        )
        .route(
            "s.S/Upper",
            bidi_streaming(|req: Request<Streaming<EchoMsg>>| async move {
                let out = req
                    .into_inner()
                    .map(|m| m.map(|m| EchoMsg::new(m.message.to_uppercase())));
                Ok::<_, Status>(Response::new(out))
            }),
        )
        .route(
            "s.S/Sleep",
            unary(|_req: Request<EchoMsg>| async move {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<_, Status>(Response::new(EchoMsg::new("late")))
            }),
        )
}

#[tokio::test]
async fn a_response_stream_outlives_its_channel() {
    let srv = serve(router()).await;
    let ch = connect(srv.addr).await;
    let mut client = Client::new(ch);
    let mut s = client
        .server_streaming::<_, EchoMsg>("s.S/Count", Request::new(EchoMsg::new("200")))
        .await
        .unwrap()
        .into_inner();
    // Every handle of the channel is gone now.
    drop(client);
    let mut got = 0;
    while let Some(m) = within(SOON, "next message", s.message()).await.unwrap() {
        assert_eq!(m.message, got.to_string());
        got += 1;
    }
    assert_eq!(got, 200, "the stream ended early");
    srv.shutdown().await;
}

#[tokio::test]
async fn the_maximum_connection_age_moves_clients_without_a_failed_call() {
    let stats = TransportStats::new();
    let server = Server::builder()
        .max_connection_age(Duration::from_millis(150))
        .max_connection_age_grace(Duration::from_secs(5))
        .transport_stats(stats.clone());
    let srv = serve_with(server, router()).await;
    let mut client = Client::new(connect(srv.addr).await);
    // Calls go on while connections reach their age and are replaced.
    let mut calls = 0;
    while stats.opened_total() < 3 {
        assert!(calls < 100_000, "no connection was replaced");
        let reply: EchoMsg = within(
            SOON,
            "call",
            client.unary_message("s.S/Echo", EchoMsg::new("a")),
        )
        .await
        .expect("no call fails while connections are replaced");
        assert_eq!(reply.message, "a");
        calls += 1;
        tokio::task::yield_now().await;
    }
    // A stream that outlives the age is drained, not cut, within the grace.
    let s = client
        .server_streaming::<_, EchoMsg>("s.S/Count", Request::new(EchoMsg::new("50")))
        .await
        .unwrap()
        .into_inner();
    let all: Vec<_> = within(SOON, "stream", s.collect::<Vec<_>>()).await;
    assert_eq!(all.len(), 50);
    assert!(all.iter().all(Result::is_ok));
    srv.shutdown().await;
}

#[tokio::test]
async fn inline_mode_serves_every_call_shape_with_deadlines_and_cancellation() {
    let srv = serve_with(Server::builder().inline_handlers(true), router()).await;
    let ch = connect(srv.addr).await;
    let mut client = Client::new(ch.clone());
    let reply: EchoMsg = client
        .unary_message("s.S/Echo", EchoMsg::new("inline"))
        .await
        .unwrap();
    assert_eq!(reply.message, "inline");
    let n = client
        .server_streaming::<_, EchoMsg>("s.S/Count", Request::new(EchoMsg::new("10")))
        .await
        .unwrap()
        .into_inner()
        .count()
        .await;
    assert_eq!(n, 10);
    let up = stream::iter(["a", "b"].map(EchoMsg::new));
    let out: Vec<String> = client
        .bidi_streaming::<EchoMsg, EchoMsg, _>("s.S/Upper", Request::new(up))
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().message)
        .collect()
        .await;
    assert_eq!(out, ["A", "B"]);
    let mut req = Request::new(EchoMsg::new("zz"));
    req.set_timeout(Duration::from_millis(50));
    let err = client
        .unary::<EchoMsg, EchoMsg>("s.S/Sleep", req)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    // The connection still serves calls after the deadline dropped a call.
    let reply: EchoMsg = client
        .unary_message("s.S/Echo", EchoMsg::new("after"))
        .await
        .unwrap();
    assert_eq!(reply.message, "after");
    assert_eq!(ch.connections(), 1);
    srv.shutdown().await;
}
