//! The server side of a trpc connection ([`ServerRole`]): admits new calls
//! (stream ids, limits, request-byte budget), starts their handlers — each
//! as a task of its own by default, so one connection's calls use every
//! core — and answers for calls that are cancelled, time out or break the
//! rules; plus the server's own timers (handshake, idle, idle streams,
//! connection age) and graceful drain.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower_service::Service;

use super::call::{write_response, CallTask};
use super::limits::CancelBudget;
use super::local::LocalCalls;
use super::stream::{answer, close_stream, CallRef, Reply, ServerStream};
use super::ServerConfig;
use crate::body::{Body, Payload};
use crate::frame::{self, Flags, Frame, FrameHeader, FrameType, Goaway, GoawayCode};
use crate::proto::{
    ConnError, Driver, DriverConfig, Exit, PeerSettings, Role, Shared, State, Stream, StreamState,
};
use crate::request::{DeadlineSink, Request, Response};
use crate::status::{BoxError, Code, Status};
use crate::stream::{CreditSink, HoldCredit, InboundShared, Incoming};
use crate::wire;

/// The largest stream id (ids are 31-bit).
const MAX_STREAM_ID: u32 = (1 << 31) - 1;

type Call<S> = CallTask<<S as Service<Request<Body>>>::Future>;

/// The server's part of a trpc connection.
pub(crate) struct ServerRole<S: Service<Request<Body>>> {
    svc: S,
    cfg: Arc<ServerConfig>,
    peer: SocketAddr,
    shared: Arc<Shared<ServerStream>>,
    deadline_sink: DeadlineSink,
    conn_extensions: Option<http::Extensions>,
    /// Admitted calls waiting for the service.
    queue: VecDeque<(u32, Request<Body>)>,
    /// The last dispatch stopped with calls left: the service was not ready
    /// or the output is backed up. Nothing more is read meanwhile.
    backed_up: bool,
    /// Replies taken from the calls' tasks, being written.
    replies: Vec<(u32, Reply)>,
    /// A call was spawned this turn.
    spawned: bool,
    /// The runtime has more than one worker (yielding can hand the
    /// connection to another one).
    multi_worker: bool,
    /// Calls started this turn, whose handle is stored in one locked pass.
    started: Vec<(u32, CallRef)>,
    /// Inline mode's executor (`None`: every call is a task).
    local: Option<LocalCalls<Call<S>>>,
    /// Calls and requests to drop once the state is unlocked (dropping a
    /// handler may return flow-control credit, which locks the state).
    drop_local: Vec<usize>,
    drop_requests: Vec<Request<Body>>,
    /// Calls started or answered by the frames just read.
    batch: usize,
    highest_id: u32,
    cancel_budget: Option<CancelBudget>,
    started_at: Instant,
    last_call: Instant,
    next_idle_stream_check: Option<Instant>,
    draining: bool,
    forced: Option<&'static str>,
    /// When the connection's maximum age is reached, and when the grace
    /// period after it ends.
    age_at: Option<Instant>,
    age_grace_end: Option<Instant>,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    shutdown_token: CancellationToken,
    /// Created once the connection drains: only then can the grace period end.
    force: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    force_token: CancellationToken,
    tokens_registered: bool,
}

