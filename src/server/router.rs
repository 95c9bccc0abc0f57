//! [`Router`]: method name → handler, as a `tower::Service`.
//!
//! Handlers are plain async functions of a typed request:
//!
//! ```
//! use trpc::{server::{unary, Router}, codec::{Json, Proto}, Request, Response, Status};
//!
//! #[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
//! struct Hello { #[prost(string, tag = "1")] name: String }
//!
//! async fn greet(req: Request<Hello>) -> Result<Response<Hello>, Status> {
//!     let name = req.into_inner().name;
//!     Ok(Response::new(Hello { name: format!("hello {name}") }))
//! }
//!
//! let router = Router::new()
//!     .route("greeter.Greeter/Greet", unary(greet))                        // JSON
//!     .route("greeter.Greeter/GreetAny", unary(greet).codec((Json, Proto))); // JSON or protobuf
//! assert!(router.has_method("greeter.Greeter/Greet"));
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures_core::Stream;
use rustc_hash::FxBuildHasher;
use tower_service::Service;

use crate::body::{Body, Payload};
use crate::codec::{codec_name, set_codec_name, CodecSet, Json};
use crate::request::{Request, Response};
use crate::status::Status;
use crate::stream::Streaming;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A type-erased method handler: what the router stores.
pub trait Handler: Send + Sync + 'static {
    /// Handles one call.
    fn call(&self, req: Request<Body>) -> BoxFuture<Result<Response<Body>, Status>>;
}

/// A unary handler built by [`unary`].
pub struct Unary<F, Req, Resp, C> {
    f: F,
    codec: C,
    _types: PhantomData<fn(Req) -> Resp>,
}

/// Wraps an `async fn(Request<Req>) -> Result<Response<Resp>, Status>` as a
/// unary handler using JSON; change the codec with [`Unary::codec`].
pub fn unary<F, Fut, Req, Resp>(f: F) -> Unary<F, Req, Resp, Json>
where
    F: Fn(Request<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
{
    Unary {
        f,
        codec: Json,
        _types: PhantomData,
    }
}

impl<F, Req, Resp, C> Unary<F, Req, Resp, C> {
    /// Accepts messages in `codec` instead: one codec, or a tuple such as
    /// `(Json, Proto)` to accept several (picked per call by `trpc-codec`).
    pub fn codec<C2: CodecSet<Req, Resp>>(self, codec: C2) -> Unary<F, Req, Resp, C2> {
        Unary {
            f: self.f,
            codec,
            _types: PhantomData,
        }
    }
}

impl<F, Fut, Req, Resp, C> Handler for Unary<F, Req, Resp, C>
where
    F: Fn(Request<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
    C: CodecSet<Req, Resp>,
    Req: Send + 'static,
    Resp: Send + 'static,
{
    fn call(&self, req: Request<Body>) -> BoxFuture<Result<Response<Body>, Status>> {
        let f = self.f.clone();
        let codecs = self.codec.clone();
        Box::pin(async move {
            let which = pick_codec(&codecs, &req)?;
            let (parts, body) = req.into_parts();
            crate::stream::hold_request_credit(&parts.extensions);
            let payload = match body.into_once() {
                Ok(p) => p,
                Err(body) => body.into_single().await?,
            };
            let message = decode_request(&codecs, which, payload)?;
            let response = f(Request::from_parts(parts, message)).await?;
            typed_response(response, codecs.name_of(which), |message| {
                let mut buf = BytesMut::new();
                codecs.encode(which, &message, &mut buf)?;
                Ok(Body::once(Payload::new(buf.freeze())))
            })
        })
    }
}

impl<F, Req, Resp, C: fmt::Debug> fmt::Debug for Unary<F, Req, Resp, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unary").field("codec", &self.codec).finish()
    }
}

/// Decodes a request payload with codec `which` of `codecs`.
fn decode_request<Req, Resp, C: CodecSet<Req, Resp>>(
    codecs: &C,
    which: usize,
    payload: Payload,
) -> Result<Req, Status> {
    if payload.compressed {
        return Err(Status::unimplemented(
            "message is compressed but the server has no decompression layer",
        ));
    }
    codecs.decode(which, payload.bytes)
}

/// Picks the codec for a call from its `trpc-codec` metadata.
fn pick_codec<Req, Resp, C: CodecSet<Req, Resp>>(
    codecs: &C,
    req: &Request<Body>,
) -> Result<usize, Status> {
    let name = codec_name(req.metadata());
    codecs.pick(name).ok_or_else(|| {
        Status::invalid_argument(format!(
            "method {} does not accept codec {name:?} (accepted: {})",
            req.method(),
            codecs.names().join(", ")
        ))
    })
}

