//! The gRPC transport of a [`Channel`](crate::Channel): one HTTP/2 connection
//! per endpoint, established on demand and re-established with backoff,
//! carrying every call as an HTTP/2 stream.
//!
//! The connection is driven by h2 (hyper's HTTP/2 implementation) directly:
//! hyper's client adds a dispatch channel, a oneshot and a spawned task per
//! request on top of h2, which the unary benchmark pays for on every call;
//! here a caller opens its stream itself and only a streaming request body
//! gets a task (its pump).
//!
//! A call's deadline is sent as `grpc-timeout` and enforced here too;
//! dropping the call (or its response stream) resets the stream
//! (RST_STREAM(CANCEL)), which cancels the handler on the server. Calls the
//! server refused unprocessed (REFUSED_STREAM, or above a GOAWAY's last
//! stream id) are re-sent transparently when their body can be replayed.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use http::header::{CONTENT_TYPE, TE, USER_AGENT};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue};
use http_body::Frame;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::body::{MessageStream, Prepend, Side};
use super::{codec, metadata, status as grpc_status, timeout};
use crate::body::Body;
use crate::client::endpoint::{ClientConfig, Endpoint};
use crate::codec::codec_name;
use crate::metadata::MetadataMap;
use crate::request::{Request, Response};
use crate::status::{Code, Status};
use crate::util::fmt_duration;

/// How often a refused call is re-sent.
const REFUSED_RETRIES: u8 = 2;

/// The gRPC transport of one endpoint.
pub(crate) struct GrpcClient {
    endpoint: Endpoint,
    scheme: Scheme,
    authority: Authority,
    slot: Mutex<Slot>,
    changed: Notify,
}

/// An established connection: its stream opener, and whether its driver
/// task has ended.
#[derive(Clone)]
struct Conn {
    send: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

impl Conn {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

enum Slot {
    Empty {
        failures: u32,
    },
    Connecting {
        failures: u32,
    },
    Ready(Conn),
    Backoff {
        until: Instant,
        error: Status,
        failures: u32,
        fresh: bool,
    },
}

enum Pick {
    Ready(SendRequest<Bytes>),
    Wait,
    Fail(Status),
}

impl fmt::Debug for GrpcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcClient")
            .field("authority", &self.authority)
            .finish()
    }
}

/// The HTTP authority (`host:port`) of a gRPC target.
pub(crate) fn authority(host: &str, port: u16) -> Result<Authority, Status> {
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Authority::try_from(authority.as_str())
        .map_err(|e| Status::invalid_argument(format!("bad authority {authority:?}: {e}")))
}

