//! One multiplexed client connection.
//!
//! Callers and the connection task share a [`Conn`]: a caller encodes its
//! request frame straight into the shared write buffer and parks in the call
//! table; the task (one per connection, owning the socket) flushes the buffer
//! with coalesced writes, reads response frames, fills the call table and wakes
//! the callers. There is no channel or task per call.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};
use tokio_util::codec::Decoder;

use super::endpoint::ClientConfig;
use crate::body::{Body, Payload};
use crate::frame::{
    self, Decoded, Flags, Frame, FrameCodec, FrameHeader, FrameType, Goaway, GoawayCode, Settings,
    WriteBuf,
};
use crate::metadata::MetadataMap;
use crate::request::{Request, Response};
use crate::status::{Code, Status};
use crate::util::IdMap;
use crate::wire::{self, ResponseHead};

/// Highest stream id a client uses before it must open a new connection.
const MAX_STREAM_ID: u32 = (1 << 31) - 1;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Trailing metadata of a successful unary response, found in the response's
/// extensions.
#[derive(Clone, Debug, Default)]
pub struct Trailers(pub MetadataMap);

/// What the server announced in its SETTINGS.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerLimits {
    pub(crate) max_message: usize,
    pub(crate) max_metadata: usize,
    pub(crate) max_streams: usize,
}

impl PeerLimits {
    fn from_settings(s: &Settings) -> Self {
        PeerLimits {
            max_message: s
                .max_message_size
                .map_or(frame::DEFAULT_MAX_MESSAGE, |v| v as usize),
            max_metadata: s
                .max_metadata_size
                .map_or(frame::DEFAULT_MAX_METADATA, |v| v as usize),
            max_streams: s.max_concurrent_streams.map_or(usize::MAX, |v| v as usize),
        }
    }
}

/// State shared by callers and the connection task.
pub(crate) struct Conn {
    state: Mutex<ConnState>,
    usable: AtomicBool,
    pub(crate) id: u64,
    pub(crate) peer: SocketAddr,
}

struct ConnState {
    wb: WriteBuf,
    calls: IdMap<Slot>,
    next_id: u32,
    closed: Option<Status>,
    draining: bool,
    task: Option<Waker>,
    limits: PeerLimits,
    max_send_message: usize,
}

enum Slot {
    Waiting {
        waker: Option<Waker>,
        head: Option<ResponseHead>,
        message: Option<Payload>,
    },
    Done(Result<Response<Body>, Status>),
}

impl Slot {
    fn waiting() -> Slot {
        Slot::Waiting {
            waker: None,
            head: None,
            message: None,
        }
    }

    /// Completes the call; its waker (if any) goes to `wakers`.
    fn complete(&mut self, result: Result<Response<Body>, Status>, wakers: &mut Vec<Waker>) {
        if let Slot::Waiting { waker, .. } = self {
            if let Some(w) = waker.take() {
                wakers.push(w);
            }
            *self = Slot::Done(result);
        }
    }
}

