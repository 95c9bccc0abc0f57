//! One multiplexed client connection as its callers see it ([`Conn`]): the
//! client side of the shared engine ([`crate::proto`]); the task that runs
//! it is in `connect.rs`, its reactions to the server's frames in `role.rs`.
//!
//! Callers and the connection task share the connection's state: a caller
//! encodes its request frame straight into the shared output and parks on
//! its stream; the task (one per connection, owning the socket) writes what
//! callers queued with coalesced writes, reads response frames, fills the
//! streams and wakes the callers. There is no channel or task per unary call.
//!
//! Streaming calls add, per call: an [`InboundShared`] queue for response
//! messages (consumed through [`Incoming`], which returns flow-control
//! credit), and for streaming requests a pump task that sends the request
//! stream as the peer's window allows. A stream keeps its connection alive
//! until it ends, even when every `Channel` handle is gone.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_core::Stream as _;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::body::{Body, Payload};
use crate::metadata::MetadataMap;
use crate::proto::{RoleStream, SendError, Shared, State, Stream, StreamState};
use crate::request::{Request, Response};
use crate::status::{Code, Status};
use crate::wire;

/// Highest stream id a client uses before it must open a new connection.
const MAX_STREAM_ID: u32 = (1 << 31) - 1;

/// Trailing metadata of a successful response whose trailers came in a
/// separate TRAILERS frame, found in the response's extensions.
#[derive(Clone, Debug, Default)]
pub struct Trailers(pub MetadataMap);

/// Where a call's response is.
#[derive(Debug)]
pub(crate) enum Resp {
    /// Not yet arrived (the caller's waker).
    Waiting(Option<Waker>),
    /// Arrived, not yet taken by the caller.
    Ready(Result<Response<Body>, Status>),
    /// Taken.
    Taken,
}

/// What the client keeps about each call.
#[derive(Debug)]
pub(crate) struct ClientStream {
    pub(crate) response: Resp,
    /// The task sending a streaming request.
    pub(crate) pump: Option<AbortHandle>,
}

/// What the client keeps about the connection.
#[derive(Debug)]
pub(crate) struct ClientConn {
    next_id: u32,
    /// GOAWAY received (or ids exhausted): no new calls.
    pub(crate) draining: bool,
    /// Every `Channel` handle is gone: close once the last call ends.
    pub(crate) released: bool,
    /// Closed by the client (`Conn::close`).
    pub(crate) closed_by_client: bool,
}

impl Default for ClientConn {
    fn default() -> Self {
        ClientConn {
            next_id: 1,
            draining: false,
            released: false,
            closed_by_client: false,
        }
    }
}

impl RoleStream for ClientStream {
    type Conn = ClientConn;

    fn reader_dropped(st: &mut State<Self>, id: u32) {
        // Nobody reads the response any more: the call is abandoned.
        cancel_stream(st, id, Status::cancelled("call cancelled by the client"));
    }
}

fn wake_task(task: Option<Waker>) {
    if let Some(w) = task {
        w.wake();
    }
}

/// True while the server may still send on the stream.
pub(crate) fn open_at_server(s: &Stream<ClientStream>) -> bool {
    matches!(s.ext.response, Resp::Waiting(_)) || s.state.can_recv()
}

/// Fails whatever is still open of call `id` with `status`: the caller
/// waiting for the response, the response stream's reader, the pump.
pub(crate) fn fail(s: &mut Stream<ClientStream>, status: Status, woken: &mut Vec<Waker>) {
    if let Some(inbound) = s.inbound.take() {
        inbound.finish(Some(status.clone()));
    }
    set_response(s, Err(status), woken);
    close_local(s);
    s.state = StreamState::Closed;
}

pub(crate) fn set_response(
    s: &mut Stream<ClientStream>,
    r: Result<Response<Body>, Status>,
    woken: &mut Vec<Waker>,
) {
    if let Resp::Waiting(w) = &mut s.ext.response {
        if let Some(w) = w.take() {
            woken.push(w);
        }
        s.ext.response = Resp::Ready(r);
    }
}

/// Stops sending on the stream (the pump, if any, is aborted).
pub(crate) fn close_local(s: &mut Stream<ClientStream>) {
    if let Some(p) = s.ext.pump.take() {
        p.abort();
    }
    if s.state.can_send() {
        s.state = s.state.close_local();
    }
    s.send_waker = None;
}