impl GrpcClient {
    /// A transport for `endpoint` (whose authority [`Endpoint::new`] checked).
    pub(crate) fn new(endpoint: Endpoint, tls: bool) -> GrpcClient {
        let authority = authority(endpoint.host(), endpoint.port())
            .unwrap_or_else(|_| Authority::from_static("localhost"));
        GrpcClient {
            endpoint,
            scheme: if tls { Scheme::HTTPS } else { Scheme::HTTP },
            authority,
            slot: Mutex::new(Slot::Empty { failures: 0 }),
            changed: Notify::new(),
        }
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True while a usable connection is established.
    pub(crate) fn connected(&self) -> bool {
        matches!(&*self.lock(), Slot::Ready(s) if !s.is_closed())
    }

    fn pick(self: &Arc<Self>) -> Pick {
        let mut slot = self.lock();
        let failures = match &mut *slot {
            Slot::Ready(c) if !c.is_closed() => return Pick::Ready(c.send.clone()),
            Slot::Ready(_) => 0,
            Slot::Connecting { .. } => return Pick::Wait,
            Slot::Empty { failures } => *failures,
            Slot::Backoff {
                until,
                error,
                failures,
                fresh,
            } => {
                let now = Instant::now();
                if now < *until {
                    return Pick::Fail(if std::mem::take(fresh) {
                        error.clone()
                    } else {
                        Status::unavailable(format!(
                            "{} (next connection attempt in {})",
                            error.message(),
                            fmt_duration(*until - now)
                        ))
                        .with_refused(true)
                    });
                }
                *failures
            }
        };
        *slot = Slot::Connecting { failures };
        drop(slot);
        tokio::spawn(self.clone().connect_slot());
        Pick::Wait
    }

    async fn connect_slot(self: Arc<Self>) {
        let result = self.connect().await;
        {
            let mut slot = self.lock();
            let failures = match &*slot {
                Slot::Connecting { failures } => *failures,
                _ => 0,
            };
            *slot = match result {
                Ok(conn) => Slot::Ready(conn),
                Err(error) => {
                    let delay = self.endpoint.config.backoff_delay(failures);
                    tracing::debug!(endpoint = self.endpoint.uri(), %error, retry_in = ?delay, "gRPC connect failed");
                    Slot::Backoff {
                        until: Instant::now() + delay,
                        error: error.with_refused(true),
                        failures: failures.saturating_add(1),
                        fresh: true,
                    }
                }
            };
        }
        self.changed.notify_waiters();
    }

    /// A connection's sender, connecting first if needed.
    async fn sender(self: &Arc<Self>) -> Result<SendRequest<Bytes>, Status> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.pick() {
                Pick::Ready(s) => return Ok(s),
                Pick::Fail(e) => return Err(e),
                Pick::Wait => notified.await,
            }
        }
    }

    /// Waits until a connection is established.
    pub(crate) async fn wait_connected(self: &Arc<Self>) -> Result<(), Status> {
        self.sender().await.map(drop)
    }

    async fn connect(&self) -> Result<Conn, Status> {
        let cfg = &self.endpoint.config;
        let host = self.endpoint.host();
        let attempt = async {
            let addrs = tokio::net::lookup_host((host, self.endpoint.port()))
                .await
                .map_err(|e| Status::unavailable(format!("cannot resolve {host}: {e}")))?;
            let mut last = Status::unavailable(format!("{host} resolved to no address"));
            for addr in addrs {
                let tcp = match tokio::net::TcpStream::connect(addr).await {
                    Ok(tcp) => tcp,
                    Err(e) => {
                        last = Status::unavailable(format!("connect to {addr}: {e}"));
                        continue;
                    }
                };
                if cfg.tcp_nodelay {
                    let _ = tcp.set_nodelay(true);
                }
                #[cfg(feature = "tls")]
                if self.scheme == Scheme::HTTPS {
                    let Some(tls) = &cfg.tls else {
                        return Err(Status::invalid_argument(format!(
                            "{} is an https:// target: set Endpoint::tls_config",
                            self.endpoint.uri()
                        )));
                    };
                    let io = tls.connect(host, addr, tcp).await?;
                    return handshake(io, cfg).await;
                }
                #[cfg(not(feature = "tls"))]
                if self.scheme == Scheme::HTTPS {
                    return Err(Status::invalid_argument(
                        "https:// targets need trpc's `tls` feature",
                    ));
                }
                return handshake(tcp, cfg).await;
            }
            Err(last)
        };
        match tokio::time::timeout(cfg.connect_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(Status::unavailable(format!(
                "connect to {} timed out after {}",
                self.endpoint.uri(),
                fmt_duration(cfg.connect_timeout)
            ))),
        }
    }

    /// One call, re-sent if the server refuses it unprocessed.
    pub(crate) async fn call(
        self: Arc<Self>,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, Status> {
        if req.deadline().is_none() {
            if let Some(t) = self.endpoint.config.timeout {
                req.set_timeout(t);
            }
        }
        let deadline = req.deadline();
        let attempts = async {
            let mut req = req;
            let mut tries = 0;
            loop {
                let replay = if tries < REFUSED_RETRIES {
                    req.try_clone()
                } else {
                    None
                };
                match self.attempt(req, deadline).await {
                    Err(e) if e.is_refused() && replay.is_some() => {
                        tries += 1;
                        tracing::debug!(error = %e, "gRPC call refused; sending it again");
                        req = replay.unwrap_or_else(|| Request::new(Body::empty()));
                    }
                    other => return other,
                }
            }
        };
        match deadline {
            Some(d) => tokio::time::timeout_at(d, attempts)
                .await
                .unwrap_or_else(|_| {
                    Err(Status::deadline_exceeded(
                        "deadline exceeded while waiting for the response",
                    ))
                }),
            None => attempts.await,
        }
    }

    async fn attempt(
        self: &Arc<Self>,
        req: Request<Body>,
        deadline: Option<Instant>,
    ) -> Result<Response<Body>, Status> {
        let cfg = &self.endpoint.config;
        let (http_req, body) = self.build(req, deadline)?;
        let send = self.sender().await?;
        let mut send = send.ready().await.map_err(|e| send_error(e, true))?;
        let empty = !body.is_stream() && body.as_once().is_none();
        let (resp, mut tx) = send
            .send_request(http_req, empty)
            .map_err(|e| send_error(e, true))?;
        let pump = match body.into_once() {
            Ok(p) => {
                let (first, rest) = codec::encode(p);
                let last = rest.is_none();
                tx.send_data(first, last)
                    .and_then(|()| rest.map_or(Ok(()), |r| tx.send_data(r, true)))
                    .map_err(|e| send_error(e, false))?;
                None
            }
            Err(body) if body.is_stream() => {
                let task = tokio::spawn(pump(body, tx, cfg.max_send_message));
                Some(AbortOnDrop(task.abort_handle()))
            }
            Err(_) => None,
        };
        let resp = resp.await.map_err(|e| send_error(e, false))?;
        let resp = resp.map(|recv| RecvBody {
            recv,
            data_done: false,
            _pump: pump,
        });
        response(resp, cfg.max_message, deadline).await
    }

    fn build(
        &self,
        req: Request<Body>,
        deadline: Option<Instant>,
    ) -> Result<(http::Request<()>, Body), Status> {
        let cfg = &self.endpoint.config;
        let (parts, body) = req.into_parts();
        if let Some(p) = body.as_once() {
            if p.len() > cfg.max_send_message {
                return Err(Status::resource_exhausted(format!(
                    "request message of {} bytes exceeds the limit of {} bytes",
                    p.len(),
                    cfg.max_send_message
                )));
            }
        }
        let name = parts.method.as_bytes();
        let mut path = BytesMut::with_capacity(1 + name.len());
        path.put_u8(b'/');
        path.put_slice(name);
        let path = PathAndQuery::from_maybe_shared(path.freeze())
            .map_err(|e| Status::invalid_argument(format!("bad method name: {e}")))?;
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        uri.path_and_query = Some(path);
        let uri = http::Uri::from_parts(uri)
            .map_err(|e| Status::invalid_argument(format!("bad request URI: {e}")))?;
        let mut headers = HeaderMap::with_capacity(parts.metadata.len() + 4);
        headers.insert(CONTENT_TYPE, content_type(codec_name(&parts.metadata)));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Status::deadline_exceeded(
                    "deadline exceeded before the call was sent",
                ));
            }
            headers.insert("grpc-timeout", timeout::format(left));
        }
        metadata::write(&parts.metadata, &mut headers);
        let mut r = http::Request::new(());
        *r.method_mut() = http::Method::POST;
        *r.uri_mut() = uri;
        *r.headers_mut() = headers;
        Ok((r, body))
    }
}

