//! [`Client`]: typed calls over any `Service<Request<Body>>` stack.

use std::fmt;

use tower::ServiceExt;
use tower_service::Service;

use crate::body::{Body, Payload};
use crate::codec::{set_codec_name, Codec, Json};
use crate::request::{Method, Request, Response};
use crate::status::{BoxError, Code, Status};

/// Typed calls with codec `C` over a service stack `S` (a [`Channel`](crate::Channel)
/// wrapped in any layers).
///
/// ```no_run
/// # async fn f() -> Result<(), trpc::Status> {
/// use std::time::Duration;
/// use tower::ServiceBuilder;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Say { message: String }
///
/// let channel = trpc::Endpoint::from_static("tcp://127.0.0.1:7000").connect().await?;
/// let stack = ServiceBuilder::new()
///     .concurrency_limit(64)
///     .service(channel);
/// let mut client = trpc::Client::new(stack);
/// let mut req = trpc::Request::new(Say { message: "hi".into() });
/// req.set_timeout(Duration::from_millis(200));
/// let reply: trpc::Response<Say> = client.unary("echo.Echo/Say", req).await?;
/// println!("{}", reply.get_ref().message);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client<S, C = Json> {
    inner: S,
    codec: C,
}

impl<S> Client<S, Json> {
    /// A JSON client.
    pub fn new(inner: S) -> Self {
        Client { inner, codec: Json }
    }
}

impl<S, C> Client<S, C> {
    /// A client with another codec, e.g. [`Proto`](crate::codec::Proto).
    pub fn with_codec(inner: S, codec: C) -> Self {
        Client { inner, codec }
    }

    /// The service stack.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Mutable service stack.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Takes the service stack.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Calls a unary method with a bare message (no metadata or deadline).
    pub async fn unary_message<Req, Resp>(
        &mut self,
        method: impl Into<Method>,
        message: Req,
    ) -> Result<Resp, Status>
    where
        C: Codec<Req> + Codec<Resp>,
        S: Service<Request<Body>, Response = Response<Body>>,
        S::Error: Into<BoxError>,
    {
        Ok(self.unary(method, Request::new(message)).await?.into_inner())
    }

    /// Calls a unary method: encodes the request with the codec, sends it
    /// through the stack, decodes the reply. Errors of any layer are mapped with
    /// [`Status::from_error`].
    pub async fn unary<Req, Resp>(
        &mut self,
        method: impl Into<Method>,
        request: Request<Req>,
    ) -> Result<Response<Resp>, Status>
    where
        C: Codec<Req> + Codec<Resp>,
        S: Service<Request<Body>, Response = Response<Body>>,
        S::Error: Into<BoxError>,
    {
        let (mut parts, message) = request.into_parts();
        parts.method = method.into();
        let bytes = Codec::<Req>::encode_to_bytes(&self.codec, &message)?;
        set_codec_name(&mut parts.metadata, Codec::<Req>::name(&self.codec));
        let req = Request::from_parts(parts, Body::once(Payload::new(bytes)));
        let svc = self
            .inner
            .ready()
            .await
            .map_err(|e| Status::from_error(e.into()))?;
        let resp = svc
            .call(req)
            .await
            .map_err(|e| Status::from_error(e.into()))?;
        let (metadata, extensions, body) = resp.into_parts();
        let payload = body.into_single().await?;
        let message = decode_response(&self.codec, payload)?;
        Ok(Response::from_parts(metadata, extensions, message))
    }
}

/// Decodes a response payload; a bad payload from the server is `Internal`.
fn decode_response<C: Codec<T>, T>(codec: &C, payload: Payload) -> Result<T, Status> {
    if payload.compressed {
        return Err(Status::internal(
            "response is compressed but no decompression layer is installed",
        ));
    }
    codec.decode(payload.bytes).map_err(|e| {
        if e.code() == Code::InvalidArgument {
            Status::internal(format!("undecodable response: {}", e.message()))
        } else {
            e
        }
    })
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for Client<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("inner", &self.inner)
            .field("codec", &self.codec)
            .finish()
    }
}
