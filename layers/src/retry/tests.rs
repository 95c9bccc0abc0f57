//! Unit tests of the retry layer (tower-test mocks, paused time).

use std::time::Duration;

use tokio::time::Instant;
use tower::retry::budget::TpsBudget;
use tower_test::mock;
use trpc::{Body, Code, Payload, Request, Response, Status};

use super::error::BudgetExhausted;
use super::{Attempts, Idempotent, RetryLayer};
use crate::test_util::{request, response, status, stream_body};

fn layer() -> RetryLayer {
    RetryLayer::exponential(4)
        .backoff(Duration::from_millis(10), Duration::from_millis(100))
        .idempotent("idem.Svc/*")
}

#[tokio::test(start_paused = true)]
async fn unavailable_is_retried_until_success() {
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer());
    assert!(svc.poll_ready().is_ready());
    let fut = tokio::spawn(svc.call(request("idem.Svc/Get", "hi")));
    for _ in 0..2 {
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.get_ref().as_once().unwrap().bytes, "hi");
        send.send_error(Status::unavailable("try again"));
    }
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_response(response("ok"));
    let resp = fut.await.unwrap().unwrap();
    assert_eq!(resp.extensions().get::<Attempts>(), Some(&Attempts(3)));
}

#[tokio::test(start_paused = true)]
async fn a_first_try_success_has_no_attempts_extension() {
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer());
    assert!(svc.poll_ready().is_ready());
    let fut = svc.call(request("idem.Svc/Get", "hi"));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_response(response("ok"));
    assert!(fut.await.unwrap().extensions().get::<Attempts>().is_none());
}

#[tokio::test(start_paused = true)]
async fn non_retryable_codes_fail_at_once() {
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer());
    assert!(svc.poll_ready().is_ready());
    let fut = svc.call(request("idem.Svc/Get", "hi"));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_error(Status::invalid_argument("bad"));
    assert_eq!(status(fut.await.unwrap_err()).code(), Code::InvalidArgument);
    assert!(handle.poll_request().is_pending(), "no second attempt");
}

#[tokio::test(start_paused = true)]
async fn configured_codes_are_retried() {
    let layer = layer().retry_on([Code::ResourceExhausted]);
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer);
    assert!(svc.poll_ready().is_ready());
    let fut = tokio::spawn(svc.call(request("idem.Svc/Get", "hi")));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_error(Status::resource_exhausted("busy"));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_error(Status::unavailable("no longer retryable"));
    assert_eq!(
        status(fut.await.unwrap().unwrap_err()).code(),
        Code::Unavailable
    );
}

