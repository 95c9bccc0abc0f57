//! Unit tests of the reporter and the Check/Watch routes, in process.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use prost::Message;
use tower::ServiceExt;

use super::*;
use crate::body::{Body, Payload};
use crate::codec::set_codec_name;
use crate::Code;

async fn call(
    router: &Router,
    method: &'static str,
    body: Bytes,
    proto: bool,
) -> Result<Body, Status> {
    let mut req = Request::new(Body::once(Payload::new(body))).with_method(method);
    if proto {
        set_codec_name(req.metadata_mut(), "proto");
    }
    let resp = router.clone().oneshot(req).await?;
    Ok(resp.into_inner())
}

fn proto_request(service: &str) -> Bytes {
    let mut buf = BytesMut::new();
    HealthCheckRequest {
        service: service.into(),
    }
    .encode(&mut buf)
    .unwrap();
    buf.freeze()
}

#[tokio::test]
async fn check_answers_the_status_in_protobuf_and_json() {
    let health = HealthReporter::new();
    health.set_not_serving("echo.Echo");
    let router = health.router();

    let body = call(&router, CHECK_METHOD, proto_request(""), true)
        .await
        .unwrap();
    let reply = HealthCheckResponse::decode(body.into_single().await.unwrap().bytes).unwrap();
    assert_eq!(reply.serving_status(), ServingStatus::Serving);

    let json = Bytes::from_static(br#"{"service":"echo.Echo"}"#);
    let body = call(&router, CHECK_METHOD, json, false).await.unwrap();
    let bytes = body.into_single().await.unwrap().bytes;
    assert_eq!(&bytes[..], br#"{"status":"NOT_SERVING"}"#);
}

#[tokio::test]
async fn check_of_an_unknown_service_is_not_found() {
    let router = HealthReporter::new().router();
    let err = call(&router, CHECK_METHOD, proto_request("nope"), true)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn watch_streams_the_current_status_then_every_change() {
    let health = HealthReporter::new();
    health.set_serving("a");
    let router = health.router();
    let mut body = call(&router, WATCH_METHOD, proto_request("a"), true)
        .await
        .unwrap();
    async fn next(body: &mut Body) -> ServingStatus {
        let p = body.next().await.unwrap().unwrap();
        HealthCheckResponse::decode(p.bytes)
            .unwrap()
            .serving_status()
    }
    assert_eq!(next(&mut body).await, ServingStatus::Serving);
    health.set_not_serving("a");
    assert_eq!(next(&mut body).await, ServingStatus::NotServing);
    health.clear("a");
    assert_eq!(next(&mut body).await, ServingStatus::ServiceUnknown);
}

#[tokio::test]
async fn watch_of_an_unknown_service_waits_for_it() {
    let health = HealthReporter::new();
    let router = health.router();
    let json = Bytes::from_static(br#"{"service":"later"}"#);
    let mut body = call(&router, WATCH_METHOD, json, false).await.unwrap();
    let first = body.next().await.unwrap().unwrap();
    assert_eq!(&first.bytes[..], br#"{"status":"SERVICE_UNKNOWN"}"#);
    health.set_serving("later");
    let second = body.next().await.unwrap().unwrap();
    assert_eq!(&second.bytes[..], br#"{"status":"SERVING"}"#);
}

#[test]
fn shutdown_marks_everything_not_serving_and_sticks() {
    let health = HealthReporter::new();
    health.set_serving("a");
    assert!(health.is_serving());
    health.shutdown();
    assert!(!health.is_serving());
    assert_eq!(health.status("a"), Some(ServingStatus::NotServing));
    health.set_serving("a");
    assert_eq!(health.status("a"), Some(ServingStatus::NotServing));
}

#[test]
fn unknown_watches_are_bounded() {
    let health = HealthReporter::new();
    for i in 0..MAX_UNKNOWN_WATCHED {
        health.subscribe(&format!("s{i}")).unwrap();
    }
    let err = health.subscribe("one-more").unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    // Known services can still be watched.
    assert!(health.subscribe("").is_ok());
}

#[test]
fn json_status_accepts_names_and_numbers() {
    let r: HealthCheckResponse = serde_json::from_str(r#"{"status":"SERVING"}"#).unwrap();
    assert_eq!(r.serving_status(), ServingStatus::Serving);
    let r: HealthCheckResponse = serde_json::from_str(r#"{"status":2}"#).unwrap();
    assert_eq!(r.serving_status(), ServingStatus::NotServing);
    assert!(serde_json::from_str::<HealthCheckResponse>(r#"{"status":"BAD"}"#).is_err());
}
