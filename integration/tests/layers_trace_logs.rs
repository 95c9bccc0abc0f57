//! TraceLayer end to end, logs: client and server log the call as JSON lines
//! with the same trace id, filtered with EnvFilter.
//!
//! This test has a binary of its own: it installs a subscriber for its thread,
//! and tracing caches per-callsite interest globally, so other tests hitting
//! the same callsites on other threads at the same time could disable them.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tower::ServiceBuilder;
use trpc::server::{unary, Router, Server};
use trpc::{Client, Request, Response, Status};
use trpc_integration::client::connect;
use trpc_integration::messages::EchoMsg;
use trpc_integration::server::serve_with;
use trpc_integration::{within, SOON};
use trpc_layers::trace::TraceContext;
use trpc_layers::TraceLayer;

fn leaf_router() -> Router {
    Router::new().route(
        "t.Leaf/WhoAmI",
        unary(
            |req: Request<EchoMsg>| async move { Ok::<_, Status>(Response::new(req.into_inner())) },
        ),
    )
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn both_sides_log_the_call_as_json_with_the_same_trace_id() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn,trpc_layers=info"))
        .with_current_span(true)
        .with_span_list(true)
        .with_writer(move || writer.clone())
        .finish();
    // The test runtime is single-threaded: client and server log here.
    let _guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();

    let server = serve_with(Server::builder().layer(TraceLayer::server()), leaf_router()).await;
    let mut client = Client::new(
        ServiceBuilder::new()
            .layer(TraceLayer::client())
            .service(connect(server.addr).await),
    );
    let resp: Response<EchoMsg> = within(
        SOON,
        "call",
        client.unary("t.Leaf/WhoAmI", Request::new(EchoMsg::new(""))),
    )
    .await
    .unwrap();
    let trace = resp
        .extensions()
        .get::<TraceContext>()
        .unwrap()
        .trace_id()
        .to_string();
    server.shutdown().await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| l.contains("call finished"))
        .map(|l| serde_json::from_str(l).expect("JSON log line"))
        .collect();
    assert_eq!(lines.len(), 2, "{logs}");
    let mut kinds = Vec::new();
    for line in &lines {
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["fields"]["code"], "OK");
        assert!(line["fields"]["latency_ms"].is_number());
        let span = &line["span"];
        assert_eq!(span["trace_id"], trace.as_str(), "{line}");
        assert_eq!(span["method"], "t.Leaf/WhoAmI");
        kinds.push(span["otel.kind"].as_str().unwrap().to_owned());
        if span["otel.kind"] == "server" {
            assert!(
                span["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
                "{line}"
            );
            assert!(span["stream_id"].is_number(), "{line}");
        }
    }
    kinds.sort();
    assert_eq!(kinds, ["client", "server"]);
}
