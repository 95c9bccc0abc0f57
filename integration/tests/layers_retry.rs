//! RetryLayer end to end: a server that fails the first attempts, idempotency,
//! the retry budget, the deadline.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower::ServiceBuilder;
use trpc::server::{unary, Router, Server};
use trpc::{Client, Code, Request, Response, Status};
use trpc_integration::client::connect;
use trpc_integration::messages::EchoMsg;
use trpc_integration::server::{listener, rebind, serve_on, serve_with};
use trpc_integration::{within, SOON};
use trpc_layers::retry::{Attempts, TpsBudget};
use trpc_layers::{RetryLayer, TimeoutLayer};

/// `flaky.Svc/Get` and `flaky.Svc/Create` fail with UNAVAILABLE until they have
/// been called `fail_first` times; `flaky.Svc/Down` always fails.
fn flaky_router(fail_first: u32, calls: Arc<AtomicU32>) -> Router {
    let handler = move |req: Request<EchoMsg>| {
        let calls = calls.clone();
        async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n <= fail_first || req.get_ref().message == "down" {
                return Err(Status::unavailable(format!("attempt {n} fails")));
            }
            Ok(Response::new(EchoMsg::new(format!(
                "ok after {n} attempts"
            ))))
        }
    };
    Router::new()
        .route("flaky.Svc/Get", unary(handler.clone()))
        .route("flaky.Svc/Create", unary(handler))
}

fn retry() -> RetryLayer {
    RetryLayer::exponential(4)
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
        .idempotent("flaky.Svc/Get")
}

#[tokio::test]
async fn an_idempotent_call_succeeds_after_the_server_fails_twice() {
    let calls = Arc::new(AtomicU32::new(0));
    let server = serve_with(Server::builder(), flaky_router(2, calls.clone())).await;
    let stack = ServiceBuilder::new()
        .layer(retry())
        .service(connect(server.addr).await);
    let mut client = Client::new(stack);
    let resp: Response<EchoMsg> = within(
        SOON,
        "retried call",
        client.unary("flaky.Svc/Get", Request::new(EchoMsg::new("hi"))),
    )
    .await
    .expect("the third attempt succeeds");
    assert_eq!(resp.get_ref().message, "ok after 3 attempts");
    assert_eq!(resp.extensions().get::<Attempts>(), Some(&Attempts(3)));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn a_non_idempotent_call_that_reached_the_server_is_not_retried() {
    let calls = Arc::new(AtomicU32::new(0));
    let server = serve_with(Server::builder(), flaky_router(1, calls.clone())).await;
    let stack = ServiceBuilder::new()
        .layer(retry())
        .service(connect(server.addr).await);
    let mut client = Client::new(stack);
    let err = within(
        SOON,
        "call",
        client.unary_message::<EchoMsg, EchoMsg>("flaky.Svc/Create", EchoMsg::new("hi")),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a non-idempotent call was re-sent"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_refused_call_is_retried_even_if_not_idempotent() {
    // Nothing listens at first: the connect fails, which proves the call was
    // never sent (a refused status); the server comes up during the backoff.
    let probe = listener().await;
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let channel = trpc_integration::client::endpoint(addr)
        .backoff(Duration::from_millis(10), Duration::from_millis(20))
        .connect_lazy();
    // Every failed attempt is reported, so the test knows when to start the
    // server without sleeping.
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::unbounded_channel();
    let stack = ServiceBuilder::new()
        .layer(
            RetryLayer::exponential(50)
                .backoff(Duration::from_millis(20), Duration::from_millis(40))
                .no_budget(),
        )
        .map_result(move |r: Result<Response<trpc::Body>, Status>| {
            if let Err(e) = &r {
                let _ = failed_tx.send(e.is_refused());
            }
            r
        })
        .service(channel);
    let mut client = Client::new(stack);
    let call = tokio::spawn(async move {
        client
            .unary_message::<EchoMsg, EchoMsg>("flaky.Svc/Create", EchoMsg::new("hi"))
            .await
    });
    for _ in 0..2 {
        let refused = within(SOON, "a failed attempt", failed_rx.recv())
            .await
            .unwrap();
        assert!(refused, "a connect failure must be a refused status");
    }
    let calls = Arc::new(AtomicU32::new(0));
    let server = serve_on(
        rebind(addr).await,
        Server::builder(),
        flaky_router(0, calls.clone()),
    );
    let reply = within(SOON, "refused call retried", call)
        .await
        .unwrap()
        .expect("retried once the server is up");
    assert_eq!(reply.message, "ok after 1 attempts");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn the_retry_budget_caps_retries_when_everything_fails() {
    let calls = Arc::new(AtomicU32::new(0));
    let server = serve_with(Server::builder(), flaky_router(u32::MAX, calls.clone())).await;
    // Retries may add at most 50% to the calls made, with no reserve.
    let layer = retry().budget(TpsBudget::new(Duration::from_secs(10), 0, 0.5));
    let stack = ServiceBuilder::new()
        .layer(layer)
        .service(connect(server.addr).await);
    let mut client = Client::new(stack);
    const CALLS: u32 = 20;
    for _ in 0..CALLS {
        let err = within(
            SOON,
            "failing call",
            client.unary_message::<EchoMsg, EchoMsg>("flaky.Svc/Get", EchoMsg::new("x")),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
    }
    let attempts = calls.load(Ordering::SeqCst);
    // Without a budget: 4 attempts per call = 80.
    assert!(
        attempts > CALLS && attempts <= CALLS + CALLS / 2,
        "{attempts} attempts for {CALLS} calls"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn retries_stop_at_the_calls_deadline() {
    let calls = Arc::new(AtomicU32::new(0));
    let server = serve_with(Server::builder(), flaky_router(u32::MAX, calls.clone())).await;
    let stack = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_millis(300)))
        .layer(
            RetryLayer::exponential(1000)
                .backoff(Duration::from_millis(20), Duration::from_millis(20))
                .idempotent("*")
                .no_budget(),
        )
        .service(connect(server.addr).await);
    let mut client = Client::new(stack);
    let start = Instant::now();
    let err = within(
        SOON,
        "call",
        client.unary_message::<EchoMsg, EchoMsg>("flaky.Svc/Get", EchoMsg::new("x")),
    )
    .await
    .unwrap_err();
    let took = start.elapsed();
    assert!(
        matches!(err.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{err}"
    );
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    let attempts = calls.load(Ordering::SeqCst);
    assert!((2..1000).contains(&attempts), "{attempts} attempts");
    server.shutdown().await;
}
