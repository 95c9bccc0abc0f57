//! Tests of the admin server over loopback HTTP/1.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{text, Admin, AdminServer};

/// One HTTP/1.1 request; returns the status code and the body.
async fn http(admin: &AdminServer, method: &str, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(admin.local_addr()).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

async fn bind(builder: super::AdminBuilder) -> AdminServer {
    builder.bind("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

#[tokio::test]
async fn health_endpoints_answer_ok_without_checks() {
    let admin = bind(Admin::builder()).await;
    assert_eq!(http(&admin, "GET", "/healthz").await, (200, "ok\n".into()));
    assert_eq!(http(&admin, "GET", "/readyz").await, (200, "ok\n".into()));
    let (status, index) = http(&admin, "GET", "/").await;
    assert_eq!(status, 200);
    assert!(
        index.contains("/healthz\n") && index.contains("/readyz\n"),
        "{index}"
    );
    let (status, body) = http(&admin, "GET", "/nope").await;
    assert_eq!(status, 404);
    assert!(body.contains("/healthz"), "{body}");
    admin.shutdown().await;
}

#[cfg(feature = "metrics")]
#[tokio::test]
async fn metrics_serves_the_registry_in_the_text_format() {
    let registry = prometheus::Registry::new();
    let c = prometheus::IntCounter::new("admin_test_total", "A test counter.").unwrap();
    registry.register(Box::new(c.clone())).unwrap();
    c.inc_by(7);
    let admin = AdminServer::bind("127.0.0.1:0".parse().unwrap(), registry)
        .await
        .unwrap();
    let (status, body) = http(&admin, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("admin_test_total 7"), "{body}");
    assert_eq!(http(&admin, "POST", "/metrics").await.0, 405);
    assert!(http(&admin, "GET", "/").await.1.contains("/metrics\n"));
}

#[tokio::test]
async fn a_failing_readiness_check_fails_readyz_but_not_healthz() {
    let draining = Arc::new(AtomicBool::new(false));
    let flag = draining.clone();
    let admin = bind(Admin::builder().liveness("process", || Ok(())).readiness(
        "server",
        move || {
            if flag.load(Ordering::Relaxed) {
                Err("draining".to_string())
            } else {
                Ok(())
            }
        },
    ))
    .await;
    assert_eq!(http(&admin, "GET", "/readyz").await, (200, "ok\n".into()));
    assert_eq!(
        http(&admin, "GET", "/readyz?verbose").await,
        (
            200,
            "[+]process ok\n[+]server ok\nreadiness check passed\n".into()
        )
    );
    draining.store(true, Ordering::Relaxed);
    assert_eq!(
        http(&admin, "GET", "/readyz").await,
        (
            503,
            "[+]process ok\n[-]server failed: draining\nreadiness check failed\n".into()
        )
    );
    assert_eq!(http(&admin, "GET", "/healthz").await, (200, "ok\n".into()));
}

#[tokio::test]
async fn a_failing_liveness_check_fails_both_endpoints() {
    let admin = bind(Admin::builder().liveness("loop", || Err("stuck".to_string()))).await;
    for path in ["/healthz", "/readyz"] {
        let (status, body) = http(&admin, "GET", path).await;
        assert_eq!(status, 503, "{path}");
        assert!(body.contains("[-]loop failed: stuck"), "{path}: {body}");
    }
}

#[tokio::test]
async fn added_pages_are_served_and_listed() {
    let admin = bind(
        Admin::builder().page("/version", |req: &http::request::Parts| {
            text(http::StatusCode::OK, format!("1.0 ({})\n", req.method))
        }),
    )
    .await;
    assert_eq!(
        http(&admin, "GET", "/version").await,
        (200, "1.0 (GET)\n".into())
    );
    // Pages answer every method.
    assert_eq!(
        http(&admin, "POST", "/version").await,
        (200, "1.0 (POST)\n".into())
    );
    assert!(http(&admin, "GET", "/").await.1.contains("/version\n"));
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let admin = bind(Admin::builder()).await;
    let addr = admin.local_addr();
    admin.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());
}