#[tokio::test(start_paused = true)]
async fn a_non_idempotent_call_is_retried_only_when_refused() {
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer());
    // May have reached the server: not retried.
    assert!(svc.poll_ready().is_ready());
    let fut = svc.call(request("other.Svc/Create", "hi"));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_error(Status::unavailable("connection reset"));
    assert_eq!(status(fut.await.unwrap_err()).code(), Code::Unavailable);
    assert!(handle.poll_request().is_pending());

    // Refused (never processed): retried.
    assert!(svc.poll_ready().is_ready());
    let fut = tokio::spawn(svc.call(request("other.Svc/Create", "hi")));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_error(Status::unavailable("server going away").with_refused(true));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_response(response("ok"));
    assert!(fut.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_idempotent_extension_allows_retries() {
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer());
    assert!(svc.poll_ready().is_ready());
    let mut req = request("other.Svc/Put", "hi");
    req.extensions_mut().insert(Idempotent);
    let fut = tokio::spawn(svc.call(req));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_error(Status::unavailable("x"));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_response(response("ok"));
    assert!(fut.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn max_attempts_bounds_the_attempts_and_backoff_is_capped() {
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer());
    assert!(svc.poll_ready().is_ready());
    let fut = tokio::spawn(svc.call(request("idem.Svc/Get", "hi")));
    let mut last = Instant::now();
    for retry in 0..4u32 {
        let (_req, send) = handle.next_request().await.unwrap();
        let gap = last.elapsed();
        if retry > 0 {
            // Full jitter: somewhere in [0, min(100ms, 10ms * 2^(retry-1))].
            let cap =
                Duration::from_millis(10 * (1 << (retry - 1))).min(Duration::from_millis(100));
            assert!(gap <= cap, "retry {retry}: waited {gap:?}, cap {cap:?}");
        }
        last = Instant::now();
        send.send_error(Status::unavailable("down"));
    }
    assert_eq!(
        status(fut.await.unwrap().unwrap_err()).code(),
        Code::Unavailable
    );
    assert!(
        handle.poll_request().is_pending(),
        "a fifth attempt was made"
    );
}

#[test]
fn backoff_caps_double_up_to_the_maximum() {
    let layer =
        RetryLayer::exponential(10).backoff(Duration::from_millis(10), Duration::from_millis(50));
    let p = &layer.policy;
    let caps: Vec<u128> = (1..=5).map(|n| p.backoff_cap(n).as_millis()).collect();
    assert_eq!(caps, [10, 20, 40, 50, 50]);
    for n in 1..=5 {
        assert!(p.backoff(n) <= p.backoff_cap(n));
    }
}

#[tokio::test(start_paused = true)]
async fn no_attempt_starts_past_the_deadline() {
    let layer = RetryLayer::exponential(100)
        .backoff(Duration::from_millis(20), Duration::from_millis(20))
        .idempotent("*")
        .no_budget();
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer);
    let start = Instant::now();
    let deadline = start + Duration::from_millis(100);
    let mut req = request("idem.Svc/Get", "hi");
    req.set_deadline(deadline);
    assert!(svc.poll_ready().is_ready());
    let mut fut = tokio::spawn(svc.call(req));
    let mut attempts = 0;
    let result = loop {
        tokio::select! {
            r = &mut fut => break r.unwrap(),
            Some((_req, send)) = handle.next_request() => {
                attempts += 1;
                assert!(Instant::now() < deadline, "attempt {attempts} started past the deadline");
                tokio::time::sleep(Duration::from_millis(15)).await;
                send.send_error(Status::unavailable("down"));
            }
        }
    };
    assert!(attempts >= 2, "expected some retries, got {attempts}");
    assert_eq!(status(result.unwrap_err()).code(), Code::Unavailable);
    // The last attempt may run past the deadline (enforcing it is the
    // timeout layer's and the channel's job), but none starts after it.
    assert!(Instant::now() < deadline + Duration::from_millis(15));
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_budget_stops_retries() {
    // One retry in reserve, none earned by deposits.
    let layer = layer().budget(TpsBudget::new(Duration::from_secs(1), 1, 0.0));
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer);

    assert!(svc.poll_ready().is_ready());
    let fut = tokio::spawn(svc.call(request("idem.Svc/Get", "a")));
    for _ in 0..2 {
        let (_req, send) = handle.next_request().await.unwrap();
        send.send_error(Status::unavailable("down"));
    }
    assert_eq!(
        status(fut.await.unwrap().unwrap_err()).code(),
        Code::Unavailable
    );

    assert!(svc.poll_ready().is_ready());
    #[cfg(feature = "trace")]
    let logs = crate::test_util::Logs::capture_at(tracing::Level::WARN);
    let fut = svc.call(request("idem.Svc/Get", "b"));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_error(Status::unavailable("down"));
    let s = status(fut.await.unwrap_err());
    #[cfg(feature = "trace")]
    {
        let lines = logs.lines_with("retry budget is exhausted");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains(r#""level":"WARN""#), "{}", lines[0]);
    }
    assert!(handle.poll_request().is_pending(), "retried without budget");
    // The caller learns why the call was not retried.
    assert_eq!(s.code(), Code::Unavailable);
    assert_eq!(
        s.message(),
        "down (not retried: the retry budget is exhausted)"
    );
    let why = std::error::Error::source(&s)
        .and_then(|e| e.downcast_ref::<BudgetExhausted>())
        .expect("a BudgetExhausted source");
    assert_eq!(why.attempts(), 1);
    assert_eq!(why.to_string(), "retry budget exhausted after 1 attempt");
}

#[tokio::test(start_paused = true)]
async fn streaming_requests_are_not_retried() {
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer());
    assert!(svc.poll_ready().is_ready());
    let req = Request::new(stream_body(vec![Ok(Payload::new("a"))])).with_method("idem.Svc/Upload");
    let fut = svc.call(req);
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_error(Status::unavailable("down"));
    assert_eq!(status(fut.await.unwrap_err()).code(), Code::Unavailable);
    assert!(handle.poll_request().is_pending());
}

#[tokio::test(start_paused = true)]
async fn a_retry_waits_for_the_service_to_be_ready() {
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer());
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    let fut = tokio::spawn(svc.call(request("idem.Svc/Get", "hi")));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_error(Status::unavailable("down"));
    // The backoff is at most 10ms; the mock is not ready until allowed.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(handle.poll_request().is_pending());
    handle.allow(1);
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_response(response("ok"));
    assert!(fut.await.unwrap().is_ok());
}
