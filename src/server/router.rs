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
use tower_service::Service;

use crate::body::{Body, Payload};
use crate::codec::{codec_name, set_codec_name, CodecSet, Json};
use crate::request::{Request, Response};
use crate::status::Status;

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
            let name = codec_name(req.metadata());
            let which = codecs.pick(name).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "method {} does not accept codec {name:?} (accepted: {})",
                    req.method(),
                    codecs.names().join(", ")
                ))
            })?;
            let (parts, body) = req.into_parts();
            let payload = match body.into_once() {
                Ok(p) => p,
                Err(body) => body.into_single().await?,
            };
            if payload.compressed {
                return Err(Status::unimplemented(
                    "message is compressed but the server has no decompression layer",
                ));
            }
            let message = codecs.decode(which, payload.bytes)?;
            let response = f(Request::from_parts(parts, message)).await?;
            let (mut metadata, extensions, message) = response.into_parts();
            let mut buf = BytesMut::new();
            codecs.encode(which, &message, &mut buf)?;
            set_codec_name(&mut metadata, codecs.name_of(which));
            Ok(Response::from_parts(
                metadata,
                extensions,
                Body::once(Payload::new(buf.freeze())),
            ))
        })
    }
}

impl<F, Req, Resp, C: fmt::Debug> fmt::Debug for Unary<F, Req, Resp, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unary").field("codec", &self.codec).finish()
    }
}

/// Routes calls by method name (`package.Service/Method`) to handlers.
///
/// A `Router` is always ready and never fails at the service level: an unknown
/// method is an `Unimplemented` status for that call.
#[derive(Clone, Default)]
pub struct Router {
    routes: Arc<HashMap<Box<str>, Arc<dyn Handler>>>,
}

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
        let prev = routes.insert(method.into(), Arc::new(handler));
        assert!(prev.is_none(), "method {method:?} routed twice");
        self
    }

    /// Adds every method of `other`.
    pub fn merge(mut self, other: Router) -> Self {
        for (k, v) in other.routes.iter() {
            let routes = Arc::make_mut(&mut self.routes);
            let prev = routes.insert(k.clone(), v.clone());
            assert!(prev.is_none(), "method {k:?} routed twice");
        }
        self
    }

    /// True if `method` is routed.
    pub fn has_method(&self, method: &str) -> bool {
        self.routes.contains_key(method)
    }

    /// The routed method names, sorted.
    pub fn methods(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.routes.keys().map(|k| &**k).collect();
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
        match self.routes.get(req.method().as_str()) {
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
