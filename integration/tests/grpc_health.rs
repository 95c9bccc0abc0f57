//! trpc's own `grpc.health.v1.Health` ([`trpc::health::HealthReporter`])
//! over gRPC, checked by a stock client (grpcio-health-checking's stubs,
//! `integration/interop/grpc_health_check.py`): `Check` and `Watch` for the
//! server (`""`), a serving and a not-serving service, and `NOT_FOUND` for an
//! unknown one.

use std::time::Duration;

use trpc::health::HealthReporter;
use trpc_integration::python::{run_script, venv_python};
use trpc_integration::server::serve;

#[tokio::test]
async fn a_stock_grpc_health_client_checks_and_watches_a_trpc_server() {
    let py = venv_python().await;
    let health = HealthReporter::new();
    health.set_serving("echo.Echo");
    health.set_not_serving("maintenance.Mode");
    let server = serve(health.router()).await;
    let addr = server.addr.to_string();
    run_script(
        py,
        "grpc_health_check.py",
        &[
            addr.as_str(),
            "=SERVING",
            "echo.Echo=SERVING",
            "maintenance.Mode=NOT_SERVING",
            "--unknown",
            "no.Such",
        ],
        Duration::from_secs(60),
        "all health checks passed",
    )
    .await;
    server.shutdown().await;
}
