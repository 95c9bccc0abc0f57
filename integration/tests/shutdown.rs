//! Graceful shutdown: under load no call the server finished is lost, every
//! call either succeeds or fails UNAVAILABLE, and the server stops within its
//! grace period; past the grace period it closes what is left.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use trpc::server::{unary, Router, Server};
use trpc::{Client, Code, Request, Response, Status};

use trpc_integration::client::endpoint;
use trpc_integration::messages::{Ask, EchoMsg};
use trpc_integration::probe::{sleep_router, Event, Probe};
use trpc_integration::server::serve_with;
use trpc_integration::{within, SOON};

const CLIENT_TASKS: usize = 24;
const GRACE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_under_load_loses_no_call() {
    let completed = Arc::new(AtomicU64::new(0));
    let warmed_up = Arc::new(Notify::new());
    let router = {
        let (completed, warmed_up) = (completed.clone(), warmed_up.clone());
        Router::new().route(
            "work.Work/Do",
            unary(move |req: Request<Ask>| {
                let (completed, warmed_up) = (completed.clone(), warmed_up.clone());
                async move {
                    tokio::time::sleep(Duration::from_millis(req.get_ref().millis)).await;
                    // Counted as done only once the handler has its answer.
                    if completed.fetch_add(1, Ordering::SeqCst) + 1 == 100 {
                        warmed_up.notify_one();
                    }
                    Ok::<_, Status>(Response::new(EchoMsg::new(format!(
                        "done in {} ms",
                        req.get_ref().millis
                    ))))
                }
            }),
        )
    };
    let server = serve_with(Server::builder().shutdown_grace(GRACE), router).await;

    // Two channels with two connections each, shared by the client tasks.
    let mut channels = Vec::new();
    for _ in 0..2 {
        let ch = within(
            SOON,
            "connect",
            endpoint(server.addr)
                .pool_size(2)
                .backoff(Duration::from_millis(10), Duration::from_millis(50))
                .connect(),
        )
        .await
        .expect("connect");
        channels.push(ch);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..CLIENT_TASKS {
        let mut client = Client::new(channels[t % channels.len()].clone());
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut unavailable) = (0u64, 0u64);
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let millis = 10 + (t as u64 * 7 + i * 13) % 41; // 10..=50 ms
                i += 1;
                match client
                    .unary_message::<_, EchoMsg>("work.Work/Do", Ask { len: 0, millis })
                    .await
                {
                    Ok(reply) => {
                        assert_eq!(reply.message, format!("done in {millis} ms"));
                        ok += 1;
                    }
                    Err(e) if e.code() == Code::Unavailable => {
                        unavailable += 1;
                        // The server is gone for good; stop calling.
                        break;
                    }
                    Err(e) => panic!("call failed with an unexpected status: {e:?}"),
                }
            }
            (ok, unavailable)
        }));
    }

    within(SOON, "warm-up: 100 calls completed", warmed_up.notified()).await;
    let start = Instant::now();
    let took = server.shutdown_within(GRACE + Duration::from_secs(5)).await;
    assert!(
        took < GRACE,
        "serve_with_listener returned after {took:?}, grace is {GRACE:?}"
    );
    stop.store(true, Ordering::SeqCst);

    let (mut ok, mut unavailable) = (0u64, 0u64);
    within(SOON, "client tasks finish", async {
        for t in tasks {
            let (o, u) = t.await.expect("client task");
            ok += o;
            unavailable += u;
        }
    })
    .await;
    let done = completed.load(Ordering::SeqCst);
    assert!(done >= 100, "{done}");
    assert_eq!(
        ok,
        done,
        "the server completed {done} calls but clients saw {ok} successes \
         ({unavailable} UNAVAILABLE after {:?})",
        start.elapsed()
    );
}

#[tokio::test]
async fn shutdown_closes_calls_still_running_after_the_grace_period() {
    let (probe, mut events) = Probe::new();
    let router = sleep_router(probe);
    let grace = Duration::from_millis(300);
    let server = serve_with(Server::builder().shutdown_grace(grace), router).await;
    let mut client = Client::new(
        within(SOON, "connect", endpoint(server.addr).connect())
            .await
            .expect("connect"),
    );
    let call = tokio::spawn(async move {
        client
            .unary_message::<_, EchoMsg>("slow.Slow/Sleep", EchoMsg::new("x"))
            .await
    });
    events.expect(Event::Started, SOON).await;

    let took = server.shutdown_within(SOON).await;
    assert!(took >= grace, "returned before the grace period: {took:?}");
    assert!(took < grace + Duration::from_secs(3), "took {took:?}");

    events.expect(Event::Dropped, SOON).await;
    let err = within(SOON, "call", call)
        .await
        .expect("task")
        .expect_err("the server closed the connection");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}
