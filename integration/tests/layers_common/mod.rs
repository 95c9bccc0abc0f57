//! Helpers for the `layers_*` end-to-end tests: servers with layer stacks on
//! `127.0.0.1:0`, clients, bounded waits, a minimal HTTP GET.

// Every test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::{Layer, Service};
use trpc::server::{Router, Server};
use trpc::{Body, BoxError, Channel, Endpoint, Request, Response};

/// Bound for anything that should happen "soon" on a loaded 2-core machine.
pub(crate) const SOON: Duration = Duration::from_secs(10);

/// A JSON message with one string field.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Msg {
    /// The text.
    #[serde(default)]
    pub(crate) message: String,
}

impl Msg {
    /// A message with `text`.
    pub(crate) fn new(text: impl Into<String>) -> Msg {
        Msg {
            message: text.into(),
        }
    }
}

/// Awaits `fut`, panicking with `what` if it takes longer than `limit`.
pub(crate) async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {limit:?}"),
    }
}

/// A server running in a background task until dropped or shut down.
#[derive(Debug)]
pub(crate) struct TestServer {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<io::Result<()>>>,
}

/// Serves `router` with `server` (its layers and settings) on a fresh port.
pub(crate) async fn serve<L>(server: Server<L>, router: Router) -> TestServer
where
    L: Layer<Router> + Send + 'static,
    L::Service: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    <L::Service as Service<Request<Body>>>::Error: Into<BoxError>,
    <L::Service as Service<Request<Body>>>::Future: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let signal = async move {
        let _ = stopped.await;
    };
    let handle = tokio::spawn(server.serve_with_listener(listener, router, signal));
    TestServer {
        addr,
        stop: Some(stop),
        handle: Some(handle),
    }
}

impl TestServer {
    /// Stops the server gracefully and waits for it (bounded).
    pub(crate) async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(h) = self.handle.take() {
            within(SOON, "server shutdown", h)
                .await
                .expect("server task panicked")
                .expect("serve failed");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An endpoint for `addr` with a bounded connect timeout.
pub(crate) fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::new(format!("tcp://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
}

/// A connected channel to `addr`.
pub(crate) async fn connect(addr: SocketAddr) -> Channel {
    within(SOON, "connect", endpoint(addr).connect())
        .await
        .expect("connect")
}

/// `GET path` over HTTP/1.1 on `addr`: (status code, body).
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    within(SOON, "http get", async {
        let mut tcp = TcpStream::connect(addr).await.expect("connect admin");
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        tcp.read_to_end(&mut buf).await.expect("read");
        let text = String::from_utf8(buf).expect("utf-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("http response");
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status code");
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        (code, body)
    })
    .await
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// The value of sample `name` with exactly `labels` in a Prometheus text
/// exposition.
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, ls) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let mut got: Vec<String> = ls
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            got.sort();
            (n == name && got == want).then(|| value.parse().ok())?
        })
}
