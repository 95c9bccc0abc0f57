//! The `Router`'s application-facing features over real sockets: handler
//! state (`State` + `Router::with_state`) and per-route layers
//! (`Router::route_layer`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use trpc::server::{server_streaming, unary, Router, State};
use trpc::{Client, Code, Request, Response, Status};

use trpc_integration::client::connect;
use trpc_integration::messages::EchoMsg;
use trpc_integration::server::serve;

#[derive(Clone, Default)]
struct Counter {
    calls: Arc<AtomicU64>,
}

async fn count(
    State(c): State<Counter>,
    req: Request<EchoMsg>,
) -> Result<Response<EchoMsg>, Status> {
    let n = c.calls.fetch_add(1, Ordering::SeqCst) + 1;
    Ok(Response::new(EchoMsg::new(format!(
        "{} #{n}",
        req.into_inner().message
    ))))
}

async fn ticks(
    State(c): State<Counter>,
    _req: Request<EchoMsg>,
) -> Result<Response<impl futures_util::Stream<Item = Result<EchoMsg, Status>>>, Status> {
    let base = c.calls.load(Ordering::SeqCst);
    Ok(Response::new(futures_util::stream::iter(
        (0..3).map(move |i| Ok(EchoMsg::new((base + i).to_string()))),
    )))
}

async fn plain(req: Request<EchoMsg>) -> Result<Response<EchoMsg>, Status> {
    Ok(Response::new(req.into_inner()))
}

#[tokio::test]
async fn handlers_share_the_routers_state() {
    let counter = Counter::default();
    let router = Router::new()
        .route("s.S/Count", unary(count))
        .route("s.S/Ticks", server_streaming(ticks))
        .route("s.S/Plain", unary(plain))
        .with_state(counter.clone());
    let srv = serve(router).await;
    let mut client = Client::new(connect(srv.addr).await);
    for n in 1..=3 {
        let r: EchoMsg = client
            .unary_message("s.S/Count", EchoMsg::new("hi"))
            .await
            .unwrap();
        assert_eq!(r.message, format!("hi #{n}"));
    }
    assert_eq!(counter.calls.load(Ordering::SeqCst), 3);
    let ticks: Vec<String> = client
        .server_streaming::<_, EchoMsg>("s.S/Ticks", Request::new(EchoMsg::new("")))
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().message)
        .collect()
        .await;
    assert_eq!(ticks, ["3", "4", "5"]);
    let r: EchoMsg = client
        .unary_message("s.S/Plain", EchoMsg::new("p"))
        .await
        .unwrap();
    assert_eq!(r.message, "p");
    srv.shutdown().await;
}

async fn slow(req: Request<EchoMsg>) -> Result<Response<EchoMsg>, Status> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(Response::new(req.into_inner()))
}

#[tokio::test]
async fn a_route_layer_wraps_only_the_routes_added_before_it() {
    let router = Router::new()
        .route("s.S/Short", unary(slow))
        .route_layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(50)))
        .route("s.S/Long", unary(slow));
    let srv = serve(router).await;
    let mut client = Client::new(connect(srv.addr).await);
    let err = client
        .unary_message::<_, EchoMsg>("s.S/Short", EchoMsg::new("a"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    let ok: EchoMsg = client
        .unary_message("s.S/Long", EchoMsg::new("b"))
        .await
        .unwrap();
    assert_eq!(ok.message, "b");
    // Unknown methods are still UNIMPLEMENTED, not wrapped.
    let err = client
        .unary_message::<_, EchoMsg>("s.S/Nope", EchoMsg::new("c"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    srv.shutdown().await;
}