impl<S> ServerRole<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    #[allow(clippy::too_many_arguments)]
    fn new(
        svc: S,
        cfg: Arc<ServerConfig>,
        peer: SocketAddr,
        shared: Arc<Shared<ServerStream>>,
        started_at: Instant,
        shutdown: CancellationToken,
        force: CancellationToken,
        conn_extensions: Option<http::Extensions>,
    ) -> Self {
        let now = Instant::now();
        let age_at = cfg.max_connection_age.map(|age| {
            // ±10% so that the connections of a fleet opened together do not
            // all end together.
            started_at + crate::util::jitter(age, 0.1)
        });
        ServerRole {
            svc,
            peer,
            deadline_sink: DeadlineSink(shared.clone()),
            shared,
            conn_extensions,
            queue: VecDeque::new(),
            backed_up: false,
            replies: Vec::new(),
            spawned: false,
            multi_worker: tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.metrics().num_workers() > 1),
            started: Vec::new(),
            local: cfg.inline_handlers.then(LocalCalls::new),
            drop_local: Vec::new(),
            drop_requests: Vec::new(),
            batch: 0,
            highest_id: 0,
            cancel_budget: cfg
                .max_cancels
                .map(|(n, per)| CancelBudget::new(n, per, now)),
            started_at,
            last_call: now,
            next_idle_stream_check: None,
            draining: false,
            forced: None,
            age_at,
            age_grace_end: None,
            shutdown: Box::pin(shutdown.clone().cancelled_owned()),
            shutdown_token: shutdown,
            force: None,
            force_token: force,
            tokens_registered: false,
            cfg,
        }
    }

    fn check_new_stream_id(&mut self, id: u32) -> Result<(), ConnError> {
        if id == 0 || id % 2 == 0 || id <= self.highest_id || id > MAX_STREAM_ID {
            return Err(ConnError::protocol(format!(
                "stream id {id} is not odd, below 2^31 and greater than the last one ({})",
                self.highest_id
            )));
        }
        self.highest_id = id;
        Ok(())
    }

    /// Answers a new stream without opening it.
    fn refuse(&mut self, st: &mut State<ServerStream>, id: u32, status: Status) {
        self.batch += 1;
        answer(st, id, false, &status);
    }

    fn start_drain(&mut self, st: &mut State<ServerStream>, why: &str) {
        if self.draining {
            return;
        }
        self.draining = true;
        let last = self.highest_id;
        st.wb
            .put(|b| frame::put_goaway(b, last, GoawayCode::NoError, why));
        tracing::debug!(peer = %self.peer, last_stream = last, in_flight = st.streams.len(), "sent GOAWAY: {why}");
    }

    /// Stops a call the connection took over (cancelled, timed out, broke
    /// a rule).
    fn stop(&mut self, call: CallRef, id: u32) {
        match call {
            CallRef::Task(h) => h.abort(),
            CallRef::Local(idx) => self.drop_local.push(idx),
            CallRef::Queued => {
                if let Some(pos) = self.queue.iter().position(|(q, _)| *q == id) {
                    if let Some((_, req)) = self.queue.remove(pos) {
                        self.drop_requests.push(req);
                    }
                }
            }
        }
    }

    /// Ends stream `id` with `status` and stops its call.
    fn fail_stream(&mut self, st: &mut State<ServerStream>, id: u32, status: Status) {
        let Some(sent) = st.streams.get(&id).map(|s| s.ext.headers_sent) else {
            return;
        };
        answer(st, id, sent, &status);
        if let Some(call) = close_stream(st, id, status.message()) {
            self.stop(call, id);
        }
        self.batch += 1;
    }

    /// Counts a call the client cancelled (or made us cancel) against the
    /// rapid-reset budget.
    fn count_cancel(&mut self, now: Instant) -> Result<(), ConnError> {
        let Some(budget) = self.cancel_budget.as_mut() else {
            return Ok(());
        };
        if budget.take(now) {
            return Ok(());
        }
        let (n, per) = self.cfg.max_cancels.unwrap_or_default();
        Err(ConnError::goaway(
            GoawayCode::EnhanceYourCalm,
            format!(
                "too many cancelled calls: more than {n} in {}",
                crate::util::fmt_duration(per)
            ),
        ))
    }

    /// Starts the calls waiting for the service, unless the output is
    /// backed up (a client that reads nothing gets no more work done).
    fn dispatch(&mut self, cx: &mut Context<'_>) -> bool {
        let mut did = false;
        self.backed_up = true;
        if !self.shared.lock().has_write_room() {
            return false;
        }
        while !self.queue.is_empty() {
            let ready = match self.svc.poll_ready(cx) {
                Poll::Pending => break,
                Poll::Ready(r) => r,
            };
            let Some((id, req)) = self.queue.pop_front() else {
                break;
            };
            did = true;
            if let Err(e) = ready {
                drop(req);
                let status = Status::from_error(e.into());
                let mut st = self.shared.lock();
                if let Some(sent) = st.streams.get(&id).map(|s| s.ext.headers_sent) {
                    answer(&mut st, id, sent, &status);
                    close_stream(&mut st, id, status.message());
                }
                continue;
            }
            let method = req.method().clone();
            let fut = self.svc.call(req);
            let task = CallTask::new(self.shared.clone(), id, method, fut);
            let call = match &mut self.local {
                Some(local) => match local.push(task) {
                    Some(idx) => CallRef::Local(idx),
                    None => continue, // finished at once
                },
                None => {
                    self.spawned = true;
                    CallRef::Task(tokio::spawn(task).abort_handle())
                }
            };
            self.started.push((id, call));
        }
        self.backed_up = !self.queue.is_empty();
        if !self.started.is_empty() {
            let mut st = self.shared.lock();
            for (id, call) in self.started.drain(..) {
                match st.streams.get_mut(&id) {
                    Some(s) => s.ext.call = call,
                    // It finished (and was answered) already, or it was
                    // cancelled meanwhile.
                    None => match call {
                        CallRef::Task(h) => h.abort(),
                        CallRef::Local(idx) => self.drop_local.push(idx),
                        CallRef::Queued => {}
                    },
                }
            }
        }
        did
    }

    fn poll_tokens(&mut self, cx: &mut Context<'_>) -> bool {
        let fresh = !self.tokens_registered;
        self.tokens_registered = true;
        let mut progress = false;
        if self.draining || self.force_token.is_cancelled() {
            let token = &self.force_token;
            let force = self
                .force
                .get_or_insert_with(|| Box::pin(token.clone().cancelled_owned()));
            if force.as_mut().poll(cx).is_ready() && self.forced.is_none() {
                self.forced = Some("shutdown grace period over");
                progress = true;
            }
        }
        if !self.draining
            && (fresh || self.shutdown_token.is_cancelled())
            && self.shutdown.as_mut().poll(cx).is_ready()
        {
            let shared = self.shared.clone();
            let mut st = shared.lock();
            self.start_drain(&mut st, "server shutting down");
            progress = true;
        }
        progress
    }

    /// Ends streams whose client has sent nothing for the stream idle
    /// timeout while the request stream is still open.
    fn expire_idle_streams(&mut self, st: &mut State<ServerStream>, now: Instant) {
        let timeout = self.cfg.stream_idle_timeout;
        let mut next: Option<Instant> = None;
        let mut expired = Vec::new();
        for (&id, s) in &st.streams {
            if s.state.can_recv() {
                let at = s.ext.last_recv + timeout;
                if now >= at {
                    expired.push(id);
                } else {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            }
        }
        for id in expired {
            tracing::debug!(peer = %self.peer, stream = id, "stream idle timeout");
            let status = Status::deadline_exceeded(format!(
                "stream idle timeout: no message from the client for {}",
                crate::util::fmt_duration(timeout)
            ));
            self.fail_stream(st, id, status);
        }
        self.next_idle_stream_check = next;
    }

    fn is_idle(&self, st: &State<ServerStream>) -> bool {
        st.streams.is_empty() && self.queue.is_empty()
    }
}

