//! trpc over HTTP: [`HttpService`] serves any trpc service stack (usually a
//! [`Router`](crate::server::Router) behind its layers) as an HTTP service —
//! gRPC (`application/grpc`, `+proto`, `+json`) and an HTTP/JSON gateway
//! (`POST /package.Service/Method` with a JSON body). The trpc [`Server`](crate::Server)
//! uses it for HTTP/2 and HTTP/1 connections on its port; mount it yourself in
//! axum or any hyper server (docs/AXUM.md):
//!
//! ```no_run
//! use trpc::server::{unary, Router};
//! use trpc::{http::HttpService, Request, Response, Status};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Msg { message: String }
//!
//! async fn say(req: Request<Msg>) -> Result<Response<Msg>, Status> {
//!     Ok(Response::new(req.into_inner()))
//! }
//!
//! # async fn run() {
//! let trpc = HttpService::new(Router::new().route("echo.Echo/Say", unary(say)));
//! let app = axum::Router::new()
//!     .route("/healthz", axum::routing::get(|| async { "ok" }))
//!     .route_service("/echo.Echo/{method}", trpc);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```
//!
//! The HTTP/JSON form: `POST /echo.Echo/Say` with `{"message": "hi"}` answers
//! `200` with the reply as JSON; request headers are metadata (`grpc-timeout`
//! sets the deadline), response metadata comes back as headers; a failed
//! call answers the HTTP status of its code ([`Code::http_status`]) with
//! `{"code": "NOT_FOUND", "message": "..."}`; a streamed reply is
//! newline-delimited JSON (`application/x-ndjson`). Methods must accept the
//! JSON codec (the default; `.codec((Json, Proto))` for both).
//!
//! A unary handler sends trailing metadata by putting a
//! [`Trailers`](crate::client::Trailers) extension on its response (gRPC
//! trailers; extra headers in the JSON form); a streaming handler ends its
//! stream with `Err(Status::ok_with_trailers(md))`.
//!
//! [`Code::http_status`]: crate::Code::http_status

mod body;

pub use body::HttpBody;

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::body::{Body, Payload};
use crate::client::Trailers;
use crate::codec::set_codec_name;
use crate::grpc::body::{
    body_error, deadline_status, panicked, Guarded, MessageStream, Prepend, Side,
};
use crate::grpc::{metadata, status as grpc_status, timeout};
use crate::request::{Method, Origin, Protocol, Request, Response};
use crate::status::{BoxError, Status};

use self::body::{error_json, log_failure, APPLICATION_JSON, APPLICATION_NDJSON};

/// Serves a trpc service stack over HTTP: gRPC and the HTTP/JSON gateway.
///
/// `S` is any `Service<Request<Body>, Response = Response<Body>>` (a
/// [`Router`](crate::server::Router) with any layers); it is cloned for each
/// call. `HttpService` is a `tower::Service<http::Request<B>>` for any
/// `http_body::Body` `B` (hyper's `Incoming`, axum's `Body`, ...), always
/// ready, and never fails: every outcome is an HTTP response.
#[derive(Clone)]
pub struct HttpService<S> {
    inner: S,
    config: Arc<Config>,
}

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) max_recv: usize,
    pub(crate) max_send: usize,
    pub(crate) timeout: Option<Duration>,
    pub(crate) grpc: bool,
    pub(crate) json: bool,
    /// The peer's address, shared by the connection's requests.
    pub(crate) origin: Option<Arc<Origin>>,
    pub(crate) conn_extensions: Option<http::Extensions>,
    /// Counts the calls started on the connection (its idle check).
    pub(crate) calls: Option<Arc<std::sync::atomic::AtomicUsize>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_recv: crate::frame::DEFAULT_MAX_MESSAGE,
            max_send: crate::frame::DEFAULT_MAX_MESSAGE,
            timeout: None,
            grpc: true,
            json: true,
            origin: None,
            conn_extensions: None,
            calls: None,
        }
    }
}

impl<S> HttpService<S> {
    /// Serves `inner` with default limits (4 MiB messages, no server timeout).
    pub fn new(inner: S) -> Self {
        HttpService {
            inner,
            config: Arc::new(Config::default()),
        }
    }

