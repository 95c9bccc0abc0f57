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
//! let router: Router = Router::new()
//!     .route("greeter.Greeter/Greet", unary(greet))                        // JSON
//!     .route("greeter.Greeter/GreetAny", unary(greet).codec((Json, Proto))); // JSON or protobuf
//! assert!(router.has_method("greeter.Greeter/Greet"));
//! ```
//!
//! Handlers that need shared state (a database pool, a cache) take it as a
//! first argument, [`State`], the way axum does; the router gets the state
//! once with [`Router::with_state`]:
//!
//! ```
//! use std::sync::Arc;
//! use trpc::{server::{unary, Router, State}, Request, Response, Status};
//!
//! #[derive(Clone, Default)]
//! struct AppState { greeting: Arc<str> }
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Hello { name: String }
//!
//! async fn greet(State(app): State<AppState>, req: Request<Hello>) -> Result<Response<Hello>, Status> {
//!     let name = format!("{} {}", app.greeting, req.into_inner().name);
//!     Ok(Response::new(Hello { name }))
//! }
//!
//! let router: Router = Router::new()
//!     .route("greeter.Greeter/Greet", unary(greet))
//!     .with_state(AppState { greeting: "hello".into() });
//! ```
//!
//! Middleware for some methods only (a timeout that must not cut a
//! long-lived stream, say) goes on with [`Router::route_layer`], which wraps
//! the routes added before it; layers for every call go on the server.

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
use tower_layer::Layer;
use tower_service::Service;

use crate::body::{Body, Payload};
use crate::codec::{codec_name, encode_once, set_codec_name, CodecSet, Json};
use crate::request::{Request, Response};
use crate::status::{BoxError, Status};
use crate::stream::Streaming;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A type-erased method handler: what the router stores. `S` is the state
/// its function takes ([`State`]); `()` for none.
pub trait Handler<S = ()>: Send + Sync + 'static {
    /// Handles one call with the router's state.
    fn call(&self, state: &S, req: Request<Body>) -> BoxFuture<Result<Response<Body>, Status>>;
}

/// The router's state, as the first argument of a handler function (see
/// [`Router::with_state`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct State<S>(pub S);

/// A handler function: `async fn(Request<T>) -> Result<Response<U>, Status>`
/// or, with the router's state, `async fn(State<S>, Request<T>) -> ...`.
/// `Args` tells the two apart; it is inferred.
pub trait HandlerFn<S, T, U, Args>: Clone + Send + Sync + 'static {
    /// The function's future.
    type Future: Future<Output = Result<Response<U>, Status>> + Send + 'static;
    /// Calls the function.
    fn call_fn(&self, state: &S, req: Request<T>) -> Self::Future;
}

