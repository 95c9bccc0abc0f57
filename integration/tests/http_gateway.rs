//! The HTTP side: `trpc::http::HttpService` mounted in an axum app next to
//! REST routes (answering the HTTP/JSON form and gRPC), axum handlers calling
//! trpc through a client kept in the app state, and the JSON gateway on the
//! trpc port itself — all driven by a real HTTP client (hyper).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use trpc::codec::{Json, Proto};
use trpc::http::HttpService;
use trpc::server::{server_streaming, unary, Router};
use trpc::{Channel, Client, Code, Endpoint, Request, Response, Status};
use trpc_integration::messages::EchoMsg;
use trpc_integration::server::serve;
use trpc_integration::{within, SOON};

async fn say(req: Request<EchoMsg>) -> Result<Response<EchoMsg>, Status> {
    let user = req.metadata().get("x-user").unwrap_or("nobody").to_string();
    let mut resp = Response::new(EchoMsg::new(format!(
        "{} from {user} over {}",
        req.get_ref().message,
        req.protocol()
    )));
    resp.metadata_mut().insert("x-reply", "yes");
    Ok(resp)
}

async fn fail(_req: Request<EchoMsg>) -> Result<Response<EchoMsg>, Status> {
    Err(Status::not_found("no such thing"))
}

async fn slow(req: Request<EchoMsg>) -> Result<Response<EchoMsg>, Status> {
    tokio::time::sleep(Duration::from_secs(30)).await;
    Ok(Response::new(req.into_inner()))
}

async fn count(
    req: Request<EchoMsg>,
) -> Result<Response<impl futures_util::Stream<Item = Result<EchoMsg, Status>>>, Status> {
    let n: usize = req.get_ref().message.parse().unwrap_or(3);
    let items = (0..n).map(|i| Ok(EchoMsg::new(i.to_string())));
    let end = std::iter::once(Err(Status::aborted("stopped at the end")));
    Ok(Response::new(futures_util::stream::iter(items.chain(end))))
}

fn router() -> Router {
    Router::new()
        .route("test.Echo/Say", unary(say).codec((Json, Proto)))
        .route("test.Echo/Fail", unary(fail))
        .route("test.Echo/Slow", unary(slow))
        .route("test.Echo/Count", server_streaming(count))
}

/// A plain HTTP/1.1 response.
struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

async fn http(addr: SocketAddr, req: http::Request<Full<Bytes>>) -> Reply {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("HTTP/1 handshake");
    tokio::spawn(conn);
    let resp = within(SOON, "HTTP response", send.send_request(req))
        .await
        .expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = within(SOON, "HTTP body", resp.into_body().collect())
        .await
        .expect("body")
        .to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn post(path: &str) -> http::request::Builder {
    http::Request::post(path)
        .header("host", "test")
        .header("content-type", "application/json")
}

fn req(path: &str, json: &'static str) -> http::Request<Full<Bytes>> {
    post(path)
        .body(Full::new(Bytes::from_static(json.as_bytes())))
        .unwrap()
}

/// Checks the JSON gateway at `addr` (an axum app or a trpc port).
async fn json_gateway_works(addr: SocketAddr) {
    let r = http(
        addr,
        post("/test.Echo/Say")
            .header("x-user", "alice")
            .body(Full::new(Bytes::from_static(br#"{"message": "hi"}"#)))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["message"], "hi from alice over http");
    assert_eq!(r.headers["x-reply"], "yes");
    assert_eq!(r.headers["content-type"], "application/json");

    let r = http(addr, req("/test.Echo/Fail", "{}")).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["code"], "NOT_FOUND");
    assert_eq!(v["message"], "no such thing");

    let r = http(addr, req("/test.Echo/Nope", "{}")).await;
    assert_eq!(r.status, 501, "{}", r.body);
    let r = http(addr, req("/test.Echo/Say", "{not json")).await;
    assert_eq!(r.status, 400, "{}", r.body);

    // The deadline from grpc-timeout: the handler is cut at 200 ms.
    let r = http(
        addr,
        post("/test.Echo/Slow")
            .header("grpc-timeout", "200m")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(r.body.contains("DEADLINE_EXCEEDED"), "{}", r.body);

    // A streamed reply: newline-delimited JSON, then the error line.
    let r = http(addr, req("/test.Echo/Count", r#"{"message": "3"}"#)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/x-ndjson");
    let lines: Vec<serde_json::Value> = r
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{}", r.body);
    assert_eq!(lines[2]["message"], "2");
    assert_eq!(lines[3]["error"]["code"], "ABORTED");
}

async fn grpc_works(addr: SocketAddr) {
    let channel = within(
        SOON,
        "gRPC connect",
        Endpoint::new(format!("http://{addr}")).unwrap().connect(),
    )
    .await
    .expect("connect");
    let reply: EchoMsg = Client::with_codec(channel, Proto)
        .unary_message("test.Echo/Say", EchoMsg::new("hi"))
        .await
        .expect("gRPC call");
    assert_eq!(reply.message, "hi from nobody over grpc");
}

#[derive(Clone)]
struct AppState {
    trpc: Client<Channel, Json>,
}

async fn hello(
    axum::extract::State(mut state): axum::extract::State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<String, (axum::http::StatusCode, String)> {
    let reply: EchoMsg = state
        .trpc
        .unary_message("test.Echo/Say", EchoMsg::new(name))
        .await
        .map_err(|s| {
            let code = axum::http::StatusCode::from_u16(s.code().http_status())
                .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
            (code, s.to_string())
        })?;
    Ok(reply.message)
}

#[tokio::test]
async fn an_axum_app_serves_rest_the_json_gateway_and_grpc_side_by_side() {
    let backend = serve(router()).await;
    let channel = trpc_integration::client::connect(backend.addr).await;
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/api/hello/{name}", axum::routing::get(hello))
        .with_state(AppState {
            trpc: Client::new(channel),
        })
        .route_service("/test.Echo/{method}", HttpService::new(router()));
    let listener = trpc_integration::server::listener().await;
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let get = |path: &str| {
        http::Request::get(path)
            .header("host", "test")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let r = http(addr, get("/healthz")).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    let r = http(addr, get("/api/hello/bob")).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "bob from nobody over trpc")
    );
    json_gateway_works(addr).await;
    grpc_works(addr).await;
    server.abort();
    backend.shutdown().await;
}

#[tokio::test]
async fn the_trpc_port_serves_the_json_gateway_and_grpc_next_to_native_calls() {
    let server = serve(router()).await;
    json_gateway_works(server.addr).await;
    grpc_works(server.addr).await;
    let native: EchoMsg = Client::new(trpc_integration::client::connect(server.addr).await)
        .unary_message("test.Echo/Say", EchoMsg::new("hi"))
        .await
        .unwrap();
    assert_eq!(native.message, "hi from nobody over trpc");
    server.shutdown().await;
}

#[test]
fn codes_map_to_http_statuses() {
    assert_eq!(Code::Ok.http_status(), 200);
    assert_eq!(Code::InvalidArgument.http_status(), 400);
    assert_eq!(Code::Unauthenticated.http_status(), 401);
    assert_eq!(Code::PermissionDenied.http_status(), 403);
    assert_eq!(Code::NotFound.http_status(), 404);
    assert_eq!(Code::ResourceExhausted.http_status(), 429);
    assert_eq!(Code::Cancelled.http_status(), 499);
    assert_eq!(Code::Unimplemented.http_status(), 501);
    assert_eq!(Code::Unavailable.http_status(), 503);
    assert_eq!(Code::DeadlineExceeded.http_status(), 504);
}
