//! [`HttpBody`]: the body of every HTTP response [`HttpService`](super::HttpService)
//! sends — gRPC messages then trailers, a JSON document, or newline-delimited
//! JSON for a streamed reply.

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use http_body::{Frame, SizeHint};

use crate::grpc::body::Guarded;
use crate::grpc::{codec, status as grpc_status};
use crate::metadata::MetadataMap;
use crate::status::{Code, Status};

/// The body of a response from [`HttpService`](super::HttpService).
pub struct HttpBody {
    kind: Kind,
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Grpc(GrpcBody),
    Ndjson(NdjsonBody),
}

impl HttpBody {
    pub(crate) fn empty() -> Self {
        HttpBody { kind: Kind::Empty }
    }

    pub(crate) fn full(bytes: Bytes) -> Self {
        HttpBody {
            kind: Kind::Full(Some(bytes)),
        }
    }

    pub(crate) fn grpc(body: Guarded, ok_trailers: Option<MetadataMap>, max_send: usize) -> Self {
        HttpBody {
            kind: Kind::Grpc(GrpcBody {
                body,
                pending: None,
                trailers: None,
                ok_trailers,
                max_send,
                done: false,
            }),
        }
    }

    pub(crate) fn ndjson(body: Guarded) -> Self {
        HttpBody {
            kind: Kind::Ndjson(NdjsonBody { body, done: false }),
        }
    }
}

impl fmt::Debug for HttpBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            Kind::Empty => "HttpBody::Empty",
            Kind::Full(_) => "HttpBody::Full",
            Kind::Grpc(_) => "HttpBody::Grpc",
            Kind::Ndjson(_) => "HttpBody::Ndjson",
        })
    }
}

impl http_body::Body for HttpBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Grpc(g) => g.poll_frame(cx).map(|f| f.map(Ok)),
            Kind::Ndjson(n) => n.poll_frame(cx).map(|f| f.map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(b) => b.is_none(),
            Kind::Grpc(g) => g.done,
            Kind::Ndjson(n) => n.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            _ => SizeHint::default(),
        }
    }
}

/// gRPC messages, then the status in trailers.
struct GrpcBody {
    body: Guarded,
    /// The message bytes of a large message whose prefix went out first.
    pending: Option<Bytes>,
    trailers: Option<HeaderMap>,
    /// Trailing metadata for a successful end (a unary reply's).
    ok_trailers: Option<MetadataMap>,
    max_send: usize,
    done: bool,
}

impl GrpcBody {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame<Bytes>>> {
        if let Some(b) = self.pending.take() {
            return Poll::Ready(Some(Frame::data(b)));
        }
        if self.done {
            return Poll::Ready(self.trailers.take().map(Frame::trailers));
        }
        let status = match self.body.poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(p))) if p.len() > self.max_send => {
                Status::resource_exhausted(format!(
                    "response message of {} bytes exceeds the limit of {} bytes",
                    p.len(),
                    self.max_send
                ))
            }
            Poll::Ready(Some(Ok(p))) => {
                let (first, rest) = codec::encode(p);
                self.pending = rest;
                return Poll::Ready(Some(Frame::data(first)));
            }
            Poll::Ready(Some(Err(s))) => s,
            Poll::Ready(None) => match self.ok_trailers.take() {
                Some(md) => Status::ok_with_trailers(md),
                None => Status::new(Code::Ok, ""),
            },
        };
        self.done = true;
        log_failure(&status);
        let mut trailers = HeaderMap::new();
        grpc_status::write(&status, &mut trailers);
        Poll::Ready(Some(Frame::trailers(trailers)))
    }
}

/// Logs a call that failed on the server (the level follows the code).
pub(crate) fn log_failure(status: &Status) {
    match status.code() {
        Code::Ok => {}
        Code::Internal | Code::Unknown | Code::DataLoss => {
            tracing::warn!(%status, "call failed")
        }
        _ => tracing::debug!(%status, "call failed"),
    }
}

/// A streamed reply as newline-delimited JSON: one message a line; a failure
/// after the first message is a last line `{"error": {...}}`.
struct NdjsonBody {
    body: Guarded,
    done: bool,
}

impl NdjsonBody {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame<Bytes>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.body.poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(p))) if p.compressed => {
                self.done = true;
                Poll::Ready(Some(Frame::data(error_line(&Status::internal(
                    "a compressed message cannot be sent as JSON",
                )))))
            }
            Poll::Ready(Some(Ok(p))) => {
                let mut line = BytesMut::with_capacity(p.len() + 1);
                line.put_slice(&p.bytes);
                line.put_u8(b'\n');
                Poll::Ready(Some(Frame::data(line.freeze())))
            }
            Poll::Ready(Some(Err(s))) if s.code() == Code::Ok => {
                self.done = true;
                let mut trailers = HeaderMap::new();
                crate::grpc::metadata::write(s.metadata(), &mut trailers);
                Poll::Ready(Some(Frame::trailers(trailers)))
            }
            Poll::Ready(Some(Err(s))) => {
                self.done = true;
                log_failure(&s);
                Poll::Ready(Some(Frame::data(error_line(&s))))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
        }
    }
}

fn error_line(s: &Status) -> Bytes {
    let mut v =
        serde_json::to_vec(&serde_json::json!({ "error": error_json(s) })).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// The JSON form of a failed call: `{"code": "NOT_FOUND", "message": "..."}`,
/// plus `"details"` (base64) when the status has details.
pub(crate) fn error_json(s: &Status) -> serde_json::Value {
    let mut v = serde_json::json!({
        "code": s.code().as_str(),
        "message": s.message(),
    });
    if !s.details().is_empty() {
        v["details"] = serde_json::Value::String(grpc_status::b64_encode(s.details()));
    }
    v
}

/// The `content-type` of JSON replies.
pub(crate) const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
/// The `content-type` of streamed JSON replies.
pub(crate) const APPLICATION_NDJSON: HeaderValue = HeaderValue::from_static("application/x-ndjson");
