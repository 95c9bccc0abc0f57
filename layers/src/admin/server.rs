//! [`AdminServer`]: the running admin server (HTTP/1, hyper).

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::builder::Routes;

/// A running admin server; stops on [`shutdown`](AdminServer::shutdown) or
/// when dropped. Built with [`Admin::builder`](super::Admin::builder).
pub struct AdminServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// `/metrics` for `registry` plus `/healthz` and `/readyz`, on `addr`:
    /// short for `Admin::builder().metrics(registry).bind(addr)`.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let registry = prometheus::Registry::new();
    /// let admin = trpc_layers::admin::AdminServer::bind("127.0.0.1:9100".parse().unwrap(), registry).await?;
    /// println!("metrics on http://{}/metrics", admin.local_addr());
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "metrics")]
    pub async fn bind(addr: SocketAddr, registry: prometheus::Registry) -> io::Result<AdminServer> {
        super::Admin::builder().metrics(registry).bind(addr).await
    }

    pub(crate) async fn start(addr: SocketAddr, routes: Routes) -> io::Result<AdminServer> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let pages: Vec<&str> = routes.paths().collect();
        tracing::info!(%local_addr, ?pages, "admin server listening");
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, Arc::new(routes), stopped));
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
    routes: Arc<Routes>,
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
        let routes = routes.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (parts, _body) = req.into_parts();
                let resp = routes.respond(&parts).map(Full::new);
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
