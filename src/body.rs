//! Message bodies: one encoded message for unary calls, a stream of them for
//! streaming calls.
//!
//! Layers that look at payloads (compression, metrics, logging) see a [`Body`] of
//! [`Payload`]s: already-serialised message bytes plus a per-message `compressed`
//! flag. A unary body is cheap to clone ([`Body::try_clone`]), which is what lets
//! tower's retry and hedge middleware re-send a request.
//!
//! A streaming body ends with its status: see [`crate::stream`] for the
//! convention (`None`, a final `Err(status)`, or `Err` with an OK status
//! carrying trailers).

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;

use crate::status::Status;

/// One encoded message as it travels on the wire.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Payload {
    /// The message bytes (serialised, possibly compressed).
    pub bytes: Bytes,
    /// True when `bytes` are compressed with the encoding named in the
    /// `trpc-encoding` metadata of the sender's side of the call.
    pub compressed: bool,
}

impl Payload {
    /// An uncompressed payload.
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Payload {
            bytes: bytes.into(),
            compressed: false,
        }
    }

    /// Length of the bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True if there are no bytes (an empty protobuf message, for instance).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload")
            .field("len", &self.bytes.len())
            .field("compressed", &self.compressed)
            .finish()
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Self {
        Payload::new(bytes)
    }
}

/// A boxed stream of payloads, as stored in a streaming [`Body`].
pub type PayloadStream = Pin<Box<dyn Stream<Item = Result<Payload, Status>> + Send + 'static>>;

/// The body of a request or response.
///
/// ```
/// use trpc::{Body, Payload};
/// let body = Body::once(Payload::new("hi"));
/// assert!(body.try_clone().is_some());
/// assert_eq!(body.as_once().unwrap().bytes, "hi");
/// ```
pub struct Body {
    kind: Kind,
}

enum Kind {
    Empty,
    Once(Payload),
    Stream(PayloadStream),
}

impl Body {
    /// A body with no message (a stream that ends at once).
    pub const fn empty() -> Self {
        Body { kind: Kind::Empty }
    }

    /// A body of exactly one message: what unary calls carry.
    pub fn once(payload: impl Into<Payload>) -> Self {
        Body {
            kind: Kind::Once(payload.into()),
        }
    }

    /// A streaming body.
    pub fn stream<S>(stream: S) -> Self
    where
        S: Stream<Item = Result<Payload, Status>> + Send + 'static,
    {
        Body {
            kind: Kind::Stream(Box::pin(stream)),
        }
    }

    /// True for a streaming body.
    pub fn is_stream(&self) -> bool {
        matches!(self.kind, Kind::Stream(_))
    }

    /// The single message of a unary body.
    pub fn as_once(&self) -> Option<&Payload> {
        match &self.kind {
            Kind::Once(p) => Some(p),
            _ => None,
        }
    }

    /// Mutable access to the single message of a unary body.
    pub fn as_once_mut(&mut self) -> Option<&mut Payload> {
        match &mut self.kind {
            Kind::Once(p) => Some(p),
            _ => None,
        }
    }

    /// Takes the single message out of a unary body.
    pub fn into_once(self) -> Result<Payload, Body> {
        match self.kind {
            Kind::Once(p) => Ok(p),
            kind => Err(Body { kind }),
        }
    }

    /// A copy of a unary or empty body (cheap: the bytes are reference counted);
    /// `None` for streams, which cannot be replayed.
    pub fn try_clone(&self) -> Option<Body> {
        match &self.kind {
            Kind::Empty => Some(Body::empty()),
            Kind::Once(p) => Some(Body::once(p.clone())),
            Kind::Stream(_) => None,
        }
    }

    /// Applies `f` to every message, keeping the shape (used by layers such as
    /// compression). Errors from `f` end a stream with that status.
    pub fn map_payloads<F>(self, f: F) -> Result<Body, Status>
    where
        F: FnMut(Payload) -> Result<Payload, Status> + Send + Unpin + 'static,
    {
        let mut f = f;
        match self.kind {
            Kind::Empty => Ok(Body::empty()),
            Kind::Once(p) => Ok(Body::once(f(p)?)),
            Kind::Stream(s) => Ok(Body::stream(MapPayloads { inner: s, f })),
        }
    }

    /// Receives the single message of a unary-shaped body, whatever its kind:
    /// a stream must yield exactly one message.
    pub async fn into_single(self) -> Result<Payload, Status> {
        match self.kind {
            Kind::Once(p) => Ok(p),
            Kind::Empty => Err(Status::invalid_argument("expected one message, got none")),
            Kind::Stream(mut s) => {
                use futures_util::StreamExt;
                let first = match s.next().await {
                    Some(Ok(p)) => p,
                    Some(Err(e)) if e.code() != crate::Code::Ok => return Err(e),
                    _ => return Err(Status::invalid_argument("expected one message, got none")),
                };
                match s.next().await {
                    None => Ok(first),
                    Some(Err(e)) if e.code() == crate::Code::Ok => Ok(first),
                    Some(Err(e)) => Err(e),
                    Some(Ok(_)) => Err(Status::invalid_argument(
                        "expected one message, got more than one",
                    )),
                }
            }
        }
    }
}

struct MapPayloads<F> {
    inner: PayloadStream,
    f: F,
}

impl<F> Stream for MapPayloads<F>
where
    F: FnMut(Payload) -> Result<Payload, Status> + Unpin,
{
    type Item = Result<Payload, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(p))) => Poll::Ready(Some((this.f)(p))),
            other => other,
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl From<Payload> for Body {
    fn from(p: Payload) -> Self {
        Body::once(p)
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::once(Payload::new(b))
    }
}

impl Stream for Body {
    type Item = Result<Payload, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Once(_) => match std::mem::replace(&mut this.kind, Kind::Empty) {
                Kind::Once(p) => Poll::Ready(Some(Ok(p))),
                _ => Poll::Ready(None),
            },
            Kind::Stream(s) => s.as_mut().poll_next(cx),
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Empty => f.write_str("Body::Empty"),
            Kind::Once(p) => f.debug_tuple("Body::Once").field(p).finish(),
            Kind::Stream(_) => f.write_str("Body::Stream(..)"),
        }
    }
}
