//! Stock tower middleware (ConcurrencyLimit, RateLimit, LoadShed, Buffer,
//! Timeout) mixed with trpc layers, before and after them, in client and server
//! stacks; their errors reach the caller as the right status.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use tokio::sync::{mpsc, Notify};
use tower::buffer::{Buffer, BufferLayer};
use tower::limit::RateLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::timeout::TimeoutLayer as TowerTimeoutLayer;
use tower::{Service, ServiceBuilder, ServiceExt};
use trpc::server::{unary, Router, Server};
use trpc::{Body, Client, Code, Request, Response, Status};
use trpc_integration::client::connect;
use trpc_integration::http::{sample, scrape};
use trpc_integration::messages::EchoMsg;
use trpc_integration::server::serve_with;
use trpc_integration::{within, SOON};
use trpc_layers::auth::{Identity, StaticKeys};
use trpc_layers::retry::Attempts;
use trpc_layers::{
    AuthLayer, MetricsLayer, RequireAuthLayer, RetryLayer, TimeoutLayer, TraceLayer,
};

/// `t.Svc/Say` echoes; `t.Svc/Wait` waits for `release` (reporting on
/// `started`); `t.Svc/Sleep` sleeps the given milliseconds.
fn router(started: mpsc::UnboundedSender<()>, release: Arc<Notify>) -> Router {
    let say =
        |req: Request<EchoMsg>| async move { Ok::<_, Status>(Response::new(req.into_inner())) };
    let wait = move |req: Request<EchoMsg>| {
        let (started, release) = (started.clone(), release.clone());
        async move {
            let _ = started.send(());
            release.notified().await;
            Ok::<_, Status>(Response::new(req.into_inner()))
        }
    };
    let sleep = |req: Request<EchoMsg>| async move {
        let ms = req.get_ref().message.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, Status>(Response::new(req.into_inner()))
    };
    Router::new()
        .route("t.Svc/Say", unary(say))
        .route("t.Svc/Wait", unary(wait))
        .route("t.Svc/Sleep", unary(sleep))
}

fn plain_router() -> Router {
    router(mpsc::unbounded_channel().0, Arc::new(Notify::new()))
}

