//! Message streams over HTTP bodies: [`MessageStream`] decodes the messages
//! of any `http_body::Body` (a request on the server, a response on the
//! client); [`Guarded`] polls a handler's response [`Body`] under the call's
//! deadline with panics turned into INTERNAL.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use futures_core::Stream;
use http::HeaderMap;
use tokio::time::Sleep;

use super::codec::Decoder;
use crate::body::{Body, Payload};
use crate::request::Method;
use crate::status::{BoxError, Code, Status};

/// Which side reads the stream: a client ends it with the status in the
/// trailers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Server,
    Client,
}

/// The messages of an HTTP body.
pub(crate) struct MessageStream<B> {
    body: B,
    decoder: Decoder,
    side: Side,
    done: bool,
    /// Client side: the response's deadline.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<B> MessageStream<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(body: B, max: usize, side: Side, sleep: Option<Pin<Box<Sleep>>>) -> Self {
        MessageStream {
            body,
            decoder: Decoder::new(max),
            side,
            done: false,
            sleep,
        }
    }

    /// True while part of a message is buffered: the peer is in the middle
    /// of sending it.
    pub(crate) fn mid_message(&self) -> bool {
        !self.decoder.is_empty()
    }

    /// The next message; at the end, on the client side, the status from
    /// the trailers (the stream convention of [`crate::stream`]).
    pub(crate) fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Payload, Status>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match self.decoder.next() {
                Ok(Some(p)) => return Poll::Ready(Some(Ok(p))),
                Ok(None) => {}
                Err(e) => return self.fail(e),
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => {
                    if let Some(sleep) = &mut self.sleep {
                        if sleep.as_mut().poll(cx).is_ready() {
                            return self.fail(Status::deadline_exceeded(
                                "deadline exceeded while receiving the stream",
                            ));
                        }
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(mut data) => {
                        let n = data.remaining();
                        self.decoder.push(data.copy_to_bytes(n));
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            return self.end(Some(trailers));
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => return self.fail(body_error(e.into(), self.side)),
                Poll::Ready(None) => return self.end(None),
            }
        }
    }

    fn fail(&mut self, s: Status) -> Poll<Option<Result<Payload, Status>>> {
        self.done = true;
        Poll::Ready(Some(Err(s)))
    }

    fn end(&mut self, trailers: Option<HeaderMap>) -> Poll<Option<Result<Payload, Status>>> {
        self.done = true;
        if !self.decoder.is_empty() {
            return Poll::Ready(Some(Err(Status::internal(
                "the stream ended in the middle of a message",
            ))));
        }
        if self.side == Side::Server {
            return Poll::Ready(None);
        }
        let status = match trailers.as_ref().and_then(super::status::read) {
            Some(s) => s,
            None => Status::internal("the response ended without a grpc-status"),
        };
        if status.code() == Code::Ok && status.metadata().is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Ready(Some(Err(status)))
        }
    }
}

impl<B> Stream for MessageStream<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Item = Result<Payload, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_message(cx)
    }
}

/// Maps an error reading a body: the peer's RST_STREAM(CANCEL) is a
/// cancellation; other transport errors are UNAVAILABLE (client side) or
/// CANCELLED (server side: the call cannot go on).
pub(crate) fn body_error(e: BoxError, side: Side) -> Status {
    let e = match e.downcast::<Status>() {
        Ok(s) => return *s,
        Err(e) => e,
    };
    let text = e.to_string();
    match h2_reason(&*e) {
        Some(h2::Reason::CANCEL) => {
            Status::cancelled(format!("the peer cancelled the stream: {text}"))
        }
        Some(h2::Reason::REFUSED_STREAM) => {
            Status::unavailable(format!("the peer refused the stream: {text}")).with_refused(true)
        }
        _ if side == Side::Server => Status::cancelled(format!("request stream failed: {text}")),
        _ => Status::unavailable(format!("response stream failed: {text}")),
    }
}

/// The HTTP/2 error code behind an error, if any.
pub(crate) fn h2_reason(e: &(dyn std::error::Error + 'static)) -> Option<h2::Reason> {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.reason();
        }
        cur = e.source();
    }
    None
}

/// A messages stream with up to two messages already taken off its front.
pub(crate) struct Prepend<B> {
    head: [Option<Payload>; 2],
    rest: MessageStream<B>,
}

impl<B> Prepend<B> {
    pub(crate) fn new(
        first: Option<Payload>,
        second: Option<Payload>,
        rest: MessageStream<B>,
    ) -> Self {
        Prepend {
            head: [first, second],
            rest,
        }
    }
}

impl<B> Stream for Prepend<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Item = Result<Payload, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        for slot in &mut this.head {
            if let Some(p) = slot.take() {
                return Poll::Ready(Some(Ok(p)));
            }
        }
        this.rest.poll_message(cx)
    }
}

/// A handler's response body, polled under the call's deadline, with a panic
/// while producing a message turned into INTERNAL.
pub(crate) struct Guarded {
    body: Body,
    sleep: Option<Pin<Box<Sleep>>>,
    method: Method,
    done: bool,
}

impl Guarded {
    pub(crate) fn new(body: Body, sleep: Option<Pin<Box<Sleep>>>, method: Method) -> Self {
        Guarded {
            body,
            sleep,
            method,
            done: false,
        }
    }

    /// The next message, or the end of the stream (see [`crate::stream`]).
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Payload, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let polled = catch_unwind(AssertUnwindSafe(|| Pin::new(&mut self.body).poll_next(cx)));
        let out = match polled {
            Ok(Poll::Pending) => match self.sleep.as_mut().map(|s| s.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Some(Err(deadline_status())),
                _ => return Poll::Pending,
            },
            Ok(Poll::Ready(Some(Ok(p)))) => return Poll::Ready(Some(Ok(p))),
            Ok(Poll::Ready(other)) => other,
            Err(panic) => Some(Err(panicked(&self.method, &*panic))),
        };
        self.done = true;
        self.body = Body::empty();
        Poll::Ready(out)
    }
}

/// The status of a call whose deadline passed on the server.
pub(crate) fn deadline_status() -> Status {
    Status::deadline_exceeded("deadline exceeded: the server cancelled the call")
}

/// The status of a call whose handler panicked (logged).
pub(crate) fn panicked(method: &Method, panic: &(dyn Any + Send)) -> Status {
    let msg = if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    };
    tracing::error!(method = %method, panic = msg, "handler panicked; the call fails with INTERNAL");
    Status::internal(format!("handler panicked: {msg}"))
}
