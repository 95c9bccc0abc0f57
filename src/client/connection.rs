//! One multiplexed client connection: the client side of the shared engine
//! ([`crate::proto`]).
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_core::Stream as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use super::endpoint::ClientConfig;
use crate::body::{Body, Payload};
use crate::frame::{
    self, Decoded, Flags, Frame, FrameCodec, FrameHeader, FrameType, Goaway, GoawayCode, Settings,
};
use crate::metadata::MetadataMap;
use crate::proto::{
    ConnError, Driver, DriverConfig, Exit, PeerSettings, Role, RoleStream, SendError, Shared,
    State, Stream, StreamState,
};
use crate::request::{Request, Response};
use crate::status::{Code, Status};
use crate::stream::{CreditSink, InboundShared, Incoming};
use crate::wire::{self, ResponseHead};

/// Highest stream id a client uses before it must open a new connection.
const MAX_STREAM_ID: u32 = (1 << 31) - 1;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Trailing metadata of a successful response whose trailers came in a
/// separate TRAILERS frame, found in the response's extensions.
#[derive(Clone, Debug, Default)]
pub struct Trailers(pub MetadataMap);

/// Where a call's response is.
#[derive(Debug)]
enum Resp {
    Waiting(Option<Waker>),
    Ready(Result<Response<Body>, Status>),
    Taken,
}

/// What the client keeps about each call.
#[derive(Debug)]
pub(crate) struct ClientStream {
    response: Resp,
    /// The task sending a streaming request.
    pump: Option<AbortHandle>,
}

