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

/// The echo router plus `c.C/Hog`, whose handler spins (no await) until
/// `release` is set.
fn hog_router(release: Arc<AtomicBool>) -> Router {
    trpc_integration::server::echo_router().route(
        "c.C/Hog",
        unary(move |req: Request<EchoMsg>| {
            let release = release.clone();
            async move {
                let released =
                    spin_until(Duration::from_secs(30), || release.load(Ordering::SeqCst));
                assert!(released, "never released");
                Ok::<_, Status>(Response::new(req.into_inner()))
            }
        }),
    )
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
    let router = hog_router(release.clone());
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

/// Sends `frames` in one write, so the server reads them as one batch.
async fn send_together(p: &mut Peer, frames: &[bytes::Bytes]) {
    p.send(&frames.concat()).await;
}

/// Waits for the replies of `ids` (HEADERS, any order) before anything
/// else; panics if another stream answers first.
async fn expect_answers(p: &mut Peer, mut ids: Vec<u32>, why: &str) {
    while !ids.is_empty() {
        match p.next().await {
            Seen::Frame(f) if f.frame_type() == Some(FrameType::Headers) => {
                let id = f.stream_id();
                assert!(ids.contains(&id), "stream {id} answered first: {why}");
                ids.retain(|i| *i != id);
            }
            Seen::Frame(_) => {}
            Seen::Closed => panic!("closed: {why}"),
        }
    }
}

/// Sends a batch of `n` calls, one of them (at `hog_at`, from 0) a handler
/// that spins until released, the others echoes, and checks that the
/// echoes are answered while the hog spins.
async fn echoes_answered_around_a_hog(n: u32, hog_at: usize) {
    let release = Arc::new(AtomicBool::new(false));
    let router = hog_router(release.clone());
    let srv = serve(router).await;
    let mut p = Peer::handshake(srv.addr).await;
    let ids: Vec<u32> = (0..n).map(|i| 2 * i + 1).collect();
    let hog = ids[hog_at];
    let batch: Vec<_> = ids
        .iter()
        .map(|&id| match id == hog {
            true => unary_request(id, "c.C/Hog", &[], echo_body("hog")),
            false => unary_request(id, "echo.Echo/Say", &[], echo_body("hi")),
        })
        .collect();
    send_together(&mut p, &batch).await;
    let t0 = Instant::now();
    let echoes = ids.iter().copied().filter(|&id| id != hog).collect();
    expect_answers(&mut p, echoes, "the hog answered before it was released").await;
    eprintln!(
        "{} calls read with a CPU-bound one (at {hog_at}) answered in {:?}",
        n - 1,
        t0.elapsed()
    );
    release.store(true, Ordering::SeqCst);
    assert_eq!(p.response().await.stream_id, hog);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_read_with_a_cpu_bound_call_are_answered_while_it_runs() {
    // The first call of an idle connection gets a task of its own; the
    // rest are queued for the connection's runners. A hog taken early: the
    // calls queued behind it are taken by another runner. A hog taken
    // last: the replies held back while it was queued are written once it
    // is taken (the connection holds replies only while calls are queued).
    echoes_answered_around_a_hog(22, 1).await;
    echoes_answered_around_a_hog(300, 299).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn calls_read_with_a_waiting_call_are_answered_while_it_waits() {
    // One worker thread: no second runner is woken for CPU; the runner
    // whose call waits hands the queue to another.
    let go = Arc::new(tokio::sync::Semaphore::new(0));
    let g = go.clone();
    let router = trpc_integration::server::echo_router().route(
        "c.C/Wait",
        unary(move |req: Request<EchoMsg>| {
            let go = g.clone();
            async move {
                let _permit = go.acquire().await;
                Ok::<_, Status>(Response::new(req.into_inner()))
            }
        }),
    );
    let srv = serve(router).await;
    let mut p = Peer::handshake(srv.addr).await;
    // After one call (the first of an idle connection gets a task of its
    // own), two waiting calls with calls queued behind each.
    send_together(
        &mut p,
        &[
            unary_request(1, "echo.Echo/Say", &[], echo_body("first")),
            unary_request(3, "c.C/Wait", &[], echo_body("wait")),
            unary_request(5, "echo.Echo/Say", &[], echo_body("a")),
            unary_request(7, "c.C/Wait", &[], echo_body("wait too")),
            unary_request(9, "echo.Echo/Say", &[], echo_body("b")),
        ],
    )
    .await;
    expect_answers(
        &mut p,
        vec![1, 5, 9],
        "a waiting call answered before it was let go",
    )
    .await;
    go.add_permits(2);
    let mut ends = [p.response().await.stream_id, p.response().await.stream_id];
    ends.sort_unstable();
    assert_eq!(ends, [3, 7]);
    srv.shutdown().await;
}
