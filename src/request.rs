//! [`Request`], [`Response`] and [`Method`]: a message plus the context that travels
//! with it (metadata, deadline, peer, extensions).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use http::Extensions;
use tokio::time::Instant;

use crate::body::Body;
use crate::metadata::MetadataMap;
use crate::status::Status;

/// A method name, `package.Service/Method`, cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Method(ByteString);

impl Method {
    /// A method from a static string (no allocation).
    pub const fn from_static(name: &'static str) -> Method {
        Method(ByteString::from_static(name))
    }

    /// A method from UTF-8 bytes received on the wire.
    pub fn from_bytes(bytes: Bytes) -> Result<Method, Status> {
        if bytes.is_empty() {
            return Err(Status::invalid_argument("empty method name"));
        }
        // Checked once here: `as_str` is then free.
        ByteString::try_from(bytes)
            .map(Method)
            .map_err(|_| Status::invalid_argument("method name is not UTF-8"))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &Bytes {
        self.0.as_bytes()
    }

    /// The service part: `package.Service` of `package.Service/Method`.
    pub fn service(&self) -> &str {
        let s = self.as_str();
        s.rsplit_once('/').map(|(svc, _)| svc).unwrap_or(s)
    }

    /// True if no method is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&'static str> for Method {
    fn from(s: &'static str) -> Self {
        Method::from_static(s)
    }
}

impl From<String> for Method {
    fn from(s: String) -> Self {
        Method(ByteString::from(s))
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The wire protocol a request arrived on, as set by the server that received
/// it ([`Request::protocol`]); layers use it to label metrics and logs.
///
/// Requests built by a client carry [`Protocol::Trpc`] until a transport sends
/// them; the field has no effect on how a client sends a call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// The native trpc protocol (docs/PROTOCOL.md).
    #[default]
    Trpc,
    /// gRPC over HTTP/2.
    Grpc,
    /// The HTTP/JSON gateway form (`POST /package.Service/Method`).
    Http,
}

impl Protocol {
    /// The lower-case name used in metric labels and logs: `trpc`, `grpc`, `http`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Trpc => "trpc",
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A call's request: the message plus method, metadata, deadline and extensions.
///
/// ```
/// use std::time::Duration;
/// let mut req = trpc::Request::new("hello").with_method("echo.Echo/Say");
/// req.metadata_mut().insert("x-tenant", "acme");
/// req.set_timeout(Duration::from_millis(200));
/// assert_eq!(req.method().as_str(), "echo.Echo/Say");
/// assert!(req.deadline().is_some());
/// ```
pub struct Request<T> {
    method: Method,
    metadata: MetadataMap,
    deadline: Option<Instant>,
    /// The peer and the transport's deadline enforcement (server side).
    origin: Option<Arc<Origin>>,
    stream_id: u32,
    protocol: Protocol,
    extensions: Extensions,
    message: T,
}

impl<T> Request<T> {
    /// A request with no method, metadata or deadline.
    pub fn new(message: T) -> Self {
        Request {
            method: Method::default(),
            metadata: MetadataMap::new(),
            deadline: None,
            origin: None,
            stream_id: 0,
            protocol: Protocol::Trpc,
            extensions: Extensions::new(),
            message,
        }
    }

    /// The stream id of the call on its connection (set by the server; 0 when
    /// unknown). Useful in logs together with the peer address.
    pub fn stream_id(&self) -> u32 {
        self.stream_id
    }

    /// Sets the stream id.
    pub fn set_stream_id(&mut self, id: u32) {
        self.stream_id = id;
    }

    /// The protocol the request arrived on (server side).
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Sets the protocol (done by the server that receives the request).
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
    }

    /// Sets the method (builder style).
    pub fn with_method(mut self, method: impl Into<Method>) -> Self {
        self.method = method.into();
        self
    }

    /// The method being called.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Sets the method.
    pub fn set_method(&mut self, method: impl Into<Method>) {
        self.method = method.into();
    }

    /// Request metadata.
    pub fn metadata(&self) -> &MetadataMap {
        &self.metadata
    }