    pub(crate) fn with_config(inner: S, config: Config) -> Self {
        HttpService {
            inner,
            config: Arc::new(config),
        }
    }

    /// Largest request message accepted and response message sent (default
    /// 4 MiB); larger ones fail the call with RESOURCE_EXHAUSTED.
    pub fn max_message_size(mut self, n: usize) -> Self {
        let c = Arc::make_mut(&mut self.config);
        c.max_recv = n;
        c.max_send = n;
        self
    }

    /// A deadline for every call: handlers see min(the caller's deadline,
    /// this) and are dropped when it passes.
    pub fn timeout(mut self, d: Duration) -> Self {
        Arc::make_mut(&mut self.config).timeout = Some(d);
        self
    }

    /// Answers gRPC requests (default on).
    pub fn grpc(mut self, on: bool) -> Self {
        Arc::make_mut(&mut self.config).grpc = on;
        self
    }

    /// Answers the HTTP/JSON form `POST /package.Service/Method` (default on).
    pub fn json_gateway(mut self, on: bool) -> Self {
        Arc::make_mut(&mut self.config).json = on;
        self
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> fmt::Debug for HttpService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<http::Request<B>> for HttpService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<HttpBody>;
    type Error = Infallible;
    type Future = HttpFuture<S, B>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> HttpFuture<S, B> {
        self.start(req)
    }
}

/// hyper's view of an [`HttpService`] (hyper calls through `&self`).
#[derive(Clone, Debug)]
pub(crate) struct Hyper<S>(pub(crate) HttpService<S>);

impl<S, B> hyper::service::Service<http::Request<B>> for Hyper<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<HttpBody>;
    type Error = Infallible;
    type Future = HttpFuture<S, B>;

    fn call(&self, req: http::Request<B>) -> HttpFuture<S, B> {
        self.0.start(req)
    }
}

/// How the reply is written.
enum Reply {
    /// gRPC, with the request's content type.
    Grpc(HeaderValue),
    /// The HTTP/JSON gateway.
    Json,
}

struct CallCtx {
    reply: Reply,
    sleep: Option<Pin<Box<Sleep>>>,
    method: Method,
    max_send: usize,
}

pin_project! {
    /// The future of an [`HttpService`] call.
    pub struct HttpFuture<S, B>
    where
        S: Service<Request<Body>>,
    {
        #[pin]
        state: State<S, B>,
        ctx: CallCtx,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<Body>>,
    {
        // gRPC: take the messages that are already here (and the first one
        // whole), so a unary request reaches the handler as one message.
        Peek {
            svc: Option<S>,
            req: Option<Request<Body>>,
            stream: Option<MessageStream<B>>,
            first: Option<Payload>,
        },
        // JSON: the whole request body.
        Collect {
            svc: Option<S>,
            req: Option<Request<Body>>,
            body: B,
            buf: BytesMut,
            max: usize,
        },
        Ready {
            svc: S,
            req: Option<Request<Body>>,
        },
        Call {
            #[pin]
            fut: S::Future,
        },
        Done {
            resp: Option<http::Response<HttpBody>>,
        },
    }
}

impl<S, B> fmt::Debug for HttpFuture<S, B>
where
    S: Service<Request<Body>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpFuture")
            .field("method", &self.ctx.method)
            .finish_non_exhaustive()
    }
}

