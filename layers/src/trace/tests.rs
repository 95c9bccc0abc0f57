//! Unit tests of the trace layer (tower-test mocks, captured JSON logs).

use std::time::Duration;

use futures_util::StreamExt;
use tower::{Layer, Service, ServiceExt};
use tower_test::mock;
use trpc::{Body, Code, Payload, Request, Response, Status};

use super::context::CurrentGuard;
use super::{TraceContext, TraceLayer, TRACEPARENT};
use crate::test_util::{request, response, status, stream_body, Logs};

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn the_server_continues_the_callers_trace() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<Body>, Response<Body>, _>(TraceLayer::server());
    assert!(svc.poll_ready().is_ready());
    let mut req = request("a.B/C", "hi");
    req.metadata_mut().insert(TRACEPARENT, TP);
    let fut = svc.call(req);
    let (req, send) = handle.next_request().await.unwrap();
    let ctx = *req.extensions().get::<TraceContext>().unwrap();
    let remote = TraceContext::from_traceparent(TP).unwrap();
    assert_eq!(ctx.trace_id(), remote.trace_id());
    assert_eq!(ctx.parent_id(), Some(remote.span_id()));
    assert_ne!(ctx.span_id(), remote.span_id());
    send.send_response(response("ok"));
    fut.await.unwrap();
}

#[tokio::test]
async fn the_server_starts_a_trace_when_traceparent_is_absent_or_malformed() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<Body>, Response<Body>, _>(TraceLayer::server());
    let mut seen = Vec::new();
    for tp in [None, Some("garbage")] {
        assert!(svc.poll_ready().is_ready());
        let mut req = request("a.B/C", "hi");
        if let Some(tp) = tp {
            req.metadata_mut().insert(TRACEPARENT, tp);
        }
        let fut = svc.call(req);
        let (req, send) = handle.next_request().await.unwrap();
        let ctx = *req.extensions().get::<TraceContext>().unwrap();
        assert_eq!(ctx.parent_id(), None);
        seen.push(ctx.trace_id());
        send.send_response(response("ok"));
        fut.await.unwrap();
    }
    assert_ne!(seen[0], seen[1]);
}

#[tokio::test]
async fn the_handler_sees_its_context_as_current() {
    let handler = tower::service_fn(|req: Request<Body>| async move {
        tokio::task::yield_now().await;
        let ext = req.extensions().get::<TraceContext>().copied();
        assert!(ext.is_some());
        assert_eq!(TraceContext::current(), ext);
        Ok::<_, Status>(response("ok"))
    });
    let mut svc = TraceLayer::server().layer(handler);
    svc.ready()
        .await
        .unwrap()
        .call(request("a.B/C", "hi"))
        .await
        .unwrap();
    assert_eq!(TraceContext::current(), None);
}

#[tokio::test]
async fn the_client_sends_a_child_of_the_current_context() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<Body>, Response<Body>, _>(TraceLayer::client());
    let parent = TraceContext::new_root();
    assert!(svc.poll_ready().is_ready());
    let fut = {
        let _g = CurrentGuard::enter(parent);
        svc.call(request("a.B/C", "hi"))
    };
    let (req, send) = handle.next_request().await.unwrap();
    let sent = TraceContext::from_traceparent(req.metadata().get(TRACEPARENT).unwrap()).unwrap();
    assert_eq!(sent.trace_id(), parent.trace_id());
    assert_ne!(sent.span_id(), parent.span_id());
    send.send_response(response("ok"));
    let resp = fut.await.unwrap();
    let ctx = resp.extensions().get::<TraceContext>().unwrap();
    assert_eq!(ctx.span_id(), sent.span_id());
    assert_eq!(ctx.parent_id(), Some(parent.span_id()));
}

#[tokio::test]
async fn the_client_uses_an_explicit_parent_or_starts_a_trace() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<Body>, Response<Body>, _>(TraceLayer::client());
    let parent = TraceContext::new_root();
    assert!(svc.poll_ready().is_ready());
    let mut req = request("a.B/C", "hi");
    req.extensions_mut().insert(parent);
    let fut = svc.call(req);
    let (req, send) = handle.next_request().await.unwrap();
    let sent = TraceContext::from_traceparent(req.metadata().get(TRACEPARENT).unwrap()).unwrap();
    assert_eq!(sent.trace_id(), parent.trace_id());
    send.send_response(response("ok"));
    fut.await.unwrap();

    assert!(svc.poll_ready().is_ready());
    let fut = svc.call(request("a.B/C", "hi"));
    let (req, send) = handle.next_request().await.unwrap();
    let fresh = TraceContext::from_traceparent(req.metadata().get(TRACEPARENT).unwrap()).unwrap();
    assert_ne!(fresh.trace_id(), parent.trace_id());
    send.send_response(response("ok"));
    fut.await.unwrap();
}