/// What the client keeps about the connection.
#[derive(Debug)]
pub(crate) struct ClientConn {
    next_id: u32,
    /// GOAWAY received (or ids exhausted): no new calls.
    draining: bool,
    /// Every `Channel` handle is gone: close once the last call ends.
    released: bool,
    /// Closed by the client (`Conn::close`).
    closed_by_client: bool,
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
fn open_at_server(s: &Stream<ClientStream>) -> bool {
    matches!(s.ext.response, Resp::Waiting(_)) || s.state.can_recv()
}

/// Fails whatever is still open of call `id` with `status`: the caller
/// waiting for the response, the response stream's reader, the pump.
fn fail(s: &mut Stream<ClientStream>, status: Status, woken: &mut Vec<Waker>) {
    if let Some(inbound) = s.inbound.take() {
        inbound.finish(Some(status.clone()));
    }
    set_response(s, Err(status), woken);
    close_local(s);
    s.state = StreamState::Closed;
}

fn set_response(
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
fn close_local(s: &mut Stream<ClientStream>) {
    if let Some(p) = s.ext.pump.take() {
        p.abort();
    }
    if s.state.can_send() {
        s.state = s.state.close_local();
    }
    s.send_waker = None;
}

/// Removes call `id` once nothing of it is left to deliver or send.
fn remove_if_finished(st: &mut State<ClientStream>, id: u32) {
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
    shared: Arc<Shared<ClientStream>>,
    pub(crate) id: u64,
    peer: SocketAddr,
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

/// The client's part of a connection.
pub(crate) struct ClientRole {
    shared: Arc<Shared<ClientStream>>,
    peer: SocketAddr,
    conn_id: u64,
    idle_timeout: Option<Duration>,
    idle_since: Option<Instant>,
    idle_exit: bool,
    /// Callers woken by the frames just read.
    batch: usize,
}

impl ClientRole {
    fn payload(h: &FrameHeader, bytes: Bytes) -> Payload {
        Payload {
            bytes,
            compressed: h.flags.contains(Flags::COMPRESSED),
        }
    }

    /// Fails call `id` with a stream error and tells the server (CANCEL).
    fn reset(&mut self, st: &mut State<ClientStream>, id: u32, status: Status, code: Code) {
        let Some(s) = st.streams.get_mut(&id) else {
            return;
        };
        let open = open_at_server(s);
        let mut woken = std::mem::take(&mut st.woken);
        fail(s, status, &mut woken);
        st.woken = woken;
        if open {
            wire::put_cancel(&mut st.wb, id, code);
        }
        remove_if_finished(st, id);
        self.batch += 1;
    }
}

/// The outcome of a response that ended in its HEADERS frame.
fn finish(head: ResponseHead, message: Option<Payload>) -> Result<Response<Body>, Status> {
    match head.code {
        Some(Code::Ok) => {
            let body = message.map_or_else(Body::empty, Body::once);
            let mut resp = Response::new(body);
            *resp.metadata_mut() = head.metadata;
            Ok(resp)
        }
        _ => Err(head.into_status()),
    }
}

impl Role for ClientRole {
    type Stream = ClientStream;
    const PEER: &'static str = "server";

    fn on_headers(
        &mut self,
        st: &mut State<ClientStream>,
        f: Frame,
        _now: Instant,
    ) -> Result<(), ConnError> {
        let id = f.stream_id();
        let Some(s) = st.streams.get(&id) else {
            return Ok(()); // a late answer for a cancelled call
        };
        if !matches!(s.ext.response, Resp::Waiting(_)) || !s.state.can_recv() {
            let status = Status::internal("protocol error: a second HEADERS frame on a stream");
            self.reset(st, id, status, Code::Internal);
            return Ok(());
        }
        let flags = f.header.flags;
        let head = match wire::decode_response_head(f.metadata) {
            Ok(_) if !f.payload.is_empty() && !flags.contains(Flags::MESSAGE) => Err(
                Status::internal("protocol error: a HEADERS payload without the MESSAGE flag"),
            ),
            other => other,
        };
        let head = match head {
            Ok(h) => h,
            Err(e) => {
                self.reset(st, id, e, Code::Internal);
                return Ok(());
            }
        };
        let message = flags
            .contains(Flags::MESSAGE)
            .then(|| Self::payload(&f.header, f.payload));
        self.batch += 1;
        let mut woken = std::mem::take(&mut st.woken);
        let Some(s) = st.streams.get_mut(&id) else {
            return Ok(());
        };
        if flags.contains(Flags::END_STREAM) {
            set_response(s, finish(head, message), &mut woken);
            close_local(s);
            s.state = StreamState::Closed;
        } else {
            // A streaming response: messages follow in DATA frames.
            let inbound = InboundShared::new(self.shared.stats.clone());
            if let Some(m) = message {
                // Not flow controlled: no credit owed.
                inbound.push_uncredited(m);
            }
            let sink: Arc<dyn CreditSink> = self.shared.clone();
            let body = Body::stream(Incoming::new(
                inbound.clone(),
                sink,
                id,
                self.shared.recv_stream_window as usize,
            ));
            let mut resp = Response::new(body);
            *resp.metadata_mut() = head.metadata;
            s.inbound = Some(inbound);
            set_response(s, Ok(resp), &mut woken);
        }
        st.woken = woken;
        Ok(())
    }

    fn on_data(
        &mut self,
        st: &mut State<ClientStream>,
        f: Frame,
        _now: Instant,
    ) -> Result<(), ConnError> {
        let id = f.stream_id();
        let len = f.payload.len();
        if st.recv_window.receive(len).is_err() {
            return Err(ConnError::flow_control(
                "flow control: the server exceeded the connection window",
            ));
        }
        let (inbound, waiting) = match st.streams.get(&id).filter(|s| s.state.can_recv()) {
            Some(s) => (
                s.inbound.clone(),
                matches!(s.ext.response, Resp::Waiting(_)),
            ),
            None => {
                st.credit_conn(len);
                return Ok(());
            }
        };
        let Some(inbound) = inbound else {
            st.credit_conn(len);
            if waiting {
                let status = Status::internal("protocol error: DATA before HEADERS");
                self.reset(st, id, status, Code::Internal);
            }
            return Ok(());
        };
        let window_ok = st
            .streams
            .get_mut(&id)
            .is_some_and(|s| s.recv.receive(len).is_ok());
        if !window_ok {
            st.credit_conn(len);
            return self.reset_stream(
                st,
                id,
                Status::resource_exhausted("flow control: the server exceeded the stream window"),
            );
        }
        let end = f.header.flags.contains(Flags::END_STREAM);
        if inbound.push(Self::payload(&f.header, f.payload)) {
            st.recv_held += len;
        } else {
            // Nobody reads this stream any more.
            st.credit_conn(len);
        }
        if end {
            inbound.finish(Some(Status::internal(
                "protocol error: the server ended the stream without a status",
            )));
            if let Some(s) = st.streams.get_mut(&id) {
                s.inbound = None;
                close_local(s);
                s.state = StreamState::Closed;
            }
            remove_if_finished(st, id);
        }
        Ok(())
    }

    fn on_trailers(&mut self, st: &mut State<ClientStream>, f: Frame) -> Result<(), ConnError> {
        let id = f.stream_id();
        let Some(s) = st.streams.get_mut(&id).filter(|s| s.state.can_recv()) else {
            return Ok(());
        };
        let status = match wire::decode_response_head(f.metadata) {
            Ok(h) => h.into_status(),
            Err(e) => e,
        };
        let mut woken = std::mem::take(&mut st.woken);
        if let Some(inbound) = s.inbound.take() {
            inbound.finish(Some(status));
        } else if status.code() == Code::Ok {
            let mut resp = Response::new(Body::empty());
            resp.extensions_mut()
                .insert(Trailers(status.metadata().clone()));
            set_response(s, Ok(resp), &mut woken);
        } else {
            set_response(s, Err(status), &mut woken);
        }
        st.woken = woken;
        close_local(s);
        s.state = StreamState::Closed;
        remove_if_finished(st, id);
        self.batch += 1;
        Ok(())
    }

    fn on_cancel(
        &mut self,
        st: &mut State<ClientStream>,
        id: u32,
        code: Code,
    ) -> Result<(), ConnError> {
        if let Some(s) = st.streams.get_mut(&id) {
            let mut woken = std::mem::take(&mut st.woken);
            fail(
                s,
                Status::new(code, "stream reset by the server"),
                &mut woken,
            );
            st.woken = woken;
            remove_if_finished(st, id);
            self.batch += 1;
        }
        Ok(())
    }

    fn on_goaway(&mut self, st: &mut State<ClientStream>, g: Goaway) {
        if g.code == GoawayCode::NoError {
            tracing::debug!(conn = self.conn_id, peer = %self.peer, last = g.last_stream_id, "server sent GOAWAY: {}", g.message);
        } else {
            tracing::warn!(conn = self.conn_id, peer = %self.peer, code = ?g.code, "server sent GOAWAY: {}", g.message);
        }
        st.conn.draining = true;
        self.shared.set_unusable();
        let refused = Status::unavailable(format!(
            "server is going away ({}); the call was not processed",
            g.message
        ))
        .with_refused(true);
        let mut woken = std::mem::take(&mut st.woken);
        let mut gone = Vec::new();
        for (&id, s) in st.streams.iter_mut() {
            if id > g.last_stream_id {
                fail(s, refused.clone(), &mut woken);
                gone.push(id);
            }
        }
        st.woken = woken;
        for id in gone {
            remove_if_finished(st, id);
        }
    }

    fn on_too_large(
        &mut self,
        st: &mut State<ClientStream>,
        h: FrameHeader,
        why: String,
    ) -> Result<(), ConnError> {
        tracing::debug!(
            conn = self.conn_id,
            stream = h.stream_id,
            "response frame over the limit: {why}"
        );
        if st.streams.contains_key(&h.stream_id) {
            let status = Status::resource_exhausted(format!("response {why}"));
            self.reset(st, h.stream_id, status, Code::ResourceExhausted);
        }
        Ok(())
    }

    fn reset_stream(
        &mut self,
        st: &mut State<ClientStream>,
        id: u32,
        status: Status,
    ) -> Result<(), ConnError> {
        let code = status.code();
        self.reset(st, id, status, code);
        Ok(())
    }

    fn on_deadline(&mut self, st: &mut State<ClientStream>, id: u32) {
        let waiting = st
            .streams
            .get(&id)
            .is_some_and(|s| matches!(s.ext.response, Resp::Waiting(_)));
        let status = if waiting {
            Status::deadline_exceeded("deadline exceeded while waiting for the response")
        } else {
            Status::deadline_exceeded("deadline exceeded while receiving the stream")
        };
        self.reset(st, id, status, Code::DeadlineExceeded);
    }

    fn on_eof(&mut self, _st: &mut State<ClientStream>) -> Result<Exit, ConnError> {
        Err(ConnError::Gone(format!(
            "connection to {} closed by the server",
            self.peer
        )))
    }

    fn poll_work(
        &mut self,
        _cx: &mut Context<'_>,
        _shared: &Arc<Shared<ClientStream>>,
    ) -> Result<bool, ConnError> {
        Ok(false)
    }

    fn reading(&self) -> bool {
        true
    }

    fn exit(&mut self, st: &State<ClientStream>, output_idle: bool) -> Option<Exit> {
        let c = &st.conn;
        if c.closed_by_client {
            return Some(Exit::Graceful("closed by the client"));
        }
        let idle = st.streams.is_empty();
        match (idle, self.idle_since) {
            (true, None) => self.idle_since = Some(Instant::now()),
            (false, Some(_)) => self.idle_since = None,
            _ => {}
        }
        if !idle || !output_idle {
            return None;
        }
        if self.idle_exit {
            Some(Exit::Graceful("idle"))
        } else if c.draining {
            Some(Exit::Graceful("drained after GOAWAY"))
        } else if c.released {
            Some(Exit::Graceful("no channel uses it any more"))
        } else {
            None
        }
    }

    fn closing(&self) -> bool {
        let st = self.shared.lock();
        st.conn.draining || st.conn.released || self.idle_exit
    }

    fn next_timer(&self, _st: &State<ClientStream>) -> Option<Instant> {
        Some(self.idle_since? + self.idle_timeout?)
    }

    fn on_timer(&mut self, st: &mut State<ClientStream>, now: Instant) -> Result<(), ConnError> {
        if let (Some(since), Some(t)) = (self.idle_since, self.idle_timeout) {
            if st.streams.is_empty() && now >= since + t {
                self.idle_exit = true;
                self.shared.set_unusable();
            }
        }
        Ok(())
    }

    fn take_batch(&mut self) -> usize {
        std::mem::take(&mut self.batch)
    }
}

/// Establishes a connection: TCP connect, TLS if configured, SETTINGS
/// exchange, task spawn.
pub(crate) async fn connect(
    addr: SocketAddr,
    host: &str,
    config: &ClientConfig,
) -> Result<Arc<Conn>, Status> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| {
        Status::unavailable(format!("connect to {addr} failed: {e}")).with_source(e)
    })?;
    if config.tcp_nodelay {
        let _ = tcp.set_nodelay(true);
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = &config.tls {
        let io = tls.connect(host, addr, tcp).await?;
        let (io, settings, rbuf) = handshake(io, config, addr)
            .await
            .map_err(|e| crate::tls::ClientTls::explain(addr, e))?;
        return Ok(spawn(io, addr, settings, rbuf, config));
    }
    let _ = host;
    let (io, settings, rbuf) = handshake(tcp, config, addr).await?;
    Ok(spawn(io, addr, settings, rbuf, config))
}

/// Sends our SETTINGS and waits for the server's, which must be the first frame.
pub(crate) async fn handshake<IO>(
    mut io: IO,
    config: &ClientConfig,
    addr: SocketAddr,
) -> Result<(IO, Settings, BytesMut), Status>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut out = BytesMut::new();
    config.settings().encode(&mut out);
    io.write_all(&out).await.map_err(|e| {
        Status::unavailable(format!("handshake with {addr} failed: {e}")).with_source(e)
    })?;
    let mut rbuf = BytesMut::with_capacity(1024);
    let mut codec = FrameCodec::new();
    loop {
        match codec.decode(&mut rbuf) {
            Ok(Some(Decoded::Frame(f))) if f.frame_type() == Some(FrameType::Settings) => {
                let settings = Settings::parse(&f.payload).unwrap_or_default();
                return Ok((io, settings, rbuf));
            }
            Ok(Some(Decoded::Frame(f))) if f.frame_type() == Some(FrameType::Goaway) => {
                let why = Goaway::parse(&f.payload)
                    .map(|g| g.message)
                    .unwrap_or_default();
                return Err(Status::unavailable(format!(
                    "{addr} refused the connection: {why}"
                )));
            }
            Ok(Some(other)) => {
                return Err(Status::unavailable(format!(
                    "{addr} is not a trpc server: first frame was {other:?}, not SETTINGS"
                )))
            }
            Ok(None) => {}
            Err(e) => {
                return Err(Status::unavailable(format!(
                    "{addr} is not a trpc server ({e}); received {:?}",
                    String::from_utf8_lossy(&rbuf[..rbuf.len().min(32)])
                )))
            }
        }
        let n = io.read_buf(&mut rbuf).await.map_err(|e| {
            Status::unavailable(format!("handshake with {addr} failed: {e}")).with_source(e)
        })?;
        if n == 0 {
            return Err(Status::unavailable(format!(
                "{addr} closed the connection during the handshake \
                 (is it a trpc server? does it require TLS?)"
            )));
        }
    }
}

/// Spawns the connection task for an established, handshaken connection.
pub(crate) fn spawn<IO>(
    io: IO,
    peer: SocketAddr,
    settings: Settings,
    rbuf: BytesMut,
    config: &ClientConfig,
) -> Arc<Conn>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut peer_settings = PeerSettings::default();
    let settings_error = peer_settings.apply(&settings).err();
    let shared = Arc::new(Shared::new(
        config.stream_window,
        config.connection_window,
        peer_settings,
        config.max_send_message,
        config.stats.clone(),
    ));
    let conn = Arc::new(Conn {
        shared: shared.clone(),
        id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
        peer,
    });
    let role = ClientRole {
        shared: shared.clone(),
        peer,
        conn_id: conn.id,
        idle_timeout: config.idle_timeout,
        idle_since: None,
        idle_exit: false,
        batch: 0,
    };
    let driver = Driver::new(
        io,
        rbuf,
        shared,
        role,
        DriverConfig {
            max_message: config.max_message,
            max_metadata: config.max_metadata,
            keepalive: config.keepalive,
            frame_timeout: None,
            write_timeout: None,
            settings_received: true,
            stats: config.stats.clone(),
        },
    );
    if let Some(s) = &config.stats {
        s.on_open();
    }
    tracing::debug!(conn = conn.id, %peer, "trpc client connection established");
    tokio::spawn(run(driver, settings_error));
    conn
}