fn lock(m: &Mutex<ConnState>) -> MutexGuard<'_, ConnState> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
        self.usable.load(Ordering::Acquire)
    }

    /// Calls in flight.
    pub(crate) fn in_flight(&self) -> usize {
        lock(&self.state).calls.len()
    }

    /// Encodes the request into the write buffer and registers the call.
    /// A `refused` error means nothing was sent: the call may go elsewhere.
    pub(crate) fn start_call(
        &self,
        req: &Request<Body>,
        timeout: Option<Duration>,
    ) -> Result<u32, Status> {
        let payload = req.get_ref().as_once();
        let mut st = lock(&self.state);
        if let Some(e) = &st.closed {
            return Err(Status::unavailable(e.message().to_string()).with_refused(true));
        }
        if st.draining {
            return Err(Status::unavailable("connection is draining (GOAWAY)").with_refused(true));
        }
        if st.calls.len() >= st.limits.max_streams {
            return Err(Status::resource_exhausted(format!(
                "too many concurrent calls on one connection (server limit {})",
                st.limits.max_streams
            ))
            .with_refused(true));
        }
        if let Some(p) = payload {
            let max = st.limits.max_message.min(st.max_send_message);
            if p.len() > max {
                return Err(Status::resource_exhausted(format!(
                    "request message of {} bytes exceeds the limit of {max} bytes",
                    p.len()
                )));
            }
        }
        let id = st.next_id;
        if id > MAX_STREAM_ID {
            st.draining = true;
            self.usable.store(false, Ordering::Release);
            return Err(Status::unavailable("stream ids exhausted").with_refused(true));
        }
        let max_metadata = st.limits.max_metadata;
        wire::put_request_headers(
            &mut st.wb,
            id,
            req.method(),
            timeout,
            req.metadata(),
            payload,
            true,
            max_metadata,
        )?;
        st.next_id += 2;
        st.calls.insert(id, Slot::waiting());
        let task = st.task.take();
        drop(st);
        if let Some(w) = task {
            w.wake();
        }
        Ok(id)
    }

    /// Polls for the outcome of call `id`.
    pub(crate) fn poll_call(
        &self,
        id: u32,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<Body>, Status>> {
        let mut st = lock(&self.state);
        match st.calls.get_mut(&id) {
            Some(Slot::Waiting { waker, .. }) => {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Some(Slot::Done(_)) => match st.calls.remove(&id) {
                Some(Slot::Done(r)) => Poll::Ready(r),
                _ => Poll::Ready(Err(Status::internal("call state lost"))),
            },
            None => Poll::Ready(Err(st
                .closed
                .clone()
                .unwrap_or_else(|| Status::internal("call state lost")))),
        }
    }

    /// Abandons call `id`: forgets it and tells the server (CANCEL) if it is
    /// still running there.
    pub(crate) fn cancel(&self, id: u32) {
        let mut st = lock(&self.state);
        match st.calls.remove(&id) {
            Some(Slot::Waiting { .. }) if st.closed.is_none() => {
                wire::put_cancel(&mut st.wb, id, Code::Cancelled);
                let task = st.task.take();
                drop(st);
                if let Some(w) = task {
                    w.wake();
                }
            }
            _ => {}
        }
    }

    /// Marks the connection closed and fails every call still waiting.
    pub(crate) fn close(&self, status: Status) {
        self.usable.store(false, Ordering::Release);
        let mut wakers = Vec::new();
        let task;
        {
            let mut st = lock(&self.state);
            if st.closed.is_none() {
                st.closed = Some(status.clone());
            }
            for slot in st.calls.values_mut() {
                slot.complete(Err(status.clone()), &mut wakers);
            }
            st.wb = WriteBuf::new();
            task = st.task.take();
        }
        if let Some(w) = task {
            w.wake();
        }
        for w in wakers {
            w.wake();
        }
    }
}

/// Establishes a connection: TCP connect, SETTINGS exchange, task spawn.
pub(crate) async fn connect(addr: SocketAddr, config: &ClientConfig) -> Result<Arc<Conn>, Status> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| {
        Status::unavailable(format!("connect to {addr} failed: {e}")).with_source(e)
    })?;
    if config.tcp_nodelay {
        let _ = tcp.set_nodelay(true);
    }
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
                let settings = Settings::parse(&f.payload).ok_or_else(|| {
                    Status::unavailable(format!("{addr} sent malformed SETTINGS"))
                })?;
                return Ok((io, settings, rbuf));
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
    let conn = Arc::new(Conn {
        state: Mutex::new(ConnState {
            wb: WriteBuf::new(),
            calls: IdMap::default(),
            next_id: 1,
            closed: None,
            draining: false,
            task: None,
            limits: PeerLimits::from_settings(&settings),
            max_send_message: config.max_send_message,
        }),
        usable: AtomicBool::new(true),
        id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
        peer,
    });
    let now = Instant::now();
    let task = ConnTask {
        io,
        conn: conn.clone(),
        rbuf,
        codec: FrameCodec::new()
            .max_message(config.max_message)
            .max_metadata(config.max_metadata),
        wbuf: WriteBuf::new(),
        wakers: Vec::new(),
        keepalive: config.keepalive,
        idle_timeout: config.idle_timeout,
        last_read: now,
        ping_sent: None,
        idle_since: Some(now),
        timer: Box::pin(tokio::time::sleep_until(now)),
        timer_at: now,
        stats: config.stats.clone(),
    };
    if let Some(s) = &task.stats {
        s.on_open();
    }
    tracing::debug!(conn = conn.id, %peer, "trpc client connection established");
    tokio::spawn(task.run());
    conn
}

struct ConnTask<IO> {
    io: IO,
    conn: Arc<Conn>,
    rbuf: BytesMut,
    codec: FrameCodec,
    wbuf: WriteBuf,
    wakers: Vec<Waker>,
    keepalive: Option<(Duration, Duration)>,
    idle_timeout: Option<Duration>,
    last_read: Instant,
    ping_sent: Option<Instant>,
    idle_since: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    timer_at: Instant,
    stats: Option<Arc<crate::stats::TransportStats>>,
}

