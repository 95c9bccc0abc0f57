//! The gRPC side of a trpc server's connections: ALPN under TLS (`h2` to
//! gRPC, `trpc/1` to the native engine, on one port), graceful shutdown
//! (GOAWAY to gRPC peers, in-flight calls drained, force-close after the
//! grace period), the server option that turns gRPC off, and a TLS peer
//! that negotiates `h2` but never completes the HTTP/2 preface.

use std::time::Duration;

use trpc::codec::Proto;
use trpc::server::{unary, Router, Server};
use trpc::tls::{ClientTlsConfig, ServerTlsConfig, TlsInfo};
use trpc::{Client, Code, Endpoint, Request, Response, Status};
use trpc_integration::h2::H2Peer;
use trpc_integration::messages::EchoMsg;
use trpc_integration::pki::TestCa;
use trpc_integration::server::serve_with;
use trpc_integration::{within, SOON};

async fn who(req: Request<EchoMsg>) -> Result<Response<EchoMsg>, Status> {
    let tls = req.extensions().get::<TlsInfo>();
    let alpn = tls
        .and_then(|t| t.alpn())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .unwrap_or_default();
    let client = tls
        .and_then(|t| t.peer_identity())
        .and_then(|i| i.name().map(str::to_owned))
        .unwrap_or_default();
    // The peer's address, set by either transport.
    let peer = req
        .remote_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    Ok(Response::new(EchoMsg::new(format!(
        "{} alpn={alpn} client={client} peer={peer}",
        req.protocol()
    ))))
}

async fn slow(req: Request<EchoMsg>) -> Result<Response<EchoMsg>, Status> {
    let ms: u64 = req.get_ref().message.parse().unwrap_or(300);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(Response::new(EchoMsg::new("done")))
}

fn router() -> Router {
    Router::new()
        .route("t.T/Who", unary(who).codec(Proto))
        .route("t.T/Slow", unary(slow).codec(Proto))
}

