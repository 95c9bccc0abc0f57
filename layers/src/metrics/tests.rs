//! Unit tests of the metrics layer (tower-test mocks, scraped text format).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use prometheus::Registry;
use tower_test::mock;
use trpc::stats::TransportStats;
use trpc::{Body, Payload, Request, Response, Status};

use super::{MetricsLayer, TransportCollector};
use crate::test_util::{request, response, sample, scrape, stream_body};

fn client() -> (Registry, MetricsLayer) {
    let registry = Registry::new();
    let layer = MetricsLayer::client(&registry).unwrap();
    (registry, layer)
}

fn value(r: &Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(&scrape(r), name, labels)
        .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{}", scrape(r)))
}

#[tokio::test]
async fn a_unary_call_is_counted_timed_and_sized() {
    let (registry, layer) = client();
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer);
    assert!(svc.poll_ready().is_ready());
    let fut = svc.call(request("a.B/C", "hello"));
    let (_req, send) = handle.next_request().await.unwrap();
    let m = [("method", "a.B/C")];
    assert_eq!(value(&registry, "trpc_client_calls_in_flight", &m), 1.0);
    send.send_response(response("hi!"));
    fut.await.unwrap();
    assert_eq!(value(&registry, "trpc_client_calls_in_flight", &m), 0.0);
    assert_eq!(
        value(
            &registry,
            "trpc_client_calls_total",
            &[("method", "a.B/C"), ("code", "OK")]
        ),
        1.0
    );
    assert_eq!(value(&registry, "trpc_client_request_bytes_total", &m), 5.0);
    assert_eq!(
        value(&registry, "trpc_client_response_bytes_total", &m),
        3.0
    );
    assert_eq!(
        value(&registry, "trpc_client_request_messages_total", &m),
        1.0
    );
    assert_eq!(
        value(&registry, "trpc_client_response_messages_total", &m),
        1.0
    );
    assert_eq!(
        value(&registry, "trpc_client_call_duration_seconds_count", &m),
        1.0
    );
}

#[tokio::test]
async fn errors_are_counted_by_code_and_passed_on() {
    let (registry, layer) = client();
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer);
    for err in [
        Box::new(Status::not_found("x")) as trpc::BoxError,
        Box::new(tower::load_shed::error::Overloaded::new()),
    ] {
        assert!(svc.poll_ready().is_ready());
        let fut = svc.call(request("a.B/C", "x"));
        let (_req, send) = handle.next_request().await.unwrap();
        send.send_error(err);
        fut.await.unwrap_err();
    }
    for code in ["NOT_FOUND", "RESOURCE_EXHAUSTED"] {
        assert_eq!(
            value(
                &registry,
                "trpc_client_calls_total",
                &[("method", "a.B/C"), ("code", code)]
            ),
            1.0
        );
    }
}

