//! Stock tower middleware on both stacks, with its errors mapped to the right
//! status codes: load shedding is RESOURCE_EXHAUSTED, timeouts are
//! DEADLINE_EXCEEDED.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tower::limit::ConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::timeout::TimeoutLayer;
use tower::ServiceBuilder;
use trpc::server::{unary, Router, Server};
use trpc::{Client, Code, Request, Response, Status};

use trpc_integration::client::connect;
use trpc_integration::messages::EchoMsg;
use trpc_integration::probe::{Event, Probe};
use trpc_integration::server::{serve, serve_with};
use trpc_integration::{within, SOON};

/// `gate.Gate/Wait` waits until the test releases it; `gate.Gate/Quick`
/// answers at once; `gate.Gate/Sleep` sleeps 30 s.
fn router(probe: Probe, release: Arc<Notify>) -> Router {
    let sleep_probe = probe.clone();
    Router::new()
        .route(
            "gate.Gate/Wait",
            unary(move |req: Request<EchoMsg>| {
                let (probe, release) = (probe.clone(), release.clone());
                async move {
                    let guard = probe.enter();
                    release.notified().await;
                    guard.finish();
                    Ok::<_, Status>(Response::new(req.into_inner()))
                }
            }),
        )
        .route(
            "gate.Gate/Quick",
            unary(|req: Request<EchoMsg>| async move {
                Ok::<_, Status>(Response::new(req.into_inner()))
            }),
        )
        .route(
            "gate.Gate/Sleep",
            unary(move |req: Request<EchoMsg>| {
                let probe = sleep_probe.clone();
                async move {
                    probe.sleep(Duration::from_secs(30)).await;
                    Ok::<_, Status>(Response::new(req.into_inner()))
                }
            }),
        )
}

#[tokio::test]
async fn server_load_shed_over_concurrency_limit_rejects_with_resource_exhausted() {
    let (probe, mut events) = Probe::new();
    let release = Arc::new(Notify::new());
    let server = serve_with(
        Server::builder()
            .layer(LoadShedLayer::new())
            .layer(ConcurrencyLimitLayer::new(1)),
        router(probe, release.clone()),
    )
    .await;
    let client = Client::new(connect(server.addr).await);

    let mut first_client = client.clone();
    let first = tokio::spawn(async move {
        first_client
            .unary_message::<_, EchoMsg>("gate.Gate/Wait", EchoMsg::new("first"))
            .await
    });
    events.expect(Event::Started, SOON).await;

    let mut c = client.clone();
    let err = within(
        SOON,
        "second call",
        c.unary_message::<_, EchoMsg>("gate.Gate/Quick", EchoMsg::new("second")),
    )
    .await
    .expect_err("the only slot is taken: the second call is shed");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    release.notify_one();
    let reply = within(SOON, "first call", first)
        .await
        .expect("task")
        .expect("the first call completes");
    assert_eq!(reply.message, "first");

    let reply: EchoMsg = within(
        SOON,
        "third call",
        c.unary_message("gate.Gate/Quick", EchoMsg::new("third")),
    )
    .await
    .expect("the slot is free again");
    assert_eq!(reply.message, "third");
    server.shutdown().await;
}

#[tokio::test]
async fn server_timeout_layer_is_deadline_exceeded_and_drops_the_handler() {
    let (probe, mut events) = Probe::new();
    let server = serve_with(
        Server::builder().layer(TimeoutLayer::new(Duration::from_millis(150))),
        router(probe, Arc::new(Notify::new())),
    )
    .await;
    let mut client = Client::new(connect(server.addr).await);
    let start = Instant::now();
    let err = within(
        SOON,
        "slow call",
        client.unary_message::<_, EchoMsg>("gate.Gate/Sleep", EchoMsg::new("x")),
    )
    .await
    .expect_err("the server's timeout layer fires");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    events.expect(Event::Started, SOON).await;
    events.expect(Event::Dropped, SOON).await;

    let reply: EchoMsg = within(
        SOON,
        "quick call",
        client.unary_message("gate.Gate/Quick", EchoMsg::new("q")),
    )
    .await
    .expect("quick call under the timeout");
    assert_eq!(reply.message, "q");
    server.shutdown().await;
}