const USER_AGENT_VALUE: &str = concat!("trpc/", env!("CARGO_PKG_VERSION"));

/// The content type of a call in codec `name`.
fn content_type(name: &str) -> HeaderValue {
    match name {
        "proto" => HeaderValue::from_static("application/grpc"),
        "json" => HeaderValue::from_static("application/grpc+json"),
        other => HeaderValue::from_str(&format!("application/grpc+{other}"))
            .unwrap_or_else(|_| HeaderValue::from_static("application/grpc")),
    }
}

/// Opens the HTTP/2 connection over `io`; its driver (and keepalive) runs in
/// a task of its own.
async fn handshake<IO>(io: IO, cfg: &ClientConfig) -> Result<Conn, Status>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, mut conn) = h2::client::Builder::new()
        .initial_window_size(cfg.stream_window)
        .initial_connection_window_size(cfg.connection_window)
        .max_header_list_size(super::server::header_list_limit(cfg.max_metadata))
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| Status::unavailable(format!("HTTP/2 handshake failed: {e}")))?;
    let closed = Arc::new(AtomicBool::new(false));
    let pings = conn.ping_pong();
    let keepalive = cfg.keepalive;
    let done = closed.clone();
    tokio::spawn(async move {
        let alive = async {
            match (keepalive, pings) {
                (Some((interval, timeout)), Some(pings)) => {
                    keep_alive(pings, interval, timeout).await
                }
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            r = &mut conn => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "gRPC connection closed");
                }
            }
            why = alive => tracing::debug!(why, "gRPC connection closed: keepalive failed"),
        }
        done.store(true, Ordering::Release);
    });
    Ok(Conn { send, closed })
}

