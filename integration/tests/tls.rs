//! TLS and mutual TLS over real sockets, with certificates generated at test
//! time: the happy paths, the peer identity seen by handlers, and a clear
//! client error for every mismatch while the server keeps serving others.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use trpc::server::{unary, Router, Server};
use trpc::tls::{ClientTlsConfig, ServerTlsConfig, TlsInfo};
use trpc::{Client, Code, Request, Response, Status};
use trpc_integration::client::endpoint;
use trpc_integration::pki::{CertPem, TestCa};
use trpc_integration::server::{serve_with, TestServer};
use trpc_integration::{within, SOON};

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Who {
    name: String,
    alpn: String,
}

fn router() -> Router {
    let whoami = |req: Request<()>| async move {
        let tls = req
            .extensions()
            .get::<TlsInfo>()
            .ok_or_else(|| Status::internal("no TlsInfo on a TLS connection"))?;
        Ok::<_, Status>(Response::new(Who {
            name: tls
                .peer_identity()
                .and_then(|id| id.name())
                .unwrap_or("anonymous")
                .to_string(),
            alpn: String::from_utf8_lossy(tls.alpn().unwrap_or_default()).into_owned(),
        }))
    };
    Router::new().route("tls.Test/WhoAmI", unary(whoami))
}

struct Pki {
    ca: TestCa,
    server: CertPem,
}

fn pki() -> Pki {
    let ca = TestCa::new("trpc test CA").unwrap();
    let server = ca.server(&["localhost", "127.0.0.1"]).unwrap();
    Pki { ca, server }
}

async fn tls_server(pki: &Pki, mutual: bool) -> TestServer {
    let mut cfg = ServerTlsConfig::from_pem(&pki.server.cert, &pki.server.key).unwrap();
    if mutual {
        cfg = cfg.client_ca_pem(pki.ca.cert_pem()).unwrap();
    }
    serve_with(
        Server::builder()
            .handshake_timeout(Duration::from_millis(500))
            .tls_config(cfg)
            .unwrap(),
        router(),
    )
    .await
}

fn client_tls(pki: &Pki, identity: Option<&CertPem>) -> ClientTlsConfig {
    let mut cfg = ClientTlsConfig::new()
        .ca_pem(pki.ca.cert_pem())
        .unwrap()
        .domain_name("localhost");
    if let Some(id) = identity {
        cfg = cfg.identity_pem(&id.cert, &id.key).unwrap();
    }
    cfg
}

async fn whoami(addr: SocketAddr, tls: Option<ClientTlsConfig>) -> Result<Who, Status> {
    let mut ep = endpoint(addr).connect_timeout(SOON);
    if let Some(tls) = tls {
        ep = ep.tls_config(tls)?;
    }
    let channel = ep.connect().await?;
    Client::new(channel)
        .unary_message("tls.Test/WhoAmI", ())
        .await
}

#[tokio::test]
async fn tls_calls_work_and_negotiate_the_trpc_alpn() {
    let pki = pki();
    let server = tls_server(&pki, false).await;
    let addr = server.addr;
    let who = whoami(addr, Some(client_tls(&pki, None))).await.unwrap();
    assert_eq!(who.name, "anonymous");
    assert_eq!(who.alpn, "trpc/1");
}

#[tokio::test]
async fn mutual_tls_shows_the_client_identity_to_handlers() {
    let pki = pki();
    let server = tls_server(&pki, true).await;
    let addr = server.addr;
    let alice = pki.ca.client("alice.clients.example").unwrap();
    let who = whoami(addr, Some(client_tls(&pki, Some(&alice))))
        .await
        .unwrap();
    assert_eq!(who.name, "alice.clients.example");
}

fn assert_unavailable_with(result: Result<Who, Status>, needle: &str) {
    let err = result.expect_err("the call must fail");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains(needle),
        "error {:?} should mention {needle:?}",
        err.message()
    );
}

#[tokio::test]
async fn a_plaintext_client_to_a_tls_server_is_told_tls_is_required() {
    let pki = pki();
    let server = tls_server(&pki, false).await;
    let addr = server.addr;
    assert_unavailable_with(whoami(addr, None).await, "requires TLS");
    whoami(addr, Some(client_tls(&pki, None))).await.unwrap();
}

#[tokio::test]
async fn a_tls_client_to_a_plaintext_server_gets_a_clear_error() {
    let pki = pki();
    let server = serve_with(Server::builder(), router()).await;
    let addr = server.addr;
    assert_unavailable_with(
        whoami(addr, Some(client_tls(&pki, None))).await,
        "is the server using TLS?",
    );
}

#[tokio::test]
async fn an_untrusted_server_certificate_is_rejected() {
    let pki = pki();
    let server = tls_server(&pki, false).await;
    let addr = server.addr;
    let other = TestCa::new("some other CA").unwrap();
    let tls = ClientTlsConfig::new()
        .ca_pem(other.cert_pem())
        .unwrap()
        .domain_name("localhost");
    assert_unavailable_with(whoami(addr, Some(tls)).await, "not signed by a trusted CA");
    whoami(addr, Some(client_tls(&pki, None))).await.unwrap();
}

#[tokio::test]
async fn a_wrong_host_name_is_rejected() {
    let pki = pki();
    let server = tls_server(&pki, false).await;
    let addr = server.addr;
    let tls = ClientTlsConfig::new()
        .ca_pem(pki.ca.cert_pem())
        .unwrap()
        .domain_name("evil.example");
    assert_unavailable_with(
        whoami(addr, Some(tls)).await,
        "does not match the host name",
    );
    whoami(addr, Some(client_tls(&pki, None))).await.unwrap();
}

#[tokio::test]
async fn mutual_tls_rejects_a_client_without_a_certificate() {
    let pki = pki();
    let server = tls_server(&pki, true).await;
    let addr = server.addr;
    assert_unavailable_with(
        whoami(addr, Some(client_tls(&pki, None))).await,
        "client certificate",
    );
    // A client certificate from another CA is rejected as well.
    let other = TestCa::new("some other CA").unwrap();
    let mallory = other.client("mallory").unwrap();
    let err = whoami(addr, Some(client_tls(&pki, Some(&mallory))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    // ... and the server still serves a proper client.
    let bob = pki.ca.client("bob").unwrap();
    assert_eq!(
        whoami(addr, Some(client_tls(&pki, Some(&bob))))
            .await
            .unwrap()
            .name,
        "bob"
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_the_tls_handshake_is_dropped() {
    let pki = pki();
    let server = tls_server(&pki, false).await;
    let addr = server.addr;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    // Half a TLS record header, then silence.
    tokio::io::AsyncWriteExt::write_all(&mut idle, &[0x16, 0x03])
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = within(
        SOON,
        "the server drops a silent TLS client",
        idle.read(&mut buf),
    )
    .await
    .unwrap_or(0);
    assert_eq!(n, 0, "the server closes the connection");
    whoami(addr, Some(client_tls(&pki, None))).await.unwrap();
}