#[tokio::test]
async fn the_end_of_a_call_is_logged_at_a_level_by_outcome() {
    let logs = Logs::capture();
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<Body>, Response<Body>, _>(TraceLayer::server());
    for (method, result) in [
        ("a.B/Ok", Ok(())),
        ("a.B/Missing", Err(Status::not_found("no such thing"))),
        ("a.B/Broken", Err(Status::internal("bug"))),
        // What the router answers for a method it does not have: the
        // caller's mistake, not a server fault.
        ("a.B/Unknown", Err(Status::unimplemented("unknown method"))),
    ] {
        assert!(svc.poll_ready().is_ready());
        let mut req = request(method, "hi");
        req.set_stream_id(7);
        let fut = svc.call(req);
        let (_req, send) = handle.next_request().await.unwrap();
        match result {
            Ok(()) => send.send_response(response("ok")),
            Err(e) => send.send_error(e),
        }
        let _ = fut.await;
    }
    let ok = logs.lines_with("a.B/Ok");
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert!(ok[0].contains(r#""level":"INFO""#), "{}", ok[0]);
    assert!(ok[0].contains(r#""code":"OK""#), "{}", ok[0]);
    assert!(ok[0].contains(r#""stream_id":7"#), "{}", ok[0]);
    assert!(ok[0].contains(r#""trace_id":""#), "{}", ok[0]);
    assert!(ok[0].contains("latency_ms"), "{}", ok[0]);
    let missing = logs.lines_with("a.B/Missing");
    assert!(missing[0].contains(r#""level":"WARN""#), "{}", missing[0]);
    assert!(missing[0].contains("NOT_FOUND"), "{}", missing[0]);
    let broken = logs.lines_with("a.B/Broken");
    assert!(broken[0].contains(r#""level":"ERROR""#), "{}", broken[0]);
    assert!(broken[0].contains("bug"), "{}", broken[0]);
    let unknown = logs.lines_with("a.B/Unknown");
    assert!(unknown[0].contains(r#""level":"WARN""#), "{}", unknown[0]);
    assert!(unknown[0].contains("UNIMPLEMENTED"), "{}", unknown[0]);
}

#[tokio::test]
async fn a_streaming_response_is_logged_when_it_ends() {
    let logs = Logs::capture();
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<Body>, Response<Body>, _>(TraceLayer::client());
    assert!(svc.poll_ready().is_ready());
    let fut = svc.call(request("a.B/Stream", "hi"));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(stream_body(vec![
        Ok(Payload::new("1")),
        Ok(Payload::new("2")),
        Err(Status::aborted("gave up")),
    ])));
    let resp = fut.await.unwrap();
    assert!(
        logs.lines_with("a.B/Stream").is_empty(),
        "logged before the stream ended"
    );
    let items: Vec<_> = resp.into_inner().collect().await;
    assert_eq!(items.len(), 3);
    let lines = logs.lines_with("a.B/Stream");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("ABORTED") && lines[0].contains(r#""messages":2"#),
        "{}",
        lines[0]
    );
}

#[tokio::test]
async fn trailers_end_a_stream_successfully() {
    let logs = Logs::capture();
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<Body>, Response<Body>, _>(TraceLayer::server());
    assert!(svc.poll_ready().is_ready());
    let fut = svc.call(request("a.B/Trailers", "hi"));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(stream_body(vec![
        Ok(Payload::new("1")),
        Err(Status::new(Code::Ok, "")),
    ])));
    let items: Vec<_> = fut.await.unwrap().into_inner().collect().await;
    assert_eq!(items.len(), 2, "the trailers item is passed on");
    let lines = logs.lines_with("a.B/Trailers");
    assert!(lines[0].contains(r#""code":"OK""#), "{}", lines[0]);
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_at_its_deadline_is_logged_as_deadline_exceeded() {
    let logs = Logs::capture();
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<Body>, Response<Body>, _>(TraceLayer::server());
    assert!(svc.poll_ready().is_ready());
    let mut req = request("a.B/Slow", "hi");
    req.set_timeout(Duration::from_millis(10));
    let fut = svc.call(req);
    let _pending = handle.next_request().await.unwrap();
    let r = tokio::time::timeout(Duration::from_millis(10), fut).await;
    assert!(r.is_err());
    let lines = logs.lines_with("a.B/Slow");
    assert!(lines[0].contains("DEADLINE_EXCEEDED"), "{}", lines[0]);

    assert!(svc.poll_ready().is_ready());
    drop(svc.call(request("a.B/Gone", "hi")));
    let lines = logs.lines_with("a.B/Gone");
    assert!(lines[0].contains("CANCELLED"), "{}", lines[0]);
}

#[tokio::test]
async fn errors_pass_through_unchanged() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<Body>, Response<Body>, _>(TraceLayer::client());
    assert!(svc.poll_ready().is_ready());
    let fut = svc.call(request("a.B/C", "hi"));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_error(tower::load_shed::error::Overloaded::new());
    let err = fut.await.unwrap_err();
    assert!(err.is::<tower::load_shed::error::Overloaded>());
    assert_eq!(status(err).code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn without_its_span_the_event_still_names_the_call() {
    // Spans at INFO, the subscriber at WARN: the span is disabled.
    let logs = Logs::capture_at(tracing::Level::WARN);
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<Body>, Response<Body>, _>(TraceLayer::server());
    assert!(svc.poll_ready().is_ready());
    let mut req = request("a.B/Denied", "hi");
    req.metadata_mut().insert(TRACEPARENT, TP);
    let fut = svc.call(req);
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_error(Status::permission_denied("no"));
    let _ = fut.await;
    let lines = logs.lines_with("a.B/Denied");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(r#""trace_id":"4bf92f3577b34da6a3ce929d0e0e4736""#),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("PERMISSION_DENIED"), "{}", lines[0]);
}