/// Removes call `id` once nothing of it is left to deliver or send.
pub(crate) fn remove_if_finished(st: &mut State<ClientStream>, id: u32) {
    let finished = st
        .streams
        .get(&id)
        .is_some_and(|s| matches!(s.ext.response, Resp::Taken) && s.state == StreamState::Closed);
    if finished {
        st.remove_stream(id);
    }
}

/// Abandons call `id` with `status`: tells the server (CANCEL) if the call
/// may still be running there, and forgets it.
fn cancel_stream(st: &mut State<ClientStream>, id: u32, status: Status) {
    let Some(mut s) = st.remove_stream(id) else {
        return;
    };
    let open = open_at_server(&s) || s.state.can_send();
    let mut woken = std::mem::take(&mut st.woken);
    fail(&mut s, status, &mut woken);
    st.woken = woken;
    if open && st.closed.is_none() {
        wire::put_cancel(&mut st.wb, id, Code::Cancelled);
    }
}

/// One client connection, shared by the channel's pool, the calls on it and
/// its task.
pub(crate) struct Conn {
    pub(crate) shared: Arc<Shared<ClientStream>>,
    pub(crate) id: u64,
    pub(crate) peer: SocketAddr,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("usable", &self.is_usable())
            .finish()
    }
}

impl Conn {
    /// True while new calls may be started on this connection.
    pub(crate) fn is_usable(&self) -> bool {
        self.shared.is_usable()
    }