enum Exit {
    /// Closed on purpose (idle, channel dropped, drained after GOAWAY).
    Graceful(&'static str),
    /// Failed.
    Error(Status),
}

impl<IO> ConnTask<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn run(mut self) {
        self.arm_timer(Instant::now());
        let exit = poll_fn(|cx| self.poll_conn(cx)).await;
        let status = match exit {
            Exit::Graceful(why) => {
                tracing::debug!(conn = self.conn.id, peer = %self.conn.peer, why, "trpc client connection closed");
                Status::unavailable(format!("connection closed ({why})")).with_refused(true)
            }
            Exit::Error(status) => {
                tracing::debug!(conn = self.conn.id, peer = %self.conn.peer, %status, "trpc client connection failed");
                status
            }
        };
        self.conn.close(status);
        if let Some(s) = &self.stats {
            s.on_close();
        }
        // Best effort: let the peer see a clean close.
        let _ = tokio::time::timeout(Duration::from_millis(100), async {
            use tokio::io::AsyncWriteExt;
            let _ = self.io.shutdown().await;
        })
        .await;
    }

    fn poll_conn(&mut self, cx: &mut Context<'_>) -> Poll<Exit> {
        loop {
            let mut progress = false;
            // 1. Take the callers' frames; let them wake us for more.
            let calls_open;
            {
                let mut st = lock(&self.conn.state);
                if st.closed.is_some() {
                    return Poll::Ready(Exit::Graceful("closed by the client"));
                }
                self.wbuf.append(&mut st.wb);
                if !st.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    st.task = Some(cx.waker().clone());
                }
                calls_open = st.calls.len();
                if st.draining && calls_open == 0 && self.wbuf.is_empty() {
                    return Poll::Ready(Exit::Graceful("drained after GOAWAY"));
                }
            }
            self.track_idle(calls_open);

            // 2. Write.
            if !self.wbuf.is_empty() {
                let before = self.wbuf.len();
                let flushed = self.wbuf.poll_flush(Pin::new(&mut self.io), cx);
                if let Some(s) = &self.stats {
                    s.on_write(before - self.wbuf.len());
                }
                match flushed {
                    Poll::Ready(Ok(())) => {
                        if calls_open == 0 {
                            self.wbuf.release();
                        }
                    }
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Exit::Error(Status::from_io_error(&e).with_source(e)))
                    }
                    Poll::Pending => {}
                }
            }

            // 3. Read.
            if self.rbuf.capacity() - self.rbuf.len() < 1024 {
                self.rbuf.reserve(8 * 1024);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Exit::Error(Status::unavailable(format!(
                        "connection to {} closed by the server",
                        self.conn.peer
                    ))))
                }
                Poll::Ready(Ok(n)) => {
                    self.last_read = Instant::now();
                    if let Some(s) = &self.stats {
                        s.on_read(n);
                    }
                    if let Err(status) = self.process_frames() {
                        return Poll::Ready(Exit::Error(status));
                    }
                    if self.rbuf.is_empty() && calls_open == 0 {
                        self.rbuf = BytesMut::new();
                    }
                    progress = true;
                }
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Exit::Error(Status::from_io_error(&e).with_source(e)))
                }
                Poll::Pending => {}
            }

            // 4. Timers.
            if self.timer.as_mut().poll(cx).is_ready() {
                if let Some(exit) = self.on_timer(calls_open) {
                    return Poll::Ready(exit);
                }
                progress = true;
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    fn track_idle(&mut self, calls_open: usize) {
        match (calls_open, self.idle_since) {
            (0, None) => {
                let now = Instant::now();
                self.idle_since = Some(now);
                if let Some(t) = self.idle_timeout {
                    if now + t < self.timer_at {
                        self.set_timer(now + t);
                    }
                }
            }
            (n, Some(_)) if n > 0 => self.idle_since = None,
            _ => {}
        }
    }

    fn set_timer(&mut self, at: Instant) {
        self.timer_at = at;
        self.timer.as_mut().reset(at);
    }

    /// Arms the timer for the next keepalive or idle check.
    fn arm_timer(&mut self, now: Instant) {
        let far = now + Duration::from_secs(3600);
        let mut at = far;
        if let Some((interval, timeout)) = self.keepalive {
            at = at.min(match self.ping_sent {
                Some(sent) => sent + timeout,
                None => self.last_read + interval,
            });
        }
        if let (Some(t), Some(since)) = (self.idle_timeout, self.idle_since) {
            at = at.min(since + t);
        }
        self.set_timer(at.max(now));
    }

    fn on_timer(&mut self, calls_open: usize) -> Option<Exit> {
        let now = Instant::now();
        if let (Some(t), Some(since)) = (self.idle_timeout, self.idle_since) {
            if calls_open == 0 && now >= since + t {
                return Some(Exit::Graceful("idle"));
            }
        }
        if let Some((interval, timeout)) = self.keepalive {
            if let Some(sent) = self.ping_sent {
                if self.last_read > sent {
                    self.ping_sent = None;
                } else if now >= sent + timeout {
                    tracing::warn!(conn = self.conn.id, peer = %self.conn.peer,
                        "keepalive: no answer to PING within {:?}, closing", timeout);
                    return Some(Exit::Error(Status::unavailable(format!(
                        "keepalive timeout: {} did not answer a PING within {}",
                        self.conn.peer,
                        crate::util::fmt_duration(timeout)
                    ))));
                }
            }
            if self.ping_sent.is_none() && now >= self.last_read + interval {
                let data = now.elapsed().as_nanos().to_be_bytes();
                let mut payload = [0u8; 8];
                payload.copy_from_slice(&data[8..16]);
                self.wbuf.put(|b| frame::put_ping(b, false, payload));
                self.ping_sent = Some(now);
            }
        }
        self.arm_timer(now);
        None
    }

    /// Decodes every complete frame in the read buffer and applies it.
    fn process_frames(&mut self) -> Result<(), Status> {
        let conn = self.conn.clone();
        let mut st = lock(&conn.state);
        let result = loop {
            match self.codec.decode(&mut self.rbuf) {
                Ok(Some(Decoded::Frame(f))) => {
                    if let Err(e) = self.on_frame(&mut st, f) {
                        break Err(e);
                    }
                }
                Ok(Some(Decoded::TooLarge(h))) => self.on_too_large(&mut st, h),
                Ok(None) => break Ok(()),
                Err(e) => {
                    tracing::warn!(conn = conn.id, peer = %conn.peer, error = %e, "protocol error from server");
                    st.wb.put(|b| {
                        frame::put_goaway(b, 0, GoawayCode::ProtocolError, &e.to_string())
                    });
                    break Err(Status::internal(format!(
                        "protocol error from {}: {e}",
                        conn.peer
                    )));
                }
            }
        };
        // Control frames we queued (PONG, CANCEL) go out with the callers' frames.
        self.wbuf.append(&mut st.wb);
        drop(st);
        for w in self.wakers.drain(..) {
            w.wake();
        }
        result
    }

    fn on_too_large(&mut self, st: &mut ConnState, h: FrameHeader) {
        let max = self.codec.max_message_len();
        if let Some(slot) = st.calls.get_mut(&h.stream_id) {
            tracing::debug!(
                conn = self.conn.id,
                stream = h.stream_id,
                len = h.payload_len,
                "response frame over the limit"
            );
            slot.complete(
                Err(Status::resource_exhausted(format!(
                    "response message of {} bytes (metadata {} bytes) exceeds the limit of {max} bytes",
                    h.payload_len, h.metadata_len
                ))),
                &mut self.wakers,
            );
            wire::put_cancel(&mut st.wb, h.stream_id, Code::ResourceExhausted);
        }
    }

    fn on_frame(&mut self, st: &mut ConnState, f: Frame) -> Result<(), Status> {
        let id = f.stream_id();
        match f.frame_type() {
            Some(FrameType::Headers) => {
                let Some(slot) = st.calls.get_mut(&id) else {
                    return Ok(()); // late answer for a cancelled call
                };
                let head = match wire::decode_response_head(f.metadata) {
                    Ok(h) => h,
                    Err(e) => {
                        slot.complete(Err(e), &mut self.wakers);
                        return Ok(());
                    }
                };
                let message = f
                    .header
                    .flags
                    .contains(Flags::MESSAGE)
                    .then(|| payload(&f.header, f.payload));
                if f.header.flags.contains(Flags::END_STREAM) {
                    let result = finish(head, message);
                    slot.complete(result, &mut self.wakers);
                } else if let Slot::Waiting {
                    head: h,
                    message: m,
                    ..
                } = slot
                {
                    *h = Some(head);
                    *m = message;
                }
            }
            Some(FrameType::Data) => {
                let Some(slot) = st.calls.get_mut(&id) else {
                    return Ok(());
                };
                let error = match slot {
                    Slot::Waiting { head: None, .. } => Some("protocol error: DATA before HEADERS"),
                    Slot::Waiting {
                        message: Some(_), ..
                    } => Some("protocol error: more than one message in a unary response"),
                    Slot::Waiting { message, .. } => {
                        *message = Some(payload(&f.header, f.payload));
                        f.header
                            .flags
                            .contains(Flags::END_STREAM)
                            .then_some("protocol error: stream ended without a status")
                    }
                    Slot::Done(_) => None,
                };
                if let Some(msg) = error {
                    slot.complete(Err(Status::internal(msg)), &mut self.wakers);
                    wire::put_cancel(&mut st.wb, id, Code::Internal);
                }
            }
            Some(FrameType::Trailers) => {
                let Some(slot) = st.calls.get_mut(&id) else {
                    return Ok(());
                };
                let result = match wire::decode_response_head(f.metadata) {
                    Ok(trailers) => match slot {
                        Slot::Waiting { head, message, .. } => {
                            let mut head = head.take().unwrap_or_default();
                            head.code = trailers.code;
                            head.message = trailers.message;
                            head.details = trailers.details;
                            head.refused = trailers.refused;
                            finish_with_trailers(head, message.take(), trailers.metadata)
                        }
                        Slot::Done(_) => return Ok(()),
                    },
                    Err(e) => Err(e),
                };
                slot.complete(result, &mut self.wakers);
            }
            Some(FrameType::Cancel) => {
                if let Some(slot) = st.calls.get_mut(&id) {
                    let code = wire::cancel_code(&f.payload);
                    slot.complete(
                        Err(Status::new(code, "stream reset by the server")),
                        &mut self.wakers,
                    );
                }
            }
            Some(FrameType::Ping) => {
                let mut data = [0u8; 8];
                let n = f.payload.len().min(8);
                data[..n].copy_from_slice(&f.payload[..n]);
                st.wb.put(|b| frame::put_ping(b, true, data));
            }
            Some(FrameType::Pong) => {
                self.ping_sent = None;
            }
            Some(FrameType::Goaway) => {
                let g = Goaway::parse(&f.payload).unwrap_or(Goaway {
                    last_stream_id: 0,
                    code: GoawayCode::ProtocolError,
                    message: "malformed GOAWAY".into(),
                });
                if g.code == GoawayCode::NoError {
                    tracing::debug!(conn = self.conn.id, peer = %self.conn.peer, last = g.last_stream_id, "server sent GOAWAY: {}", g.message);
                } else {
                    tracing::warn!(conn = self.conn.id, peer = %self.conn.peer, code = ?g.code, "server sent GOAWAY: {}", g.message);
                }
                st.draining = true;
                self.conn.usable.store(false, Ordering::Release);
                let refused = Status::unavailable(format!(
                    "server is going away ({}); the call was not processed",
                    g.message
                ))
                .with_refused(true);
                for (&id, slot) in st.calls.iter_mut() {
                    if id > g.last_stream_id {
                        slot.complete(Err(refused.clone()), &mut self.wakers);
                    }
                }
            }
            Some(FrameType::Settings) => {
                if let Some(s) = Settings::parse(&f.payload) {
                    st.limits = PeerLimits::from_settings(&s);
                }
            }
            Some(FrameType::WindowUpdate) | None => {}
        }
        Ok(())
    }
}

fn payload(h: &FrameHeader, bytes: Bytes) -> Payload {
    Payload {
        bytes,
        compressed: h.flags.contains(Flags::COMPRESSED),
    }
}

fn finish(head: ResponseHead, message: Option<Payload>) -> Result<Response<Body>, Status> {
    finish_with_trailers(head, message, MetadataMap::new())
}

fn finish_with_trailers(
    mut head: ResponseHead,
    message: Option<Payload>,
    trailers: MetadataMap,
) -> Result<Response<Body>, Status> {
    match head.code {
        Some(Code::Ok) => {
            let body = message.map_or_else(Body::empty, Body::once);
            let metadata = std::mem::take(&mut head.metadata);
            let mut resp = Response::new(body);
            *resp.metadata_mut() = metadata;
            if !trailers.is_empty() {
                resp.extensions_mut().insert(Trailers(trailers));
            }
            Ok(resp)
        }
        _ => {
            let mut status = head.into_status();
            status.metadata_mut().extend(trailers);
            Err(status)
        }
    }
}
