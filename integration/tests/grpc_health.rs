//! `grpc.health.v1.Health` over gRPC, checked by a stock client
//! (grpcio-health-checking's stubs, `integration/interop/grpc_health_check.py`).
//! Health is an ordinary pair of `Router` routes (`Check`, `Watch`): the
//! gRPC server answers them like any other method. The routes here are a
//! minimal table of statuses (the messages of `grpc/health/v1/health.proto`
//! by their documented field numbers); the core health service plugs in the
//! same way.

use std::time::Duration;

use trpc::codec::Proto;
use trpc::server::{server_streaming, unary, Router};
use trpc::{Request, Response, Status};
use trpc_integration::python::{run_script, venv_python};
use trpc_integration::server::serve;

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse` (status: 1 SERVING, 2 NOT_SERVING).
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

fn status_of(service: &str) -> Option<i32> {
    match service {
        "" | "echo.Echo" => Some(1),
        "maintenance.Mode" => Some(2),
        _ => None,
    }
}

async fn check(req: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
    let service = &req.get_ref().service;
    let status = status_of(service)
        .ok_or_else(|| Status::not_found(format!("unknown service {service:?}")))?;
    Ok(Response::new(HealthCheckResponse { status }))
}

async fn watch(
    req: Request<HealthCheckRequest>,
) -> Result<Response<impl futures_util::Stream<Item = Result<HealthCheckResponse, Status>>>, Status>
{
    // The current status (SERVICE_UNKNOWN = 3), then the stream stays open.
    let status = status_of(&req.get_ref().service).unwrap_or(3);
    let first = futures_util::stream::iter([Ok(HealthCheckResponse { status })]);
    Ok(Response::new(futures_util::StreamExt::chain(
        first,
        futures_util::stream::pending(),
    )))
}

fn router() -> Router {
    Router::new()
        .route("grpc.health.v1.Health/Check", unary(check).codec(Proto))
        .route(
            "grpc.health.v1.Health/Watch",
            server_streaming(watch).codec(Proto),
        )
}

#[tokio::test]
async fn a_stock_grpc_health_client_checks_and_watches_a_trpc_server() {
    let py = venv_python().await;
    let server = serve(router()).await;
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
