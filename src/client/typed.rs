//! [`Client`]: typed calls over any `Service<Request<Body>>` stack.

use std::fmt;

use tower_service::Service;

use crate::body::{Body, Payload};
use crate::client::Trailers;
use crate::codec::{encode_once, set_codec_name, Codec, Json};
use crate::request::{Method, Request, RequestParts, Response};
use crate::status::{BoxError, Code, Status};
use crate::stream::Streaming;
use futures_core::Stream;

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
        Ok(self
            .unary(method, Request::new(message))
            .await?
            .into_inner())
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
        let resp = self.send_one(method.into(), request).await?;
        let (metadata, mut extensions, body) = resp.into_parts();
        let payload = single(body, &mut extensions).await?;
        let message = decode_response(&self.codec, payload)?;
        Ok(Response::from_parts(metadata, extensions, message))
    }

    /// Calls a server-streaming method: one request, a stream of replies.
    ///
    /// The call's deadline (if any) covers the whole stream; dropping the
    /// returned stream cancels the call on the server.
    pub async fn server_streaming<Req, Resp>(
        &mut self,
        method: impl Into<Method>,
        request: Request<Req>,
    ) -> Result<Response<Streaming<Resp>>, Status>
    where
        C: Codec<Req> + Codec<Resp>,
        S: Service<Request<Body>, Response = Response<Body>>,
        S::Error: Into<BoxError>,
        Resp: 'static,
    {
        let resp = self.send_one(method.into(), request).await?;
        Ok(self.typed_stream(resp))
    }

    /// Calls a client-streaming method: a stream of requests, one reply.
    pub async fn client_streaming<Req, Resp, St>(
        &mut self,
        method: impl Into<Method>,
        request: Request<St>,
    ) -> Result<Response<Resp>, Status>
    where
        C: Codec<Req> + Codec<Resp>,
        S: Service<Request<Body>, Response = Response<Body>>,
        S::Error: Into<BoxError>,
        St: Stream<Item = Req> + Send + 'static,
        Req: 'static,
    {
        let resp = self.send_stream(method.into(), request).await?;
        let (metadata, mut extensions, body) = resp.into_parts();
        let payload = single(body, &mut extensions).await?;
        let message = decode_response(&self.codec, payload)?;
        Ok(Response::from_parts(metadata, extensions, message))
    }

    /// Calls a bidirectional-streaming method: streams both ways, concurrently.
    pub async fn bidi_streaming<Req, Resp, St>(
        &mut self,
        method: impl Into<Method>,
        request: Request<St>,
    ) -> Result<Response<Streaming<Resp>>, Status>
    where
        C: Codec<Req> + Codec<Resp>,
        S: Service<Request<Body>, Response = Response<Body>>,
        S::Error: Into<BoxError>,
        St: Stream<Item = Req> + Send + 'static,
        Req: 'static,
        Resp: 'static,
    {
        let resp = self.send_stream(method.into(), request).await?;
        Ok(self.typed_stream(resp))
    }

    async fn send_one<Req>(
        &mut self,
        method: Method,
        request: Request<Req>,
    ) -> Result<Response<Body>, Status>
    where
        C: Codec<Req>,
        S: Service<Request<Body>, Response = Response<Body>>,
        S::Error: Into<BoxError>,
    {
        let (parts, message) = request.into_parts();
        let bytes = encode_once(|buf| self.codec.encode(&message, buf))?;
        self.send(
            method,
            parts,
            Body::once(Payload::new(bytes)),
            Codec::<Req>::name(&self.codec),
        )
        .await
    }

    async fn send_stream<Req, St>(
        &mut self,
        method: Method,
        request: Request<St>,
    ) -> Result<Response<Body>, Status>
    where
        C: Codec<Req>,
        S: Service<Request<Body>, Response = Response<Body>>,
        S::Error: Into<BoxError>,
        St: Stream<Item = Req> + Send + 'static,
        Req: 'static,
    {
        use futures_util::StreamExt;
        let (parts, stream) = request.into_parts();
        let codec = self.codec.clone();
        let name = Codec::<Req>::name(&codec);
        let body = Body::stream(
            stream.map(move |msg| Ok(Payload::new(Codec::<Req>::encode_to_bytes(&codec, &msg)?))),
        );
        self.send(method, parts, body, name).await
    }

    async fn send(
        &mut self,
        method: Method,
        mut parts: RequestParts,
        body: Body,
        codec: &'static str,
    ) -> Result<Response<Body>, Status>
    where
        S: Service<Request<Body>, Response = Response<Body>>,
        S::Error: Into<BoxError>,
    {
        parts.method = method;
        set_codec_name(&mut parts.metadata, codec);
        let req = Request::from_parts(parts, body);
        std::future::poll_fn(|cx| self.inner.poll_ready(cx))
            .await
            .map_err(|e| Status::from_error(e.into()))?;
        self.inner
            .call(req)
            .await
            .map_err(|e| Status::from_error(e.into()))
    }

    fn typed_stream<Resp>(&self, resp: Response<Body>) -> Response<Streaming<Resp>>
    where
        C: Codec<Resp>,
        Resp: 'static,
    {
        let codec = self.codec.clone();
        resp.map(move |body| Streaming::new(body, move |p| decode_response(&codec, p)))
    }
}

/// The one message of a unary-shaped reply. A reply that arrived as a
/// stream (a gRPC reply whose trailers came after its message) ends with its
/// trailers: they go into `extensions` as [`Trailers`], as for a native reply.
async fn single(body: Body, extensions: &mut http::Extensions) -> Result<Payload, Status> {
    use futures_util::StreamExt;
    if !body.is_stream() {
        return body.into_single().await;
    }
    let mut body = body;
    let first = match body.next().await {
        Some(Ok(p)) => p,
        Some(Err(e)) if e.code() != Code::Ok => return Err(e),
        _ => return Err(Status::invalid_argument("expected one message, got none")),
    };
    match body.next().await {
        None => {}
        Some(Err(e)) if e.code() == Code::Ok && !e.metadata().is_empty() => {
            extensions.insert(Trailers(e.metadata().clone()));
        }
        Some(Err(e)) if e.code() == Code::Ok => {}
        Some(Err(e)) => return Err(e),
        Some(Ok(_)) => {
            return Err(Status::invalid_argument(
                "expected one message, got more than one",
            ))
        }
    }
    Ok(first)
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