/// Runs a client connection and ends it: every call still open fails with
/// why the connection ended.
async fn run<IO>(driver: Driver<IO, ClientRole>, settings_error: Option<ConnError>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut driver, result) = match settings_error {
        // The server's first SETTINGS broke a rule.
        Some(e) => (driver, Err(e)),
        None => driver.run().await,
    };
    let (conn_id, peer) = (driver.role.conn_id, driver.role.peer);
    let mut goaway = None;
    let status = match result {
        Ok(Exit::Graceful(why)) => {
            tracing::debug!(conn = conn_id, %peer, why, "trpc client connection closed");
            Status::unavailable(format!("connection closed ({why})")).with_refused(true)
        }
        Ok(Exit::Forced) => Status::unavailable("connection closed").with_refused(true),
        Err(e) => {
            if let ConnError::Goaway { code, reason } = &e {
                tracing::warn!(conn = conn_id, %peer, error = %reason, "protocol error from the server");
                goaway = Some((*code, reason.clone()));
            } else {
                tracing::debug!(conn = conn_id, %peer, error = %e, "trpc client connection failed");
            }
            e.into_status(peer)
        }
    };
    let shared = driver.shared().clone();
    shared.set_unusable();
    let mut woken = Vec::new();
    {
        let mut st = shared.lock();
        if st.closed.is_none() {
            st.closed = Some(status);
        }
        let why = st
            .closed
            .clone()
            .unwrap_or_else(|| Status::unavailable("connection closed"));
        st.deadlines.clear();
        woken.append(&mut st.woken);
        for s in st.streams.values_mut() {
            s.deadline = None;
            fail(s, why.clone(), &mut woken);
        }
        // A response that arrived before the end is still the caller's.
        st.streams
            .retain(|_, s| matches!(s.ext.response, Resp::Ready(_)));
        woken.extend(st.take_task());
        woken.append(&mut st.send_blocked);
        woken.append(&mut st.room_blocked);
    }
    crate::proto::shared::wake_all(&mut woken);
    if let Some(s) = &shared.stats {
        s.on_close();
    }
    // Frames queued at the end (CANCELs of calls dropped with the channel,
    // the GOAWAY of a protocol error) still go out.
    driver
        .close(Duration::from_millis(100), |wb| {
            if let Some((code, reason)) = goaway {
                wb.put(|b| frame::put_goaway(b, 0, code, &reason));
            }
        })
        .await;
}