impl<F, Fut, S, T, U> HandlerFn<S, T, U, (Request<T>,)> for F
where
    F: Fn(Request<T>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<U>, Status>> + Send + 'static,
{
    type Future = Fut;
    fn call_fn(&self, _state: &S, req: Request<T>) -> Fut {
        self(req)
    }
}

impl<F, Fut, S, T, U> HandlerFn<S, T, U, (State<S>, Request<T>)> for F
where
    F: Fn(State<S>, Request<T>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<U>, Status>> + Send + 'static,
    S: Clone,
{
    type Future = Fut;
    fn call_fn(&self, state: &S, req: Request<T>) -> Fut {
        self(State(state.clone()), req)
    }
}

/// A unary handler built by [`unary`].
pub struct Unary<F, Req, Resp, C, Args = ()> {
    f: F,
    codec: C,
    _types: PhantomData<fn(Req, Args) -> Resp>,
}

/// Wraps an `async fn(Request<Req>) -> Result<Response<Resp>, Status>` (or
/// one taking [`State`] first) as a unary handler using JSON; change the
/// codec with [`Unary::codec`].
pub fn unary<F, Req, Resp, Args>(f: F) -> Unary<F, Req, Resp, Json, Args> {
    Unary {
        f,
        codec: Json,
        _types: PhantomData,
    }
}

impl<F, Req, Resp, C, Args> Unary<F, Req, Resp, C, Args> {
    /// Accepts messages in `codec` instead: one codec, or a tuple such as
    /// `(Json, Proto)` to accept several (picked per call by `trpc-codec`).
    pub fn codec<C2: CodecSet<Req, Resp>>(self, codec: C2) -> Unary<F, Req, Resp, C2, Args> {
        Unary {
            f: self.f,
            codec,
            _types: PhantomData,
        }
    }
}

impl<S, F, Req, Resp, C, Args> Handler<S> for Unary<F, Req, Resp, C, Args>
where
    S: Clone + Send + Sync + 'static,
    F: HandlerFn<S, Req, Resp, Args>,
    C: CodecSet<Req, Resp>,
    Req: Send + 'static,
    Resp: Send + 'static,
    Args: 'static,
{
    fn call(&self, state: &S, req: Request<Body>) -> BoxFuture<Result<Response<Body>, Status>> {
        let f = self.f.clone();
        let codecs = self.codec.clone();
        let state = state.clone();
        Box::pin(async move {
            let which = pick_codec(&codecs, &req)?;
            let (parts, body) = req.into_parts();
            crate::stream::hold_request_credit(&parts.extensions);
            let payload = match body.into_once() {
                Ok(p) => p,
                Err(body) => body.into_single().await?,
            };
            let message = decode_request(&codecs, which, payload)?;
            let response = f
                .call_fn(&state, Request::from_parts(parts, message))
                .await?;
            typed_response(response, codecs.name_of(which), |message| {
                let bytes = encode_once(|buf| codecs.encode(which, &message, buf))?;
                Ok(Body::once(Payload::new(bytes)))
            })
        })
    }
}

impl<F, Req, Resp, C: fmt::Debug, Args> fmt::Debug for Unary<F, Req, Resp, C, Args> {
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
        req: $req_ty:ty, out: $out_ty:ty, ctor: [$($cg:ident),*] -> $ctor_out:ident,
        bounds: [$($bounds:tt)*],
        call: |$codecs:ident, $which:ident, $parts:ident, $body:ident| $make_req:expr,
        respond: |$resp:ident| $make_body:expr
    ) => {
        $(#[$doc])*
        pub struct $ty<F, Req, Resp, C, Args, Out> {
            f: F,
            codec: C,
            _types: PhantomData<fn(Req, Args) -> (Resp, Out)>,
        }

        $(#[$doc])*
        pub fn $ctor<F, Req, Resp, Args $(, $cg)*>(f: F) -> $ty<F, Req, Resp, Json, Args, $ctor_out> {
            $ty { f, codec: Json, _types: PhantomData }
        }

        impl<F, Req, Resp, C, Args, Out> $ty<F, Req, Resp, C, Args, Out> {
            /// Accepts messages in `codec` instead (see [`Unary::codec`]).
            pub fn codec<C2: CodecSet<Req, Resp>>(self, codec: C2) -> $ty<F, Req, Resp, C2, Args, Out> {
                $ty { f: self.f, codec, _types: PhantomData }
            }
        }

        impl<F, Req, Resp, C, Args, Out> fmt::Debug for $ty<F, Req, Resp, C, Args, Out> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(stringify!($ty))
            }
        }

        impl<St, F, Req, Resp, C, Args, Out> Handler<St> for $ty<F, Req, Resp, C, Args, Out>
        where
            St: Clone + Send + Sync + 'static,
            F: HandlerFn<St, $req_ty, $out_ty, Args>,
            C: CodecSet<Req, Resp>,
            Req: Send + 'static,
            Resp: Send + 'static,
            Args: 'static,
            Out: 'static,
            $($bounds)*
        {
            fn call(&self, state: &St, req: Request<Body>) -> BoxFuture<Result<Response<Body>, Status>> {
                let f = self.f.clone();
                let $codecs = self.codec.clone();
                let state = state.clone();
                Box::pin(async move {
                    let $which = pick_codec(&$codecs, &req)?;
                    let name = $codecs.name_of($which);
                    let ($parts, $body) = req.into_parts();
                    let request = $make_req;
                    let response = f.call_fn(&state, request).await?;
                    typed_response(response, name, |$resp| $make_body)
                })
            }
        }
    };
}

streaming_handler! {
    /// A server-streaming handler: one request message in, a stream of
    /// response messages out. Build with [`server_streaming`]; the function is
    /// `async fn(Request<Req>) -> Result<Response<S>, Status>` (or with
    /// [`State`] first) where `S` is a `Stream<Item = Result<Resp, Status>>`.
    /// End the stream with `Err(status)` to fail the call after the messages
    /// already sent, or with `Err(Status::ok_with_trailers(md))` to send
    /// trailers.
    server_streaming, ServerStreaming,
    req: Req, out: Out, ctor: [Out] -> Out,
    bounds: [Out: Stream<Item = Result<Resp, Status>> + Send + 'static,],
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
    /// `async fn(Request<Streaming<Req>>) -> Result<Response<Resp>, Status>`
    /// (or with [`State`] first).
    client_streaming, ClientStreaming,
    req: Streaming<Req>, out: Resp, ctor: [] -> Resp,
    bounds: [],
    call: |codecs, which, parts, body| {
        Request::from_parts(parts, request_stream(&codecs, which, body))
    },
    respond: |message| {
        let bytes = encode_once(|buf| codecs.encode(which, &message, buf))?;
        Ok(Body::once(Payload::new(bytes)))
    }
}

streaming_handler! {
    /// A bidirectional-streaming handler: streams both ways. Build with
    /// [`bidi_streaming`]; the function is
    /// `async fn(Request<Streaming<Req>>) -> Result<Response<S>, Status>` (or
    /// with [`State`] first) where `S` is a `Stream<Item = Result<Resp, Status>>`.
    bidi_streaming, BidiStreaming,
    req: Streaming<Req>, out: Out, ctor: [Out] -> Out,
    bounds: [Out: Stream<Item = Result<Resp, Status>> + Send + 'static,],
    call: |codecs, which, parts, body| {
        Request::from_parts(parts, request_stream(&codecs, which, body))
    },
    respond: |stream| Ok(response_body(codecs, which, stream))
}

/// Routes calls by method name (`package.Service/Method`) to handlers.
///
/// A `Router` is always ready and never fails at the service level: an unknown
/// method is an `Unimplemented` status for that call. `S` is the state its
/// handlers take ([`State`]); a router is served once it has its state
/// ([`Router::with_state`]), i.e. as a `Router<()>`.
pub struct Router<S = ()> {
    /// Keyed by the name's bytes, so a lookup needs no UTF-8 check; FxHash:
    /// the table is fixed once built, lookups cannot degrade it.
    routes: Arc<RouteTable<S>>,
}

type RouteTable<S> = HashMap<Box<[u8]>, Arc<dyn Handler<S>>, FxBuildHasher>;

impl<S> Clone for Router<S> {
    fn clone(&self) -> Self {
        Router {
            routes: self.routes.clone(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Default for Router<S> {
    fn default() -> Self {
        Router {
            routes: Arc::new(RouteTable::default()),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Router<S> {
    /// An empty router.
    pub fn new() -> Self {
        Router::default()
    }

    /// Adds a method.
    ///
    /// # Panics
    /// If `method` is already routed or has no `/`.
    pub fn route(mut self, method: &str, handler: impl Handler<S>) -> Self {
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
    ///
    /// # Panics
    /// If a method is routed in both.
    pub fn merge(mut self, other: Router<S>) -> Self {
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

    /// Gives the handlers their state: the router can then be served (and
    /// take more routes, of handlers without state, and route layers).
    pub fn with_state(self, state: S) -> Router<()> {
        let routes = self
            .routes
            .iter()
            .map(|(k, h)| {
                let h: Arc<dyn Handler<()>> = Arc::new(WithState {
                    inner: h.clone(),
                    state: state.clone(),
                });
                (k.clone(), h)
            })
            .collect();
        Router {
            routes: Arc::new(routes),
        }
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

impl Router<()> {
    /// Wraps every route added so far in `layer` (like axum's
    /// `Router::route_layer`): per-method middleware, such as a timeout for
    /// unary methods that must not cut a long-lived stream added after it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use trpc::{server::{server_streaming, unary, Router}, Request, Response, Status};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct M { n: u32 }
    /// # async fn get(r: Request<M>) -> Result<Response<M>, Status> { Ok(Response::new(r.into_inner())) }
    /// # async fn watch(r: Request<M>) -> Result<Response<futures_util::stream::Empty<Result<M, Status>>>, Status> {
    /// #     Ok(Response::new(futures_util::stream::empty()))
    /// # }
    /// let router: Router = Router::new()
    ///     .route("kv.Store/Get", unary(get))
    ///     .route_layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(1)))
    ///     .route("kv.Store/Watch", server_streaming(watch)); // no timeout
    /// ```
    pub fn route_layer<L>(self, layer: L) -> Router<()>
    where
        L: Layer<Route>,
        L::Service:
            Service<Request<Body>, Response = Response<Body>> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request<Body>>>::Error: Into<BoxError>,
        <L::Service as Service<Request<Body>>>::Future: Send + 'static,
    {
        let routes = self
            .routes
            .iter()
            .map(|(k, h)| {
                let svc = layer.layer(Route(h.clone()));
                let h: Arc<dyn Handler<()>> = Arc::new(Layered(svc));
                (k.clone(), h)
            })
            .collect();
        Router {
            routes: Arc::new(routes),
        }
    }
}

/// A handler with its state.
struct WithState<S> {
    inner: Arc<dyn Handler<S>>,
    state: S,
}

impl<S: Send + Sync + 'static> Handler<()> for WithState<S> {
    fn call(&self, _: &(), req: Request<Body>) -> BoxFuture<Result<Response<Body>, Status>> {
        self.inner.call(&self.state, req)
    }
}

/// One route of a router, as a `tower::Service` (what [`Router::route_layer`]
/// wraps). Always ready.
#[derive(Clone)]
pub struct Route(Arc<dyn Handler<()>>);

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Route")
    }
}

impl Service<Request<Body>> for Route {
    type Response = Response<Body>;
    type Error = Status;
    type Future = BoxFuture<Result<Response<Body>, Status>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        self.0.call(&(), req)
    }
}

/// A route behind a layer.
struct Layered<T>(T);

impl<T> Handler<()> for Layered<T>
where
    T: Service<Request<Body>, Response = Response<Body>> + Clone + Send + Sync + 'static,
    T::Error: Into<BoxError>,
    T::Future: Send + 'static,
{
    fn call(&self, _: &(), req: Request<Body>) -> BoxFuture<Result<Response<Body>, Status>> {
        let mut svc = self.0.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| svc.poll_ready(cx))
                .await
                .map_err(|e| Status::from_error(e.into()))?;
            svc.call(req)
                .await
                .map_err(|e| Status::from_error(e.into()))
        })
    }
}

impl<S> fmt::Debug for Router<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut methods: Vec<&str> = self
            .routes
            .keys()
            .filter_map(|k| std::str::from_utf8(k).ok())
            .collect();
        methods.sort_unstable();
        f.debug_struct("Router").field("methods", &methods).finish()
    }
}

impl Service<Request<Body>> for Router<()> {
    type Response = Response<Body>;
    type Error = Status;
    type Future = RouteFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> RouteFuture {
        match self.routes.get(&req.method().as_bytes()[..]) {
            Some(h) => RouteFuture(Inner::Found(h.call(&(), req))),
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
