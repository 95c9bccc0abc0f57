//! TraceLayer end to end: the trace id a server handler sees equals the
//! client's, also across a nested call (the logs are checked in
//! `layers_trace_logs.rs`).

use tower::ServiceBuilder;
use trpc::server::{unary, Router, Server};
use trpc::{Client, Request, Response, Status};
use trpc_integration::client::connect;
use trpc_integration::messages::EchoMsg;
use trpc_integration::server::serve_with;
use trpc_integration::{within, SOON};
use trpc_layers::trace::TraceContext;
use trpc_layers::TraceLayer;

/// Replies with "trace_id parent_id" of the call as the handler sees it.
fn whoami(req: Request<EchoMsg>) -> EchoMsg {
    let ctx = req
        .extensions()
        .get::<TraceContext>()
        .expect("TraceContext extension");
    let parent = ctx.parent_id().map(|p| p.to_string()).unwrap_or_default();
    EchoMsg::new(format!("{} {parent}", ctx.trace_id()))
}

fn leaf_router() -> Router {
    Router::new().route(
        "t.Leaf/WhoAmI",
        unary(|req: Request<EchoMsg>| async move { Ok::<_, Status>(Response::new(whoami(req))) }),
    )
}

#[tokio::test]
async fn the_handler_sees_the_clients_trace_id() {
    let server = serve_with(Server::builder().layer(TraceLayer::server()), leaf_router()).await;
    let mut client = Client::new(
        ServiceBuilder::new()
            .layer(TraceLayer::client())
            .service(connect(server.addr).await),
    );
    let mut ids = Vec::new();
    for _ in 0..2 {
        let resp: Response<EchoMsg> = within(
            SOON,
            "call",
            client.unary("t.Leaf/WhoAmI", Request::new(EchoMsg::new(""))),
        )
        .await
        .unwrap();
        let client_ctx = *resp.extensions().get::<TraceContext>().unwrap();
        let (trace, parent) = resp.get_ref().message.split_once(' ').unwrap();
        assert_eq!(trace, client_ctx.trace_id().to_string());
        assert_eq!(parent, client_ctx.span_id().to_string());
        ids.push(client_ctx.trace_id());
    }
    assert_ne!(
        ids[0], ids[1],
        "each call without a parent starts a new trace"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_handler_calling_another_service_propagates_the_trace() {
    let leaf = serve_with(Server::builder().layer(TraceLayer::server()), leaf_router()).await;
    let leaf_addr = leaf.addr;
    let middle = move |req: Request<EchoMsg>| async move {
        let own = whoami(req);
        // No plumbing: the client layer picks up the current call's context.
        let mut downstream = Client::new(
            ServiceBuilder::new()
                .layer(TraceLayer::client())
                .service(connect(leaf_addr).await),
        );
        let leaf: EchoMsg = downstream
            .unary_message("t.Leaf/WhoAmI", EchoMsg::new(""))
            .await?;
        Ok::<_, Status>(Response::new(EchoMsg::new(format!(
            "{}|{}",
            own.message, leaf.message
        ))))
    };
    let server = serve_with(
        Server::builder().layer(TraceLayer::server()),
        Router::new().route("t.Middle/Call", unary(middle)),
    )
    .await;
    let mut client = Client::new(
        ServiceBuilder::new()
            .layer(TraceLayer::client())
            .service(connect(server.addr).await),
    );
    let resp: Response<EchoMsg> = within(
        SOON,
        "nested call",
        client.unary("t.Middle/Call", Request::new(EchoMsg::new(""))),
    )
    .await
    .unwrap();
    let trace = resp
        .extensions()
        .get::<TraceContext>()
        .unwrap()
        .trace_id()
        .to_string();
    let (middle_seen, leaf_seen) = resp.get_ref().message.split_once('|').unwrap();
    assert!(middle_seen.starts_with(&trace), "{middle_seen} vs {trace}");
    assert!(leaf_seen.starts_with(&trace), "{leaf_seen} vs {trace}");
    let (_, leaf_parent) = leaf_seen.split_once(' ').unwrap();
    let (_, middle_parent) = middle_seen.split_once(' ').unwrap();
    assert_ne!(leaf_parent, middle_parent, "the nested call is a new span");
    server.shutdown().await;
    leaf.shutdown().await;
}