#[tokio::test]
async fn client_timeout_layer_is_deadline_exceeded_and_cancels_the_call() {
    let (probe, mut events) = Probe::new();
    let server = serve(router(probe, Arc::new(Notify::new()))).await;
    let channel = connect(server.addr).await;
    let stack = ServiceBuilder::new()
        .timeout(Duration::from_millis(150))
        .service(channel.clone());
    let mut client = Client::new(stack);

    let start = Instant::now();
    let err = within(
        SOON,
        "slow call",
        client.unary_message::<_, EchoMsg>("gate.Gate/Sleep", EchoMsg::new("x")),
    )
    .await
    .expect_err("the client's timeout layer fires");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    // The timeout dropped the channel's call: the server handler is cancelled.
    events.expect(Event::Started, SOON).await;
    events.expect(Event::Dropped, SOON).await;

    let reply: EchoMsg = within(
        SOON,
        "quick call",
        client.unary_message("gate.Gate/Quick", EchoMsg::new("q")),
    )
    .await
    .expect("quick call");
    assert_eq!(reply.message, "q");
    assert_eq!(channel.connections(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn client_load_shed_over_buffer_and_concurrency_limit_sheds_excess_calls() {
    let (probe, mut events) = Probe::new();
    let release = Arc::new(Notify::new());
    let server = serve(router(probe, release.clone())).await;
    let channel = connect(server.addr).await;
    // One call at a time reaches the channel; one more may wait in the
    // buffer; anything beyond that is shed.
    let stack = ServiceBuilder::new()
        .load_shed()
        .buffer(1)
        .concurrency_limit(1)
        .timeout(Duration::from_secs(5))
        .service(channel);
    let client = Client::new(stack);

    // A: takes the concurrency slot and waits on the server.
    let mut a_client = client.clone();
    let a = tokio::spawn(async move {
        a_client
            .unary_message::<_, EchoMsg>("gate.Gate/Wait", EchoMsg::new("a"))
            .await
    });
    events.expect(Event::Started, SOON).await;

    // B: gets the buffer's only slot and waits for the concurrency limit.
    let mut b_client = client.clone();
    let b = b_client.unary_message::<_, EchoMsg>("gate.Gate/Quick", EchoMsg::new("b"));
    tokio::pin!(b);
    assert!(
        futures_util::poll!(&mut b).is_pending(),
        "B must wait behind A"
    );

    // C: no room anywhere; load shed rejects it at once.
    let mut c_client = client.clone();
    let start = Instant::now();
    let err = within(
        SOON,
        "shed call",
        c_client.unary_message::<_, EchoMsg>("gate.Gate/Quick", EchoMsg::new("c")),
    )
    .await
    .expect_err("C is shed");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "shedding is immediate"
    );

    // Releasing A lets A and then B succeed.
    release.notify_one();
    let a = within(SOON, "A", a)
        .await
        .expect("task")
        .expect("A succeeds");
    assert_eq!(a.message, "a");
    let b = within(SOON, "B", b).await.expect("B succeeds after A");
    assert_eq!(b.message, "b");
    let c = within(
        SOON,
        "C again",
        c_client.unary_message::<_, EchoMsg>("gate.Gate/Quick", EchoMsg::new("c")),
    )
    .await
    .expect("with room again, C succeeds");
    assert_eq!(c.message, "c");
    server.shutdown().await;
}

#[tokio::test]
async fn client_buffer_shares_one_channel_between_many_tasks() {
    let (probe, _events) = Probe::new();
    let server = serve(router(probe, Arc::new(Notify::new()))).await;
    let channel = connect(server.addr).await;
    let stack = ServiceBuilder::new()
        .buffer(16)
        .concurrency_limit(8)
        .timeout(Duration::from_secs(5))
        .service(channel.clone());
    let client = Client::new(stack);
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .unary_message::<_, EchoMsg>("gate.Gate/Quick", EchoMsg::new(format!("{i}")))
                    .await
                    .map(|r| (i, r))
            })
        })
        .collect();
    within(SOON, "64 buffered calls", async {
        for t in tasks {
            let (i, reply) = t.await.expect("task").expect("buffered call");
            assert_eq!(reply.message, i.to_string());
        }
    })
    .await;
    assert_eq!(channel.connections(), 1);
    server.shutdown().await;
}