impl<S> Role for ServerRole<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Stream = ServerStream;
    const PEER: &'static str = "client";

    fn on_headers(
        &mut self,
        st: &mut State<ServerStream>,
        f: Frame,
        now: Instant,
    ) -> Result<(), ConnError> {
        let id = f.stream_id();
        self.check_new_stream_id(id)?;
        self.last_call = now;
        if self.draining {
            let status = Status::unavailable("server is shutting down; call not processed")
                .with_refused(true);
            self.refuse(st, id, status);
            return Ok(());
        }
        if st.streams.len() >= self.cfg.max_concurrent_streams as usize {
            let status = Status::resource_exhausted(format!(
                "too many concurrent calls on this connection (limit {})",
                self.cfg.max_concurrent_streams
            ))
            .with_refused(true);
            self.refuse(st, id, status);
            return Ok(());
        }
        // HEADERS payloads are not flow controlled: bound what the calls of
        // one connection may hold, buffered request DATA included (one call
        // is always admitted).
        let cost = f.metadata.len() + f.payload.len();
        let held = st.held_bytes + st.recv_held;
        if held > 0 && held.saturating_add(cost) > self.cfg.max_buffered_request_bytes {
            let status = Status::resource_exhausted(format!(
                "too many request bytes buffered on this connection: calls in flight \
                 hold {held} bytes, this one brings {cost}, the limit is {}",
                self.cfg.max_buffered_request_bytes
            ))
            .with_refused(true);
            self.refuse(st, id, status);
            return Ok(());
        }
        let flags = f.header.flags;
        let head = match wire::decode_request_head(f.metadata) {
            Ok(h) if !f.payload.is_empty() && !flags.contains(Flags::MESSAGE) => {
                drop(h);
                Err(Status::invalid_argument(
                    "malformed HEADERS: a payload without the MESSAGE flag",
                ))
            }
            other => other,
        };
        let head = match head {
            Ok(h) => h,
            Err(status) => {
                tracing::debug!(peer = %self.peer, stream = id, %status, "bad request headers");
                self.refuse(st, id, status);
                return Ok(());
            }
        };
        if head.timeout == Some(Duration::ZERO) {
            let status =
                Status::deadline_exceeded("deadline exceeded before the call reached the server");
            self.refuse(st, id, status);
            return Ok(());
        }
        let message = flags.contains(Flags::MESSAGE).then(|| Payload {
            bytes: f.payload,
            compressed: flags.contains(Flags::COMPRESSED),
        });
        let mut stream = Stream::new(
            st.peer.stream_window,
            self.shared.recv_stream_window,
            ServerStream {
                call: CallRef::Queued,
                held: cost,
                headers_sent: false,
                last_recv: now,
            },
        );
        let mut hold = None;
        let body = if flags.contains(Flags::END_STREAM) {
            stream.state = StreamState::HalfClosedRemote;
            message.map_or_else(Body::empty, Body::once)
        } else {
            // A streaming request: messages follow in DATA frames.
            let inbound = InboundShared::new(self.cfg.stats.clone());
            if let Some(m) = message {
                inbound.push_uncredited(m);
            }
            let sink: Arc<dyn CreditSink> = self.shared.clone();
            let body = Body::stream(Incoming::new(
                inbound.clone(),
                sink,
                id,
                self.shared.recv_stream_window as usize,
            ));
            stream.inbound = Some(inbound.clone());
            hold = Some(HoldCredit(inbound));
            if self.next_idle_stream_check.is_none() {
                self.next_idle_stream_check = Some(now + self.cfg.stream_idle_timeout);
            }
            body
        };
        let mut req = Request::new(body).with_method(head.method);
        *req.metadata_mut() = head.metadata;
        req.set_remote_addr(Some(self.peer));
        req.set_stream_id(id);
        if let Some(ext) = &self.conn_extensions {
            *req.extensions_mut() = ext.clone();
        }
        if let Some(hold) = hold {
            req.extensions_mut().insert(hold);
        }
        let server_deadline = self.cfg.timeout.map(|t| now + t);
        let client_deadline = head.timeout.map(|t| now + t);
        let deadline = match (server_deadline, client_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // The deadline first, then the sink: with the state locked here,
        // the request must not report to the sink.
        req.replace_deadline(deadline);
        req.set_deadline_sink(self.deadline_sink.clone());
        st.held_bytes += cost;
        st.streams.insert(id, stream);
        if let Some(d) = deadline {
            st.tighten_deadline(id, d);
        }
        self.queue.push_back((id, req));
        self.batch += 1;
        Ok(())
    }

    fn on_data(
        &mut self,
        st: &mut State<ServerStream>,
        f: Frame,
        now: Instant,
    ) -> Result<(), ConnError> {
        let id = f.stream_id();
        let len = f.payload.len();
        if st.recv_window.receive(len).is_err() {
            return Err(ConnError::flow_control(
                "flow control: the client exceeded the connection window",
            ));
        }
        let end = f.header.flags.contains(Flags::END_STREAM);
        let Some(s) = st.streams.get_mut(&id).filter(|s| s.state.can_recv()) else {
            // Unknown or finished stream, or data after the end of the
            // request stream: ignored.
            st.credit_conn(len);
            return Ok(());
        };
        s.ext.last_recv = now;
        if s.recv.receive(len).is_err() {
            st.credit_conn(len);
            return self.reset_stream(
                st,
                id,
                Status::resource_exhausted("flow control: the client exceeded the stream window"),
            );
        }
        let delivered = s.inbound.as_ref().is_some_and(|i| {
            i.push(Payload {
                bytes: f.payload,
                compressed: f.header.flags.contains(Flags::COMPRESSED),
            })
        });
        if delivered {
            st.recv_held += len;
        } else if len > 0 {
            // Nobody reads this stream: credit it back at once.
            if let Some(inc) = s.recv.release_now(len) {
                st.wb.put(|b| frame::put_window_update(b, id, inc));
            }
            st.credit_conn(len);
        }
        if end {
            if let Some(s) = st.streams.get_mut(&id) {
                s.state = s.state.close_remote();
                if let Some(i) = s.inbound.take() {
                    i.finish(None);
                }
            }
        }
        Ok(())
    }

    fn on_trailers(&mut self, st: &mut State<ServerStream>, f: Frame) -> Result<(), ConnError> {
        // The client half-closed its request stream.
        if let Some(s) = st.streams.get_mut(&f.stream_id()) {
            if s.state.can_recv() {
                s.state = s.state.close_remote();
                if let Some(i) = s.inbound.take() {
                    i.finish(None);
                }
            }
        }
        Ok(())
    }

    fn on_cancel(
        &mut self,
        st: &mut State<ServerStream>,
        id: u32,
        _code: Code,
    ) -> Result<(), ConnError> {
        let Some(call) = close_stream(st, id, "call cancelled by the client") else {
            return Ok(()); // unknown or finished stream: ignored
        };
        tracing::debug!(peer = %self.peer, stream = id, "call cancelled by the client");
        self.stop(call, id);
        self.batch += 1;
        self.count_cancel(Instant::now())
    }

    fn on_goaway(&mut self, _st: &mut State<ServerStream>, g: Goaway) {
        tracing::debug!(peer = %self.peer, code = ?g.code, "client sent GOAWAY: {}", g.message);
    }

    fn on_too_large(
        &mut self,
        st: &mut State<ServerStream>,
        h: FrameHeader,
        why: String,
    ) -> Result<(), ConnError> {
        let id = h.stream_id;
        tracing::debug!(peer = %self.peer, stream = id, "request {why}");
        let status = Status::resource_exhausted(format!("request {why}"));
        match h.frame_type() {
            Some(FrameType::Headers) => {
                self.check_new_stream_id(id)?;
                self.refuse(st, id, status);
                Ok(())
            }
            Some(FrameType::Data | FrameType::Trailers) => {
                if st.streams.contains_key(&id) {
                    self.fail_stream(st, id, status);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn reset_stream(
        &mut self,
        st: &mut State<ServerStream>,
        id: u32,
        status: Status,
    ) -> Result<(), ConnError> {
        if !st.streams.contains_key(&id) {
            return Ok(());
        }
        self.fail_stream(st, id, status);
        self.count_cancel(Instant::now())
    }

    fn on_deadline(&mut self, st: &mut State<ServerStream>, id: u32) {
        tracing::debug!(peer = %self.peer, stream = id, "deadline exceeded");
        self.fail_stream(
            st,
            id,
            Status::deadline_exceeded("deadline exceeded: the server cancelled the call"),
        );
    }

    fn on_eof(&mut self, st: &mut State<ServerStream>) -> Result<Exit, ConnError> {
        // The protocol has no half-close: EOF means the client is gone, and
        // so are its calls.
        if !self.is_idle(st) {
            tracing::debug!(peer = %self.peer, in_flight = st.streams.len(), "client disconnected; cancelling its calls");
        }
        Ok(Exit::Graceful("client closed the connection"))
    }

    fn poll_work(
        &mut self,
        cx: &mut Context<'_>,
        _shared: &Arc<Shared<ServerStream>>,
    ) -> Result<bool, ConnError> {
        let mut progress = self.poll_tokens(cx);
        // What was stopped with the state locked is dropped now.
        if let Some(local) = &mut self.local {
            for idx in self.drop_local.drain(..) {
                drop(local.remove(idx));
            }
        }
        self.drop_requests.clear();
        if !self.queue.is_empty() && self.dispatch(cx) {
            progress = true;
        }
        if std::mem::take(&mut self.spawned) && self.multi_worker {
            // Go to the back of the run queue once: the runtime then wakes
            // an idle worker, which takes this connection (or the new calls)
            // while this one runs a call that may burn CPU for long; the
            // newest task waits in a slot no other worker may take.
            cx.waker().wake_by_ref();
        }
        if let Some(local) = &mut self.local {
            progress |= local.poll(cx);
        }
        Ok(progress)
    }

    fn reading(&self) -> bool {
        // While the service is not ready (or the output backed up),
        // admitted calls wait and nothing more is read.
        !self.backed_up
    }

    fn exit(&mut self, st: &State<ServerStream>, output_idle: bool) -> Option<Exit> {
        if let Some(why) = self.forced {
            tracing::info!(peer = %self.peer, in_flight = st.streams.len(), "{why}; closing connection");
            return Some(Exit::Forced);
        }
        if self.draining && output_idle && self.is_idle(st) {
            return Some(Exit::Graceful("drained"));
        }
        None
    }

    fn on_turn(&mut self, st: &mut State<ServerStream>) -> bool {
        if self.replies.is_empty() {
            self.shared.side.take(&mut self.replies);
        }
        let limits = (
            st.peer.max_message.min(self.shared.max_send_message),
            st.peer.max_metadata,
        );
        let mut done = 0;
        // While the output has room; what is left waits for a later turn
        // (and so do the results of the calls behind it).
        while done < self.replies.len() && st.has_write_room() {
            let (id, reply) =
                std::mem::replace(&mut self.replies[done], (0, Err(Status::new(Code::Ok, ""))));
            done += 1;
            // A call cancelled or timed out meanwhile was answered already.
            if st.streams.contains_key(&id) {
                write_response(&mut st.wb, id, reply, limits);
                close_stream(st, id, "the call already finished");
            }
        }
        self.replies.drain(..done);
        done > 0
    }

    fn closing(&self) -> bool {
        self.draining || self.forced.is_some()
    }

    fn next_timer(&self, st: &State<ServerStream>) -> Option<Instant> {
        let mut next = self.next_idle_stream_check;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        if !st.peer.received {
            consider(Some(self.started_at + self.cfg.handshake_timeout));
        }
        if !self.draining {
            if self.is_idle(st) {
                consider(self.cfg.idle_timeout.map(|t| self.last_call + t));
            }
            consider(self.age_at);
        }
        consider(self.age_grace_end);
        next
    }

    fn on_timer(&mut self, st: &mut State<ServerStream>, now: Instant) -> Result<(), ConnError> {
        if !st.peer.received && now >= self.started_at + self.cfg.handshake_timeout {
            return Err(ConnError::goaway(
                GoawayCode::Timeout,
                "handshake timeout: no SETTINGS received",
            ));
        }
        if let Some(idle) = self.cfg.idle_timeout {
            if !self.draining && self.is_idle(st) && now >= self.last_call + idle {
                self.start_drain(st, "idle timeout");
            }
        }
        if self.next_idle_stream_check.is_some_and(|t| now >= t) {
            self.expire_idle_streams(st, now);
        }
        if !self.draining && self.age_at.is_some_and(|t| now >= t) {
            self.start_drain(st, "maximum connection age reached; reconnect");
            self.age_grace_end = Some(now + self.cfg.max_connection_age_grace);
        }
        if self.age_grace_end.is_some_and(|t| now >= t) && self.forced.is_none() {
            self.forced = Some("maximum connection age: grace period over");
        }
        Ok(())
    }

    fn take_batch(&mut self) -> usize {
        std::mem::take(&mut self.batch)
    }
}

/// Serves a connection that [`super::accept`] identified as trpc: `rbuf`
/// holds the bytes read during detection, `started` is when the connection
/// was accepted (the handshake timeout runs from there).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve_trpc<IO, S>(
    io: IO,
    rbuf: BytesMut,
    started: Instant,
    peer: SocketAddr,
    svc: S,
    cfg: Arc<ServerConfig>,
    shutdown: CancellationToken,
    force: CancellationToken,
    conn_extensions: Option<http::Extensions>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let shared = Arc::new(Shared::new(
        cfg.stream_window,
        cfg.connection_window,
        PeerSettings::default(),
        cfg.max_send_message,
        cfg.stats.clone(),
    ));
    shared.lock().wb.put(|b| cfg.settings().encode(b));
    let role = ServerRole::new(
        svc,
        cfg.clone(),
        peer,
        shared.clone(),
        started,
        shutdown,
        force,
        conn_extensions,
    );
    let driver = Driver::new(
        io,
        rbuf,
        shared,
        role,
        DriverConfig {
            max_message: cfg.max_message,
            max_metadata: cfg.max_metadata,
            keepalive: cfg.keepalive,
            frame_timeout: Some(cfg.frame_timeout),
            write_timeout: Some(cfg.write_timeout),
            settings_received: false,
            stats: cfg.stats.clone(),
        },
    );
    tracing::debug!(%peer, "trpc connection opened");
    let (driver, result) = driver.run().await;
    // The cold path, boxed: it would otherwise make every connection's task
    // larger for its whole life.
    Box::pin(finish(driver, result)).await;
}

/// Ends a connection: stops every call, says why (GOAWAY) when the peer can
/// still read it, flushes and closes.
async fn finish<IO, S>(mut driver: Driver<IO, ServerRole<S>>, result: Result<Exit, ConnError>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let peer = driver.role.peer;
    let last = driver.role.highest_id;
    let mut goaway = None;
    let flush = match &result {
        Ok(Exit::Graceful(why)) => {
            tracing::debug!(%peer, why, "trpc connection closed");
            true
        }
        Ok(Exit::Forced) => true,
        Err(ConnError::Goaway { code, reason }) => {
            tracing::warn!(%peer, ?code, reason, "closing trpc connection");
            goaway = Some((*code, reason.clone()));
            true
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "trpc connection lost");
            false
        }
    };
    // Stop every call: handlers are dropped (cancellation).
    let streams = driver
        .shared()
        .lock()
        .close(Status::unavailable("connection closed"));
    for (id, s) in streams {
        if let Some(inbound) = &s.inbound {
            inbound.finish(Some(Status::unavailable("connection closed")));
        }
        driver.role.stop(s.ext.call, id);
    }
    let role = &mut driver.role;
    role.queue.clear();
    role.drop_requests.clear();
    if let Some(local) = &mut role.local {
        local.clear();
    }
    if flush {
        driver
            .close(Duration::from_secs(1), |wb| {
                if let Some((code, reason)) = goaway {
                    wb.put(|b| frame::put_goaway(b, last, code, &reason));
                }
            })
            .await;
    }
}
