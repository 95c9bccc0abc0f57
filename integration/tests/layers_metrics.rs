//! Metrics end to end: client and server call metrics plus transport
//! counters, scraped from the admin server's /metrics over HTTP and parsed.

use futures_util::stream;
use prometheus::Registry;
use tower::ServiceBuilder;
use trpc::server::{server_streaming, unary, Router, Server};
use trpc::stats::TransportStats;
use trpc::{Client, Code, Request, Response, Status};
use trpc_integration::client::endpoint;
use trpc_integration::http::{http_get, sample};
use trpc_integration::messages::EchoMsg;
use trpc_integration::server::serve_with;
use trpc_integration::{within, SOON};
use trpc_layers::admin::AdminServer;
use trpc_layers::metrics::TransportCollector;
use trpc_layers::MetricsLayer;

fn router() -> Router {
    let say =
        |req: Request<EchoMsg>| async move { Ok::<_, Status>(Response::new(req.into_inner())) };
    let fail = |_req: Request<EchoMsg>| async move {
        Err::<Response<EchoMsg>, _>(Status::not_found("no such thing"))
    };
    let count = |req: Request<EchoMsg>| async move {
        let n: u32 = req.into_inner().message.parse().unwrap_or(0);
        Ok::<_, Status>(Response::new(stream::iter(
            (0..n).map(|i| Ok(EchoMsg::new(i.to_string()))),
        )))
    };
    Router::new()
        .route("m.Svc/Say", unary(say))
        .route("m.Svc/Fail", unary(fail))
        .route("m.Svc/Count", server_streaming(count))
}

#[tokio::test]
async fn metrics_are_served_over_http_and_count_calls_bytes_streams_and_connections() {
    let registry = Registry::new();
    let server_stats = TransportStats::new();
    let client_stats = TransportStats::new();
    registry
        .register(Box::new(TransportCollector::server(server_stats.clone())))
        .unwrap();
    registry
        .register(Box::new(TransportCollector::client(client_stats.clone())))
        .unwrap();
    let admin = AdminServer::bind("127.0.0.1:0".parse().unwrap(), registry.clone())
        .await
        .unwrap();
    let server = serve_with(
        Server::builder()
            .transport_stats(server_stats.clone())
            .layer(MetricsLayer::server(&registry).unwrap()),
        router(),
    )
    .await;
    let channel = within(
        SOON,
        "connect",
        endpoint(server.addr)
            .transport_stats(client_stats.clone())
            .connect(),
    )
    .await
    .unwrap();
    let mut client = Client::new(
        ServiceBuilder::new()
            .layer(MetricsLayer::client(&registry).unwrap())
            .service(channel),
    );
    for _ in 0..3 {
        let r: EchoMsg = within(
            SOON,
            "say",
            client.unary_message("m.Svc/Say", EchoMsg::new("hello")),
        )
        .await
        .unwrap();
        assert_eq!(r.message, "hello");
    }
    let err = within(
        SOON,
        "fail",
        client.unary_message::<EchoMsg, EchoMsg>("m.Svc/Fail", EchoMsg::new("")),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let mut s = within(
        SOON,
        "count",
        client.server_streaming::<EchoMsg, EchoMsg>("m.Svc/Count", Request::new(EchoMsg::new("5"))),
    )
    .await
    .unwrap()
    .into_inner();
    let mut n = 0;
    while within(SOON, "message", s.message())
        .await
        .unwrap()
        .is_some()
    {
        n += 1;
    }
    assert_eq!(n, 5);

    let (code, text) = http_get(admin.local_addr(), "/metrics").await;
    assert_eq!(code, 200);
    // Per-method families carry the wire protocol too: every call here came
    // over trpc's own protocol.
    let get = |name: &str, labels: &[(&str, &str)]| {
        let mut labels = labels.to_vec();
        if labels.iter().any(|(k, _)| *k == "method") {
            labels.push(("protocol", "trpc"));
        }
        sample(&text, name, &labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
    };
    for side in ["client", "server"] {
        let calls = format!("trpc_{side}_calls_total");
        assert_eq!(get(&calls, &[("method", "m.Svc/Say"), ("code", "OK")]), 3.0);
        assert_eq!(
            get(&calls, &[("method", "m.Svc/Fail"), ("code", "NOT_FOUND")]),
            1.0
        );
        assert_eq!(
            get(&calls, &[("method", "m.Svc/Count"), ("code", "OK")]),
            1.0
        );
        let say = [("method", "m.Svc/Say")];
        // {"message":"hello"} is 19 bytes, three times each way.
        assert_eq!(get(&format!("trpc_{side}_request_bytes_total"), &say), 57.0);
        assert_eq!(
            get(&format!("trpc_{side}_response_bytes_total"), &say),
            57.0
        );
        assert_eq!(
            get(&format!("trpc_{side}_call_duration_seconds_count"), &say),
            3.0
        );
        assert_eq!(get(&format!("trpc_{side}_calls_in_flight"), &say), 0.0);
        let count = [("method", "m.Svc/Count")];
        assert_eq!(
            get(&format!("trpc_{side}_response_messages_total"), &count),
            5.0
        );
        assert_eq!(
            get(&format!("trpc_{side}_request_messages_total"), &count),
            1.0
        );
        assert_eq!(get(&format!("trpc_{side}_connections_open"), &[]), 1.0);
        assert_eq!(
            get(&format!("trpc_{side}_connections_opened_total"), &[]),
            1.0
        );
    }
    assert_eq!(
        get("trpc_client_bytes_sent_total", &[]),
        client_stats.bytes_written() as f64
    );
    assert!(get("trpc_server_bytes_received_total", &[]) > 0.0);

    for path in ["/healthz", "/readyz"] {
        let (code, body) = http_get(admin.local_addr(), path).await;
        assert_eq!((code, body.trim()), (200, "ok"), "{path}");
    }
    let (code, _) = http_get(admin.local_addr(), "/nope").await;
    assert_eq!(code, 404);

    drop(client);
    server.shutdown().await;
    let (_, text) = http_get(admin.local_addr(), "/metrics").await;
    assert_eq!(
        sample(&text, "trpc_server_connections_open", &[]),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "trpc_server_connections_closed_total", &[]),
        Some(1.0)
    );
    admin.shutdown().await;
}

#[tokio::test]
async fn the_admin_server_stops_on_shutdown() {
    let admin = AdminServer::bind("127.0.0.1:0".parse().unwrap(), Registry::new())
        .await
        .unwrap();
    let addr = admin.local_addr();
    let (code, _) = http_get(addr, "/healthz").await;
    assert_eq!(code, 200);
    within(SOON, "admin shutdown", admin.shutdown()).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
