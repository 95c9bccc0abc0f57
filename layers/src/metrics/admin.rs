//! [`AdminServer`]: a small HTTP/1 server (hyper) for `/metrics` and `/healthz`.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// An HTTP admin endpoint:
///
/// * `GET /metrics`: every metric of the registry, in the Prometheus text format;
/// * `GET /healthz`: `200 ok` while the process serves.
///
/// Started with one call; stops on [`AdminServer::shutdown`] or when dropped.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// let registry = prometheus::Registry::new();
/// let admin = trpc_layers::metrics::AdminServer::bind("127.0.0.1:9100".parse().unwrap(), registry).await?;
/// println!("metrics on http://{}/metrics", admin.local_addr());
/// # Ok(()) }
/// ```
pub struct AdminServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `addr` (port 0 picks a free port) and serves in a background task.
    pub async fn bind(addr: SocketAddr, registry: Registry) -> io::Result<AdminServer> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, registry, stopped));
        tracing::info!(%local_addr, "admin server listening (/metrics, /healthz)");
        Ok(AdminServer {
            local_addr,
            stop,
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and closes open admin connections.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminServer")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

async fn accept_loop(
    listener: TcpListener,
    registry: Registry,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = until_stopped(&mut stopped) => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin server: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let registry = registry.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let resp = route(&req, &registry);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "admin connection failed");
                    }
                }
                _ = until_stopped(&mut stopped) => {}
            }
        });
    }
}

/// Completes when the server is told to stop (or its handle is gone).
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn route(req: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match req.uri().path() {
        "/metrics" => {
            let encoder = TextEncoder::new();
            let mut buf = Vec::new();
            match encoder.encode(&registry.gather(), &mut buf) {
                Ok(()) => {
                    let mut resp = text(StatusCode::OK, buf);
                    if let Ok(v) = HeaderValue::from_str(encoder.format_type()) {
                        resp.headers_mut().insert(CONTENT_TYPE, v);
                    }
                    resp
                }
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot encode metrics: {e}\n"),
                ),
            }
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics or /healthz\n",
        ),
    }
}