/// PINGs every `interval`; returns when an answer does not come within
/// `timeout` (the connection is then dropped).
async fn keep_alive(
    mut pings: h2::PingPong,
    interval: std::time::Duration,
    timeout: std::time::Duration,
) -> &'static str {
    loop {
        tokio::time::sleep(interval).await;
        if pings.send_ping(h2::Ping::opaque()).is_err() {
            return "cannot send PING";
        }
        match tokio::time::timeout(timeout, poll_fn(|cx| pings.poll_pong(cx))).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return "PING failed",
            Err(_) => return "no PONG in time",
        }
    }
}

/// Maps an h2 error of opening a stream or sending its request: a call the
/// server never processed (`unsent`, REFUSED_STREAM, or above a GOAWAY's
/// last stream id) is marked refused (safe to re-send).
fn send_error(e: h2::Error, unsent: bool) -> Status {
    let refused = unsent
        || e.reason() == Some(h2::Reason::REFUSED_STREAM)
        || (e.is_go_away() && e.reason() == Some(h2::Reason::NO_ERROR));
    if e.reason() == Some(h2::Reason::CANCEL) && !refused {
        return Status::cancelled(format!("the server cancelled the call: {e}"));
    }
    Status::unavailable(format!("gRPC transport error: {e}"))
        .with_refused(refused)
        .with_source(e)
}

/// Aborts a streaming request's pump when the call's response is dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends a streaming request body, as the stream's flow-control window
/// allows; a failed body resets the stream (RST_STREAM(CANCEL)).
async fn pump(mut body: Body, mut tx: h2::SendStream<Bytes>, max_send: usize) {
    use futures_util::StreamExt;
    while let Some(item) = body.next().await {
        match item {
            Ok(p) if p.len() > max_send => {
                tracing::debug!(
                    len = p.len(),
                    max_send,
                    "request message too large; cancelling the call"
                );
                tx.send_reset(h2::Reason::CANCEL);
                return;
            }
            Ok(p) => {
                let (first, rest) = codec::encode(p);
                for chunk in std::iter::once(first).chain(rest) {
                    if send_all(&mut tx, chunk).await.is_err() {
                        return;
                    }
                }
            }
            Err(s) if s.code() == Code::Ok => break,
            Err(_) => {
                tx.send_reset(h2::Reason::CANCEL);
                return;
            }
        }
    }
    let _ = tx.send_data(Bytes::new(), true);
}

async fn send_all(tx: &mut h2::SendStream<Bytes>, mut chunk: Bytes) -> Result<(), h2::Error> {
    while !chunk.is_empty() {
        tx.reserve_capacity(chunk.len());
        let n = match poll_fn(|cx| tx.poll_capacity(cx)).await {
            Some(r) => r?,
            None => return Err(h2::Error::from(h2::Reason::CANCEL)),
        };
        if n > 0 {
            let part = chunk.split_to(n.min(chunk.len()));
            tx.send_data(part, false)?;
        }
    }
    Ok(())
}

/// A response stream as an `http_body::Body`; consumed bytes give their
/// flow-control credit back.
struct RecvBody {
    recv: h2::RecvStream,
    data_done: bool,
    _pump: Option<AbortOnDrop>,
}

