//! Handlers run as tasks of their own: the calls of one connection spread
//! over every worker thread, and a handler that burns CPU holds up nothing
//! else on its connection — not other calls, not PINGs. The tasks are
//! reused from call to call and end once their connection is idle.
//!
//! The handlers here spin without ever yielding until something only a
//! concurrently served call can cause has happened (bounded by a timeout,
//! so a server that serialises them fails instead of hanging).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use trpc::frame::FrameType;
use trpc::server::{unary, Router};
use trpc::{Client, Request, Response, Status};
use trpc_integration::client::connect;
use trpc_integration::frames::{kind, raw_frame, unary_request};
use trpc_integration::messages::{echo_body, EchoMsg};
use trpc_integration::peer::{Peer, RawResponse, Seen};
use trpc_integration::server::serve;

/// Spins (no await) until `cond` holds or `limit` passes; true if it held.
fn spin_until(limit: Duration, cond: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            return false;
        }
        std::hint::spin_loop();
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_bound_calls_on_one_connection_run_on_every_worker() {
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    let router = Router::new().route(
        "c.C/Spin",
        unary(move |_req: Request<EchoMsg>| {
            let started = s.clone();
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                // Burn CPU until the other call runs too.
                let met = spin_until(Duration::from_secs(20), || {
                    started.load(Ordering::SeqCst) >= 2
                });
                Ok::<_, Status>(Response::new(EchoMsg::new(if met {
                    "met"
                } else {
                    "alone"
                })))
            }
        }),
    );
    let srv = serve(router).await;
    let ch = connect(srv.addr).await;
    let calls = (0..2).map(|_| {
        let mut client = Client::new(ch.clone());
        async move {
            client
                .unary_message::<_, EchoMsg>("c.C/Spin", EchoMsg::new("x"))
                .await
        }
    });
    let t0 = Instant::now();
    for reply in join_all(calls).await {
        assert_eq!(
            reply.unwrap().message,
            "met",
            "the two handlers never ran at once"
        );
    }
    eprintln!(
        "two CPU-bound calls on one connection ran together in {:?}",
        t0.elapsed()
    );
    assert_eq!(ch.connections(), 1);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_and_a_call_are_answered_while_a_handler_burns_cpu() {
    let release = Arc::new(AtomicBool::new(false));
    let r = release.clone();
    let router = trpc_integration::server::echo_router().route(
        "c.C/Hog",
        unary(move |req: Request<EchoMsg>| {
            let release = r.clone();
            async move {
                let released =
                    spin_until(Duration::from_secs(30), || release.load(Ordering::SeqCst));
                assert!(released, "never released");
                Ok::<_, Status>(Response::new(req.into_inner()))
            }
        }),
    );
    let srv = serve(router).await;
    let mut p = Peer::handshake(srv.addr).await;
    p.send(&unary_request(1, "c.C/Hog", &[], echo_body("hog")))
        .await;
    // While stream 1 spins on one worker: a PING and a call on stream 3.
    let t0 = Instant::now();
    p.send(&raw_frame(kind::PING, 0, 0, &[], b"are-you?")).await;
    p.send(&unary_request(3, "echo.Echo/Say", &[], echo_body("hi")))
        .await;
    let (mut pong, mut echo) = (None, None);
    while pong.is_none() || echo.is_none() {
        match p.next().await {
            Seen::Frame(f) if f.frame_type() == Some(FrameType::Pong) => pong = Some(t0.elapsed()),
            Seen::Frame(f) if f.frame_type() == Some(FrameType::Headers) => {
                assert_eq!(f.stream_id(), 3, "the hog answered before it was released");
                echo = Some(t0.elapsed());
            }
            Seen::Frame(_) => {}
            Seen::Closed => panic!("closed"),
        }
    }
    eprintln!("during a CPU-bound handler: PONG after {pong:?}, a call answered after {echo:?}");
    assert!(pong.unwrap() < Duration::from_secs(2) && echo.unwrap() < Duration::from_secs(2));
    release.store(true, Ordering::SeqCst);
    let RawResponse {
        stream_id: id,
        status: code,
        message: msg,
        ..
    } = p.response().await;
    assert_eq!((id, code), (1, 0), "{msg}");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_tasks_end_once_their_connection_is_idle() {
    let alive = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let srv = serve(trpc_integration::server::echo_router()).await;
    let ch = connect(srv.addr).await;
    let mut client = Client::new(ch.clone());
    let reply: EchoMsg = client
        .unary_message("echo.Echo/Say", EchoMsg::new("warm"))
        .await
        .unwrap();
    assert_eq!(reply.message, "warm");
    let before = alive();
    // Bursts of 64 calls in flight on the one connection: up to 64 call
    // tasks, reused from call to call while the connection is busy.
    for wave in 0..10 {
        let calls = (0..64).map(|i| {
            let mut client = Client::new(ch.clone());
            async move {
                let msg = format!("{wave}-{i}");
                let reply: EchoMsg = client
                    .unary_message("echo.Echo/Say", EchoMsg::new(&msg))
                    .await
                    .unwrap();
                assert_eq!(reply.message, msg);
            }
        });
        join_all(calls).await;
    }
    let peak = alive();
    // Idle now: no call task stays parked (each would hold its memory).
    trpc_integration::until(
        trpc_integration::SOON,
        "the connection's call tasks end once it is idle",
        || alive() <= before,
    )
    .await;
    eprintln!(
        "alive tasks: {before} before the bursts, {peak} right after, then {}",
        alive()
    );
    assert_eq!(ch.connections(), 1);
    srv.shutdown().await;
}