#[tokio::test]
async fn streams_count_every_message_and_finish_at_the_end() {
    let registry = Registry::new();
    let layer = MetricsLayer::server(&registry).unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer);
    assert!(svc.poll_ready().is_ready());
    let req = Request::new(stream_body(vec![
        Ok(Payload::new("ab")),
        Ok(Payload::new("cde")),
    ]))
    .with_method("a.B/Chat");
    let fut = svc.call(req);
    let (req, send) = handle.next_request().await.unwrap();
    // The handler reads the request stream.
    let got: Vec<_> = req.into_inner().collect().await;
    assert_eq!(got.len(), 2);
    send.send_response(Response::new(stream_body(vec![
        Ok(Payload::new("1234")),
        Ok(Payload::new("5")),
        Ok(Payload::new("6")),
        Err(Status::data_loss("disk on fire")),
    ])));
    let body = fut.await.unwrap().into_inner();
    let m = [("method", "a.B/Chat")];
    assert_eq!(
        value(&registry, "trpc_server_calls_in_flight", &m),
        1.0,
        "finished before the stream ended"
    );
    let items: Vec<_> = body.collect().await;
    assert_eq!(items.len(), 4);
    assert_eq!(value(&registry, "trpc_server_calls_in_flight", &m), 0.0);
    assert_eq!(
        value(&registry, "trpc_server_request_messages_total", &m),
        2.0
    );
    assert_eq!(value(&registry, "trpc_server_request_bytes_total", &m), 5.0);
    assert_eq!(
        value(&registry, "trpc_server_response_messages_total", &m),
        3.0
    );
    assert_eq!(
        value(&registry, "trpc_server_response_bytes_total", &m),
        6.0
    );
    assert_eq!(
        value(
            &registry,
            "trpc_server_calls_total",
            &[("method", "a.B/Chat"), ("code", "DATA_LOSS")]
        ),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn dropped_calls_count_as_cancelled_or_deadline_exceeded() {
    let (registry, layer) = client();
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer);
    assert!(svc.poll_ready().is_ready());
    drop(svc.call(request("a.B/C", "x")));
    let _dropped = handle.next_request().await;
    assert!(svc.poll_ready().is_ready());
    let mut req = request("a.B/C", "x");
    req.set_timeout(Duration::from_millis(5));
    let fut = svc.call(req);
    let _pending = handle.next_request().await;
    assert!(tokio::time::timeout(Duration::from_millis(5), fut)
        .await
        .is_err());
    // A response stream dropped half-way.
    assert!(svc.poll_ready().is_ready());
    let fut = svc.call(request("a.B/S", "x"));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(Body::stream(futures_util::stream::pending())));
    drop(fut.await.unwrap());
    for (method, code) in [
        ("a.B/C", "CANCELLED"),
        ("a.B/C", "DEADLINE_EXCEEDED"),
        ("a.B/S", "CANCELLED"),
    ] {
        assert_eq!(
            value(
                &registry,
                "trpc_client_calls_total",
                &[("method", method), ("code", code)]
            ),
            1.0
        );
        assert_eq!(
            value(
                &registry,
                "trpc_client_calls_in_flight",
                &[("method", method)]
            ),
            0.0
        );
    }
}

#[tokio::test]
async fn methods_beyond_the_limit_share_one_label() {
    let registry = Registry::new();
    let layer = MetricsLayer::builder()
        .max_methods(2)
        .server(&registry)
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer);
    for method in ["a.B/1", "a.B/2", "a.B/3", "a.B/4", "a.B/1"] {
        assert!(svc.poll_ready().is_ready());
        let fut = svc.call(request(method, "x"));
        let (_req, send) = handle.next_request().await.unwrap();
        send.send_response(response("y"));
        fut.await.unwrap();
    }
    let text = scrape(&registry);
    let calls = |m| {
        sample(
            &text,
            "trpc_server_calls_total",
            &[("method", m), ("code", "OK")],
        )
    };
    assert_eq!(calls("a.B/1"), Some(2.0));
    assert_eq!(calls("a.B/2"), Some(1.0));
    assert_eq!(calls("other"), Some(2.0));
    assert_eq!(calls("a.B/3"), None);
}

#[test]
fn one_side_registers_once_per_registry_and_namespaces_separate() {
    let registry = Registry::new();
    MetricsLayer::client(&registry).unwrap();
    MetricsLayer::server(&registry).unwrap();
    assert!(MetricsLayer::client(&registry).is_err());
    MetricsLayer::builder()
        .namespace("attempt")
        .client(&registry)
        .unwrap();
}

#[test]
fn the_transport_collector_reads_the_stats_at_scrape_time() {
    let registry = Registry::new();
    let stats = TransportStats::new();
    registry
        .register(Box::new(TransportCollector::server(Arc::clone(&stats))))
        .unwrap();
    let text = scrape(&registry);
    assert_eq!(
        sample(&text, "trpc_server_connections_open", &[]),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "trpc_server_bytes_sent_total", &[]),
        Some(0.0)
    );
    assert!(text.contains("# TYPE trpc_server_connections_opened_total counter"));
    // Scraping twice gives the same totals (counters are refreshed, not added).
    assert_eq!(scrape(&registry), text);
}