fn plain(status: StatusCode, text: &'static str) -> http::Response<HttpBody> {
    let mut r = http::Response::new(HttpBody::full(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

impl<S> HttpService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone,
{
    fn start<B>(&self, req: http::Request<B>) -> HttpFuture<S, B>
    where
        B: http_body::Body + Unpin,
        B::Error: Into<BoxError>,
    {
        let cfg = &*self.config;
        if let Some(calls) = &cfg.calls {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let (mut parts, body) = req.into_parts();
        let grpc_type = parts
            .headers
            .get(CONTENT_TYPE)
            .filter(|v| v.as_bytes().starts_with(b"application/grpc"))
            .cloned();
        let mut ctx = CallCtx {
            reply: Reply::Json,
            sleep: None,
            method: Method::default(),
            max_send: cfg.max_send,
        };
        let done = |ctx, resp| HttpFuture {
            state: State::Done { resp: Some(resp) },
            ctx,
        };
        let (protocol, codec) = match &grpc_type {
            Some(ct) if cfg.grpc => {
                ctx.reply = Reply::Grpc(ct.clone());
                (Protocol::Grpc, grpc_codec(ct.as_bytes()))
            }
            Some(_) => {
                return done(
                    ctx,
                    plain(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "gRPC is not served here\n",
                    ),
                )
            }
            None if cfg.json => (Protocol::Http, Some("json")),
            None => {
                return done(
                    ctx,
                    plain(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "this endpoint serves gRPC only\n",
                    ),
                )
            }
        };
        if parts.method != http::Method::POST {
            let status = Status::unimplemented(format!(
                "{} {}: calls are POST /package.Service/Method",
                parts.method,
                parts.uri.path()
            ));
            let mut resp = error_response(&ctx, status);
            if matches!(ctx.reply, Reply::Json) {
                *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            }
            return done(ctx, resp);
        }
        let mut req = match self.request(&mut parts, protocol, codec, &mut ctx) {
            Ok(req) => req,
            Err(status) => {
                let resp = error_response(&ctx, status);
                return done(ctx, resp);
            }
        };
        if codec.is_none() {
            // application/grpc+NAME: a codec of the application's own.
            if let Some(name) = grpc_type
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("application/grpc+"))
            {
                let _ = req.metadata_mut().append(crate::codec::CODEC_KEY, name);
            }
        }
        let svc = Some(self.inner.clone());
        let state = match protocol {
            Protocol::Grpc => State::Peek {
                svc,
                req: Some(req),
                stream: Some(MessageStream::new(body, cfg.max_recv, Side::Server, None)),
                first: None,
            },
            _ => State::Collect {
                svc,
                req: Some(req),
                body,
                buf: BytesMut::new(),
                max: cfg.max_recv,
            },
        };
        HttpFuture { state, ctx }
    }

    /// The trpc request of an HTTP request (without its body).
    fn request(
        &self,
        parts: &mut http::request::Parts,
        protocol: Protocol,
        codec: Option<&'static str>,
        ctx: &mut CallCtx,
    ) -> Result<Request<Body>, Status> {
        let cfg = &*self.config;
        let path = parts.uri.path();
        let name = path
            .strip_prefix('/')
            .filter(|n| n.contains('/'))
            .ok_or_else(|| {
                Status::unimplemented(format!(
                    "{path:?} is not a method path (POST /package.Service/Method)"
                ))
            })?;
        let method = Method::from_bytes(Bytes::copy_from_slice(name.as_bytes()))?;
        ctx.method = method.clone();
        let mut req = Request::new(Body::empty()).with_method(method);
        req.set_protocol(protocol);
        if let Some(origin) = &cfg.origin {
            req.set_origin(origin.clone());
        }
        metadata::read(&parts.headers, req.metadata_mut());
        if let Some(c) = codec {
            set_codec_name(req.metadata_mut(), c);
        }
        let client = match parts.headers.get("grpc-timeout") {
            Some(v) => Some(timeout::parse(v.as_bytes()).ok_or_else(|| {
                Status::invalid_argument(format!("malformed grpc-timeout {v:?}"))
            })?),
            None => None,
        };
        if client == Some(Duration::ZERO) {
            return Err(Status::deadline_exceeded(
                "deadline exceeded before the call reached the server",
            ));
        }
        let now = Instant::now();
        let deadline = match (cfg.timeout.map(|t| now + t), client.map(|t| now + t)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        req.replace_deadline(deadline);
        ctx.sleep = deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        let mut ext = std::mem::take(&mut parts.extensions);
        if let Some(conn) = &cfg.conn_extensions {
            ext.extend(conn.clone());
        }
        *req.extensions_mut() = ext;
        Ok(req)
    }
}

/// The codec of a gRPC content type: `application/grpc` and `+proto` are
/// protobuf, `+json` JSON; `None` for other subtypes.
fn grpc_codec(ct: &[u8]) -> Option<&'static str> {
    let sub = &ct[b"application/grpc".len()..];
    let sub = match sub.iter().position(|&b| b == b';') {
        Some(i) => &sub[..i],
        None => sub,
    };
    match sub {
        b"" | b"+proto" => Some("proto"),
        b"+json" => Some("json"),
        _ => None,
    }
}

/// The HTTP response for a call that failed with `status`: gRPC's
/// trailers-only form, or an HTTP error with a JSON body.
fn error_response(ctx: &CallCtx, status: Status) -> http::Response<HttpBody> {
    log_failure(&status);
    match &ctx.reply {
        Reply::Grpc(ct) => {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, ct.clone());
            grpc_status::write(&status, &mut headers);
            let mut r = http::Response::new(HttpBody::empty());
            *r.headers_mut() = headers;
            r
        }
        Reply::Json => {
            let body = serde_json::to_vec(&error_json(&status)).unwrap_or_default();
            let mut r = http::Response::new(HttpBody::full(Bytes::from(body)));
            *r.status_mut() = StatusCode::from_u16(status.code().http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, APPLICATION_JSON);
            h.insert(
                grpc_status::GRPC_STATUS,
                grpc_status::code_value(status.code()),
            );
            metadata::write(status.metadata(), h);
            r
        }
    }
}

/// The HTTP response for a handler's response.
fn respond(ctx: &mut CallCtx, resp: Response<Body>) -> http::Response<HttpBody> {
    let (md, mut extensions, body) = resp.into_parts();
    // Trailers of a unary reply (a streamed reply ends with its own).
    let trailers = extensions.remove::<Trailers>().map(|t| t.0);
    let mut headers = HeaderMap::new();
    let sleep = ctx.sleep.take();
    let body = match &ctx.reply {
        Reply::Grpc(ct) => {
            headers.insert(CONTENT_TYPE, ct.clone());
            metadata::write(&md, &mut headers);
            let body = Guarded::new(body, sleep, ctx.method.clone());
            HttpBody::grpc(body, trailers, ctx.max_send)
        }
        Reply::Json => {
            metadata::write(&md, &mut headers);
            if let Some(t) = &trailers {
                metadata::write(t, &mut headers);
            }
            match body.into_once() {
                Ok(p) if p.compressed => {
                    return error_response(
                        ctx,
                        Status::internal("a compressed reply cannot be sent as JSON"),
                    )
                }
                Ok(p) if p.len() > ctx.max_send => {
                    return error_response(
                        ctx,
                        Status::resource_exhausted(format!(
                            "response message of {} bytes exceeds the limit of {} bytes",
                            p.len(),
                            ctx.max_send
                        )),
                    )
                }
                Ok(p) => {
                    headers.insert(CONTENT_TYPE, APPLICATION_JSON);
                    HttpBody::full(p.bytes)
                }
                Err(body) if body.is_stream() => {
                    headers.insert(CONTENT_TYPE, APPLICATION_NDJSON);
                    HttpBody::ndjson(Guarded::new(body, sleep, ctx.method.clone()))
                }
                Err(_) => HttpBody::empty(),
            }
        }
    };
    let mut r = http::Response::new(body);
    *r.headers_mut() = headers;
    r
}

impl<S, B> Future for HttpFuture<S, B>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: Into<BoxError>,
    B: http_body::Body + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<http::Response<HttpBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Peek {
                    svc,
                    req,
                    stream,
                    first,
                } => {
                    let Some(st) = stream.as_mut() else {
                        return Poll::Ready(Ok(error_response(
                            this.ctx,
                            Status::internal("polled after completion"),
                        )));
                    };
                    let body = loop {
                        match st.poll_message(cx) {
                            Poll::Ready(Some(Ok(p))) if first.is_none() => *first = Some(p),
                            Poll::Ready(Some(Ok(p))) => {
                                break stream
                                    .take()
                                    .map(|s| Body::stream(Prepend::new(first.take(), Some(p), s)))
                            }
                            Poll::Ready(Some(Err(s))) => {
                                let resp = error_response(this.ctx, s);
                                this.state.set(State::Done { resp: None });
                                return Poll::Ready(Ok(resp));
                            }
                            Poll::Ready(None) => {
                                break Some(first.take().map_or_else(Body::empty, Body::once))
                            }
                            // The first message is on its way: it cannot
                            // wait on the handler, so wait for it (a unary
                            // request then reaches the handler whole).
                            Poll::Pending if first.is_none() && st.mid_message() => {
                                if deadline_passed(this.ctx, cx) {
                                    return Poll::Ready(Ok(error_response(
                                        this.ctx,
                                        deadline_status(),
                                    )));
                                }
                                return Poll::Pending;
                            }
                            Poll::Pending => {
                                break stream
                                    .take()
                                    .map(|s| Body::stream(Prepend::new(first.take(), None, s)))
                            }
                        }
                    };
                    match (svc.take(), req.take(), body) {
                        (Some(svc), Some(mut req), Some(body)) => {
                            *req.get_mut() = body;
                            State::Ready {
                                svc,
                                req: Some(req),
                            }
                        }
                        _ => State::Done {
                            resp: Some(error_response(
                                this.ctx,
                                Status::internal("polled after completion"),
                            )),
                        },
                    }
                }
                StateProj::Collect {
                    svc,
                    req,
                    body,
                    buf,
                    max,
                } => {
                    loop {
                        match Pin::new(&mut *body).poll_frame(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(Some(Ok(frame))) => {
                                if let Ok(mut data) = frame.into_data() {
                                    if buf.len() + data.remaining() > *max {
                                        let status = Status::resource_exhausted(format!(
                                            "request body exceeds the limit of {max} bytes"
                                        ));
                                        let mut resp = error_response(this.ctx, status);
                                        *resp.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
                                        return Poll::Ready(Ok(resp));
                                    }
                                    while data.has_remaining() {
                                        let chunk = data.chunk();
                                        let n = chunk.len();
                                        buf.put_slice(chunk);
                                        data.advance(n);
                                    }
                                }
                            }
                            Poll::Ready(Some(Err(e))) => {
                                let status = body_error(e.into(), Side::Server);
                                return Poll::Ready(Ok(error_response(this.ctx, status)));
                            }
                            Poll::Ready(None) => break,
                        }
                    }
                    let bytes = if buf.is_empty() {
                        Bytes::from_static(b"{}")
                    } else {
                        std::mem::take(buf).freeze()
                    };
                    match (svc.take(), req.take()) {
                        (Some(svc), Some(mut req)) => {
                            *req.get_mut() = Body::once(Payload::new(bytes));
                            State::Ready {
                                svc,
                                req: Some(req),
                            }
                        }
                        _ => State::Done {
                            resp: Some(error_response(
                                this.ctx,
                                Status::internal("polled after completion"),
                            )),
                        },
                    }
                }
                StateProj::Ready { svc, req } => match svc.poll_ready(cx) {
                    Poll::Pending => {
                        if deadline_passed(this.ctx, cx) {
                            return Poll::Ready(Ok(error_response(this.ctx, deadline_status())));
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => {
                        let status = Status::from_error(e.into());
                        return Poll::Ready(Ok(error_response(this.ctx, status)));
                    }
                    Poll::Ready(Ok(())) => match req.take() {
                        Some(req) => State::Call { fut: svc.call(req) },
                        None => State::Done { resp: None },
                    },
                },
                StateProj::Call { fut } => {
                    let polled = catch_unwind(AssertUnwindSafe(|| fut.poll(cx)));
                    let resp = match polled {
                        Ok(Poll::Pending) => {
                            if !deadline_passed(this.ctx, cx) {
                                return Poll::Pending;
                            }
                            error_response(this.ctx, deadline_status())
                        }
                        Ok(Poll::Ready(Ok(resp))) => respond(this.ctx, resp),
                        Ok(Poll::Ready(Err(e))) => {
                            error_response(this.ctx, Status::from_error(e.into()))
                        }
                        Err(panic) => {
                            let status = panicked(&this.ctx.method, &*panic);
                            error_response(this.ctx, status)
                        }
                    };
                    // Drop the handler now, not when hyper drops this future.
                    this.state.set(State::Done { resp: None });
                    return Poll::Ready(Ok(resp));
                }
                StateProj::Done { resp } => {
                    let resp = resp.take().unwrap_or_else(|| {
                        error_response(this.ctx, Status::internal("polled after completion"))
                    });
                    return Poll::Ready(Ok(resp));
                }
            };
            this.state.set(next);
        }
    }
}

fn deadline_passed(ctx: &mut CallCtx, cx: &mut Context<'_>) -> bool {
    ctx.sleep
        .as_mut()
        .is_some_and(|s| s.as_mut().poll(cx).is_ready())
}
