//! Unit tests of the timeout layer (tower-test mocks, paused time).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use tower_test::mock;
use trpc::{Body, Code, Payload, Request, Response, Status};

use trpc::client::DeadlineProbe;

use super::{error::Elapsed, TimeoutLayer};
use crate::test_util::{request, response, status, stream_body};

#[tokio::test(start_paused = true)]
async fn a_call_without_deadline_gets_one() {
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(
        TimeoutLayer::new(Duration::from_millis(200)),
    );
    assert!(svc.poll_ready().is_ready());
    let start = Instant::now();
    let fut = svc.call(request("a.B/C", "hi"));
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.deadline(), Some(start + Duration::from_millis(200)));
    send.send_response(response("ok"));
    let resp = fut.await.unwrap();
    assert_eq!(resp.get_ref().as_once().unwrap().bytes, "ok");
}

#[tokio::test(start_paused = true)]
async fn an_earlier_caller_deadline_is_kept_and_a_later_one_narrowed() {
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(
        TimeoutLayer::new(Duration::from_millis(200)),
    );
    let start = Instant::now();
    for (caller, seen) in [(50, 50), (500, 200)] {
        assert!(svc.poll_ready().is_ready());
        let mut req = request("a.B/C", "hi");
        req.set_timeout(Duration::from_millis(caller));
        let fut = svc.call(req);
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.deadline(), Some(start + Duration::from_millis(seen)));
        send.send_response(response("ok"));
        fut.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn the_deadline_fails_the_call_with_deadline_exceeded_and_drops_the_handler() {
    struct Guard(Arc<AtomicBool>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let d = dropped.clone();
    let slow = tower::service_fn(move |_req: Request<Body>| {
        let guard = Guard(d.clone());
        async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(guard);
            Ok::<_, Status>(response("late"))
        }
    });
    let mut svc = tower::Layer::layer(&TimeoutLayer::new(Duration::from_millis(100)), slow);
    let start = Instant::now();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(request("a.B/C", "hi"))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert!(dropped.load(Ordering::SeqCst), "inner future not dropped");
    let s = status(err);
    assert_eq!(s.code(), Code::DeadlineExceeded);
    assert!(std::error::Error::source(&s).is_some_and(|e| e.is::<Elapsed>()));
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through() {
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(
        TimeoutLayer::new(Duration::from_millis(200)),
    );
    assert!(svc.poll_ready().is_ready());
    let fut = svc.call(request("a.B/C", "hi"));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_error(Status::not_found("nope"));
    assert_eq!(status(fut.await.unwrap_err()).code(), Code::NotFound);
}

#[tokio::test(start_paused = true)]
async fn a_streaming_response_ends_with_deadline_exceeded() {
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(
        TimeoutLayer::new(Duration::from_millis(100)),
    );
    assert!(svc.poll_ready().is_ready());
    let fut = svc.call(request("a.B/Stream", "hi"));
    let (_req, send) = handle.next_request().await.unwrap();
    // One message, then a stream that never ends.
    let body = stream_body(vec![Ok(Payload::new("one"))]).chain(futures_util::stream::pending());
    send.send_response(Response::new(Body::stream(body)));
    let resp = fut.await.unwrap();
    let items: Vec<_> = resp.into_inner().collect().await;
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].as_ref().unwrap().bytes, "one");
    assert_eq!(
        items[1].as_ref().unwrap_err().code(),
        Code::DeadlineExceeded
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_finishes_in_time_is_untouched() {
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(
        TimeoutLayer::new(Duration::from_millis(100)),
    );
    assert!(svc.poll_ready().is_ready());
    let fut = svc.call(request("a.B/Stream", "hi"));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(stream_body(vec![
        Ok(Payload::new("one")),
        Ok(Payload::new("two")),
    ])));
    let items: Vec<_> = fut.await.unwrap().into_inner().collect().await;
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i.is_ok()));
}

