//! One trpc server connection: the frame loop, in-flight calls, timeouts,
//! keepalive and graceful drain.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tokio_util::codec::Decoder;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower_service::Service;

use super::calls::{CallFuture, CallSet, Signal};
use super::ServerConfig;
use crate::body::{Body, Payload};
use crate::frame::{
    self, Decoded, Flags, Frame, FrameCodec, FrameHeader, FrameType, GoawayCode, Settings, WriteBuf,
};
use crate::metadata::MetadataMap;
use crate::request::{Request, Response};
use crate::status::{BoxError, Code, Status};
use crate::stream::{InboundShared, Incoming};
use crate::util::IdMap;
use crate::wire;

/// How long a connection stays idle before it gives its buffers back.
const IDLE_RELEASE: Duration = Duration::from_millis(100);

/// Stop reading new requests while this much output is waiting for the peer.
const WRITE_HIGH_WATER: usize = 1 << 20;

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
    let mut wbuf = WriteBuf::new();
    wbuf.put(|b| cfg.settings().encode(b));
    let now = Instant::now();
    let mut conn = ServerConn {
        io,
        peer,
        svc,
        rbuf,
        codec: FrameCodec::new()
            .max_message(cfg.max_message)
            .max_metadata(cfg.max_metadata),
        wbuf,
        calls: CallSet::new(),
        streams: IdMap::default(),
        pending: None,
        highest_id: 0,
        peer_max_message: frame::DEFAULT_MAX_MESSAGE,
        peer_max_metadata: frame::DEFAULT_MAX_METADATA,
        peer_stream_window: frame::DEFAULT_STREAM_WINDOW,
        conn_send_window: i64::from(frame::DEFAULT_CONNECTION_WINDOW),
        conn_recv_window: i64::from(cfg.connection_window),
        conn_recv_unacked: 0,
        parked: Vec::new(),
        ready: Vec::new(),
        signals: Vec::new(),
        got_settings: false,
        draining: false,
        read_closed: false,
        shutdown: Box::pin(shutdown.clone().cancelled_owned()),
        force: None,
        shutdown_token: shutdown,
        force_token: force,
        tokens_registered: false,
        timer_polled: false,
        buffers_held: true,
        release_at: None,
        last_idle: None,
        read_sizer: crate::util::ReadSizer::new(),
        timer: Box::pin(tokio::time::sleep_until(now)),
        timer_at: now,
        started,
        last_read: now,
        last_call: now,
        ping_sent: None,
        mid_frame_since: None,
        frame_progress: now,
        // Bytes read during detection (SETTINGS, maybe calls) are frames too.
        backlog: true,
        held_request_bytes: 0,
        cancel_budget: cfg
            .max_cancels
            .map(|(n, per)| CancelBudget::new(n, per, now)),
        write_blocked_since: None,
        next_idle_stream_check: None,
        ok: Status::new(Code::Ok, ""),
        conn_extensions,
        cfg,
    };
    tracing::debug!(%peer, "trpc connection opened");
    conn.arm_timer(now);
    let close = poll_fn(|cx| conn.poll_conn(cx)).await;
    // The cold path, boxed: it would otherwise make every connection's task
    // larger for its whole life.
    Box::pin(conn.finish(close)).await;
}

/// Why a connection ends.
#[derive(Debug)]
enum Close {
    /// Drained or the client went away cleanly.
    Graceful(&'static str),
    /// Closed by us with a GOAWAY error.
    Error(GoawayCode, String),
    /// The socket failed or the peer vanished.
    Io(String),
    /// Forced at the end of the shutdown grace period.
    Forced,
}

/// The server's view of one open stream.
struct StreamState {
    /// The call's slot in the call set, once dispatched and not finished.
    slot: Option<usize>,
    /// The request stream, while the client may still send.
    inbound: Option<Arc<InboundShared>>,
    /// When the request stream last received a frame.
    last_recv: Instant,
    /// Receive window left for this stream's DATA.
    recv_window: i64,
    /// Send window left for the response stream's DATA.
    send_window: i64,
    /// Response metadata, until the response HEADERS are sent.
    headers: Option<MetadataMap>,
    /// The handler no longer reads its request stream: DATA is discarded.
    discard: bool,
    /// Waiting for a WINDOW_UPDATE on this stream.
    blocked: bool,
    /// Request bytes (HEADERS metadata and first message) this call holds
    /// while its handler runs; counted in `held_request_bytes`.
    held: usize,
}

/// Rapid-reset defence: a token bucket of client cancellations (CANCEL frames
/// that abort a call in flight). It holds `max` tokens and refills `max` per
/// `per`; a connection that empties it is closed with GOAWAY(ENHANCE_YOUR_CALM).
#[derive(Debug)]
struct CancelBudget {
    tokens: f64,
    max: f64,
    per_sec: f64,
    at: Instant,
}

impl CancelBudget {
    fn new(max: u32, per: Duration, now: Instant) -> Self {
        let max = f64::from(max.max(1));
        CancelBudget {
            tokens: max,
            max,
            per_sec: max / per.as_secs_f64().max(1e-3),
            at: now,
        }
    }

