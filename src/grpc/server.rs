//! Serving HTTP connections of the one port: HTTP/2 (gRPC and the JSON
//! gateway) and HTTP/1 (the JSON gateway) with hyper, through
//! [`HttpService`](crate::http::HttpService), under the server's limits,
//! shutdown and force-close signals.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::{Config, HttpService, Hyper};
use crate::request::Origin;
use crate::server::{ConnCtx, ConnService, ServerConfig};

/// HTTP/2 header blocks (pseudo-headers and HPACK overhead included) may be
/// this much larger than the metadata limit.
const HEADER_OVERHEAD: usize = 4 * 1024;
/// Streams the client reset before the server accepted them, kept before the
/// connection is closed with GOAWAY(ENHANCE_YOUR_CALM) (rapid reset).
const MAX_PENDING_ACCEPT_RESETS: usize = 100;
/// Streams the server itself reset because the client broke the protocol,
/// before the connection is closed.
const MAX_LOCAL_ERROR_RESETS: usize = 256;
/// Bytes hyper may buffer per stream for sending.
const MAX_SEND_BUF: usize = 1 << 20;

/// The HTTP service of one connection.
fn service<S>(
    svc: S,
    cfg: &ServerConfig,
    peer: SocketAddr,
    conn_extensions: Option<http::Extensions>,
    calls: Arc<AtomicUsize>,
) -> Hyper<S> {
    Hyper(HttpService::with_config(
        svc,
        Config {
            max_recv: cfg.max_message,
            max_send: cfg.max_send_message,
            timeout: cfg.timeout,
            grpc: true,
            json: true,
            origin: Some(Arc::new(Origin {
                remote_addr: Some(peer),
                deadline_watch: None,
            })),
            conn_extensions,
            calls: Some(calls),
        },
    ))
}

/// The header-list limit announced in SETTINGS_MAX_HEADER_LIST_SIZE.
pub(crate) fn header_list_limit(max_metadata: usize) -> u32 {
    (max_metadata + HEADER_OVERHEAD).min(u32::MAX as usize) as u32
}

/// Runs a hyper connection until it ends; on `shutdown` — or when no call
/// started for a whole idle timeout — starts hyper's graceful shutdown
/// (GOAWAY on HTTP/2, `connection: close` on HTTP/1; calls in flight finish)
/// and drains, until `force`.
macro_rules! drive {
    ($conn:expr, $peer:expr, $cfg:expr, $calls:expr, $shutdown:expr, $force:expr) => {{
        let conn = $conn;
        tokio::pin!(conn);
        let idle = idle_check($cfg.idle_timeout, $calls);
        tokio::pin!(idle);
        let done = tokio::select! {
            r = conn.as_mut() => Some(r),
            _ = $shutdown.cancelled() => None,
            _ = idle.as_mut() => {
                tracing::debug!(peer = %$peer, "HTTP connection idle: closing it");
                None
            }
        };
        let result = match done {
            Some(r) => Some(r),
            None => {
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    r = conn.as_mut() => Some(r),
                    _ = $force.cancelled() => None,
                }
            }
        };
        match result {
            Some(Ok(())) => tracing::debug!(peer = %$peer, "HTTP connection closed"),
            Some(Err(e)) => tracing::debug!(peer = %$peer, error = %e, "HTTP connection failed"),
            None => tracing::debug!(peer = %$peer, "HTTP connection closed by force at the end of the grace period"),
        }
    }};
}

/// Completes once a whole idle timeout passes without a call starting on
/// the connection (never without an idle timeout).
async fn idle_check(timeout: Option<Duration>, calls: Arc<AtomicUsize>) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    let mut seen = calls.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(timeout).await;
        let now = calls.load(Ordering::Relaxed);
        if now == seen {
            return;
        }
        seen = now;
    }
}

/// The HTTP a connection speaks, told by its first bytes or by ALPN.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Http {
    /// HTTP/1: the JSON gateway.
    H1,
    /// HTTP/2: gRPC and the JSON gateway.
    H2,
}

/// Serves one HTTP connection until it closes.
///
/// The connection is boxed: hyper's state is large, and the task that
/// detected HTTP would otherwise be as large for every native connection.
pub(crate) async fn serve_http<IO, S>(http: Http, io: IO, ctx: ConnCtx<S>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ConnService,
{
    let conn: Pin<Box<dyn Future<Output = ()> + Send>> = match http {
        Http::H2 => Box::pin(serve_h2(io, ctx)),
        Http::H1 => Box::pin(serve_h1(io, ctx)),
    };
    conn.await
}

/// Serves one HTTP/2 connection (`io` replays the bytes read during
/// detection) until it closes; on `shutdown`, GOAWAY and drain; on `force`,
/// close.
async fn serve_h2<IO, S>(io: IO, ctx: ConnCtx<S>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ConnService,
{
    let (peer, cfg) = (ctx.peer, &ctx.cfg);
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .initial_stream_window_size(cfg.stream_window)
        .initial_connection_window_size(cfg.connection_window)
        .max_header_list_size(header_list_limit(cfg.max_metadata))
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESETS)
        .max_send_buf_size(MAX_SEND_BUF)
        .auto_date_header(false);
    if let Some((interval, timeout)) = cfg.keepalive {
        b.keep_alive_interval(interval).keep_alive_timeout(timeout);
    }
    tracing::debug!(%peer, "HTTP/2 connection opened");
    let calls = Arc::new(AtomicUsize::new(0));
    let conn = b.serve_connection(
        TokioIo::new(io),
        service(ctx.svc, cfg, peer, ctx.extensions, calls.clone()),
    );
    drive!(conn, peer, cfg, calls, ctx.shutdown, ctx.force);
}

/// Serves one HTTP/1 connection (the JSON gateway).
async fn serve_h1<IO, S>(io: IO, ctx: ConnCtx<S>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ConnService,
{
    let (peer, cfg) = (ctx.peer, &ctx.cfg);
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(cfg.frame_timeout)
        .max_buf_size(header_list_limit(cfg.max_metadata) as usize);
    tracing::debug!(%peer, "HTTP/1 connection opened");
    let calls = Arc::new(AtomicUsize::new(0));
    let conn = b.serve_connection(
        TokioIo::new(io),
        service(ctx.svc, cfg, peer, ctx.extensions, calls.clone()),
    );
    drive!(conn, peer, cfg, calls, ctx.shutdown, ctx.force);
}

/// An IO that first replays the bytes read while detecting the protocol.
#[derive(Debug)]
pub(crate) struct Rewind<IO> {
    pre: Bytes,
    io: IO,
}

impl<IO> Rewind<IO> {
    pub(crate) fn new(pre: Bytes, io: IO) -> Self {
        Rewind { pre, io }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn rewind_replays_the_detected_bytes_first() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b" world")
            .await
            .unwrap();
        drop(a);
        let mut r = Rewind::new(Bytes::from_static(b"hello"), b);
        let mut s = String::new();
        r.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello world");
    }
}