    /// Mutable request metadata.
    pub fn metadata_mut(&mut self) -> &mut MetadataMap {
        &mut self.metadata
    }

    /// The call's deadline. On the server it is the earlier of the caller's
    /// deadline and the server's configured timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Sets the deadline, keeping the earlier one if a deadline is already set.
    ///
    /// On a server whose transport enforces deadlines
    /// ([`Request::deadline_enforced`]) the transport learns of the new
    /// deadline at once: a layer that tightens the deadline needs no timer of
    /// its own.
    pub fn set_deadline(&mut self, deadline: Instant) {
        let new = match self.deadline {
            Some(d) if d <= deadline => return,
            _ => deadline,
        };
        self.deadline = Some(new);
        if let Some(watch) = self.deadline_watch() {
            watch.tighten(self.stream_id, new);
        }
    }

    /// Replaces the deadline unconditionally (`None` removes it). A transport
    /// that enforces deadlines ([`Request::deadline_enforced`]) only ever
    /// tightens the deadline it enforces: a later or removed deadline does not
    /// extend the call.
    pub fn replace_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
        if let (Some(watch), Some(d)) = (self.deadline_watch(), deadline) {
            watch.tighten(self.stream_id, d);
        }
    }

    /// True when the transport that received this request (a trpc server)
    /// enforces its deadline: when it passes the transport drops the call and
    /// answers DEADLINE_EXCEEDED, so layers need not keep a timer of their own.
    pub fn deadline_enforced(&self) -> bool {
        self.deadline_watch().is_some()
    }

    fn deadline_watch(&self) -> Option<&Arc<dyn DeadlineWatch>> {
        self.origin.as_ref()?.deadline_watch.as_ref()
    }

    /// Attaches what the receiving connection shares with its requests: the
    /// peer's address and the transport's deadline enforcement.
    pub(crate) fn set_origin(&mut self, origin: Arc<Origin>) {
        self.origin = Some(origin);
    }

    /// Sets the deadline to now + `timeout`, keeping an earlier existing deadline.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.set_deadline(Instant::now() + timeout);
    }

    /// Time left until the deadline (zero when passed), `None` without deadline.
    pub fn time_remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The peer's address (set by the server).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.origin.as_ref()?.remote_addr
    }

    /// Sets the peer address.
    pub fn set_remote_addr(&mut self, addr: Option<SocketAddr>) {
        self.origin = Origin::with_remote_addr(self.origin.as_deref(), addr);
    }

    /// Extensions: typed values layers attach for each other (never sent).
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Mutable extensions.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// The message.
    pub fn get_ref(&self) -> &T {
        &self.message
    }

    /// Mutable message.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.message
    }

    /// Takes the message, dropping the context.
    pub fn into_inner(self) -> T {
        self.message
    }

    /// Maps the message, keeping the context.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Request<U> {
        let (parts, message) = self.into_parts();
        Request::from_parts(parts, f(message))
    }

    /// Splits into context and message.
    pub fn into_parts(self) -> (RequestParts, T) {
        (
            RequestParts {
                method: self.method,
                metadata: self.metadata,
                deadline: self.deadline,
                origin: self.origin,
                stream_id: self.stream_id,
                protocol: self.protocol,
                extensions: self.extensions,
            },
            self.message,
        )
    }

    /// Joins context and message.
    pub fn from_parts(parts: RequestParts, message: T) -> Self {
        Request {
            method: parts.method,
            metadata: parts.metadata,
            deadline: parts.deadline,
            origin: parts.origin,
            stream_id: parts.stream_id,
            protocol: parts.protocol,
            extensions: parts.extensions,
            message,
        }
    }
}

impl Request<Body> {
    /// A copy for a retry or hedge, when the body is not a stream (cheap: bytes
    /// are reference counted); `None` for streaming requests.
    pub fn try_clone(&self) -> Option<Self> {
        Some(Request {
            method: self.method.clone(),
            metadata: self.metadata.clone(),
            deadline: self.deadline,
            // A copy is not the call the transport tracks.
            origin: Origin::with_remote_addr(None, self.remote_addr()),
            stream_id: self.stream_id,
            protocol: self.protocol,
            extensions: self.extensions.clone(),
            message: self.message.try_clone()?,
        })
    }
}

