//! Errors end to end: unknown methods, handler statuses, and panics (in a
//! handler, in a middleware's `call`) that leave the server and the
//! connection serving.

use bytes::Bytes;
use tower::util::MapRequestLayer;
use trpc::server::{unary, Router, Server};
use trpc::{Body, Client, Code, Request, Response, Status};

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

    let before: EchoMsg = within(
        SOON,
        "peer",
        client.unary_message("err.Err/Peer", EchoMsg::new("")),
    )
    .await
    .expect("peer");
    for i in 0..3 {
        let err = within(
            SOON,
            "panicking call",
            client.unary_message::<_, EchoMsg>("err.Err/Panic", EchoMsg::new(format!("boom {i}"))),
        )
        .await
        .expect_err("the handler panics");
        assert_eq!(err.code(), Code::Internal, "{err:?}");
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

    // Same connection as before the panics: the handler sees the same peer.
    let after: EchoMsg = within(
        SOON,
        "peer",
        client.unary_message("err.Err/Peer", EchoMsg::new("")),
    )
    .await
    .expect("peer");
    assert_eq!(before.message, after.message, "the connection was replaced");
    assert_eq!(channel.connections(), 1);
    server.shutdown().await;
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
    let before: EchoMsg = within(
        SOON,
        "peer",
        client.unary_message("err.Err/Peer", EchoMsg::new("")),
    )
    .await
    .expect("peer");
    for _ in 0..3 {
        let err = within(
            SOON,
            "a call whose middleware panics",
            client.unary_message::<_, EchoMsg>("err.Err/PanicInCall", EchoMsg::new("x")),
        )
        .await
        .expect_err("the middleware panics");
        assert_eq!(err.code(), Code::Internal, "{err:?}");
        assert!(
            err.message().contains("middleware panic requested"),
            "{err:?}"
        );
    }
    let after: EchoMsg = within(
        SOON,
        "peer",
        client.unary_message("err.Err/Peer", EchoMsg::new("")),
    )
    .await
    .expect("the connection still serves");
    assert_eq!(before.message, after.message, "the connection was replaced");
    assert_eq!(channel.connections(), 1);
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
