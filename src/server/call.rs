//! One server call as a future of its own ([`CallTask`]): the service's
//! `call` (the layers' work, the router's lookup; a panic there fails only
//! this call), the handler, then for a streaming response the response
//! stream, written as the client's flow-control windows allow. It writes
//! its own frames into the connection's shared output, so it runs the same
//! whether the connection hands it to a task of its pool (the default:
//! handlers use every core, see `pool.rs`) or polls it in its own task
//! (inline mode, for handlers known to be cheap).
//!
//! Deadlines and cancellation are the connection's business: it drops the
//! call (aborting its task) and answers for it.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream as _;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::pool::Job;
use super::stream::{Reply, ServerStream};
use crate::body::{Body, Payload};
use crate::metadata::{MetadataMap, ReceivedEntries};
use crate::proto::{SendError, Shared, State};
use crate::request::{Method, Request, Response};
use crate::status::{BoxError, Code, Status};
use crate::wire;

/// Most bytes one streaming call writes before other tasks get a turn.
const STREAM_TURN_BYTES: usize = 256 * 1024;

pin_project! {
    /// A call: the service's `call`, its handler future, then its response
    /// stream.
    pub(crate) struct CallTask<S, F> {
        shared: Arc<Shared<ServerStream>>,
        id: u32,
        method: Method,
        #[pin]
        phase: Phase<S, F>,
    }
}

pin_project! {
    #[project = PhaseProj]
    enum Phase<S, F> {
        // The service instance made ready for this call, and the request:
        // `call` runs in the call's task, so the work of the layers and the
        // handler's allocations happen on the thread that runs the handler
        // and later frees them (glibc's per-thread caches serve both).
        Start { call: Option<(S, Request<Body>)> },
        Handler { #[pin] fut: F },
        Streaming {
            body: Body,
            // Response metadata, until the response HEADERS go out.
            headers: Option<MetadataMap>,
            // A message waiting for flow-control credit.
            pending: Option<Payload>,
            // Bytes written since this call last gave others a turn.
            written: usize,
        },
        Done,
    }
}

fn panic_message(p: &(dyn Any + Send)) -> &str {
    if let Some(s) = p.downcast_ref::<&str>() {
        s
    } else if let Some(s) = p.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

fn panicked(method: &Method, panic: &(dyn Any + Send)) -> Status {
    let msg = panic_message(panic);
    tracing::error!(method = %method, panic = msg, "handler panicked; the call fails with INTERNAL");
    Status::internal(format!("handler panicked: {msg}"))
}

/// A call before it runs: the service instance whose `poll_ready` said
/// ready and the request it is to be called with. Small to move: it becomes
/// its [`CallTask`] where it runs (a task of the pool, or the connection's
/// own task in inline mode).
pub(crate) struct CallStart<S> {
    pub(crate) shared: Arc<Shared<ServerStream>>,
    pub(crate) id: u32,
    pub(crate) svc: S,
    pub(crate) req: Request<Body>,
    /// The request's metadata entries, added by [`Job::start`] where the
    /// call runs (see [`ReceivedEntries`]).
    pub(crate) entries: Option<ReceivedEntries>,
}

impl<S> Job for CallStart<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Task = CallTask<S, S::Future>;

    fn start(self) -> Self::Task {
        let CallStart {
            shared,
            id,
            svc,
            mut req,
            entries,
        } = self;
        if let Some(entries) = entries {
            entries.add_to(req.metadata_mut());
        }
        CallTask {
            shared,
            id,
            method: req.method().clone(),
            phase: Phase::Start {
                call: Some((svc, req)),
            },
        }
    }
}

impl<S, E> Future for CallTask<S, S::Future>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = E>,
    E: Into<BoxError>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            match this.phase.as_mut().project() {
                PhaseProj::Start { call } => {
                    let Some((mut svc, req)) = call.take() else {
                        this.phase.set(Phase::Done);
                        return Poll::Ready(());
                    };
                    match catch_unwind(AssertUnwindSafe(|| svc.call(req))) {
                        Ok(fut) => this.phase.set(Phase::Handler { fut }),
                        Err(panic) => {
                            reply(this.shared, *this.id, Err(panicked(this.method, &*panic)));
                            this.phase.set(Phase::Done);
                            return Poll::Ready(());
                        }
                    }
                }
                PhaseProj::Handler { fut } => {
                    let out = match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
                        Ok(Poll::Pending) => return Poll::Pending,
                        Ok(Poll::Ready(Ok(resp))) => Ok(resp),
                        Ok(Poll::Ready(Err(e))) => Err(Status::from_error(e.into())),
                        Err(panic) => Err(panicked(this.method, &*panic)),
                    };
                    match out {
                        Ok(resp) if resp.get_ref().is_stream() => {
                            let (metadata, _ext, body) = resp.into_parts();
                            handler_done(this.shared, *this.id);
                            this.phase.set(Phase::Streaming {
                                body,
                                headers: Some(metadata),
                                pending: None,
                                written: 0,
                            });
                        }
                        result => {
                            reply(this.shared, *this.id, result);
                            this.phase.set(Phase::Done);
                            return Poll::Ready(());
                        }
                    }
                }
                PhaseProj::Streaming {
                    body,
                    headers,
                    pending,
                    written,
                } => {
                    let end = match poll_stream(
                        this.shared,
                        *this.id,
                        this.method,
                        cx,
                        body,
                        headers,
                        pending,
                        written,
                    ) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(end) => end,
                    };
                    if let Some(status) = end {
                        end_stream(this.shared, *this.id, headers.take(), status);
                    }
                    this.phase.set(Phase::Done);
                    return Poll::Ready(());
                }
                PhaseProj::Done => return Poll::Ready(()),
            }
        }
    }
}

