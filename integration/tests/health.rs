//! The health service over real connections: `Check` and `Watch` in protobuf
//! and JSON, and every status turning NOT_SERVING as soon as graceful
//! shutdown starts, while calls still drain.

use std::time::Duration;

use futures_util::StreamExt;
use trpc::codec::{Json, Proto};
use trpc::health::{
    HealthCheckRequest, HealthCheckResponse, HealthReporter, ServingStatus, CHECK_METHOD,
    WATCH_METHOD,
};
use trpc::server::{unary, Router, Server};
use trpc::{Client, Code, Request, Response, Status};

use trpc_integration::client::connect;
use trpc_integration::messages::EchoMsg;
use trpc_integration::server::serve_with;
use trpc_integration::{within, SOON};

fn app() -> Router {
    Router::new().route(
        "echo.Echo/Sleep",
        unary(|req: Request<EchoMsg>| async move {
            let ms: u64 = req.get_ref().message.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, Status>(Response::new(req.into_inner()))
        }),
    )
}

fn ask(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

#[tokio::test]
async fn check_answers_per_service_in_protobuf_and_json() {
    let health = HealthReporter::new();
    health.set_serving("echo.Echo");
    health.set_not_serving("billing.Billing");
    let server = serve_with(
        Server::builder().health(health.clone()),
        app().merge(health.router()),
    )
    .await;
    let channel = connect(server.addr).await;

    let mut proto = Client::with_codec(channel.clone(), Proto);
    let r: HealthCheckResponse = proto.unary_message(CHECK_METHOD, ask("")).await.unwrap();
    assert_eq!(r.serving_status(), ServingStatus::Serving);
    let r: HealthCheckResponse = proto
        .unary_message(CHECK_METHOD, ask("billing.Billing"))
        .await
        .unwrap();
    assert_eq!(r.serving_status(), ServingStatus::NotServing);
    let err = proto
        .unary_message::<_, HealthCheckResponse>(CHECK_METHOD, ask("nope"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let mut json = Client::with_codec(channel, Json);
    let r: serde_json::Value = json
        .unary_message(CHECK_METHOD, serde_json::json!({"service": "echo.Echo"}))
        .await
        .unwrap();
    assert_eq!(r, serde_json::json!({"status": "SERVING"}));
    server.shutdown().await;
}

#[tokio::test]
async fn watch_streams_changes_then_not_serving_when_shutdown_starts_and_ends() {
    let health = HealthReporter::new();
    let server = serve_with(
        Server::builder()
            .health(health.clone())
            .shutdown_grace(Duration::from_secs(10)),
        app().merge(health.router()),
    )
    .await;
    let channel = connect(server.addr).await;
    let mut client = Client::with_codec(channel.clone(), Proto);
    let mut watch = client
        .server_streaming::<_, HealthCheckResponse>(WATCH_METHOD, Request::new(ask("echo.Echo")))
        .await
        .unwrap()
        .into_inner();
    macro_rules! next {
        () => {
            within(SOON, "watch update", watch.next())
                .await
                .unwrap()
                .unwrap()
                .serving_status()
        };
    }
    assert_eq!(next!(), ServingStatus::ServiceUnknown);
    health.set_serving("echo.Echo");
    assert_eq!(next!(), ServingStatus::Serving);

    // A slow call keeps the server draining; the watch sees NOT_SERVING
    // meanwhile, and the call still completes.
    let mut sleeper = Client::new(channel.clone());
    let slow = tokio::spawn(async move {
        sleeper
            .unary_message::<_, EchoMsg>("echo.Echo/Sleep", EchoMsg::new("700"))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let shutdown = tokio::spawn(server.shutdown());
    assert_eq!(next!(), ServingStatus::NotServing);
    assert!(
        !slow.is_finished(),
        "NOT_SERVING came before the drain ended"
    );
    // The watch then ends, so it does not hold up the drain.
    assert!(within(SOON, "watch end", watch.next()).await.is_none());
    assert_eq!(health.readiness(), Err("shutting down".to_string()));
    assert_eq!(slow.await.unwrap().unwrap(), EchoMsg::new("700"));
    within(SOON, "shutdown", shutdown).await.unwrap();
}