/// The typed request stream of a call.
fn request_stream<Req, Resp, C>(codecs: &C, which: usize, body: Body) -> Streaming<Req>
where
    C: CodecSet<Req, Resp>,
    Req: 'static,
    Resp: 'static,
{
    let codecs = codecs.clone();
    Streaming::new(body, move |p| decode_request(&codecs, which, p))
}

/// Encodes a typed response stream into a body of payloads.
fn response_body<Req, Resp, C, St>(codecs: C, which: usize, stream: St) -> Body
where
    C: CodecSet<Req, Resp>,
    St: Stream<Item = Result<Resp, Status>> + Send + 'static,
    Req: 'static,
    Resp: 'static,
{
    use futures_util::StreamExt;
    Body::stream(stream.map(move |item| {
        let msg = item?;
        let mut buf = BytesMut::new();
        codecs.encode(which, &msg, &mut buf)?;
        Ok(Payload::new(buf.freeze()))
    }))
}

fn typed_response<T>(
    response: Response<T>,
    name: &'static str,
    body: impl FnOnce(T) -> Result<Body, Status>,
) -> Result<Response<Body>, Status> {
    let (mut metadata, extensions, message) = response.into_parts();
    set_codec_name(&mut metadata, name);
    Ok(Response::from_parts(metadata, extensions, body(message)?))
}

