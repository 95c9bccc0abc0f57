//! Deadlines: the caller gets DEADLINE_EXCEEDED promptly, the server handler is
//! dropped, and the handler sees the earlier of the caller's and the server's
//! deadlines.

use std::time::Duration;

use tokio::time::Instant;
use trpc::server::{unary, Router, Server};
use trpc::{Client, Code, Request, Response, Status};

use trpc_integration::client::connect;
use trpc_integration::messages::{Ask, EchoMsg};
use trpc_integration::probe::{Event, Probe};
use trpc_integration::server::{serve, serve_with};
use trpc_integration::{within, SOON};

/// How long a "slow" handler would take if nobody cancelled it.
const SLOW: Duration = Duration::from_secs(30);

/// `slow.Slow/Sleep`: reports to the probe and sleeps `SLOW`.
/// `slow.Slow/Deadline`: answers with the time left until `req.deadline()`,
/// in milliseconds, or "none".
fn router(probe: Probe) -> Router {
    Router::new()
        .route(
            "slow.Slow/Sleep",
            unary(move |_req: Request<Ask>| {
                let probe = probe.clone();
                async move {
                    probe.sleep(SLOW).await;
                    Ok::<_, Status>(Response::new(EchoMsg::new("slept")))
                }
            }),
        )
        .route(
            "slow.Slow/Deadline",
            unary(|req: Request<Ask>| async move {
                let left = match req.deadline() {
                    Some(d) => d
                        .saturating_duration_since(Instant::now())
                        .as_millis()
                        .to_string(),
                    None => "none".to_string(),
                };
                Ok::<_, Status>(Response::new(EchoMsg::new(left)))
            }),
        )
}

fn ask() -> Ask {
    Ask { len: 0, millis: 0 }
}

#[tokio::test]
async fn client_deadline_is_exceeded_promptly_and_the_handler_is_dropped() {
    let (probe, mut events) = Probe::new();
    let server = serve(router(probe)).await;
    let mut client = Client::new(connect(server.addr).await);

    let mut req = Request::new(ask());
    req.set_timeout(Duration::from_millis(200));
    let start = Instant::now();
    let err = within(
        SOON,
        "call with deadline",
        client.unary::<_, EchoMsg>("slow.Slow/Sleep", req),
    )
    .await
    .expect_err("the handler is far slower than the deadline");
    let took = start.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        took >= Duration::from_millis(150),
        "failed before the deadline: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "deadline error came late: {took:?}"
    );

    events.expect(Event::Started, SOON).await;
    events.expect(Event::Dropped, SOON).await;
    server.shutdown().await;
}

#[tokio::test]
async fn server_timeout_is_exceeded_and_the_handler_is_dropped() {
    let (probe, mut events) = Probe::new();
    let server = serve_with(
        Server::builder().timeout(Duration::from_millis(200)),
        router(probe),
    )
    .await;
    let mut client = Client::new(connect(server.addr).await);

    let start = Instant::now();
    // No client deadline: only the server's timeout applies.
    let err = within(
        SOON,
        "call without deadline",
        client.unary_message::<_, EchoMsg>("slow.Slow/Sleep", ask()),
    )
    .await
    .expect_err("the server's timeout is far shorter than the handler");
    let took = start.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        took < Duration::from_secs(3),
        "deadline error came late: {took:?}"
    );

    events.expect(Event::Started, SOON).await;
    events.expect(Event::Dropped, SOON).await;

    // The connection still serves calls.
    let reply: EchoMsg = within(
        SOON,
        "next call",
        client.unary_message("slow.Slow/Deadline", ask()),
    )
    .await
    .expect("next call");
    assert_ne!(reply.message, "none");
    server.shutdown().await;
}

async fn handler_time_left(
    client: &mut Client<trpc::Channel>,
    timeout: Option<Duration>,
) -> String {
    let mut req = Request::new(ask());
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    within(
        SOON,
        "deadline call",
        client.unary::<_, EchoMsg>("slow.Slow/Deadline", req),
    )
    .await
    .expect("deadline call")
    .into_inner()
    .message
}

fn millis(s: &str) -> u64 {
    s.parse()
        .unwrap_or_else(|_| panic!("expected milliseconds, got {s:?}"))
}

#[tokio::test]
async fn handler_sees_the_earlier_of_client_and_server_deadlines() {
    let (probe, _events) = Probe::new();
    // Server timeout 20 s.
    let server = serve_with(
        Server::builder().timeout(Duration::from_secs(20)),
        router(probe.clone()),
    )
    .await;
    let mut client = Client::new(connect(server.addr).await);

    // Client deadline 2 s < server 20 s: the handler sees about 2 s.
    let left = millis(&handler_time_left(&mut client, Some(Duration::from_secs(2))).await);
    assert!(
        (1000..=2000).contains(&left),
        "client deadline: {left} ms left"
    );

    // No client deadline: the server's 20 s.
    let left = millis(&handler_time_left(&mut client, None).await);
    assert!(
        (19_000..=20_000).contains(&left),
        "server timeout: {left} ms left"
    );

    // Client deadline 60 s > server 20 s: still the server's 20 s.
    let left = millis(&handler_time_left(&mut client, Some(Duration::from_secs(60))).await);
    assert!(
        (19_000..=20_000).contains(&left),
        "server timeout wins: {left} ms left"
    );
    server.shutdown().await;

    // No server timeout and no client deadline: no deadline at all.
    let server = serve(router(probe)).await;
    let mut client = Client::new(connect(server.addr).await);
    assert_eq!(handler_time_left(&mut client, None).await, "none");
    let left = millis(&handler_time_left(&mut client, Some(Duration::from_secs(5))).await);
    assert!(
        (4000..=5000).contains(&left),
        "client deadline only: {left} ms left"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn endpoint_default_timeout_applies_to_calls_without_a_deadline() {
    let (probe, mut events) = Probe::new();
    let server = serve(router(probe)).await;
    let channel = within(
        SOON,
        "connect",
        trpc_integration::client::endpoint(server.addr)
            .timeout(Duration::from_millis(200))
            .connect(),
    )
    .await
    .expect("connect");
    let mut client = Client::new(channel);
    let left = millis(&handler_time_left(&mut client, None).await);
    assert!(
        left <= 200,
        "endpoint timeout travels as the deadline: {left} ms"
    );

    let err = within(
        SOON,
        "slow call",
        client.unary_message::<_, EchoMsg>("slow.Slow/Sleep", ask()),
    )
    .await
    .expect_err("endpoint timeout");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    events.expect(Event::Started, SOON).await;
    events.expect(Event::Dropped, SOON).await;
    server.shutdown().await;
}