#[tokio::test]
async fn client_rate_limit_behind_load_shed_and_trpc_layers_is_resource_exhausted() {
    let keys = StaticKeys::new().bearer("t", Identity::new("me"));
    let server = serve_with(
        Server::builder().layer(RequireAuthLayer::new(keys)),
        plain_router(),
    )
    .await;
    let registry = Registry::new();
    // trpc layers outside, tower in the middle, trpc auth inside.
    let stack = ServiceBuilder::new()
        .layer(TraceLayer::client())
        .layer(MetricsLayer::client(&registry).unwrap())
        .layer(LoadShedLayer::new())
        .layer(RateLimitLayer::new(1, Duration::from_secs(60)))
        .layer(AuthLayer::bearer("t"))
        .service(connect(server.addr).await);
    let mut client = Client::new(stack);
    let ok: EchoMsg = within(
        SOON,
        "first",
        client.unary_message("t.Svc/Say", EchoMsg::new("a")),
    )
    .await
    .unwrap();
    assert_eq!(ok.message, "a");
    let err = within(
        SOON,
        "second",
        client.unary_message::<EchoMsg, EchoMsg>("t.Svc/Say", EchoMsg::new("b")),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert_eq!(err.message(), "load shed: service overloaded");
    let text = scrape(&registry);
    let calls = |code| {
        sample(
            &text,
            "trpc_client_calls_total",
            &[
                ("method", "t.Svc/Say"),
                ("code", code),
                ("protocol", "trpc"),
            ],
        )
    };
    assert_eq!(calls("OK"), Some(1.0));
    assert_eq!(calls("RESOURCE_EXHAUSTED"), Some(1.0));
    server.shutdown().await;
}

#[tokio::test]
async fn server_buffer_load_shed_and_rate_limit_around_trpc_auth_is_resource_exhausted() {
    let keys = StaticKeys::new().api_key("k", Identity::new("me"));
    // Buffer makes the (not Clone) RateLimit shareable by every connection.
    let server = serve_with(
        Server::builder()
            .layer(TraceLayer::server())
            .layer(BufferLayer::new(64))
            .layer(LoadShedLayer::new())
            .layer(RateLimitLayer::new(2, Duration::from_secs(60)))
            .layer(RequireAuthLayer::new(keys)),
        plain_router(),
    )
    .await;
    let stack = ServiceBuilder::new()
        .layer(AuthLayer::api_key("k"))
        .service(connect(server.addr).await);
    let mut client = Client::new(stack);
    let mut codes = Vec::new();
    for i in 0..3 {
        let r = within(
            SOON,
            "call",
            client.unary_message::<EchoMsg, EchoMsg>("t.Svc/Say", EchoMsg::new(i.to_string())),
        )
        .await;
        codes.push(r.map(|_| Code::Ok).unwrap_or_else(|e| e.code()));
    }
    assert_eq!(codes, [Code::Ok, Code::Ok, Code::ResourceExhausted]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_shed_call_is_retried_by_the_trpc_retry_layer_until_capacity_frees() {
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let server = serve_with(Server::builder(), router(started_tx, release.clone())).await;
    let (shed_tx, mut shed) = mpsc::unbounded_channel();
    // trpc retry outside tower's load shed and concurrency limit.
    let stack = ServiceBuilder::new()
        .layer(
            RetryLayer::exponential(1000)
                .backoff(Duration::from_millis(2), Duration::from_millis(10))
                .retry_on([Code::ResourceExhausted])
                .idempotent("t.Svc/*")
                .no_budget(),
        )
        .map_err(
            move |e: Box<dyn std::error::Error + Send + Sync + 'static>| {
                let status = Status::from_error(e);
                let _ = shed_tx.send(status.code());
                status
            },
        )
        .layer(LoadShedLayer::new())
        .concurrency_limit(1)
        .service(connect(server.addr).await);
    let mut first_client = Client::new(stack.clone());
    let mut second_client = Client::new(stack);
    let first = first_client.unary_message::<EchoMsg, EchoMsg>("t.Svc/Wait", EchoMsg::new("first"));
    let second = async {
        // Only once the first call holds the one slot.
        started.recv().await;
        second_client
            .unary::<EchoMsg, EchoMsg>("t.Svc/Say", Request::new(EchoMsg::new("second")))
            .await
    };
    let control = async {
        // The second call is shed at least once, then the first finishes.
        let code = shed.recv().await;
        release.notify_one();
        code
    };
    let (first, second, shed_code) = within(SOON, "both calls", async {
        tokio::join!(first, second, control)
    })
    .await;
    assert_eq!(shed_code, Some(Code::ResourceExhausted));
    assert_eq!(first.unwrap().message, "first");
    let resp = second.unwrap();
    assert_eq!(resp.get_ref().message, "second");
    assert!(resp
        .extensions()
        .get::<Attempts>()
        .is_some_and(|a| a.0 >= 2));
    server.shutdown().await;
}

#[tokio::test]
async fn a_tower_timeout_inside_trpc_server_layers_is_deadline_exceeded_and_counted() {
    let registry = Registry::new();
    let server = serve_with(
        Server::builder()
            .layer(TraceLayer::server())
            .layer(MetricsLayer::server(&registry).unwrap())
            .layer(TowerTimeoutLayer::new(Duration::from_millis(50))),
        plain_router(),
    )
    .await;
    let mut client = Client::new(connect(server.addr).await);
    let err = within(
        SOON,
        "slow call",
        client.unary_message::<EchoMsg, EchoMsg>("t.Svc/Sleep", EchoMsg::new("5000")),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    let text = scrape(&registry);
    assert_eq!(
        sample(
            &text,
            "trpc_server_calls_total",
            &[
                ("method", "t.Svc/Sleep"),
                ("code", "DEADLINE_EXCEEDED"),
                ("protocol", "trpc")
            ]
        ),
        Some(1.0)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_tower_timeout_outside_trpc_retry_bounds_the_whole_call() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let down = move |_req: Request<EchoMsg>| {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            Err::<Response<EchoMsg>, _>(Status::unavailable("down"))
        }
    };
    let server = serve_with(
        Server::builder(),
        Router::new().route("t.Svc/Down", unary(down)),
    )
    .await;
    let stack = ServiceBuilder::new()
        .layer(TowerTimeoutLayer::new(Duration::from_millis(200)))
        .layer(
            RetryLayer::exponential(10_000)
                .backoff(Duration::from_millis(10), Duration::from_millis(10))
                .idempotent("*")
                .no_budget(),
        )
        .service(connect(server.addr).await);
    let mut client = Client::new(stack);
    let err = within(
        SOON,
        "call",
        client.unary_message::<EchoMsg, EchoMsg>("t.Svc/Down", EchoMsg::new("")),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(calls.load(Ordering::SeqCst) >= 2);
    server.shutdown().await;
}

#[tokio::test]
async fn a_buffer_in_front_of_trpc_layers_is_shared_and_closed_is_unavailable() {
    let server = serve_with(Server::builder(), plain_router()).await;
    let stack = ServiceBuilder::new()
        .layer(BufferLayer::new(16))
        .layer(TraceLayer::client())
        .layer(TimeoutLayer::new(Duration::from_secs(5)))
        .layer(RetryLayer::exponential(2))
        .service(connect(server.addr).await);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut client = Client::new(stack.clone());
        tasks.push(tokio::spawn(async move {
            client
                .unary_message::<EchoMsg, EchoMsg>("t.Svc/Say", EchoMsg::new(i.to_string()))
                .await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(
            within(SOON, "task", t).await.unwrap().unwrap().message,
            i.to_string()
        );
    }

    // A buffer whose worker is gone fails calls with UNAVAILABLE.
    let inner = ServiceBuilder::new()
        .layer(TraceLayer::client())
        .service(connect(server.addr).await);
    let (buffer, worker) = Buffer::<Request<Body>, _>::pair(inner, 4);
    drop(worker);
    let mut svc = buffer;
    let err = within(SOON, "closed buffer", async {
        match svc.ready().await {
            Ok(s) => s
                .call(Request::new(Body::empty()).with_method("t.Svc/Say"))
                .await
                .map(drop),
            Err(e) => Err(e),
        }
    })
    .await
    .unwrap_err();
    assert_eq!(Status::from_error(err).code(), Code::Unavailable);
    server.shutdown().await;
}
