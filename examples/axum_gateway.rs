//! One axum app serving REST, gRPC and trpc's HTTP/JSON gateway, with axum
//! handlers calling a trpc service through a client kept in the app state:
//! `cargo run --example axum_gateway -- --listen 127.0.0.1:8080`, then
//! `curl -s localhost:8080/api/greet/ann` or
//! `curl -s -d '{"name": "ann"}' localhost:8080/greeter.Greeter/Greet`
//! (docs/AXUM.md).

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use clap::Parser;
use futures_util::Stream;
use tower::ServiceBuilder;
use trpc::codec::{Json, Proto};
use trpc::http::HttpService;
use trpc::server::{server_streaming, unary, Router, Server};
use trpc::{Channel, Client, Endpoint, Request, Response, Status};

#[derive(Parser, Debug)]
#[command(about = "axum + trpc: REST, gRPC and the HTTP/JSON gateway in one app")]
struct Args {
    /// Where the axum app listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the trpc backend (native trpc and gRPC) listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    backend: SocketAddr,
}

/// The greeter's messages: JSON for the gateway and REST, protobuf for gRPC.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
struct Hello {
    #[prost(string, tag = "1")]
    #[serde(default)]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
struct Greeting {
    #[prost(string, tag = "1")]
    #[serde(default)]
    message: String,
}

async fn greet(req: Request<Hello>) -> Result<Response<Greeting>, Status> {
    let name = req.get_ref().name.trim();
    if name.is_empty() {
        return Err(Status::invalid_argument("name is empty"));
    }
    let who = req
        .metadata()
        .get("x-user")
        .map(|u| format!(" (asked by {u})"))
        .unwrap_or_default();
    let mut resp = Response::new(Greeting {
        message: format!("hello, {name}{who} [{}]", req.protocol()),
    });
    resp.metadata_mut().insert("x-greeter", "trpc");
    Ok(resp)
}

async fn countdown(
    req: Request<Hello>,
) -> Result<Response<impl Stream<Item = Result<Greeting, Status>>>, Status> {
    let name = req.into_inner().name;
    let items = (1..=3).rev().map(move |i| {
        Ok(Greeting {
            message: format!("{i}... {name}"),
        })
    });
    Ok(Response::new(futures_util::stream::iter(items)))
}

/// The greeter service: the same router serves the trpc backend and the
/// axum app.
fn greeter() -> Router {
    Router::new()
        .route("greeter.Greeter/Greet", unary(greet).codec((Json, Proto)))
        .route(
            "greeter.Greeter/Countdown",
            server_streaming(countdown).codec((Json, Proto)),
        )
}

/// The axum app's state: a trpc client of the backend (cheap to clone).
#[derive(Clone)]
struct AppState {
    greeter: Client<Channel, Json>,
}

/// `GET /api/greet/{name}`: a REST endpoint that calls the trpc backend.
async fn rest_greet(
    State(mut state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Greeting>, (StatusCode, String)> {
    let mut req = Request::new(Hello { name });
    req.set_timeout(Duration::from_secs(2));
    match state.greeter.unary("greeter.Greeter/Greet", req).await {
        Ok(reply) => Ok(axum::Json(reply.into_inner())),
        Err(s) => Err((
            StatusCode::from_u16(s.code().http_status()).unwrap_or(StatusCode::BAD_GATEWAY),
            format!("{s}\n"),
        )),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();

    // The trpc backend: native trpc and gRPC on one port.
    let backend = tokio::net::TcpListener::bind(args.backend).await?;
    let backend_addr = backend.local_addr()?;
    tokio::spawn(
        Server::builder()
            .timeout(Duration::from_secs(10))
            .serve_with_listener(backend, greeter(), std::future::pending()),
    );

    // The axum app: REST routes, and the greeter itself (its layers
    // included) under its gRPC paths — gRPC and the HTTP/JSON gateway.
    let channel = Endpoint::new(format!("tcp://{backend_addr}"))?.connect_lazy();
    let trpc_routes = HttpService::new(
        ServiceBuilder::new()
            .layer(trpc_layers::TraceLayer::server())
            .service(greeter()),
    )
    .timeout(Duration::from_secs(10));
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/greet/{name}", get(rest_greet))
        .with_state(AppState {
            greeter: Client::new(channel),
        })
        .route_service("/greeter.Greeter/{method}", trpc_routes);

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    println!("trpc backend on {backend_addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(trpc::server::shutdown_signal())
        .await?;
    Ok(())
}