macro_rules! streaming_handler {
    (
        $(#[$doc:meta])*
        $ctor:ident, $ty:ident,
        req: $req_ty:ty, resp: $resp_ty:ty,
        generics: [$($g:ident),*], bounds: [$($bounds:tt)*],
        call: |$codecs:ident, $which:ident, $parts:ident, $body:ident| $make_req:expr,
        respond: |$resp:ident| $make_body:expr
    ) => {
        $(#[$doc])*
        pub struct $ty<F, Req, Resp, C> {
            f: F,
            codec: C,
            _types: PhantomData<fn(Req) -> Resp>,
        }

        $(#[$doc])*
        pub fn $ctor<F, Fut, Req, Resp $(, $g)*>(f: F) -> $ty<F, Req, Resp, Json>
        where
            F: Fn(Request<$req_ty>) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = Result<Response<$resp_ty>, Status>> + Send + 'static,
            $($bounds)*
        {
            $ty { f, codec: Json, _types: PhantomData }
        }

        impl<F, Req, Resp, C> $ty<F, Req, Resp, C> {
            /// Accepts messages in `codec` instead (see [`Unary::codec`]).
            pub fn codec<C2: CodecSet<Req, Resp>>(self, codec: C2) -> $ty<F, Req, Resp, C2> {
                $ty { f: self.f, codec, _types: PhantomData }
            }
        }

        impl<F, Req, Resp, C> fmt::Debug for $ty<F, Req, Resp, C> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(stringify!($ty))
            }
        }

        impl<F, Fut, Req, Resp, C $(, $g)*> Handler for $ty<F, Req, Resp, C>
        where
            F: Fn(Request<$req_ty>) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = Result<Response<$resp_ty>, Status>> + Send + 'static,
            C: CodecSet<Req, Resp>,
            Req: Send + 'static,
            Resp: Send + 'static,
            $($bounds)*
        {
            fn call(&self, req: Request<Body>) -> BoxFuture<Result<Response<Body>, Status>> {
                let f = self.f.clone();
                let $codecs = self.codec.clone();
                Box::pin(async move {
                    let $which = pick_codec(&$codecs, &req)?;
                    let name = $codecs.name_of($which);
                    let ($parts, $body) = req.into_parts();
                    let request = $make_req;
                    let response = f(request).await?;
                    typed_response(response, name, |$resp| $make_body)
                })
            }
        }
    };
}

streaming_handler! {
    /// A server-streaming handler: one request message in, a stream of
    /// response messages out. Build with [`server_streaming`]; the function is
    /// `async fn(Request<Req>) -> Result<Response<S>, Status>` where `S` is a
    /// `Stream<Item = Result<Resp, Status>>`. End the stream with
    /// `Err(status)` to fail the call after the messages already sent, or with
    /// `Err(Status::ok_with_trailers(md))` to send trailers.
    server_streaming, ServerStreaming,
    req: Req, resp: S,
    generics: [S], bounds: [S: Stream<Item = Result<Resp, Status>> + Send + 'static,],
    call: |codecs, which, parts, body| {
        crate::stream::hold_request_credit(&parts.extensions);
        let payload = match body.into_once() {
            Ok(p) => p,
            Err(body) => body.into_single().await?,
        };
        Request::from_parts(parts, decode_request(&codecs, which, payload)?)
    },
    respond: |stream| Ok(response_body(codecs, which, stream))
}

streaming_handler! {
    /// A client-streaming handler: a stream of request messages in, one
    /// response out. Build with [`client_streaming`]; the function is
    /// `async fn(Request<Streaming<Req>>) -> Result<Response<Resp>, Status>`.
    client_streaming, ClientStreaming,
    req: Streaming<Req>, resp: Resp,
    generics: [], bounds: [],
    call: |codecs, which, parts, body| {
        Request::from_parts(parts, request_stream(&codecs, which, body))
    },
    respond: |message| {
        let mut buf = BytesMut::new();
        codecs.encode(which, &message, &mut buf)?;
        Ok(Body::once(Payload::new(buf.freeze())))
    }
}

streaming_handler! {
    /// A bidirectional-streaming handler: streams both ways. Build with
    /// [`bidi_streaming`]; the function is
    /// `async fn(Request<Streaming<Req>>) -> Result<Response<S>, Status>` where
    /// `S` is a `Stream<Item = Result<Resp, Status>>`.
    bidi_streaming, BidiStreaming,
    req: Streaming<Req>, resp: S,
    generics: [S], bounds: [S: Stream<Item = Result<Resp, Status>> + Send + 'static,],
    call: |codecs, which, parts, body| {
        Request::from_parts(parts, request_stream(&codecs, which, body))
    },
    respond: |stream| Ok(response_body(codecs, which, stream))
}

/// Routes calls by method name (`package.Service/Method`) to handlers.
///
/// A `Router` is always ready and never fails at the service level: an unknown
/// method is an `Unimplemented` status for that call.
#[derive(Clone, Default)]
pub struct Router {
    /// Keyed by the name's bytes, so a lookup needs no UTF-8 check; FxHash:
    /// the table is fixed once built, lookups cannot degrade it.
    routes: Arc<RouteTable>,
}

type RouteTable = HashMap<Box<[u8]>, Arc<dyn Handler>, FxBuildHasher>;

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Router::default()
    }

    /// Adds a method.
    ///
    /// # Panics
    /// If `method` is already routed or has no `/`.
    pub fn route(mut self, method: &str, handler: impl Handler) -> Self {
        assert!(
            method.contains('/'),
            "method {method:?} should look like package.Service/Method"
        );
        let routes = Arc::make_mut(&mut self.routes);
        let prev = routes.insert(method.as_bytes().into(), Arc::new(handler));
        assert!(prev.is_none(), "method {method:?} routed twice");
        self
    }

    /// Adds every method of `other`.
    pub fn merge(mut self, other: Router) -> Self {
        for (k, v) in other.routes.iter() {
            let routes = Arc::make_mut(&mut self.routes);
            let prev = routes.insert(k.clone(), v.clone());
            assert!(
                prev.is_none(),
                "method {:?} routed twice",
                String::from_utf8_lossy(k)
            );
        }
        self
    }

    /// True if `method` is routed.
    pub fn has_method(&self, method: &str) -> bool {
        self.routes.contains_key(method.as_bytes())
    }

    /// The routed method names, sorted.
    pub fn methods(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .routes
            .keys()
            .filter_map(|k| std::str::from_utf8(k).ok())
            .collect();
        v.sort_unstable();
        v
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("methods", &self.methods())
            .finish()
    }
}

impl Service<Request<Body>> for Router {
    type Response = Response<Body>;
    type Error = Status;
    type Future = RouteFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> RouteFuture {
        match self.routes.get(&req.method().as_bytes()[..]) {
            Some(h) => RouteFuture(Inner::Found(h.call(req))),
            None => RouteFuture(Inner::NotFound(Some(Status::unimplemented(format!(
                "unknown method {:?}",
                req.method().as_str()
            ))))),
        }
    }
}

/// The future of a [`Router`] call.
pub struct RouteFuture(Inner);

enum Inner {
    Found(BoxFuture<Result<Response<Body>, Status>>),
    NotFound(Option<Status>),
}

impl Future for RouteFuture {
    type Output = Result<Response<Body>, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            Inner::Found(f) => f.as_mut().poll(cx),
            Inner::NotFound(s) => Poll::Ready(Err(s
                .take()
                .unwrap_or_else(|| Status::internal("polled after completion")))),
        }
    }
}

impl fmt::Debug for RouteFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RouteFuture")
    }
}
