//! Unit tests of the metrics layer (tower-test mocks, scraped text format).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use prometheus::Registry;
use tower_test::mock;
use trpc::stats::TransportStats;
use trpc::{Body, Payload, Protocol, Request, Response, Status};

use super::{MetricsLayer, TransportCollector};
use crate::test_util::{request, response, sample, scrape, stream_body};

fn client() -> (Registry, MetricsLayer) {
    let registry = Registry::new();
    let layer = MetricsLayer::client(&registry).unwrap();
    (registry, layer)
}

/// The value of `name` with `labels` plus `protocol="trpc"` (what every
/// request built in these tests arrives on).
fn value(r: &Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut labels = labels.to_vec();
    labels.push(("protocol", "trpc"));
    sample(&scrape(r), name, &labels)
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
            &[("method", m), ("code", "OK"), ("protocol", "trpc")],
        )
    };
    assert_eq!(calls("a.B/1"), Some(2.0));
    assert_eq!(calls("a.B/2"), Some(1.0));
    assert_eq!(calls("other"), Some(2.0));
    assert_eq!(calls("a.B/3"), None);
}

#[tokio::test]
async fn calls_are_labelled_with_their_wire_protocol() {
    let registry = Registry::new();
    let layer = MetricsLayer::server(&registry).unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer);
    for protocol in [
        Protocol::Grpc,
        Protocol::Trpc,
        Protocol::Grpc,
        Protocol::Http,
    ] {
        assert!(svc.poll_ready().is_ready());
        let mut req = request("a.B/C", "x");
        req.set_protocol(protocol);
        let fut = svc.call(req);
        let (_req, send) = handle.next_request().await.unwrap();
        send.send_response(response("y"));
        fut.await.unwrap();
    }
    let text = scrape(&registry);
    let calls = |p| {
        sample(
            &text,
            "trpc_server_calls_total",
            &[("method", "a.B/C"), ("code", "OK"), ("protocol", p)],
        )
    };
    assert_eq!(calls("grpc"), Some(2.0));
    assert_eq!(calls("trpc"), Some(1.0));
    assert_eq!(calls("http"), Some(1.0));
}

#[tokio::test(start_paused = true)]
async fn latencies_fill_cumulative_buckets() {
    let registry = Registry::new();
    let layer = MetricsLayer::builder()
        .buckets(vec![0.01, 0.1, 1.0])
        .client(&registry)
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer);
    for ms in [5, 50, 50, 500, 5000] {
        assert!(svc.poll_ready().is_ready());
        let fut = tokio::spawn(svc.call(request("a.B/C", "x")));
        let (_req, send) = handle.next_request().await.unwrap();
        tokio::time::sleep(Duration::from_millis(ms)).await;
        send.send_response(response("y"));
        fut.await.unwrap().unwrap();
    }
    let m = [("method", "a.B/C")];
    let bucket = |le: &str| {
        value(
            &registry,
            "trpc_client_call_duration_seconds_bucket",
            &[("method", "a.B/C"), ("le", le)],
        )
    };
    assert_eq!(bucket("0.01"), 1.0);
    assert_eq!(bucket("0.1"), 3.0);
    assert_eq!(bucket("1"), 4.0);
    assert_eq!(bucket("+Inf"), 5.0);
    assert_eq!(
        value(&registry, "trpc_client_call_duration_seconds_count", &m),
        5.0
    );
    let sum = value(&registry, "trpc_client_call_duration_seconds_sum", &m);
    assert!((sum - 5.605).abs() < 1e-6, "{sum}");
}

#[tokio::test]
async fn clones_counting_many_methods_share_the_totals() {
    let (registry, layer) = client();
    let (svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer);
    let methods = ["a.B/1", "a.B/2", "a.B/3", "a.B/4", "a.B/5", "a.B/6"];
    let mut clones = [svc.clone(), svc];
    // More methods than a service remembers, from two clones, twice.
    for round in 0..2 {
        for (i, method) in methods.iter().enumerate() {
            let svc = &mut clones[(i + round) % 2];
            assert!(svc.poll_ready().is_ready());
            let fut = svc.call(request(method, "x"));
            let (_req, send) = handle.next_request().await.unwrap();
            send.send_response(response("y"));
            fut.await.unwrap();
        }
    }
    for method in methods {
        assert_eq!(
            value(
                &registry,
                "trpc_client_calls_total",
                &[("method", method), ("code", "OK")]
            ),
            2.0,
            "{method}"
        );
    }
}

#[test]
fn buckets_must_increase() {
    let registry = Registry::new();
    let err = MetricsLayer::builder()
        .buckets(vec![0.1, 0.01])
        .client(&registry)
        .unwrap_err();
    assert!(err.to_string().contains("strictly increasing"), "{err}");
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

/// The per-thread method cache is keyed by the metrics it belongs to: two
/// stacks on one thread, same method, each counts only its own calls — also
/// when every call goes through a fresh clone of the stack (as a server's
/// connection makes one per call).
#[tokio::test]
async fn two_stacks_on_one_thread_count_apart() {
    let (r1, r2) = (Registry::new(), Registry::new());
    let l1 = MetricsLayer::server(&r1).unwrap();
    let l2 = MetricsLayer::server(&r2).unwrap();
    let (svc1, mut h1) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(l1);
    let (svc2, mut h2) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(l2);
    for (svc, handle, n) in [(svc1, &mut h1, 3), (svc2, &mut h2, 2)] {
        for _ in 0..n {
            let mut fresh = svc.clone();
            assert!(fresh.poll_ready().is_ready());
            let fut = fresh.call(request("a.B/C", "x"));
            let (_req, send) = handle.next_request().await.unwrap();
            send.send_response(response("y"));
            fut.await.unwrap();
        }
    }
    let calls = |r: &Registry| {
        sample(
            &scrape(r),
            "trpc_server_calls_total",
            &[("method", "a.B/C"), ("code", "OK"), ("protocol", "trpc")],
        )
    };
    assert_eq!(calls(&r1), Some(3.0));
    assert_eq!(calls(&r2), Some(2.0));
}

/// More methods than a small cache would hold, interleaved on one thread:
/// each still counts its own calls.
#[tokio::test]
async fn many_interleaved_methods_count_apart() {
    let registry = Registry::new();
    let layer = MetricsLayer::server(&registry).unwrap();
    let (svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer);
    let methods: Vec<String> = (0..20).map(|i| format!("a.B/M{i}")).collect();
    for _ in 0..3 {
        for m in &methods {
            let mut fresh = svc.clone();
            assert!(fresh.poll_ready().is_ready());
            let fut = fresh.call(request("a.B/unused", "x").with_method(m.clone()));
            let (_req, send) = handle.next_request().await.unwrap();
            send.send_response(response("y"));
            fut.await.unwrap();
        }
    }
    let text = scrape(&registry);
    for m in &methods {
        let calls = sample(
            &text,
            "trpc_server_calls_total",
            &[("method", m), ("code", "OK"), ("protocol", "trpc")],
        );
        assert_eq!(calls, Some(3.0), "{m}");
    }
}
