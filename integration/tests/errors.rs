//! Errors end to end: unknown methods, handler statuses, and panics (in a
//! handler, in a middleware's `call`) that leave the server and the
//! connection serving.

use bytes::Bytes;
use tower::util::MapRequestLayer;
use trpc::server::{unary, Router, Server};
use trpc::{Body, Channel, Client, Code, Request, Response, Status};

use trpc_integration::client::connect;
use trpc_integration::messages::EchoMsg;
use trpc_integration::server::{serve, serve_with};
use trpc_integration::{within, SOON};

fn router() -> Router {
    Router::new()
        .route(
            "err.Err/Peer",
            unary(|req: Request<EchoMsg>| async move {
                let peer = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
                Ok::<_, Status>(Response::new(EchoMsg::new(peer)))
            }),
        )
        .route(
            "err.Err/Panic",
            unary(|req: Request<EchoMsg>| async move {
                if !req.get_ref().message.is_empty() {
                    panic!("handler panic requested: {}", req.get_ref().message);
                }
                Ok::<_, Status>(Response::new(EchoMsg::new("no panic")))
            }),
        )
        .route(
            "err.Err/Fail",
            unary(|req: Request<EchoMsg>| async move {
                let mut status = Status::new(Code::FailedPrecondition, req.into_inner().message)
                    .with_details(Bytes::from_static(&[1, 2, 3, 0xff]));
                status.metadata_mut().insert("x-why", "because");
                Err::<Response<EchoMsg>, _>(status)
            }),
        )
}

/// The peer address the server sees for `client`'s connection.
async fn peer(client: &mut Client<Channel>) -> String {
    let reply: EchoMsg = within(
        SOON,
        "peer",
        client.unary_message("err.Err/Peer", EchoMsg::new("")),
    )
    .await
    .expect("peer");
    reply.message
}

/// Calls `method`, which must fail with INTERNAL; returns the status.
async fn internal(client: &mut Client<Channel>, method: &'static str, message: String) -> Status {
    let err = within(
        SOON,
        "a call that fails",
        client.unary_message::<_, EchoMsg>(method, EchoMsg::new(message)),
    )
    .await
    .expect_err("the call fails");
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    err
}

#[tokio::test]
async fn unknown_method_is_unimplemented() {
    let server = serve(router()).await;
    let channel = connect(server.addr).await;
    let mut client = Client::new(channel.clone());
    let err = within(
        SOON,
        "unknown method",
        client.unary_message::<_, EchoMsg>("err.Err/NoSuchMethod", EchoMsg::new("x")),
    )
    .await
    .expect_err("no such method");
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    assert!(err.message().contains("err.Err/NoSuchMethod"), "{err:?}");

    let peer: EchoMsg = within(
        SOON,
        "known method",
        client.unary_message("err.Err/Peer", EchoMsg::new("")),
    )
    .await
    .expect("a known method on the same connection");
    assert!(!peer.message.is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn handler_panic_is_internal_and_the_same_connection_serves_the_next_call() {
    let server = serve(router()).await;
    let channel = connect(server.addr).await;
    let mut client = Client::new(channel.clone());

    let before = peer(&mut client).await;
    for i in 0..3 {
        let err = internal(&mut client, "err.Err/Panic", format!("boom {i}")).await;
        assert!(err.message().contains("panic"), "{err:?}");
    }
    let ok: EchoMsg = within(
        SOON,
        "same handler, no panic",
        client.unary_message("err.Err/Panic", EchoMsg::new("")),
    )
    .await
    .expect("the handler works when it does not panic");
    assert_eq!(ok.message, "no panic");

    same_connection(&mut client, &channel, &before).await;
    server.shutdown().await;
}

/// The connection of `before` still serves: the handler sees the same peer
/// and the channel opened no other.
async fn same_connection(client: &mut Client<Channel>, channel: &Channel, before: &str) {
    assert_eq!(before, peer(client).await, "the connection was replaced");
    assert_eq!(channel.connections(), 1);
}

/// A middleware whose `call` panics for one method (before any handler
/// future exists).
fn panic_in_call(req: Request<Body>) -> Request<Body> {
    if req.method().as_str() == "err.Err/PanicInCall" {
        panic!("middleware panic requested");
    }
    req
}

async fn a_panic_in_a_services_call_fails_only_that_call(inline: bool) {
    let server = Server::builder()
        .inline_handlers(inline)
        .layer(MapRequestLayer::new(panic_in_call));
    let server = serve_with(server, router()).await;
    let channel = connect(server.addr).await;
    let mut client = Client::new(channel.clone());
    let before = peer(&mut client).await;
    for _ in 0..3 {
        let err = internal(&mut client, "err.Err/PanicInCall", "x".into()).await;
        let msg = err.message();
        assert!(msg.contains("middleware panic requested"), "{err:?}");
    }
    same_connection(&mut client, &channel, &before).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_panic_in_a_services_call_fails_only_that_call_in_a_task() {
    a_panic_in_a_services_call_fails_only_that_call(false).await;
}

#[tokio::test]
async fn a_panic_in_a_services_call_fails_only_that_call_inline() {
    a_panic_in_a_services_call_fails_only_that_call(true).await;
}

#[tokio::test]
async fn handler_status_reaches_the_client_with_message_details_and_metadata() {
    let server = serve(router()).await;
    let mut client = Client::new(connect(server.addr).await);
    let err = within(
        SOON,
        "failing call",
        client.unary_message::<_, EchoMsg>("err.Err/Fail", EchoMsg::new("not ready yet")),
    )
    .await
    .expect_err("the handler fails");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "not ready yet");
    assert_eq!(&err.details()[..], &[1, 2, 3, 0xff]);
    assert_eq!(err.metadata().get("x-why"), Some("because"));
    server.shutdown().await;
}