/// Hands the outcome of a call that ends without a response stream to the
/// connection, which writes it (no lock to take here). The response is
/// taken apart here: nothing of the handler's is dropped with the
/// connection's state locked.
fn reply(shared: &Shared<ServerStream>, id: u32, result: Result<Response<Body>, Status>) {
    let reply = result.map(|resp| {
        let (metadata, _extensions, body) = resp.into_parts();
        (metadata, body.into_once().ok())
    });
    shared.side.push(id, reply);
    if shared.wake_task() {
        super::pool::woke_connection();
    }
}

/// Writes the response stream as far as flow control and fairness allow.
/// `Ready(Some(status))`: the stream ended with that status (to be sent);
/// `Ready(None)`: the stream is gone (cancelled, timed out), nothing to send.
#[allow(clippy::too_many_arguments)]
fn poll_stream(
    shared: &Shared<ServerStream>,
    id: u32,
    method: &Method,
    cx: &mut Context<'_>,
    body: &mut Body,
    headers: &mut Option<MetadataMap>,
    pending: &mut Option<Payload>,
    written: &mut usize,
) -> Poll<Option<Status>> {
    loop {
        if pending.is_some() {
            let len = pending.as_ref().map_or(0, Payload::len);
            match shared.poll_send_data(id, cx, pending) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => *written += len,
                Poll::Ready(Err(SendError::Closed)) => return Poll::Ready(None),
                Poll::Ready(Err(SendError::TooLarge { len, max })) => {
                    return Poll::Ready(Some(too_large(len, max)))
                }
            }
        }
        if *written >= STREAM_TURN_BYTES {
            *written = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match shared.poll_send_capacity(id, cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Poll::Ready(None),
            Poll::Pending => {
                send_headers(shared, id, headers);
                return Poll::Pending;
            }
        }
        let item = match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *body).poll_next(cx))) {
            Ok(Poll::Pending) => {
                // Let the client see the response headers now.
                send_headers(shared, id, headers);
                return Poll::Pending;
            }
            Ok(Poll::Ready(item)) => item,
            Err(panic) => Some(Err(panicked(method, &*panic))),
        };
        match item {
            Some(Ok(p)) => match headers.take() {
                // The first message rides in the HEADERS frame (not flow
                // controlled).
                Some(md) => match first_message(shared, id, md, p) {
                    Ok(true) => *written += 1,
                    Ok(false) => return Poll::Ready(None),
                    Err(status) => return Poll::Ready(Some(status)),
                },
                None => *pending = Some(p),
            },
            Some(Err(status)) => return Poll::Ready(Some(status)),
            None => return Poll::Ready(Some(Status::new(Code::Ok, ""))),
        }
    }
}

fn too_large(len: usize, max: usize) -> Status {
    Status::resource_exhausted(format!(
        "response message of {len} bytes exceeds the limit of {max} bytes"
    ))
}