impl http_body::Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if !this.data_done {
            match this.recv.poll_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(b))) => {
                    let _ = this.recv.flow_control().release_capacity(b.len());
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => this.data_done = true,
            }
        }
        match this.recv.poll_trailers(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(t))) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
        }
    }
}

/// Turns an HTTP response into the call's response: trailers-only answers
/// and non-gRPC answers become statuses; messages already here are taken so
/// that a unary reply without trailers is one message (`Body::once`).
async fn response(
    resp: http::Response<RecvBody>,
    max_message: usize,
    deadline: Option<Instant>,
) -> Result<Response<Body>, Status> {
    let (parts, body) = resp.into_parts();
    if let Some(status) = grpc_status::read(&parts.headers) {
        // Trailers-only.
        if status.code() != Code::Ok {
            return Err(status);
        }
        let body = if status.metadata().is_empty() {
            Body::empty()
        } else {
            Body::stream(futures_util::stream::iter([Err(status)]))
        };
        return Ok(Response::new(body));
    }
    if parts.status != http::StatusCode::OK {
        let code = grpc_status::code_of_http(parts.status.as_u16());
        return Err(Status::new(
            code,
            format!("the server answered HTTP {} (not gRPC)", parts.status),
        ));
    }
    let codec = match parts.headers.get(CONTENT_TYPE).map(|v| v.as_bytes()) {
        Some(b"application/grpc" | b"application/grpc+proto") => "proto",
        Some(b"application/grpc+json") => "json",
        Some(ct) if ct.starts_with(b"application/grpc") => "",
        other => {
            return Err(Status::unknown(format!(
                "the server answered with content type {:?}, not gRPC",
                other.map(String::from_utf8_lossy)
            )))
        }
    };
    let mut md = MetadataMap::new();
    metadata::read(&parts.headers, &mut md);
    if !codec.is_empty() {
        crate::codec::set_codec_name(&mut md, codec);
    }
    let sleep = deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
    let mut stream = Some(MessageStream::new(body, max_message, Side::Client, sleep));
    let mut first = None;
    let body = poll_fn(|cx| {
        let Some(st) = stream.as_mut() else {
            return Poll::Ready(Err(Status::internal("response polled after completion")));
        };
        loop {
            match st.poll_message(cx) {
                Poll::Ready(Some(Ok(p))) if first.is_none() => first = Some(p),
                Poll::Ready(Some(Ok(p))) => {
                    let rest = stream
                        .take()
                        .map(|s| Prepend::new(first.take(), Some(p), s));
                    return Poll::Ready(Ok(rest.map(Body::stream).unwrap_or_default()));
                }
                // Trailers stay at the end of the stream, where both a typed
                // unary call and a `Streaming` find them.
                Poll::Ready(Some(Err(s))) if s.code() == Code::Ok => {
                    let items = first.take().map(Ok).into_iter().chain([Err(s)]);
                    return Poll::Ready(Ok(Body::stream(futures_util::stream::iter(items))));
                }
                Poll::Ready(Some(Err(s))) => {
                    return Poll::Ready(match first.take() {
                        None => Err(s),
                        Some(p) => Ok(Body::stream(futures_util::stream::iter([Ok(p), Err(s)]))),
                    })
                }
                Poll::Ready(None) => {
                    return Poll::Ready(Ok(first.take().map_or_else(Body::empty, Body::once)))
                }
                // The first message is on its way: wait for it whole.
                Poll::Pending if first.is_none() && st.mid_message() => return Poll::Pending,
                Poll::Pending => {
                    let rest = stream.take().map(|s| Prepend::new(first.take(), None, s));
                    return Poll::Ready(Ok(rest.map(Body::stream).unwrap_or_default()));
                }
            }
        }
    })
    .await?;
    let mut r = Response::new(body);
    *r.metadata_mut() = md;
    Ok(r)
}

/// The future of a call on a gRPC channel.
pub(crate) type CallFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Status>> + Send>>;

/// Starts `req` on `client`.
pub(crate) fn start(client: &Arc<GrpcClient>, req: Request<Body>) -> CallFuture {
    Box::pin(client.clone().call(req))
}
