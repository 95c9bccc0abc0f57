//! Unit tests of the timeout layer (tower-test mocks, paused time).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use tower_test::mock;
use trpc::{Body, Code, Payload, Request, Response, Status};

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