/// The largest response message this connection may send now.
fn max_message(shared: &Shared<ServerStream>, st: &State<ServerStream>) -> usize {
    st.peer.max_message.min(shared.max_send_message)
}

/// The handler finished: its request bytes no longer count.
fn handler_done(shared: &Shared<ServerStream>, id: u32) {
    let mut st = shared.lock();
    if let Some(s) = st.streams.get_mut(&id) {
        let held = std::mem::take(&mut s.ext.held);
        st.held_bytes -= held;
    }
}

/// Sends the response HEADERS (without a message) if not sent yet.
fn send_headers(shared: &Shared<ServerStream>, id: u32, headers: &mut Option<MetadataMap>) {
    let Some(md) = headers.take() else {
        return;
    };
    {
        let mut st = shared.lock();
        let max_metadata = st.peer.max_metadata;
        let State { streams, wb, .. } = &mut *st;
        let Some(s) = streams.get_mut(&id) else {
            return;
        };
        s.ext.headers_sent = true;
        wire::put_response_headers(wb, id, &md, None, None, max_metadata);
    }
    shared.wake_task();
}

/// Sends the response HEADERS with the first message; false when the
/// stream is gone.
fn first_message(
    shared: &Shared<ServerStream>,
    id: u32,
    md: MetadataMap,
    p: Payload,
) -> Result<bool, Status> {
    {
        let mut st = shared.lock();
        let max = max_message(shared, &st);
        if p.len() > max {
            return Err(too_large(p.len(), max));
        }
        let max_metadata = st.peer.max_metadata;
        let State { streams, wb, .. } = &mut *st;
        let Some(s) = streams.get_mut(&id) else {
            return Ok(false);
        };
        s.ext.headers_sent = true;
        wire::put_response_headers(wb, id, &md, Some(&p), None, max_metadata);
    }
    shared.wake_task();
    Ok(true)
}

/// Logs a failed call at a level that fits its code.
pub(crate) fn log_failure(id: u32, status: &Status) {
    match status.code() {
        Code::Ok => {}
        Code::Internal | Code::Unknown | Code::DataLoss => {
            tracing::warn!(stream = id, %status, "call failed")
        }
        _ => tracing::debug!(stream = id, %status, "call failed"),
    }
}

/// Ends a streaming response with `status` and closes the stream.
fn end_stream(
    shared: &Shared<ServerStream>,
    id: u32,
    headers: Option<MetadataMap>,
    status: Status,
) {
    log_failure(id, &status);
    {
        let mut st = shared.lock();
        if !st.streams.contains_key(&id) {
            return;
        }
        let max_metadata = st.peer.max_metadata;
        match headers {
            // A successful end with trailers stays a stream (HEADERS, then
            // TRAILERS) so the client sees trailers as trailers.
            Some(md) if status.code() == Code::Ok && !status.metadata().is_empty() => {
                wire::put_response_headers(&mut st.wb, id, &md, None, None, max_metadata);
                wire::put_trailers(&mut st.wb, id, Some(&status), max_metadata);
            }
            Some(md) => {
                wire::put_response_headers(&mut st.wb, id, &md, None, Some(&status), max_metadata)
            }
            None => wire::put_trailers(&mut st.wb, id, Some(&status), max_metadata),
        }
        super::stream::close_stream(&mut st, id, "the call already finished");
    }
    shared.wake_task();
}

/// Encodes a finished unary call's outcome: response metadata and message.
pub(crate) fn write_response(
    wb: &mut crate::frame::WriteBuf,
    id: u32,
    result: Reply,
    (max_message, max_metadata): (usize, usize),
) {
    let status = match result {
        Ok((metadata, message)) => match message {
            Some(p) if p.len() > max_message => too_large(p.len(), max_message),
            message => {
                let ok = Status::new(Code::Ok, "");
                wire::put_response_headers(
                    wb,
                    id,
                    &metadata,
                    message.as_ref(),
                    Some(&ok),
                    max_metadata,
                );
                return;
            }
        },
        Err(status) => status,
    };
    log_failure(id, &status);
    wire::put_response_headers(
        wb,
        id,
        &MetadataMap::new(),
        None,
        Some(&status),
        max_metadata,
    );
}