#[tokio::test]
async fn one_tls_port_serves_grpc_by_alpn_h2_and_native_by_alpn_trpc() {
    let ca = TestCa::new("grpc test ca").unwrap();
    let server_cert = ca.server(&["localhost"]).unwrap();
    let client_cert = ca.client("carol").unwrap();
    let tls = ServerTlsConfig::from_pem(&server_cert.cert, &server_cert.key)
        .unwrap()
        .client_ca_pem(ca.cert_pem())
        .unwrap();
    let server = serve_with(Server::builder().tls_config(tls).unwrap(), router()).await;
    let client_tls = || {
        ClientTlsConfig::new()
            .ca_pem(ca.cert_pem())
            .unwrap()
            .domain_name("localhost")
            .identity_pem(&client_cert.cert, &client_cert.key)
            .unwrap()
    };
    for (target, want) in [
        (
            format!("https://{}", server.addr),
            "grpc alpn=h2 client=carol peer=127.0.0.1",
        ),
        (
            format!("tcp://{}", server.addr),
            "trpc alpn=trpc/1 client=carol peer=127.0.0.1",
        ),
    ] {
        let channel = Endpoint::new(&target)
            .unwrap()
            .tls_config(client_tls())
            .unwrap()
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{target}: {e}"));
        let reply: EchoMsg = Client::with_codec(channel, Proto)
            .unary_message("t.T/Who", EchoMsg::new(""))
            .await
            .unwrap();
        assert_eq!(reply.message, want, "{target}");
    }
    // A gRPC client without TLS on the TLS port gets a clear error.
    let plain = Endpoint::new(format!("grpc://{}", server.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy();
    let err = Client::with_codec(plain, Proto)
        .unary_message::<_, EchoMsg>("t.T/Who", EchoMsg::new(""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_sends_goaway_to_grpc_peers_and_drains_their_calls() {
    let server = serve_with(Server::builder().shutdown_grace(SOON), router()).await;
    let channel = Endpoint::new(format!("grpc://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = Client::with_codec(channel, Proto);
    // A raw HTTP/2 peer watches for the GOAWAY.
    let mut peer = H2Peer::connect(server.addr).await;
    peer.handshake().await;
    let in_flight = tokio::spawn({
        let mut client = client.clone();
        async move {
            client
                .unary_message::<_, EchoMsg>("t.T/Slow", EchoMsg::new("800"))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = tokio::spawn(server.shutdown_within(SOON));
    let goaway = within(SOON, "GOAWAY to the raw peer", peer.next_goaway()).await;
    assert_eq!(goaway.error_code, 0, "graceful GOAWAY is NO_ERROR");
    // (hyper's shutdown waits for the PING it sends with the GOAWAY to be
    // answered, which this raw peer does not do: it leaves.)
    drop(peer);
    // The call in flight completes normally.
    let reply = within(SOON, "in-flight call", in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.message, "done");
    let took = stopped.await.unwrap();
    assert!(took < SOON, "drained in {took:?}");
    // New calls find no server.
    let err = client
        .unary_message::<_, EchoMsg>("t.T/Who", EchoMsg::new(""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
}

#[tokio::test]
async fn calls_that_outlast_the_grace_period_are_cut() {
    let server = serve_with(
        Server::builder().shutdown_grace(Duration::from_millis(300)),
        router(),
    )
    .await;
    let channel = Endpoint::new(format!("grpc://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let call = tokio::spawn(async move {
        Client::with_codec(channel, Proto)
            .unary_message::<_, EchoMsg>("t.T/Slow", EchoMsg::new("60000"))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let took = server.shutdown_within(SOON).await;
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    let err = within(SOON, "cut call", call).await.unwrap().unwrap_err();
    assert!(
        matches!(
            err.code(),
            Code::Unavailable | Code::Cancelled | Code::Internal
        ),
        "{err}"
    );
}

#[tokio::test]
async fn with_grpc_off_an_http2_client_is_refused_and_native_calls_work() {
    let server = serve_with(Server::builder().grpc(false), router()).await;
    let grpc = Endpoint::new(format!("grpc://{}", server.addr))
        .unwrap()
        .connect_lazy();
    let err = Client::with_codec(grpc, Proto)
        .unary_message::<_, EchoMsg>("t.T/Who", EchoMsg::new(""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    let native = trpc_integration::client::connect(server.addr).await;
    let reply: EchoMsg = Client::with_codec(native, Proto)
        .unary_message("t.T/Who", EchoMsg::new(""))
        .await
        .unwrap();
    assert_eq!(reply.message, "trpc alpn= client= peer=127.0.0.1");
    server.shutdown().await;
}

#[tokio::test]
async fn an_idle_grpc_connection_gets_a_goaway_at_the_idle_timeout() {
    let server = serve_with(
        Server::builder().idle_timeout(Some(Duration::from_millis(300))),
        router(),
    )
    .await;
    let mut peer = H2Peer::connect(server.addr).await;
    peer.handshake().await;
    let goaway = within(SOON, "idle GOAWAY", peer.next_goaway()).await;
    assert_eq!(goaway.error_code, 0, "{goaway:?}");
    drop(peer);
    // A client that keeps calling keeps its connection.
    let channel = Endpoint::new(format!("grpc://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = Client::with_codec(channel.clone(), Proto);
    for _ in 0..4 {
        let _: EchoMsg = client
            .unary_message("t.T/Who", EchoMsg::new(""))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(channel.connections(), 1);
    server.shutdown().await;
}

/// A TLS client (Python's `ssl`) that negotiates `h2`, sends part of the
/// HTTP/2 preface and waits: the server must close at the handshake
/// timeout without a word, not hand the connection to the HTTP/2 server
/// (which would answer with its SETTINGS and wait for the rest for ever).
const PARTIAL_PREFACE_OVER_TLS: &str = r#"
import socket, ssl, sys, time
ctx = ssl.create_default_context(cadata=sys.stdin.read())
ctx.set_alpn_protocols(["h2"])
tls = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))),
                      server_hostname="localhost")
assert tls.selected_alpn_protocol() == "h2", tls.selected_alpn_protocol()
tls.sendall(b"PRI * HTTP/2.0")
tls.settimeout(30)
t0, got = time.monotonic(), b""
while True:
    try:
        chunk = tls.recv(4096)
    except (ssl.SSLError, OSError):
        break
    if not chunk:
        break
    got += chunk
print(f"{time.monotonic() - t0:.3f} {len(got)}")
"#;

#[tokio::test]
async fn a_tls_peer_that_sends_part_of_the_h2_preface_is_closed_at_the_handshake_timeout() {
    use tokio::io::AsyncWriteExt;
    let ca = TestCa::new("preface test ca").unwrap();
    let cert = ca.server(&["localhost"]).unwrap();
    let tls = ServerTlsConfig::from_pem(&cert.cert, &cert.key).unwrap();
    let handshake = Duration::from_millis(500);
    let server = serve_with(
        Server::builder()
            .handshake_timeout(handshake)
            .tls_config(tls)
            .unwrap(),
        router(),
    )
    .await;
    let py = trpc_integration::python::venv_python().await;
    let mut child = tokio::process::Command::new(py)
        .args(["-c", PARTIAL_PREFACE_OVER_TLS])
        .arg(server.addr.port().to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn python");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(ca.cert_pem().as_bytes()).await.unwrap();
    drop(stdin);
    let out = within(SOON, "the python client", child.wait_with_output())
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(!out.is_empty(), "the python client failed");
    let mut fields = out.split_whitespace();
    let secs: f64 = fields.next().unwrap().parse().unwrap();
    let bytes: usize = fields.next().unwrap().parse().unwrap();
    assert_eq!(bytes, 0, "the server answered a partial preface: {out}");
    assert!(
        secs < handshake.as_secs_f64() + 2.0,
        "closed after {secs} s, handshake timeout {handshake:?}"
    );
    server.shutdown().await;
}