    /// Calls in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.shared.lock().streams.len()
    }

    /// Encodes the request's HEADERS (with the message, for unary requests)
    /// and registers the call. For a streaming request body the caller then
    /// starts [`pump`]. A `refused` error means nothing was sent: the call
    /// may go elsewhere.
    pub(crate) fn start_call(
        &self,
        req: &Request<Body>,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
    ) -> Result<u32, Status> {
        let body = req.get_ref();
        let streaming = body.is_stream();
        let payload = body.as_once();
        let (id, task) = {
            let mut st = self.shared.lock();
            if let Some(e) = &st.closed {
                return Err(Status::unavailable(e.message().to_string()).with_refused(true));
            }
            if st.conn.draining {
                return Err(
                    Status::unavailable("connection is draining (GOAWAY)").with_refused(true)
                );
            }
            if st.streams.len() >= st.peer.max_streams {
                return Err(Status::resource_exhausted(format!(
                    "too many concurrent calls on one connection (server limit {})",
                    st.peer.max_streams
                ))
                .with_refused(true));
            }
            if let Some(p) = payload {
                let max = st.peer.max_message.min(self.shared.max_send_message);
                if p.len() > max {
                    return Err(Status::resource_exhausted(format!(
                        "request message of {} bytes exceeds the limit of {max} bytes",
                        p.len()
                    )));
                }
            }
            let id = st.conn.next_id;
            if id > MAX_STREAM_ID {
                st.conn.draining = true;
                self.shared.set_unusable();
                return Err(Status::unavailable("stream ids exhausted").with_refused(true));
            }
            let max_metadata = st.peer.max_metadata;
            wire::put_request_headers(
                &mut st.wb,
                id,
                req.method(),
                timeout,
                req.metadata(),
                payload,
                !streaming,
                max_metadata,
            )?;
            st.conn.next_id += 2;
            let mut s = Stream::new(
                st.peer.stream_window,
                self.shared.recv_stream_window,
                ClientStream {
                    response: Resp::Waiting(None),
                    pump: None,
                },
            );
            if !streaming {
                s.state = StreamState::HalfClosedLocal;
            }
            st.streams.insert(id, s);
            if let Some(d) = deadline {
                st.tighten_deadline(id, d);
            }
            (id, st.take_task())
        };
        wake_task(task);
        Ok(id)
    }

    /// Records the pump task of call `id` (aborted when the call ends).
    pub(crate) fn set_pump(&self, id: u32, pump: AbortHandle) {
        let mut st = self.shared.lock();
        match st.streams.get_mut(&id).filter(|s| s.state.can_send()) {
            Some(s) => s.ext.pump = Some(pump),
            None => pump.abort(),
        }
    }

    /// Polls for the response of call `id`.
    pub(crate) fn poll_call(
        &self,
        id: u32,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<Body>, Status>> {
        let mut st = self.shared.lock();
        let Some(s) = st.streams.get_mut(&id) else {
            return Poll::Ready(Err(st
                .closed
                .clone()
                .unwrap_or_else(|| Status::internal("call state lost"))));
        };
        match &mut s.ext.response {
            Resp::Waiting(w) => {
                if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *w = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Resp::Ready(_) => {
                let Resp::Ready(r) = std::mem::replace(&mut s.ext.response, Resp::Taken) else {
                    return Poll::Ready(Err(Status::internal("call state lost")));
                };
                remove_if_finished(&mut st, id);
                Poll::Ready(r)
            }
            Resp::Taken => Poll::Ready(Err(Status::internal("response already taken"))),
        }
    }

    /// Abandons call `id`: forgets it and tells the server (CANCEL) if the
    /// call is still running there.
    pub(crate) fn cancel(&self, id: u32) {
        let (task, mut woken) = {
            let mut st = self.shared.lock();
            cancel_stream(
                &mut st,
                id,
                Status::cancelled("call cancelled by the client"),
            );
            (st.take_task(), std::mem::take(&mut st.woken))
        };
        crate::proto::shared::wake_all(&mut woken);
        wake_task(task);
    }

    /// No channel uses this connection any more: it closes once its last
    /// call (a response stream included) ends.
    pub(crate) fn release(&self) {
        self.shared.set_unusable();
        let task = {
            let mut st = self.shared.lock();
            st.conn.released = true;
            st.take_task()
        };
        wake_task(task);
    }

    /// Closes the connection now: every call still open fails with `status`.
    #[allow(dead_code)] // kept for channels that close a connection on purpose
    pub(crate) fn close(&self, status: Status) {
        self.shared.set_unusable();
        let task = {
            let mut st = self.shared.lock();
            st.conn.closed_by_client = true;
            if st.closed.is_none() {
                st.closed = Some(status);
            }
            st.take_task()
        };
        wake_task(task);
    }

    /// Sends one request message of call `id`, waiting for flow-control
    /// credit.
    fn poll_send(
        &self,
        id: u32,
        cx: &mut Context<'_>,
        item: &mut Option<Payload>,
    ) -> Poll<Result<(), SendError>> {
        self.shared.poll_send_data(id, cx, item)
    }

    /// Half-closes call `id`: its request stream is complete.
    fn finish_send(&self, id: u32) {
        let task = {
            let mut st = self.shared.lock();
            if st.closed.is_some() {
                return;
            }
            let max_metadata = st.peer.max_metadata;
            let State { streams, wb, .. } = &mut *st;
            let Some(s) = streams.get_mut(&id).filter(|s| s.state.can_send()) else {
                return;
            };
            s.ext.pump = None;
            s.state = s.state.close_local();
            wire::put_trailers(wb, id, None, max_metadata);
            remove_if_finished(&mut st, id);
            st.take_task()
        };
        wake_task(task);
    }

    /// The request stream of call `id` failed: cancel the call with `status`.
    fn abort_send(&self, id: u32, status: Status) {
        let (task, mut woken) = {
            let mut st = self.shared.lock();
            if let Some(s) = st.streams.get_mut(&id) {
                s.ext.pump = None; // this task is the pump: it ends by itself
            }
            cancel_stream(&mut st, id, status);
            (st.take_task(), std::mem::take(&mut st.woken))
        };
        crate::proto::shared::wake_all(&mut woken);
        wake_task(task);
    }
}

/// Sends a streaming request body as the peer's flow-control windows allow,
/// then half-closes. Runs as its own task; aborted when the call ends.
pub(crate) async fn pump(conn: Arc<Conn>, id: u32, mut body: Body) {
    let mut pending: Option<Payload> = None;
    loop {
        if pending.is_none() {
            if poll_fn(|cx| conn.shared.poll_send_capacity(id, cx))
                .await
                .is_err()
            {
                return;
            }
            let next = poll_fn(|cx| {
                match std::panic::catch_unwind(AssertUnwindSafe(|| {
                    Pin::new(&mut body).poll_next(cx)
                })) {
                    Ok(p) => p,
                    Err(_) => {
                        Poll::Ready(Some(Err(Status::internal("the request stream panicked"))))
                    }
                }
            })
            .await;
            match next {
                Some(Ok(p)) => pending = Some(p),
                Some(Err(s)) if s.code() != Code::Ok => {
                    conn.abort_send(id, s);
                    return;
                }
                Some(Err(_)) | None => {
                    conn.finish_send(id);
                    return;
                }
            }
        }
        match poll_fn(|cx| conn.poll_send(id, cx, &mut pending)).await {
            Ok(()) => {}
            Err(SendError::Closed) => return,
            Err(SendError::TooLarge { len, max }) => {
                conn.abort_send(
                    id,
                    Status::resource_exhausted(format!(
                        "request message of {len} bytes exceeds the limit of {max} bytes"
                    )),
                );
                return;
            }
        }
    }
}