    /// Takes one token; false when the bucket is empty.
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.max);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct ServerConn<IO, S: Service<Request<Body>>> {
    io: IO,
    peer: SocketAddr,
    svc: S,
    cfg: Arc<ServerConfig>,
    rbuf: BytesMut,
    codec: FrameCodec,
    wbuf: WriteBuf,
    calls: CallSet<S::Future>,
    /// Streams that are open and not finished immediately (pending unary
    /// calls, streaming calls).
    streams: IdMap<StreamState>,
    pending: Option<(u32, Request<Body>)>,
    highest_id: u32,
    peer_max_message: usize,
    peer_max_metadata: usize,
    peer_stream_window: u32,
    conn_send_window: i64,
    conn_recv_window: i64,
    conn_recv_unacked: usize,
    /// Streaming calls waiting for connection window or write buffer room.
    parked: Vec<usize>,
    ready: Vec<usize>,
    signals: Vec<Signal>,
    got_settings: bool,
    draining: bool,
    read_closed: bool,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Created once the connection drains: only then can the grace period end.
    force: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// The tokens behind `shutdown` and `force`: once their futures are
    /// registered, an atomic check tells when to poll them again.
    shutdown_token: CancellationToken,
    force_token: CancellationToken,
    tokens_registered: bool,
    /// False after the timer was reset and not yet polled (registered).
    timer_polled: bool,
    /// Buffers may hold memory since the connection was last idle.
    buffers_held: bool,
    /// When an idle connection gives its buffers back (hysteresis: a
    /// connection between two calls keeps them).
    release_at: Option<Instant>,
    /// When the connection last went idle.
    last_idle: Option<Instant>,
    read_sizer: crate::util::ReadSizer,
    timer: Pin<Box<Sleep>>,
    timer_at: Instant,
    started: Instant,
    last_read: Instant,
    last_call: Instant,
    ping_sent: Option<Instant>,
    /// When the first byte of the partial frame in `rbuf` arrived.
    mid_frame_since: Option<Instant>,
    /// When the partial frame last received bytes (or we last paused reading).
    frame_progress: Instant,
    /// `rbuf` may hold complete frames not processed yet (we stopped early
    /// for backpressure); they are processed before reading more.
    backlog: bool,
    /// Request bytes held by calls whose handlers run (see `StreamState::held`).
    held_request_bytes: usize,
    /// Rapid-reset defence (`None`: disabled).
    cancel_budget: Option<CancelBudget>,
    write_blocked_since: Option<Instant>,
    next_idle_stream_check: Option<Instant>,
    ok: Status,
    /// Extensions every request of this connection gets (e.g. TLS details).
    conn_extensions: Option<http::Extensions>,
}

/// Most bytes one streaming call writes before other calls get a turn.
const STREAM_TURN_BYTES: usize = 256 * 1024;

impl<IO, S> ServerConn<IO, S>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    async fn finish(mut self, close: Close) {
        match &close {
            Close::Graceful(why) => {
                tracing::debug!(peer = %self.peer, why, "trpc connection closed")
            }
            Close::Error(code, msg) => {
                tracing::warn!(peer = %self.peer, ?code, msg, "closing trpc connection");
                let last = self.highest_id;
                self.wbuf.put(|b| frame::put_goaway(b, last, *code, msg));
            }
            Close::Io(e) => tracing::debug!(peer = %self.peer, error = %e, "trpc connection lost"),
            Close::Forced => {
                tracing::info!(peer = %self.peer, in_flight = self.streams.len(), "shutdown grace period over; closing connection")
            }
        }
        // Drop in-flight handlers now (cancellation), then flush what is left.
        for (_, st) in self.streams.drain() {
            if let Some(inbound) = st.inbound {
                inbound.finish(Some(Status::unavailable("connection closed")));
            }
        }
        self.calls = CallSet::new();
        self.pending = None;
        if !matches!(close, Close::Io(_)) {
            let io = &mut self.io;
            let wbuf = &mut self.wbuf;
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let _ = poll_fn(|cx| wbuf.poll_flush(Pin::new(&mut *io), cx)).await;
                let _ = io.shutdown().await;
            })
            .await;
        }
    }

    fn poll_conn(&mut self, cx: &mut Context<'_>) -> Poll<Close> {
        loop {
            let mut progress = false;

            let fresh = !self.tokens_registered;
            self.tokens_registered = true;
            if self.draining || self.force_token.is_cancelled() {
                let token = &self.force_token;
                let force = self
                    .force
                    .get_or_insert_with(|| Box::pin(token.clone().cancelled_owned()));
                if force.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Close::Forced);
                }
            }
            if !self.draining
                && (fresh || self.shutdown_token.is_cancelled())
                && self.shutdown.as_mut().poll(cx).is_ready()
            {
                self.start_drain("server shutting down");
                progress = true;
            }

            // A request waiting for the service to become ready.
            if self.pending.is_some() {
                if let Poll::Ready(r) = self.svc.poll_ready(cx) {
                    if let Some((id, req)) = self.pending.take() {
                        match r {
                            // Its request bytes are already held (on_headers).
                            Ok(()) => self.dispatch(id, req, 0),
                            Err(e) => {
                                self.respond_err(id, Status::from_error(e.into()));
                                self.end_stream(id);
                            }
                        }
                    }
                    progress = true;
                }
            }

            // Woken calls, and credit from request stream consumers.
            let mut ready = std::mem::take(&mut self.ready);
            let mut signals = std::mem::take(&mut self.signals);
            self.calls.take_ready(cx, &mut ready, &mut signals);
            if !signals.is_empty() {
                for s in signals.drain(..) {
                    self.on_signal(s);
                }
                progress = true;
            }
            if !ready.is_empty() {
                for idx in ready.drain(..) {
                    self.poll_slot(idx);
                }
                progress = true;
            }
            self.ready = ready;
            self.signals = signals;

            // Read more requests unless backpressured.
            let was_reading = self.reading();
            if self.reading() && self.backlog {
                // Frames already buffered come before new bytes.
                if let Some(close) = self.process_frames(cx) {
                    return Poll::Ready(close);
                }
                progress = true;
            } else if self.reading() {
                let room = self.read_sizer.reserve(&mut self.rbuf);
                match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
                    Poll::Ready(Ok(0)) => {
                        // The protocol has no half-close: EOF means the client
                        // is gone, and so are its calls.
                        self.read_closed = true;
                        if !self.streams.is_empty() || self.pending.is_some() {
                            tracing::debug!(peer = %self.peer, in_flight = self.streams.len(), "client disconnected; cancelling its calls");
                        }
                        return Poll::Ready(Close::Graceful("client closed the connection"));
                    }
                    Poll::Ready(Ok(n)) => {
                        self.read_sizer.observe(n, room);
                        self.last_read = Instant::now();
                        self.buffers_held = true;
                        if let Some(s) = &self.cfg.stats {
                            s.on_read(n);
                        }
                        if let Some(close) = self.process_frames(cx) {
                            return Poll::Ready(close);
                        }
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Close::Io(e.to_string())),
                    Poll::Pending => {}
                }
            }

            // Write.
            if !self.wbuf.is_empty() {
                let before = self.wbuf.len();
                if let Some(s) = &self.cfg.stats {
                    s.observe_write_buffered(before);
                }
                let flushed = self.wbuf.poll_flush(Pin::new(&mut self.io), cx);
                if let Some(s) = &self.cfg.stats {
                    s.on_write(before - self.wbuf.len());
                }
                match flushed {
                    Poll::Ready(Ok(())) => {
                        self.write_blocked_since = None;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Close::Io(e.to_string())),
                    Poll::Pending => {
                        if self.wbuf.len() < before {
                            self.write_blocked_since = None;
                        } else if self.write_blocked_since.is_none() {
                            let now = Instant::now();
                            self.write_blocked_since = Some(now);
                            self.ensure_timer(now + self.cfg.write_timeout);
                        }
                    }
                }
            }
            if !was_reading && self.reading() {
                // Writing made room: read again now, so that the socket's
                // read readiness is registered (nothing else would wake us).
                progress = true;
            }
            if !self.parked.is_empty()
                && self.conn_send_window > 0
                && self.wbuf.len() < WRITE_HIGH_WATER / 2
            {
                for idx in self.parked.drain(..) {
                    self.calls.wake(idx);
                }
                progress = true;
            }

            // Idle: give memory back soon (not at once: the next call would
            // only allocate it again).
            if self.streams.is_empty() && self.pending.is_none() && self.wbuf.is_empty() {
                if let (Some(idle), false) = (self.cfg.idle_timeout, self.draining) {
                    self.ensure_timer(self.last_call + idle);
                }
                if self.buffers_held {
                    self.buffers_held = false;
                    // A connection that was idle a moment ago is busy: it
                    // keeps its buffers for the next call and gives them back
                    // after IDLE_RELEASE of quiet. Others give them back now.
                    let busy = self
                        .last_idle
                        .is_some_and(|t| self.last_read < t + IDLE_RELEASE);
                    self.last_idle = Some(self.last_read);
                    if busy {
                        let at = self.last_read + IDLE_RELEASE;
                        self.release_at = Some(at);
                        self.ensure_timer(at);
                    } else {
                        self.release_buffers();
                    }
                }
                if self.draining {
                    return Poll::Ready(Close::Graceful("drained"));
                }
                if self.read_closed {
                    return Poll::Ready(Close::Graceful("client closed the connection"));
                }
            }

            if !self.timer_polled || self.timer.is_elapsed() {
                self.timer_polled = true;
                if self.timer.as_mut().poll(cx).is_ready() {
                    if let Some(close) = self.on_timer() {
                        return Poll::Ready(close);
                    }
                    progress = true;
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    fn start_drain(&mut self, why: &str) {
        self.draining = true;
        let last = self.highest_id;
        self.wbuf
            .put(|b| frame::put_goaway(b, last, GoawayCode::NoError, why));
        tracing::debug!(peer = %self.peer, last_stream = last, in_flight = self.streams.len(), "sent GOAWAY: {why}");
    }

    /// True while we read from the socket (not paused for backpressure or a
    /// service that is not ready).
    fn reading(&self) -> bool {
        self.pending.is_none() && !self.read_closed && self.wbuf.len() < WRITE_HIGH_WATER
    }

    /// When the partial frame in `rbuf` times out: its header must be
    /// complete within `frame_timeout` of its first byte (a trickle does not
    /// extend that), and its body must keep receiving bytes.
    fn frame_deadline(&self) -> Option<Instant> {
        let since = self.mid_frame_since?;
        let base = if self.codec.is_mid_header(&self.rbuf) {
            since
        } else {
            self.frame_progress
        };
        Some(base + self.cfg.frame_timeout)
    }

    fn ensure_timer(&mut self, at: Instant) {
        if at < self.timer_at {
            self.timer_at = at;
            self.timer.as_mut().reset(at);
            self.timer_polled = false;
        }
    }

    /// Gives the buffers of an idle connection back to the allocator.
    fn release_buffers(&mut self) {
        self.wbuf.release();
        self.calls.shrink();
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
    }

    fn arm_timer(&mut self, now: Instant) {
        let cfg = &self.cfg;
        let mut at = now + Duration::from_secs(3600);
        if !self.got_settings {
            at = at.min(self.started + cfg.handshake_timeout);
        }
        if let Some((interval, timeout)) = cfg.keepalive {
            at = at.min(match self.ping_sent {
                Some(sent) => sent + timeout,
                None => self.last_read + interval,
            });
        }
        if let Some(idle) = cfg.idle_timeout {
            // Only an idle connection can time out idle (re-armed from
            // poll_conn when the last call ends).
            if self.streams.is_empty() && self.pending.is_none() && !self.draining {
                at = at.min(self.last_call + idle);
            }
        }
        if let Some(frame_at) = self.frame_deadline() {
            at = at.min(frame_at);
        }
        if let Some(since) = self.write_blocked_since {
            at = at.min(since + cfg.write_timeout);
        }
        if let Some(check) = self.next_idle_stream_check {
            at = at.min(check);
        }
        if let Some(release) = self.release_at {
            at = at.min(release);
        }
        self.timer_at = at.max(now);
        self.timer.as_mut().reset(self.timer_at);
        self.timer_polled = false;
    }

    fn on_timer(&mut self) -> Option<Close> {
        let now = Instant::now();
        if self.release_at.is_some_and(|at| now >= at) {
            self.release_at = None;
            if self.streams.is_empty() && self.pending.is_none() && self.wbuf.is_empty() {
                self.release_buffers();
            }
        }
        let cfg = self.cfg.clone();
        if !self.got_settings && now >= self.started + cfg.handshake_timeout {
            return Some(Close::Error(
                GoawayCode::Timeout,
                "handshake timeout: no SETTINGS received".into(),
            ));
        }
        if let Some(since) = self.write_blocked_since {
            if now >= since + cfg.write_timeout {
                return Some(Close::Io(format!(
                    "write timeout: peer read nothing for {}",
                    crate::util::fmt_duration(cfg.write_timeout)
                )));
            }
        }
        if let Some(frame_at) = self.frame_deadline() {
            if !self.reading() || self.backlog {
                // We paused reading (backpressure): the peer is not late.
                self.mid_frame_since = Some(now);
                self.frame_progress = now;
            } else if now >= frame_at {
                let ft = crate::util::fmt_duration(cfg.frame_timeout);
                let why = if self.codec.is_mid_header(&self.rbuf) {
                    format!(
                        "read timeout: frame header incomplete ({} of {} bytes) {ft} after its first byte",
                        self.rbuf.len(),
                        frame::HEADER_LEN
                    )
                } else {
                    format!("read timeout: incomplete frame and no bytes for {ft}")
                };
                return Some(Close::Error(GoawayCode::Timeout, why));
            }
        }
        if let Some(idle) = cfg.idle_timeout {
            if self.streams.is_empty()
                && self.pending.is_none()
                && now >= self.last_call + idle
                && !self.draining
            {
                self.start_drain("idle timeout");
            }
        }
        if self.next_idle_stream_check.is_some_and(|t| now >= t) {
            self.expire_idle_streams(now);
        }
        if let Some((interval, timeout)) = cfg.keepalive {
            if let Some(sent) = self.ping_sent {
                if self.last_read > sent {
                    self.ping_sent = None;
                } else if now >= sent + timeout {
                    return Some(Close::Io(format!(
                        "keepalive timeout: no answer to PING within {}",
                        crate::util::fmt_duration(timeout)
                    )));
                }
            }
            if self.ping_sent.is_none() && now >= self.last_read + interval {
                self.wbuf.put(|b| frame::put_ping(b, false, *b"trpcping"));
                self.ping_sent = Some(now);
            }
        }
        self.arm_timer(now);
        None
    }

    /// Ends streams whose client has sent nothing for the stream idle timeout
    /// while the request stream is still open.
    fn expire_idle_streams(&mut self, now: Instant) {
        let timeout = self.cfg.stream_idle_timeout;
        let mut next: Option<Instant> = None;
        let mut expired = Vec::new();
        for (&id, st) in &self.streams {
            if st.inbound.is_some() {
                if now >= st.last_recv + timeout {
                    expired.push(id);
                } else {
                    let at = st.last_recv + timeout;
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
            self.fail_stream(id, status);
        }
        self.next_idle_stream_check = next;
    }

    /// Decodes and applies every complete frame; stops early when a request is
    /// waiting for the service to become ready.
    fn process_frames(&mut self, cx: &mut Context<'_>) -> Option<Close> {
        self.backlog = false;
        loop {
            if self.pending.is_some() || self.wbuf.len() >= WRITE_HIGH_WATER {
                // Stop early: a request waits for the service, or enough
                // output waits for the peer. The rest is processed later.
                self.backlog = !self.rbuf.is_empty();
                break;
            }
            match self.codec.decode(&mut self.rbuf) {
                Ok(Some(Decoded::Frame(f))) => {
                    self.mid_frame_since = None;
                    if let Some(close) = self.on_frame(f, cx) {
                        return Some(close);
                    }
                }
                Ok(Some(Decoded::TooLarge(h))) => {
                    self.mid_frame_since = None;
                    if let Some(close) = self.on_too_large(h) {
                        return Some(close);
                    }
                }
                Ok(None) => break,
                Err(e) => return Some(Close::Error(e.goaway_code(), e.to_string())),
            }
        }
        if self.codec.is_mid_frame(&self.rbuf) {
            self.frame_progress = self.last_read;
            if self.mid_frame_since.is_none() {
                self.mid_frame_since = Some(self.last_read);
            }
            if let Some(at) = self.frame_deadline() {
                self.ensure_timer(at);
            }
        } else {
            self.mid_frame_since = None;
        }
        None
    }

    fn on_too_large(&mut self, h: FrameHeader) -> Option<Close> {
        let id = h.stream_id;
        let what = if h.metadata_len as usize > self.codec.max_metadata_len() {
            format!(
                "request metadata of {} bytes exceeds the limit of {} bytes",
                h.metadata_len,
                self.codec.max_metadata_len()
            )
        } else {
            format!(
                "request message of {} bytes exceeds the limit of {} bytes",
                h.payload_len,
                self.codec.max_message_len()
            )
        };
        tracing::debug!(peer = %self.peer, stream = id, "{what}");
        match h.frame_type() {
            Some(FrameType::Headers) => {
                if let Some(close) = self.check_new_stream_id(id) {
                    return Some(close);
                }
                self.respond_err(id, Status::resource_exhausted(what));
            }
            Some(FrameType::Data) => {
                // The client counted these bytes against the connection window.
                self.conn_recv_window -= i64::from(h.payload_len);
                self.credit_conn(h.payload_len as usize);
                if self.streams.contains_key(&id) {
                    self.fail_stream(id, Status::resource_exhausted(what));
                }
            }
            _ => {}
        }
        None
    }

    fn check_new_stream_id(&mut self, id: u32) -> Option<Close> {
        if id == 0 || id % 2 == 0 || id <= self.highest_id {
            return Some(Close::Error(
                GoawayCode::ProtocolError,
                format!(
                    "stream id {id} is not odd and greater than the last one ({})",
                    self.highest_id
                ),
            ));
        }
        self.highest_id = id;
        None
    }

    fn on_frame(&mut self, f: Frame, cx: &mut Context<'_>) -> Option<Close> {
        let kind = f.frame_type();
        if !self.got_settings {
            if kind != Some(FrameType::Settings) {
                return Some(Close::Error(
                    GoawayCode::ProtocolError,
                    format!(
                        "first frame must be SETTINGS, got frame type {} on stream {}",
                        f.header.kind,
                        f.stream_id()
                    ),
                ));
            }
            self.got_settings = true;
        }
        match kind {
            Some(FrameType::Headers) => return self.on_headers(f, cx),
            Some(FrameType::Data) => return self.on_data(f),
            Some(FrameType::Trailers) => {
                // The client half-closed its request stream.
                if let Some(st) = self.streams.get_mut(&f.stream_id()) {
                    if let Some(inbound) = st.inbound.take() {
                        inbound.finish(None);
                    }
                }
            }
            Some(FrameType::Cancel) => {
                let id = f.stream_id();
                if self.pending.as_ref().is_some_and(|(p, _)| *p == id) {
                    self.pending = None;
                }
                if self.streams.contains_key(&id) {
                    tracing::debug!(peer = %self.peer, stream = id, "call cancelled by the client");
                    self.drop_stream(id, Status::cancelled("call cancelled by the client"));
                    if let Some(close) = self.count_cancel() {
                        return Some(close);
                    }
                }
            }
            Some(FrameType::WindowUpdate) => {
                return self.on_window_update(f.stream_id(), &f.payload)
            }
            Some(FrameType::Ping) => {
                // The decoder admits only 8-byte PINGs.
                if let Ok(data) = <[u8; 8]>::try_from(&f.payload[..]) {
                    self.wbuf.put(|b| frame::put_ping(b, true, data));
                }
            }
            Some(FrameType::Pong) => self.ping_sent = None,
            Some(FrameType::Settings) => match Settings::parse(&f.payload) {
                Some(s) => {
                    if let Some(v) = s.max_message_size {
                        self.peer_max_message = v as usize;
                    }
                    if let Some(v) = s.max_metadata_size {
                        self.peer_max_metadata = frame::metadata_limit(v as usize);
                    }
                    if let Some(v) = s.initial_stream_window {
                        self.peer_stream_window = v.min(frame::MAX_WINDOW as u32);
                    }
                    if let (Some(v), false) = (s.initial_connection_window, self.highest_id > 0) {
                        self.conn_send_window = i64::from(v).min(frame::MAX_WINDOW);
                    }
                }
                None => {
                    return Some(Close::Error(
                        GoawayCode::ProtocolError,
                        "malformed SETTINGS payload".into(),
                    ))
                }
            },
            Some(FrameType::Goaway) => {
                tracing::debug!(peer = %self.peer, "client sent GOAWAY");
            }
            None => {
                tracing::trace!(peer = %self.peer, kind = f.header.kind, "ignoring unknown frame type");
            }
        }
        None
    }

    fn on_headers(&mut self, f: Frame, cx: &mut Context<'_>) -> Option<Close> {
        let id = f.stream_id();
        if let Some(close) = self.check_new_stream_id(id) {
            return Some(close);
        }
        self.last_call = self.last_read;
        if self.draining {
            self.respond_err(
                id,
                Status::unavailable("server is shutting down; call not processed")
                    .with_refused(true),
            );
            return None;
        }
        if self.streams.len() >= self.cfg.max_concurrent_streams as usize {
            self.respond_err(
                id,
                Status::resource_exhausted(format!(
                    "too many concurrent calls on this connection (limit {})",
                    self.cfg.max_concurrent_streams
                ))
                .with_refused(true),
            );
            return None;
        }
        // HEADERS payloads are not flow controlled: bound what the calls of
        // one connection may hold (one call is always admitted).
        let cost = f.metadata.len() + f.payload.len();
        let held = self.held_request_bytes;
        if held > 0 && held.saturating_add(cost) > self.cfg.max_buffered_request_bytes {
            self.respond_err(
                id,
                Status::resource_exhausted(format!(
                    "too many request bytes buffered on this connection: calls in flight \
                     hold {held} bytes, this one brings {cost}, the limit is {}",
                    self.cfg.max_buffered_request_bytes
                ))
                .with_refused(true),
            );
            return None;
        }
        let head = match wire::decode_request_head(f.metadata) {
            Ok(h) => h,
            Err(status) => {
                tracing::debug!(peer = %self.peer, stream = id, %status, "bad request headers");
                self.respond_err(id, status);
                return None;
            }
        };
        if head.timeout == Some(Duration::ZERO) {
            self.respond_err(
                id,
                Status::deadline_exceeded("deadline exceeded before the call reached the server"),
            );
            return None;
        }
        let flags = f.header.flags;
        let message = flags.contains(Flags::MESSAGE).then(|| Payload {
            bytes: f.payload,
            compressed: flags.contains(Flags::COMPRESSED),
        });
        let body = if flags.contains(Flags::END_STREAM) {
            message.map_or_else(Body::empty, Body::once)
        } else {
            // A streaming request: messages follow in DATA frames.
            let inbound = InboundShared::new(self.cfg.stats.clone());
            if let Some(m) = message {
                inbound.push_uncredited(m);
            }
            let body = Body::stream(Incoming::new(
                inbound.clone(),
                self.calls.sink(),
                id,
                self.cfg.stream_window as usize,
                None,
            ));
            self.open_stream(id, Some(inbound));
            body
        };
        let mut req = Request::new(body).with_method(head.method);
        *req.metadata_mut() = head.metadata;
        req.set_remote_addr(Some(self.peer));
        req.set_stream_id(id);
        if let Some(ext) = &self.conn_extensions {
            *req.extensions_mut() = ext.clone();
        }
        let server_deadline = self.cfg.timeout.map(|t| self.last_read + t);
        let client_deadline = head.timeout.map(|t| self.last_read + t);
        let deadline = match (server_deadline, client_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        req.replace_deadline(deadline);

        match self.svc.poll_ready(cx) {
            Poll::Ready(Ok(())) => self.dispatch(id, req, cost),
            Poll::Ready(Err(e)) => {
                self.respond_err(id, Status::from_error(e.into()));
                self.end_stream(id);
            }
            Poll::Pending => {
                self.open_stream(id, None);
                self.hold(id, cost);
                self.pending = Some((id, req));
            }
        }
        None
    }

    fn open_stream(&mut self, id: u32, inbound: Option<Arc<InboundShared>>) {
        if inbound.is_some() && self.next_idle_stream_check.is_none() {
            let at = self.last_read + self.cfg.stream_idle_timeout;
            self.next_idle_stream_check = Some(at);
            self.ensure_timer(at);
        }
        let entry = self.streams.entry(id).or_insert_with(|| StreamState {
            slot: None,
            inbound: None,
            last_recv: self.last_read,
            recv_window: i64::from(self.cfg.stream_window),
            send_window: i64::from(self.peer_stream_window),
            headers: None,
            discard: false,
            blocked: false,
            held: 0,
        });
        if inbound.is_some() {
            entry.inbound = inbound;
        }
    }

    fn on_data(&mut self, f: Frame) -> Option<Close> {
        let id = f.stream_id();
        let len = f.payload.len();
        if len > 0 {
            if self.conn_recv_window <= 0 {
                return Some(Close::Error(
                    GoawayCode::FlowControlError,
                    "flow control: the client exceeded the connection window".into(),
                ));
            }
            self.conn_recv_window -= len as i64;
        }
        let end = f.header.flags.contains(Flags::END_STREAM);
        let last_read = self.last_read;
        let Some(st) = self.streams.get_mut(&id) else {
            // Unknown or finished stream: ignored.
            self.credit_conn(len);
            return None;
        };
        let Some(inbound) = st.inbound.clone() else {
            // Data after the end of the request stream: ignored.
            self.credit_conn(len);
            return None;
        };
        st.last_recv = last_read;
        if len > 0 && st.recv_window <= 0 && !st.discard {
            self.credit_conn(len);
            self.fail_stream(
                id,
                Status::resource_exhausted("flow control: the client exceeded the stream window"),
            );
            return None;
        }
        let delivered = !st.discard
            && inbound.push(Payload {
                bytes: f.payload,
                compressed: f.header.flags.contains(Flags::COMPRESSED),
            });
        if delivered {
            st.recv_window -= len as i64;
        } else if len > 0 {
            // Nobody reads this stream: credit it back at once.
            st.discard = true;
            self.wbuf
                .put(|b| frame::put_window_update(b, id, len as u32));
            self.credit_conn(len);
        }
        if end {
            if let Some(st) = self.streams.get_mut(&id) {
                st.inbound = None;
            }
            inbound.finish(None);
        }
        None
    }

    fn on_window_update(&mut self, id: u32, payload: &[u8]) -> Option<Close> {
        let inc = i64::from(wire::window_increment(payload).unwrap_or(0));
        if id == 0 {
            self.conn_send_window += inc;
            if inc == 0 || self.conn_send_window > frame::MAX_WINDOW {
                return Some(Close::Error(
                    GoawayCode::FlowControlError,
                    "flow control: bad connection WINDOW_UPDATE".into(),
                ));
            }
            return None;
        }
        let st = self.streams.get_mut(&id)?;
        st.send_window += inc;
        if inc == 0 || st.send_window > frame::MAX_WINDOW {
            self.drop_stream(
                id,
                Status::resource_exhausted("flow control: bad WINDOW_UPDATE"),
            );
            wire::put_cancel(&mut self.wbuf, id, Code::ResourceExhausted);
        } else if st.blocked && st.send_window > 0 {
            st.blocked = false;
            if let Some(idx) = st.slot {
                self.calls.wake(idx);
            }
        }
        None
    }

    fn on_signal(&mut self, s: Signal) {
        match s {
            Signal::Credit(id, n) => {
                if let Some(st) = self.streams.get_mut(&id) {
                    if st.inbound.is_some() {
                        let inc = n.min(frame::MAX_WINDOW as usize);
                        st.recv_window += inc as i64;
                        self.wbuf
                            .put(|b| frame::put_window_update(b, id, inc as u32));
                    }
                }
                self.credit_conn(n);
            }
            Signal::Dropped(id, unconsumed) => {
                self.credit_conn(unconsumed);
                if let Some(st) = self.streams.get_mut(&id) {
                    st.discard = true;
                    if unconsumed > 0 && st.inbound.is_some() {
                        st.recv_window += unconsumed as i64;
                        self.wbuf
                            .put(|b| frame::put_window_update(b, id, unconsumed as u32));
                    }
                }
            }
        }
    }

    /// Returns connection-level credit for `n` received bytes.
    fn credit_conn(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.conn_recv_unacked += n;
        if self.conn_recv_unacked >= (self.cfg.connection_window as usize / 2).max(1) {
            let inc = self.conn_recv_unacked.min(frame::MAX_WINDOW as usize);
            self.conn_recv_unacked -= inc;
            self.conn_recv_window += inc as i64;
            self.wbuf
                .put(|b| frame::put_window_update(b, 0, inc as u32));
        }
    }

    /// Starts the handler of stream `id`; while it runs, the call holds
    /// `cost` request bytes.
    fn dispatch(&mut self, id: u32, req: Request<Body>, cost: usize) {
        let deadline = req.deadline();
        let method = req.method().clone();
        let fut = CallFuture::new(self.svc.call(req), deadline, method);
        match self.calls.push(id, fut) {
            Ok(idx) => {
                self.open_stream(id, None);
                if let Some(st) = self.streams.get_mut(&id) {
                    st.slot = Some(idx);
                }
                self.hold(id, cost);
            }
            Err((fut, result)) => self.on_handler_done(id, fut, result),
        }
    }

    /// Counts `cost` request bytes against stream `id` (and the connection).
    fn hold(&mut self, id: u32, cost: usize) {
        if let Some(st) = self.streams.get_mut(&id) {
            st.held += cost;
            self.held_request_bytes += cost;
        }
    }

    /// Stream `id` no longer holds request bytes (its handler finished).
    fn release(&mut self, id: u32) {
        if let Some(st) = self.streams.get_mut(&id) {
            self.held_request_bytes -= std::mem::take(&mut st.held);
        }
    }

    /// A removed stream gives back what it held; the connection's idle time
    /// starts when its last stream ends.
    fn forget(&mut self, st: &StreamState) {
        self.held_request_bytes -= st.held;
        if self.streams.is_empty() {
            self.last_call = Instant::now();
        }
    }

    /// Counts a call cancelled by the client against the rapid-reset budget.
    fn count_cancel(&mut self) -> Option<Close> {
        let budget = self.cancel_budget.as_mut()?;
        if budget.take(self.last_read) {
            return None;
        }
        let (n, per) = self.cfg.max_cancels?;
        Some(Close::Error(
            GoawayCode::EnhanceYourCalm,
            format!(
                "too many cancelled calls: more than {n} in {}",
                crate::util::fmt_duration(per)
            ),
        ))
    }

    fn limits(&self) -> (usize, usize) {
        (
            self.peer_max_message.min(self.cfg.max_send_message),
            self.peer_max_metadata,
        )
    }

    /// The handler of stream `id` finished.
    fn on_handler_done(
        &mut self,
        id: u32,
        fut: Pin<Box<CallFuture<S::Future>>>,
        result: Result<Response<Body>, Status>,
    ) {
        self.release(id);
        match result {
            Ok(resp) if resp.get_ref().is_stream() => {
                let (metadata, _ext, body) = resp.into_parts();
                let idx = self.calls.insert_streaming(id, fut, body);
                self.open_stream(id, None);
                if let Some(st) = self.streams.get_mut(&id) {
                    st.slot = Some(idx);
                    st.headers = Some(metadata);
                }
                self.poll_stream(idx, id);
            }
            result => {
                self.calls.recycle(fut);
                let limits = self.limits();
                write_response(&mut self.wbuf, id, result, &self.ok, limits);
                self.end_stream(id);
            }
        }
    }

    fn poll_slot(&mut self, idx: usize) {
        let Some((id, streaming)) = self.calls.info(idx) else {
            return;
        };
        if streaming {
            self.poll_stream(idx, id);
        } else if let Some((fut, result)) = self.calls.poll_handler(idx) {
            if let Some(st) = self.streams.get_mut(&id) {
                st.slot = None;
            }
            self.on_handler_done(id, fut, result);
        }
    }

    /// Writes what the response stream of call `idx` has ready, as far as flow
    /// control and fairness allow.
    fn poll_stream(&mut self, idx: usize, id: u32) {
        if self.calls.deadline_passed(idx) {
            self.end_response(
                idx,
                id,
                Status::deadline_exceeded("deadline exceeded: the server cancelled the call"),
            );
            return;
        }
        let (max_message, _) = self.limits();
        let mut written = 0;
        loop {
            let Some(st) = self.streams.get_mut(&id) else {
                self.calls.remove(idx);
                return;
            };
            if st.send_window <= 0 {
                st.blocked = true;
                return;
            }
            if self.conn_send_window <= 0 || self.wbuf.len() >= WRITE_HIGH_WATER {
                self.parked.push(idx);
                return;
            }
            if written >= STREAM_TURN_BYTES {
                self.calls.wake(idx);
                return;
            }
            match self.calls.poll_item(idx) {
                Poll::Pending => {
                    if let Some(md) = self.streams.get_mut(&id).and_then(|st| st.headers.take()) {
                        // Let the client see the response headers now.
                        wire::put_response_headers(
                            &mut self.wbuf,
                            id,
                            &md,
                            None,
                            None,
                            self.peer_max_metadata,
                        );
                    }
                    return;
                }
                Poll::Ready(Some(Ok(p))) => {
                    if p.len() > max_message {
                        let status = Status::resource_exhausted(format!(
                            "response message of {} bytes exceeds the limit of {max_message} bytes",
                            p.len()
                        ));
                        self.end_response(idx, id, status);
                        return;
                    }
                    written += p.len();
                    let Some(st) = self.streams.get_mut(&id) else {
                        return;
                    };
                    match st.headers.take() {
                        Some(md) => {
                            // The first message rides in the HEADERS frame
                            // (not flow controlled).
                            wire::put_response_headers(
                                &mut self.wbuf,
                                id,
                                &md,
                                Some(&p),
                                None,
                                self.peer_max_metadata,
                            );
                        }
                        None => {
                            st.send_window -= p.len() as i64;
                            self.conn_send_window -= p.len() as i64;
                            wire::put_data(&mut self.wbuf, id, &p, false);
                        }
                    }
                }
                Poll::Ready(Some(Err(status))) => {
                    self.end_response(idx, id, status);
                    return;
                }
                Poll::Ready(None) => {
                    let ok = self.ok.clone();
                    self.end_response(idx, id, ok);
                    return;
                }
            }
        }
    }

    /// Ends a streaming response with `status` (trailers).
    fn end_response(&mut self, idx: usize, id: u32, status: Status) {
        self.calls.remove(idx);
        log_failure(id, &status);
        let headers = self.streams.get_mut(&id).and_then(|st| st.headers.take());
        match headers {
            // A successful end with trailers stays a stream (HEADERS, then
            // TRAILERS) so the client sees trailers as trailers.
            Some(md) if status.code() == Code::Ok && !status.metadata().is_empty() => {
                wire::put_response_headers(
                    &mut self.wbuf,
                    id,
                    &md,
                    None,
                    None,
                    self.peer_max_metadata,
                );
                wire::put_trailers(&mut self.wbuf, id, Some(&status), self.peer_max_metadata);
            }
            Some(md) => wire::put_response_headers(
                &mut self.wbuf,
                id,
                &md,
                None,
                Some(&status),
                self.peer_max_metadata,
            ),
            None => wire::put_trailers(&mut self.wbuf, id, Some(&status), self.peer_max_metadata),
        }
        self.end_stream(id);
    }

    /// Forgets stream `id` after its end was sent.
    fn end_stream(&mut self, id: u32) {
        if let Some(st) = self.streams.remove(&id) {
            self.forget(&st);
            if let Some(inbound) = st.inbound {
                inbound.finish(Some(Status::cancelled("the call already finished")));
            }
        }
    }

    /// Drops stream `id` without answering (the client cancelled).
    fn drop_stream(&mut self, id: u32, why: Status) {
        if let Some(st) = self.streams.remove(&id) {
            self.forget(&st);
            if let Some(idx) = st.slot {
                self.calls.remove(idx);
            }
            if let Some(inbound) = st.inbound {
                inbound.finish(Some(why));
            }
        }
    }

    /// Fails stream `id` with `status`: drops the handler and tells the client.
    fn fail_stream(&mut self, id: u32, status: Status) {
        // Response headers went out once a streaming response wrote anything.
        let headers_sent = self.streams.get(&id).is_some_and(|st| {
            st.headers.is_none()
                && st
                    .slot
                    .and_then(|idx| self.calls.info(idx))
                    .is_some_and(|(_, streaming)| streaming)
        });
        self.drop_stream(id, status.clone());
        if headers_sent {
            wire::put_trailers(&mut self.wbuf, id, Some(&status), self.peer_max_metadata);
        } else {
            self.respond_err(id, status);
        }
    }

    fn respond_err(&mut self, id: u32, status: Status) {
        wire::put_response_headers(
            &mut self.wbuf,
            id,
            &MetadataMap::new(),
            None,
            Some(&status),
            self.peer_max_metadata,
        );
    }
}

fn log_failure(id: u32, status: &Status) {
    match status.code() {
        Code::Ok => {}
        Code::Internal | Code::Unknown | Code::DataLoss => {
            tracing::warn!(stream = id, %status, "call failed")
        }
        _ => tracing::debug!(stream = id, %status, "call failed"),
    }
}

/// Encodes a finished unary call's outcome.
fn write_response(
    wbuf: &mut WriteBuf,
    id: u32,
    result: Result<Response<Body>, Status>,
    ok: &Status,
    (max_message, max_metadata): (usize, usize),
) {
    let status = match result {
        Ok(resp) => {
            let (metadata, _ext, body) = resp.into_parts();
            match body.into_once() {
                Ok(p) if p.len() <= max_message => {
                    wire::put_response_headers(
                        wbuf,
                        id,
                        &metadata,
                        Some(&p),
                        Some(ok),
                        max_metadata,
                    );
                    return;
                }
                Ok(p) => Status::resource_exhausted(format!(
                    "response message of {} bytes exceeds the limit of {max_message} bytes",
                    p.len()
                )),
                Err(_) => {
                    wire::put_response_headers(wbuf, id, &metadata, None, Some(ok), max_metadata);
                    return;
                }
            }
        }
        Err(status) => status,
    };
    log_failure(id, &status);
    wire::put_response_headers(
        wbuf,
        id,
        &MetadataMap::new(),
        None,
        Some(&status),
        max_metadata,
    );
}
