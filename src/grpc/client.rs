//! The gRPC transport of a [`Channel`](crate::Channel): one HTTP/2 connection
//! (hyper's client) per endpoint, established on demand and re-established
//! with backoff, carrying every call as an HTTP/2 stream.
//!
//! A call's deadline is sent as `grpc-timeout` and enforced here too;
//! dropping the call (or its response stream) resets the stream
//! (RST_STREAM(CANCEL)), which cancels the handler on the server. Calls the
//! server refused unprocessed (REFUSED_STREAM, or above a GOAWAY's last
//! stream id) are re-sent transparently when their body can be replayed.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use futures_core::Stream;
use http::header::{CONTENT_TYPE, TE, USER_AGENT};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue};
use http_body::Frame;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::body::{h2_reason, MessageStream, Prepend, Side};
use super::{codec, metadata, status as grpc_status, timeout};
use crate::body::Body;
use crate::client::endpoint::{ClientConfig, Endpoint};
use crate::codec::codec_name;
use crate::metadata::MetadataMap;
use crate::request::{Request, Response};
use crate::status::{BoxError, Code, Status};
use crate::util::{fmt_duration, jitter};

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

enum Slot {
    Empty { failures: u32 },
    Connecting { failures: u32 },
    Ready(SendRequest<RequestBody>),
    Backoff {
        until: Instant,
        error: Status,
        failures: u32,
        fresh: bool,
    },
}

enum Pick {
    Ready(SendRequest<RequestBody>),
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
            Slot::Ready(s) if !s.is_closed() => return Pick::Ready(s.clone()),
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
                Ok(send) => Slot::Ready(send),
                Err(error) => {
                    let cfg = &self.endpoint.config;
                    let exp = cfg
                        .backoff_initial
                        .saturating_mul(1u32 << failures.min(20));
                    let delay = jitter(exp.min(cfg.backoff_max), 0.2);
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
    async fn sender(self: &Arc<Self>) -> Result<SendRequest<RequestBody>, Status> {
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

    async fn connect(&self) -> Result<SendRequest<RequestBody>, Status> {
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
    pub(crate) async fn call(self: Arc<Self>, mut req: Request<Body>) -> Result<Response<Body>, Status> {
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
                let replay = if tries < REFUSED_RETRIES { req.try_clone() } else { None };
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
            Some(d) => tokio::time::timeout_at(d, attempts).await.unwrap_or_else(|_| {
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
        let http_req = self.build(req, deadline)?;
        let mut send = self.sender().await?;
        let resp = send.send_request(http_req).await.map_err(send_error)?;
        response(resp, cfg.max_message, deadline).await
    }

    fn build(
        &self,
        req: Request<Body>,
        deadline: Option<Instant>,
    ) -> Result<http::Request<RequestBody>, Status> {
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
        let mut r = http::Request::new(RequestBody::new(body, cfg.max_send_message));
        *r.method_mut() = http::Method::POST;
        *r.uri_mut() = uri;
        *r.headers_mut() = headers;
        Ok(r)
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

/// Opens the HTTP/2 connection over `io`; its driver runs in a task of its own.
async fn handshake<IO>(io: IO, cfg: &ClientConfig) -> Result<SendRequest<RequestBody>, Status>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut b = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .initial_stream_window_size(cfg.stream_window)
        .initial_connection_window_size(cfg.connection_window)
        .max_header_list_size(super::server::header_list_limit(cfg.max_metadata));
    if let Some((interval, timeout)) = cfg.keepalive {
        b.keep_alive_interval(interval)
            .keep_alive_timeout(timeout)
            .keep_alive_while_idle(true);
    }
    let (send, conn) = b
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| Status::unavailable(format!("HTTP/2 handshake failed: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "gRPC connection closed");
        }
    });
    Ok(send)
}

/// Maps an error of sending a request: a call the server never processed
/// is marked refused (safe to re-send).
fn send_error(e: hyper::Error) -> Status {
    let refused = e.is_canceled()
        || h2_reason(&e) == Some(h2::Reason::REFUSED_STREAM)
        || go_away(&e);
    if h2_reason(&e) == Some(h2::Reason::CANCEL) && !refused {
        return Status::cancelled(format!("the server cancelled the call: {e}"));
    }
    Status::unavailable(format!("gRPC transport error: {e}"))
        .with_refused(refused)
        .with_source(e)
}

fn go_away(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR);
        }
        cur = e.source();
    }
    false
}

/// Turns an HTTP response into the call's response: trailers-only answers
/// and non-gRPC answers become statuses; messages already here are taken so
/// that a unary reply without trailers is one message (`Body::once`).
async fn response(
    resp: http::Response<hyper::body::Incoming>,
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
                    let rest = stream.take().map(|s| Prepend::new(first.take(), Some(p), s));
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
                        Some(p) => Ok(Body::stream(futures_util::stream::iter([
                            Ok(p),
                            Err(s),
                        ]))),
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

/// A request's messages as an HTTP/2 body.
pub(crate) struct RequestBody {
    body: Body,
    pending: Option<Bytes>,
    max_send: usize,
    done: bool,
}

impl RequestBody {
    fn new(body: Body, max_send: usize) -> Self {
        // An empty body has no message: END_STREAM on the headers.
        let done = !body.is_stream() && body.as_once().is_none();
        RequestBody {
            body,
            pending: None,
            max_send,
            done,
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(b) = this.pending.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.body).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(p))) if p.len() > this.max_send => {
                this.done = true;
                Poll::Ready(Some(Err(Box::new(Status::resource_exhausted(format!(
                    "request message of {} bytes exceeds the limit of {} bytes",
                    p.len(),
                    this.max_send
                ))))))
            }
            Poll::Ready(Some(Ok(p))) => {
                let (first, rest) = codec::encode(p);
                this.pending = rest;
                if this.body.as_once().is_none() && !this.body.is_stream() {
                    // A unary body is spent: say so, so hyper sets END_STREAM
                    // on this frame.
                    this.done = this.pending.is_none();
                }
                Poll::Ready(Some(Ok(Frame::data(first))))
            }
            Poll::Ready(Some(Err(s))) if s.code() == Code::Ok => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(s))) => {
                this.done = true;
                Poll::Ready(Some(Err(Box::new(s))))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_none()
    }
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBody").field("done", &self.done).finish()
    }
}

/// The future of a call on a gRPC channel.
pub(crate) type CallFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Status>> + Send>>;

/// Starts `req` on `client`.
pub(crate) fn start(client: &Arc<GrpcClient>, req: Request<Body>) -> CallFuture {
    Box::pin(client.clone().call(req))
}
