//! Unit tests of the auth layers (tower-test mocks, paused time).

use std::time::Duration;

use tower::{Layer, Service, ServiceExt};
use tower_test::mock;
use trpc::{Body, Code, Method, Request, Response, Status};

use super::error::{InvalidCredential, MissingCredentials, MissingScope};
use super::{AuthLayer, Credential, CredentialKind, Identity, RequireAuthLayer, StaticKeys};
use crate::test_util::{request, response, status};

fn keys() -> StaticKeys {
    StaticKeys::new()
        .bearer("good-token", Identity::new("alice").with_scope("admin"))
        .api_key("good-key", Identity::new("bob"))
}

fn server_layer() -> RequireAuthLayer<StaticKeys> {
    RequireAuthLayer::new(keys())
        .allow_anonymous("grpc.health.v1.Health/*")
        .require_scope("admin.Admin/*", "admin")
}

fn source_is<E: std::error::Error + 'static>(s: &Status) -> bool {
    std::error::Error::source(s).is_some_and(|e| e.is::<E>())
}

#[tokio::test]
async fn the_client_layer_attaches_a_bearer_token_or_an_api_key() {
    for (layer, key, value) in [
        (AuthLayer::bearer("t0k"), "authorization", "Bearer t0k"),
        (AuthLayer::api_key("k3y"), "x-api-key", "k3y"),
    ] {
        let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer);
        assert!(svc.poll_ready().is_ready());
        let fut = svc.call(request("a.B/C", "hi"));
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.metadata().get(key), Some(value));
        send.send_response(response("ok"));
        fut.await.unwrap();
    }
}

#[tokio::test]
async fn an_unsendable_token_fails_calls_instead_of_panicking() {
    let layer = AuthLayer::bearer("bad\ntoken");
    assert!(
        !format!("{layer:?}").contains("bad"),
        "secret in Debug output"
    );
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer);
    assert!(svc.poll_ready().is_ready());
    let s = status(svc.call(request("a.B/C", "hi")).await.unwrap_err());
    assert_eq!(s.code(), Code::Unauthenticated);
    assert!(source_is::<InvalidCredential>(&s));
    assert!(handle.poll_request().is_pending());
}

#[tokio::test]
async fn valid_credentials_reach_the_handler_with_the_identity() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<Body>, Response<Body>, _>(server_layer());
    for (key, value, subject) in [
        ("authorization", "Bearer good-token", "alice"),
        ("authorization", "bearer   good-token ", "alice"),
        ("x-api-key", "good-key", "bob"),
    ] {
        assert!(svc.poll_ready().is_ready());
        let mut req = request("a.B/C", "hi");
        req.metadata_mut().try_insert(key, value).unwrap();
        let fut = tokio::spawn(svc.call(req));
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(
            req.extensions().get::<Identity>().unwrap().subject(),
            subject
        );
        send.send_response(response("ok"));
        fut.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn missing_or_invalid_credentials_are_unauthenticated() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<Body>, Response<Body>, _>(server_layer());
    let cases: [(&str, &str); 5] = [
        ("", ""),
        ("authorization", "Bearer wrong"),
        ("authorization", "Basic Z29vZC10b2tlbg=="),
        ("x-api-key", "good-token"), // a token presented as the wrong kind
        ("x-api-key", "wrong"),
    ];
    for (key, value) in cases {
        assert!(svc.poll_ready().is_ready());
        let mut req = request("a.B/C", "hi");
        if !key.is_empty() {
            req.metadata_mut().try_insert(key, value).unwrap();
        }
        let s = status(svc.call(req).await.unwrap_err());
        assert_eq!(s.code(), Code::Unauthenticated, "{key}: {value}: {s}");
        if key.is_empty() {
            assert!(source_is::<MissingCredentials>(&s));
        }
    }
    assert!(
        handle.poll_request().is_pending(),
        "a rejected call reached the handler"
    );
}

#[tokio::test]
async fn a_valid_identity_without_the_scope_is_permission_denied() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<Body>, Response<Body>, _>(server_layer());
    assert!(svc.poll_ready().is_ready());
    let mut req = request("admin.Admin/Drop", "hi");
    req.metadata_mut().insert("x-api-key", "good-key");
    let s = status(svc.call(req).await.unwrap_err());
    assert_eq!(s.code(), Code::PermissionDenied);
    assert!(source_is::<MissingScope>(&s));
    assert!(handle.poll_request().is_pending());

    assert!(svc.poll_ready().is_ready());
    let mut req = request("admin.Admin/Drop", "hi");
    req.metadata_mut()
        .insert("authorization", "Bearer good-token");
    // The inner call happens after validation, when the future is polled.
    let fut = tokio::spawn(svc.call(req));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_response(response("ok"));
    fut.await.unwrap().unwrap();
}

