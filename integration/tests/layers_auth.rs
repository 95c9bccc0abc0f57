//! Auth layers end to end: the client attaches credentials, the server
//! accepts, rejects (UNAUTHENTICATED) or denies (PERMISSION_DENIED), and the
//! handler sees the identity.

use std::time::Duration;

use tower::ServiceBuilder;
use trpc::server::{unary, Router, Server};
use trpc::{Client, Code, Method, Request, Response, Status};
use trpc_integration::client::connect;
use trpc_integration::messages::EchoMsg;
use trpc_integration::server::{serve_with, TestServer};
use trpc_integration::{within, SOON};
use trpc_layers::auth::{Credential, Identity, StaticKeys};
use trpc_layers::{AuthLayer, RequireAuthLayer};

/// Every method answers with the caller's subject (or "anonymous").
fn router() -> Router {
    let whoami = |req: Request<EchoMsg>| async move {
        let who = req
            .extensions()
            .get::<Identity>()
            .map_or("anonymous".to_owned(), |id| id.subject().to_owned());
        Ok::<_, Status>(Response::new(EchoMsg::new(who)))
    };
    Router::new()
        .route("app.Users/WhoAmI", unary(whoami))
        .route("app.Admin/Reset", unary(whoami))
        .route("grpc.health.v1.Health/Check", unary(whoami))
}

async fn server() -> TestServer {
    let keys = StaticKeys::new()
        .bearer("alice-token", Identity::new("alice").with_scope("admin"))
        .api_key("bob-key", Identity::new("bob"));
    let auth = RequireAuthLayer::new(keys)
        .allow_anonymous("grpc.health.v1.Health/*")
        .require_scope("app.Admin/*", "admin");
    serve_with(Server::builder().layer(auth), router()).await
}

async fn call(
    server: &TestServer,
    auth: Option<AuthLayer>,
    method: &'static str,
) -> Result<String, Status> {
    let channel = connect(server.addr).await;
    let call = within(SOON, method, async move {
        match auth {
            Some(auth) => {
                let stack = ServiceBuilder::new().layer(auth).service(channel);
                Client::new(stack)
                    .unary_message::<EchoMsg, EchoMsg>(method, EchoMsg::new(""))
                    .await
            }
            None => {
                Client::new(channel)
                    .unary_message::<EchoMsg, EchoMsg>(method, EchoMsg::new(""))
                    .await
            }
        }
    })
    .await;
    call.map(|m| m.message)
}

#[tokio::test]
async fn valid_credentials_are_accepted_and_the_handler_sees_the_identity() {
    let server = server().await;
    let who = call(
        &server,
        Some(AuthLayer::bearer("alice-token")),
        "app.Users/WhoAmI",
    )
    .await;
    assert_eq!(who.unwrap(), "alice");
    let who = call(
        &server,
        Some(AuthLayer::api_key("bob-key")),
        "app.Users/WhoAmI",
    )
    .await;
    assert_eq!(who.unwrap(), "bob");
    server.shutdown().await;
}

#[tokio::test]
async fn missing_or_wrong_credentials_are_unauthenticated() {
    let server = server().await;
    for auth in [
        None,
        Some(AuthLayer::bearer("alice-token-but-wrong")),
        Some(AuthLayer::bearer("bob-key")),
        Some(AuthLayer::api_key("nope")),
    ] {
        let desc = format!("{auth:?}");
        let err = call(&server, auth, "app.Users/WhoAmI").await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{desc}: {err}");
        assert!(
            !err.message().contains("alice-token"),
            "secret echoed: {err}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_valid_caller_without_the_scope_is_permission_denied() {
    let server = server().await;
    let err = call(
        &server,
        Some(AuthLayer::api_key("bob-key")),
        "app.Admin/Reset",
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let who = call(
        &server,
        Some(AuthLayer::bearer("alice-token")),
        "app.Admin/Reset",
    )
    .await;
    assert_eq!(who.unwrap(), "alice");
    server.shutdown().await;
}

#[tokio::test]
async fn the_health_check_is_open_to_anyone() {
    let server = server().await;
    let who = call(&server, None, "grpc.health.v1.Health/Check").await;
    assert_eq!(who.unwrap(), "anonymous");
    server.shutdown().await;
}

#[tokio::test]
async fn an_async_validator_closure_checks_tokens() {
    let validator = |cred: Credential, _method: Method| async move {
        // Pretend to ask an identity provider.
        tokio::time::sleep(Duration::from_millis(5)).await;
        if trpc_layers::auth::constant_time_eq(cred.secret().as_bytes(), b"dynamic") {
            Ok(Identity::new("carol"))
        } else {
            Err(Status::unauthenticated(
                "token rejected by the identity provider",
            ))
        }
    };
    let server = serve_with(
        Server::builder().layer(RequireAuthLayer::new(validator)),
        router(),
    )
    .await;
    let who = call(
        &server,
        Some(AuthLayer::bearer("dynamic")),
        "app.Users/WhoAmI",
    )
    .await;
    assert_eq!(who.unwrap(), "carol");
    let err = call(
        &server,
        Some(AuthLayer::bearer("static")),
        "app.Users/WhoAmI",
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("identity provider"), "{err}");
    server.shutdown().await;
}