/// An inner service that enforces the deadline itself, as a `Channel` does:
/// it reports it through the probe, and its future never ends on its own.
fn enforcing() -> impl tower::Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Status,
    Future = impl std::future::Future<Output = Result<Response<Body>, Status>>,
> + Clone {
    tower::service_fn(|req: Request<Body>| {
        if let Some(d) = req.deadline() {
            DeadlineProbe::enforced(d);
        }
        std::future::pending::<Result<Response<Body>, Status>>()
    })
}

#[tokio::test(start_paused = true)]
async fn a_deadline_the_service_below_enforces_needs_no_timer() {
    let mut svc = tower::Layer::layer(&TimeoutLayer::new(Duration::from_millis(100)), enforcing());
    let fut = svc.ready().await.unwrap().call(request("a.B/C", "hi"));
    assert!(format!("{fut:?}").contains("Channel"), "{fut:?}");
    // The layer keeps no timer: only the (pretend) channel would end the call.
    let outcome = tokio::time::timeout(Duration::from_secs(10), fut).await;
    assert!(outcome.is_err(), "the layer timed the call itself");
}

#[tokio::test(start_paused = true)]
async fn nested_timeouts_keep_one_timer() {
    let slow = tower::service_fn(|_req: Request<Body>| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok::<_, Status>(response("late"))
    });
    let inner = tower::Layer::layer(&TimeoutLayer::new(Duration::from_millis(100)), slow);
    let mut outer = tower::Layer::layer(&TimeoutLayer::new(Duration::from_millis(300)), inner);
    let start = Instant::now();
    let fut = outer.ready().await.unwrap().call(request("a.B/C", "hi"));
    // The inner layer times the call; the outer one relies on it.
    assert!(format!("{fut:?}").contains("Channel"), "{fut:?}");
    let err = fut.await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(status(err).code(), Code::DeadlineExceeded);
}

#[tokio::test(start_paused = true)]
async fn a_call_deferred_by_a_buffer_is_timed_by_the_layer() {
    // A buffer hands the call to its worker, which waits for a service that
    // never becomes ready: nothing below enforces the deadline.
    let (never, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    handle.allow(0);
    let buffered = tower::buffer::Buffer::new(never, 8);
    let mut svc = tower::Layer::layer(&TimeoutLayer::new(Duration::from_millis(100)), buffered);
    let start = Instant::now();
    let fut = svc.ready().await.unwrap().call(request("a.B/C", "hi"));
    assert!(format!("{fut:?}").contains("Layer"), "{fut:?}");
    let err = fut.await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let s = status(err);
    assert_eq!(s.code(), Code::DeadlineExceeded);
    assert_eq!(s.message(), "deadline exceeded before the response arrived");
}

/// A request as a server receives it: from a peer.
fn server_request(method: &'static str) -> Request<Body> {
    let mut req = request(method, "hi");
    req.set_remote_addr(Some("127.0.0.1:40000".parse().unwrap()));
    req
}

#[tokio::test(start_paused = true)]
async fn a_server_timeout_says_the_server_gave_up() {
    let slow = tower::service_fn(|_req: Request<Body>| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok::<_, Status>(response("late"))
    });
    let mut svc = tower::Layer::layer(&TimeoutLayer::new(Duration::from_millis(100)), slow);
    // The server's own timeout passes first.
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(server_request("a.B/C"))
        .await
        .unwrap_err();
    let s = status(err);
    assert_eq!(s.code(), Code::DeadlineExceeded);
    assert_eq!(
        s.message(),
        "deadline exceeded: the server's 100ms timeout passed before the handler finished"
    );
    // The caller's earlier deadline passes first.
    let mut req = server_request("a.B/C");
    req.set_timeout(Duration::from_millis(50));
    let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
    assert_eq!(
        status(err).message(),
        "deadline exceeded: the caller's deadline passed before the handler finished"
    );
}