impl<T: fmt::Debug> fmt::Debug for Request<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("metadata", &self.metadata)
            .field("deadline", &self.deadline)
            .field("remote_addr", &self.remote_addr())
            .field("message", &self.message)
            .finish()
    }
}

/// A request without its message (see [`Request::into_parts`]).
#[derive(Debug)]
pub struct RequestParts {
    /// The method.
    pub method: Method,
    /// Request metadata.
    pub metadata: MetadataMap,
    /// The deadline.
    pub deadline: Option<Instant>,
    origin: Option<Arc<Origin>>,
    /// The stream id (server side).
    pub stream_id: u32,
    /// The protocol the request arrived on (server side).
    pub protocol: Protocol,
    /// Extensions.
    pub extensions: Extensions,
}

impl RequestParts {
    /// The peer address (set by the server).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.origin.as_ref()?.remote_addr
    }
}

/// A call's response: the message plus metadata and extensions.
pub struct Response<T> {
    metadata: MetadataMap,
    extensions: Extensions,
    message: T,
}

impl<T> Response<T> {
    /// A response with empty metadata.
    pub fn new(message: T) -> Self {
        Response {
            metadata: MetadataMap::new(),
            extensions: Extensions::new(),
            message,
        }
    }

    /// Response metadata (sent before the message).
    pub fn metadata(&self) -> &MetadataMap {
        &self.metadata
    }

    /// Mutable response metadata.
    pub fn metadata_mut(&mut self) -> &mut MetadataMap {
        &mut self.metadata
    }

    /// Extensions (never sent).
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Mutable extensions.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// The message.
    pub fn get_ref(&self) -> &T {
        &self.message
    }

    /// Mutable message.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.message
    }

    /// Takes the message.
    pub fn into_inner(self) -> T {
        self.message
    }

    /// Maps the message, keeping metadata and extensions.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Response<U> {
        Response {
            metadata: self.metadata,
            extensions: self.extensions,
            message: f(self.message),
        }
    }

    /// Splits into metadata, extensions and message.
    pub fn into_parts(self) -> (MetadataMap, Extensions, T) {
        (self.metadata, self.extensions, self.message)
    }

    /// Joins metadata, extensions and message.
    pub fn from_parts(metadata: MetadataMap, extensions: Extensions, message: T) -> Self {
        Response {
            metadata,
            extensions,
            message,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Response<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("metadata", &self.metadata)
            .field("message", &self.message)
            .finish()
    }
}

/// Where a server transport learns that a layer tightened a call's deadline.
pub(crate) trait DeadlineWatch: Send + Sync + 'static {
    /// Stream `stream_id` must now end by `deadline` (never later than before).
    fn tighten(&self, stream_id: u32, deadline: Instant);
}

/// What the server connection that received a request shares with all of
/// its requests: one pointer in each request instead of the peer's address
/// and the deadline watch side by side.
pub(crate) struct Origin {
    pub(crate) remote_addr: Option<SocketAddr>,
    /// Set by a transport that enforces deadlines itself: it learns of every
    /// later [`Request::set_deadline`].
    pub(crate) deadline_watch: Option<Arc<dyn DeadlineWatch>>,
}

impl Origin {
    /// `origin` with another peer address (a new one, shared with no other
    /// request); `None` when it would hold nothing.
    fn with_remote_addr(origin: Option<&Origin>, addr: Option<SocketAddr>) -> Option<Arc<Origin>> {
        let deadline_watch = origin.and_then(|o| o.deadline_watch.clone());
        (addr.is_some() || deadline_watch.is_some()).then(|| {
            Arc::new(Origin {
                remote_addr: addr,
                deadline_watch,
            })
        })
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Origin")
            .field("remote_addr", &self.remote_addr)
            .field("deadline_enforced", &self.deadline_watch.is_some())
            .finish()
    }
}