#[tokio::test]
async fn anonymous_methods_need_no_credentials() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<Body>, Response<Body>, _>(server_layer());
    assert!(svc.poll_ready().is_ready());
    let fut = svc.call(request("grpc.health.v1.Health/Check", ""));
    let (req, send) = handle.next_request().await.unwrap();
    assert!(req.extensions().get::<Identity>().is_none());
    send.send_response(response("SERVING"));
    fut.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_async_closure_validates_and_can_deny_per_method() {
    let validator = |cred: Credential, method: Method| async move {
        // An identity provider that takes a while.
        tokio::time::sleep(Duration::from_millis(20)).await;
        match (cred.kind(), cred.secret()) {
            (CredentialKind::Bearer, "root") => Ok(Identity::new("root")),
            (CredentialKind::Bearer, "reader") if method.as_str().ends_with("/Get") => {
                Ok(Identity::new("reader"))
            }
            (CredentialKind::Bearer, "reader") => {
                Err(Status::permission_denied("readers may only Get"))
            }
            _ => Err(Status::unauthenticated("who are you?")),
        }
    };
    let handler = tower::service_fn(|req: Request<Body>| async move {
        let who = req
            .extensions()
            .get::<Identity>()
            .unwrap()
            .subject()
            .to_owned();
        Ok::<_, Status>(Response::new(Body::once(trpc::Payload::new(who))))
    });
    let mut svc = RequireAuthLayer::new(validator).layer(handler);
    let call = |method: &'static str, token: &'static str| {
        let mut req = request(method, "");
        req.metadata_mut()
            .try_insert("authorization", &format!("Bearer {token}"))
            .unwrap();
        req
    };
    let resp = svc
        .ready()
        .await
        .unwrap()
        .call(call("kv.Store/Get", "reader"))
        .await
        .unwrap();
    assert_eq!(resp.get_ref().as_once().unwrap().bytes, "reader");
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(call("kv.Store/Put", "reader"))
        .await
        .unwrap_err();
    assert_eq!(status(err).code(), Code::PermissionDenied);
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(call("kv.Store/Put", "nobody"))
        .await
        .unwrap_err();
    assert_eq!(status(err).code(), Code::Unauthenticated);
    let resp = svc
        .ready()
        .await
        .unwrap()
        .call(call("kv.Store/Put", "root"))
        .await
        .unwrap();
    assert_eq!(resp.get_ref().as_once().unwrap().bytes, "root");
}

#[tokio::test]
async fn the_validated_call_uses_the_service_that_was_made_ready() {
    // A mock that allows exactly one call: the call after validation must
    // use the readied service, not an unready clone.
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<Body>, Response<Body>, _>(server_layer());
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    let mut req = request("a.B/C", "hi");
    req.metadata_mut().insert("x-api-key", "good-key");
    let fut = tokio::spawn(svc.call(req));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_response(response("ok"));
    fut.await.unwrap().unwrap();
}

#[test]
fn static_keys_hide_secrets_and_match_exactly() {
    let keys = keys();
    assert!(!format!("{keys:?}").contains("good-token"));
    let c = Credential::new(CredentialKind::Bearer, "good-token");
    assert!(!format!("{c:?}").contains("good-token"));
    assert_eq!(keys.lookup(&c).unwrap().subject(), "alice");
    for wrong in ["good-toke", "good-tokenx", "", "GOOD-TOKEN"] {
        assert!(keys
            .lookup(&Credential::new(CredentialKind::Bearer, wrong))
            .is_none());
    }
}

/// A validator that answers at once for "fast" and asks for the future
/// otherwise, counting both.
#[derive(Clone, Default)]
struct TwoSpeed {
    now: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    later: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl super::Validator for TwoSpeed {
    type Future = std::future::Ready<Result<Identity, Status>>;

    fn validate(&self, credential: Credential, _method: Method) -> Self::Future {
        self.later.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::ready(Ok(Identity::new(credential.secret())))
    }

    fn validate_now(
        &self,
        _kind: CredentialKind,
        secret: &str,
        _method: &Method,
    ) -> Option<Result<Identity, Status>> {
        (secret == "fast").then(|| {
            self.now.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Identity::new("fast").with_scope("admin"))
        })
    }
}

#[tokio::test]
async fn a_validator_that_answers_at_once_skips_its_future() {
    let v = TwoSpeed::default();
    let layer = RequireAuthLayer::new(v.clone()).require_scope("admin.Admin/*", "admin");
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer);
    for token in ["fast", "slow"] {
        assert!(svc.poll_ready().is_ready());
        let mut req = request("a.B/C", "hi");
        req.metadata_mut()
            .try_insert("authorization", &format!("Bearer {token}"))
            .unwrap();
        // The slow path validates when polled: run the call on its own task.
        let fut = tokio::spawn(svc.call(req));
        let (req, send) = handle.next_request().await.unwrap();
        let id = req.extensions().get::<Identity>().unwrap();
        assert_eq!(id.subject(), token);
        send.send_response(response("ok"));
        fut.await.unwrap().unwrap();
    }
    assert_eq!(v.now.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(v.later.load(std::sync::atomic::Ordering::SeqCst), 1);

    // The scope rules apply on the fast path too.
    assert!(svc.poll_ready().is_ready());
    let mut req = request("admin.Admin/Reset", "hi");
    req.metadata_mut()
        .try_insert("authorization", "Bearer slow")
        .unwrap();
    let s = status(svc.call(req).await.unwrap_err());
    assert_eq!(s.code(), Code::PermissionDenied);
    assert!(source_is::<MissingScope>(&s));
}

#[test]
fn static_keys_answer_at_once_and_hide_nothing_in_equality() {
    let keys = keys();
    let m = Method::from_static("a.B/C");
    let ok = super::Validator::validate_now(&keys, CredentialKind::Bearer, "good-token", &m);
    let id = ok.unwrap().unwrap();
    assert_eq!(id, Identity::new("alice").with_scope("admin"));
    let wrong_kind =
        super::Validator::validate_now(&keys, CredentialKind::ApiKey, "good-token", &m);
    assert_eq!(
        wrong_kind.unwrap().unwrap_err().code(),
        Code::Unauthenticated
    );
}
