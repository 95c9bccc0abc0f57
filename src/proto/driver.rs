//! The connection task both roles run (hyper's `Dispatcher` idea): it owns
//! the socket, reads and decodes frames, applies what every connection
//! handles the same way (SETTINGS, PING, PONG, WINDOW_UPDATE, unknown
//! frames, slow frames, keepalive, write stalls, idle buffers) and hands
//! the rest to its [`Role`]; it writes what the streams' owners queued.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use super::error::{ConnError, Exit};
use super::keepalive::{Due, Keepalive, PING_DATA};
use super::shared::{wake_all, RoleStream, Shared, State, WRITE_HIGH_WATER};
use super::timer::ConnTimer;
use crate::frame::{
    self, Decoded, Frame, FrameCodec, FrameHeader, FrameType, Goaway, GoawayCode, Settings,
    WriteBuf,
};
use crate::stats::TransportStats;
use crate::status::{Code, Status};
use crate::util::ReadSizer;

/// How long a connection stays idle before it gives its buffers back.
const IDLE_RELEASE: Duration = Duration::from_millis(100);

/// Frames queued beyond this are written at once, without waiting a round
/// for more streams to add theirs.
const DEFER_WRITE_BELOW: usize = 64 * 1024;

/// Output held while more is on its way ([`Role::output_coming`]) is
/// written once it reaches this: the peer gets replies in pieces of a few
/// dozen while the rest of a batch runs, and can send its next calls
/// meanwhile (a whole batch held back leaves it waiting; measured in
/// docs/PERFORMANCE.md, "Runners").
const HOLD_OUTPUT_BELOW: usize = 4 * 1024;

/// What differs between a client and a server connection.
///
/// Frame hooks run with the connection's state locked (they must not call
/// into user code); `poll_work` runs without it.
pub(crate) trait Role: Send + Sized + 'static {
    /// What the role keeps about each stream.
    type Stream: RoleStream;
    /// Who the peer is, for messages: `"client"` or `"server"`.
    const PEER: &'static str;

    /// A HEADERS frame.
    fn on_headers(
        &mut self,
        st: &mut State<Self::Stream>,
        f: Frame,
        now: Instant,
    ) -> Result<(), ConnError>;

    /// A DATA frame, read at `now`.
    fn on_data(
        &mut self,
        st: &mut State<Self::Stream>,
        f: Frame,
        now: Instant,
    ) -> Result<(), ConnError>;

    /// A TRAILERS frame.
    fn on_trailers(&mut self, st: &mut State<Self::Stream>, f: Frame) -> Result<(), ConnError>;

    /// A CANCEL frame for stream `id` with `code`.
    fn on_cancel(
        &mut self,
        st: &mut State<Self::Stream>,
        id: u32,
        code: Code,
    ) -> Result<(), ConnError>;

    /// A GOAWAY frame.
    fn on_goaway(&mut self, st: &mut State<Self::Stream>, goaway: Goaway);

    /// A HEADERS, DATA or TRAILERS frame over our size limits, skipped
    /// without buffering; `why` says which limit.
    fn on_too_large(
        &mut self,
        st: &mut State<Self::Stream>,
        h: FrameHeader,
        why: String,
    ) -> Result<(), ConnError>;

    /// Ends stream `id` with `status`: the peer broke a rule of the stream
    /// (flow control). A server counts it like a cancellation in its
    /// rapid-reset defence.
    fn reset_stream(
        &mut self,
        st: &mut State<Self::Stream>,
        id: u32,
        status: Status,
    ) -> Result<(), ConnError>;

    /// The deadline of stream `id` passed.
    fn on_deadline(&mut self, st: &mut State<Self::Stream>, id: u32);

    /// The peer closed its side of the socket.
    fn on_eof(&mut self, st: &mut State<Self::Stream>) -> Result<Exit, ConnError>;

    /// Role work outside the lock (starting calls, shutdown signals); true
    /// when something was done.
    fn poll_work(
        &mut self,
        cx: &mut Context<'_>,
        shared: &Arc<Shared<Self::Stream>>,
    ) -> Result<bool, ConnError>;

    /// True while more frames may be read (false: the role is backed up).
    fn reading(&self) -> bool;

    /// Called each turn with the state locked, before the output is taken:
    /// work the streams' owners handed over (a server's replies); true when
    /// something was done.
    fn on_turn(&mut self, st: &mut State<Self::Stream>) -> bool;

    /// Checked each turn with the state locked: `Some` to end the
    /// connection (`output_idle`: nothing is left to write).
    fn exit(&mut self, st: &State<Self::Stream>, output_idle: bool) -> Option<Exit>;

    /// True while the connection is on its way out (draining): once the
    /// output is written, [`Role::exit`] is asked again at once.
    fn closing(&self) -> bool;

    /// The role's next timer deadline.
    fn next_timer(&self, st: &State<Self::Stream>) -> Option<Instant>;

    /// The connection timer fired at `now`.
    fn on_timer(&mut self, st: &mut State<Self::Stream>, now: Instant) -> Result<(), ConnError>;

    /// How many streams the frames just read started or woke (several: the
    /// first write waits one scheduling round so their output goes out
    /// together).
    fn take_batch(&mut self) -> usize;

    /// The connection went idle: give back memory kept for the next calls.
    fn release_idle(&mut self) {}

    /// True while more output is on its way (a server's calls handed over
    /// and not started yet): the write waits for it, and `waker` is woken
    /// once nothing is on its way any more.
    fn output_coming(&mut self, _waker: &Waker) -> bool {
        false
    }
}

/// Settings of the common machinery.
#[derive(Debug, Clone)]
pub(crate) struct DriverConfig {
    /// Largest message payload accepted.
    pub(crate) max_message: usize,
    /// Largest metadata block accepted.
    pub(crate) max_metadata: usize,
    /// PING after this silence, give up after that timeout.
    pub(crate) keepalive: Option<(Duration, Duration)>,
    /// A partial frame must complete (header) or progress (body) within this.
    pub(crate) frame_timeout: Option<Duration>,
    /// A peer that reads none of our output for this long is dropped.
    pub(crate) write_timeout: Option<Duration>,
    /// True when the peer's SETTINGS were read before the driver started
    /// (a client's handshake); otherwise the first frame must be SETTINGS.
    pub(crate) settings_received: bool,
    /// Transport counters.
    pub(crate) stats: Option<Arc<TransportStats>>,
}

/// One connection's task.
pub(crate) struct Driver<IO, R: Role> {
    io: IO,
    shared: Arc<Shared<R::Stream>>,
    pub(crate) role: R,
    rbuf: BytesMut,
    codec: FrameCodec,
    /// Output taken from the shared state, being written.
    wbuf: WriteBuf,
    wakers: Vec<Waker>,
    read_sizer: ReadSizer,
    timer: ConnTimer,
    keepalive: Keepalive,
    frame_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    stats: Option<Arc<TransportStats>>,
    got_settings: bool,
    last_read: Instant,
    /// When the first byte of the partial frame in `rbuf` arrived.
    mid_frame_since: Option<Instant>,
    /// When the partial frame last received bytes (or reading was paused).
    frame_progress: Instant,
    write_blocked_since: Option<Instant>,
    /// `rbuf` may hold complete frames not processed yet (reading stopped
    /// early for backpressure).
    backlog: bool,
    /// The first write after a batch was put off by one scheduling round.
    write_deferred: bool,
    /// Streams started or woken by the last frames read.
    last_batch: usize,
    /// Buffers may hold memory since the connection was last idle.
    buffers_held: bool,
    /// When an idle connection gives its buffers back.
    release_at: Option<Instant>,
    /// When the connection last went idle.
    last_idle: Option<Instant>,
}

impl<IO, R> Driver<IO, R>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Role,
{
    /// A driver for `io`, whose first bytes (read during detection or the
    /// handshake) are in `rbuf`.
    pub(crate) fn new(
        io: IO,
        rbuf: BytesMut,
        shared: Arc<Shared<R::Stream>>,
        role: R,
        cfg: DriverConfig,
    ) -> Self {
        let now = Instant::now();
        let backlog = !rbuf.is_empty();
        Driver {
            io,
            shared,
            role,
            rbuf,
            codec: FrameCodec::new()
                .max_message(cfg.max_message)
                .max_metadata(cfg.max_metadata),
            wbuf: WriteBuf::new(),
            wakers: Vec::new(),
            read_sizer: ReadSizer::new(),
            timer: ConnTimer::new(now),
            keepalive: Keepalive::new(cfg.keepalive),
            frame_timeout: cfg.frame_timeout,
            write_timeout: cfg.write_timeout,
            stats: cfg.stats,
            got_settings: cfg.settings_received,
            last_read: now,
            mid_frame_since: None,
            frame_progress: now,
            write_blocked_since: None,
            backlog,
            write_deferred: false,
            last_batch: 0,
            buffers_held: true,
            release_at: None,
            last_idle: None,
        }
    }

    /// Runs the connection until it ends; returns the role and how it ended.
    pub(crate) async fn run(mut self) -> (Self, Result<Exit, ConnError>) {
        self.arm_timer(Instant::now());
        let result = poll_fn(|cx| self.poll_conn(cx)).await;
        (self, result)
    }

    /// Queues `f`'s output, writes what is queued (bounded by `limit`) and
    /// shuts the socket down: the last words of a closing connection.
    pub(crate) async fn close(&mut self, limit: Duration, last: impl FnOnce(&mut WriteBuf)) {
        {
            let mut st = self.shared.lock();
            self.wbuf.append(&mut st.wb);
        }
        last(&mut self.wbuf);
        let io = &mut self.io;
        let wbuf = &mut self.wbuf;
        let _ = tokio::time::timeout(limit, async {
            use tokio::io::AsyncWriteExt;
            let _ = poll_fn(|cx| wbuf.poll_flush(Pin::new(&mut *io), cx)).await;
            let _ = io.shutdown().await;
        })
        .await;
    }

    /// The shared state.
    pub(crate) fn shared(&self) -> &Arc<Shared<R::Stream>> {
        &self.shared
    }

    fn poll_conn(&mut self, cx: &mut Context<'_>) -> Poll<Result<Exit, ConnError>> {
        // Set when this poll put the write off to the next one.
        let mut hold_writes = false;
        loop {
            let mut progress = self.role.poll_work(cx, &self.shared)?;

            // 1. Deadlines, the streams' output, exit conditions.
            let idle;
            {
                let mut st = self.shared.lock();
                while let Some(id) = st.poll_expired(cx) {
                    self.role.on_deadline(&mut st, id);
                }
                self.shared.register_task(cx.waker());
                st.out_pending = self.wbuf.len();
                if self.role.on_turn(&mut st) {
                    progress = true;
                }
                self.wbuf.append(&mut st.wb);
                st.out_pending = self.wbuf.len();
                if st.has_write_room() && st.send_window.is_open() {
                    self.wakers.append(&mut st.send_blocked);
                }
                if let Some(exit) = self.role.exit(&st, self.wbuf.is_empty()) {
                    return Poll::Ready(Ok(exit));
                }
                if let Some(at) = self.role.next_timer(&st) {
                    self.timer.ensure(at);
                }
                idle = st.streams.is_empty();
                self.wakers.append(&mut st.woken);
            }
            wake_all(&mut self.wakers);

            // 2. Write. A stream owner that queues output wakes this task,
            // which the runtime then runs right after that owner (tokio's
            // LIFO slot), before the other owners woken or started by the
            // same frames: writing then would cost a syscall per call. So
            // after a batch, new output waits one scheduling round (a
            // self-wake goes to the back of the run queue) and goes out
            // together.
            let write_now = !hold_writes && !self.wbuf.is_empty();
            if write_now
                && self.wbuf.len() < HOLD_OUTPUT_BELOW
                && self.role.output_coming(cx.waker())
            {
                // The replies of calls queued behind these go out with them.
                hold_writes = true;
            } else if write_now
                && !self.write_deferred
                && self.last_batch > 1
                && self.wbuf.len() < DEFER_WRITE_BELOW
            {
                self.write_deferred = true;
                hold_writes = true;
                cx.waker().wake_by_ref();
            } else if write_now {
                self.write_deferred = false;
                self.last_batch = 0;
                let before = self.wbuf.len();
                let written = self.flush(cx)?;
                // Writers waiting for room in the output, a role backed up
                // by it, or one closing once it is written, go on at once.
                if written > 0
                    && (before >= WRITE_HIGH_WATER / 2
                        || !self.role.reading()
                        || self.role.closing())
                {
                    progress = true;
                }
            }

            // 3. Read, unless backed up.
            let was_reading = self.reading();
            if self.reading() {
                if self.backlog {
                    self.process_frames()?;
                    progress = true;
                } else {
                    let room = self.read_sizer.reserve(&mut self.rbuf);
                    match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf)
                    {
                        Poll::Ready(Ok(0)) => {
                            let mut st = self.shared.lock();
                            return Poll::Ready(self.role.on_eof(&mut st));
                        }
                        Poll::Ready(Ok(n)) => {
                            self.read_sizer.observe(n, room);
                            self.last_read = Instant::now();
                            self.buffers_held = true;
                            if let Some(s) = &self.stats {
                                s.on_read(n);
                            }
                            self.process_frames()?;
                            progress = true;
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(ConnError::Io(e))),
                        Poll::Pending => {}
                    }
                }
            }
            if !was_reading && self.reading() {
                // Writing made room: read now, so that the socket's read
                // readiness is registered (nothing else would wake us).
                progress = true;
            }

            // 4. Idle: give memory back soon (not at once: the next call
            // would only allocate it again).
            if idle && self.wbuf.is_empty() && self.buffers_held {
                self.buffers_held = false;
                let busy = self
                    .last_idle
                    .is_some_and(|t| self.last_read < t + IDLE_RELEASE);
                self.last_idle = Some(self.last_read);
                if busy {
                    let at = self.last_read + IDLE_RELEASE;
                    self.release_at = Some(at);
                    self.timer.ensure(at);
                } else {
                    self.release_buffers();
                }
            }

            // 5. Timers.
            if self.timer.poll_fired(cx) {
                self.on_timer()?;
                progress = true;
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// True while frames are read (not paused for backpressure).
    fn reading(&self) -> bool {
        self.role.reading() && self.wbuf.len() < WRITE_HIGH_WATER
    }

    /// Writes what the output holds; returns how many bytes went out.
    fn flush(&mut self, cx: &mut Context<'_>) -> Result<usize, ConnError> {
        let before = self.wbuf.len();
        if let Some(s) = &self.stats {
            s.observe_write_buffered(before);
        }
        let flushed = self.wbuf.poll_flush(Pin::new(&mut self.io), cx);
        if let Some(s) = &self.stats {
            s.on_write(before - self.wbuf.len());
        }
        match flushed {
            Poll::Ready(Ok(())) => self.write_blocked_since = None,
            Poll::Ready(Err(e)) => return Err(ConnError::Io(e)),
            Poll::Pending if self.wbuf.len() < before => self.write_blocked_since = None,
            Poll::Pending => {
                if let (None, Some(t)) = (self.write_blocked_since, self.write_timeout) {
                    let now = Instant::now();
                    self.write_blocked_since = Some(now);
                    self.timer.ensure(now + t);
                }
            }
        }
        Ok(before - self.wbuf.len())
    }

    fn release_buffers(&mut self) {
        self.wbuf.release();
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
        self.wakers = Vec::new();
        self.role.release_idle();
        self.shared.lock().release_idle();
    }

    /// Decodes and applies every complete frame; stops early when the role
    /// is backed up.
    fn process_frames(&mut self) -> Result<(), ConnError> {
        self.backlog = false;
        let shared = self.shared.clone();
        let mut st = shared.lock();
        let result = self.decode_frames(&mut st);
        self.wakers.append(&mut st.woken);
        drop(st);
        self.last_batch += self.role.take_batch();
        wake_all(&mut self.wakers);
        result?;
        if self.codec.is_mid_frame(&self.rbuf) {
            self.frame_progress = self.last_read;
            if self.mid_frame_since.is_none() {
                self.mid_frame_since = Some(self.last_read);
            }
            if let Some(at) = self.frame_deadline() {
                self.timer.ensure(at);
            }
        } else {
            self.mid_frame_since = None;
        }
        Ok(())
    }

    fn decode_frames(&mut self, st: &mut State<R::Stream>) -> Result<(), ConnError> {
        loop {
            if !self.role.reading() || st.wb.len() >= WRITE_HIGH_WATER {
                // Backed up: the rest is processed later.
                self.backlog = !self.rbuf.is_empty();
                return Ok(());
            }
            match self.codec.decode(&mut self.rbuf)? {
                Some(Decoded::Frame(f)) => {
                    self.mid_frame_since = None;
                    self.on_frame(st, f)?;
                }
                Some(Decoded::TooLarge(h)) => {
                    self.mid_frame_since = None;
                    self.check_first_frame(h.kind, h.stream_id)?;
                    self.on_too_large(st, h)?;
                }
                None => return Ok(()),
            }
        }
    }

    fn check_first_frame(&mut self, kind: u8, stream_id: u32) -> Result<(), ConnError> {
        if self.got_settings {
            return Ok(());
        }
        if kind != FrameType::Settings as u8 {
            return Err(ConnError::protocol(format!(
                "the first frame must be SETTINGS, got frame type {kind} on stream {stream_id}"
            )));
        }
        self.got_settings = true;
        Ok(())
    }

    fn on_frame(&mut self, st: &mut State<R::Stream>, f: Frame) -> Result<(), ConnError> {
        self.check_first_frame(f.header.kind, f.stream_id())?;
        let id = f.stream_id();
        match f.frame_type() {
            Some(FrameType::Headers) => self.role.on_headers(st, f, self.last_read),
            Some(FrameType::Data) => self.role.on_data(st, f, self.last_read),
            Some(FrameType::Trailers) => self.role.on_trailers(st, f),
            Some(FrameType::Cancel) => {
                if id == 0 {
                    return Ok(());
                }
                self.role
                    .on_cancel(st, id, crate::wire::cancel_code(&f.payload))
            }
            Some(FrameType::WindowUpdate) => self.on_window_update(st, id, &f.payload),
            Some(FrameType::Ping) => {
                // The decoder admits only 8-byte PINGs.
                if let Ok(data) = <[u8; 8]>::try_from(&f.payload[..]) {
                    st.wb.put(|b| frame::put_ping(b, true, data));
                }
                Ok(())
            }
            Some(FrameType::Pong) => {
                self.keepalive.on_pong();
                Ok(())
            }
            Some(FrameType::Goaway) => {
                // The decoder admits only GOAWAYs of at least 8 bytes.
                if let Some(g) = Goaway::parse(&f.payload) {
                    self.role.on_goaway(st, g);
                }
                Ok(())
            }
            Some(FrameType::Settings) => {
                // The decoder admits only payloads of whole pairs.
                let s = Settings::parse(&f.payload).unwrap_or_default();
                if st.peer.apply(&s)? {
                    st.send_window = super::flow::SendWindow::new(st.peer.connection_window);
                }
                Ok(())
            }
            None => {
                tracing::trace!(kind = f.header.kind, "ignoring a frame of unknown type");
                Ok(())
            }
        }
    }

    fn on_window_update(
        &mut self,
        st: &mut State<R::Stream>,
        id: u32,
        payload: &[u8],
    ) -> Result<(), ConnError> {
        let inc = crate::wire::window_increment(payload).unwrap_or(0);
        if id == 0 {
            return match st.send_window.apply(inc) {
                Ok(true) => {
                    let blocked = std::mem::take(&mut st.send_blocked);
                    st.woken.extend(blocked);
                    Ok(())
                }
                Ok(false) => Ok(()),
                Err(_) => Err(ConnError::flow_control(format!(
                    "bad connection WINDOW_UPDATE from the {} (increment {inc})",
                    R::PEER
                ))),
            };
        }
        let Some(s) = st.streams.get_mut(&id).filter(|s| s.state.can_send()) else {
            return Ok(()); // unknown or closed stream: ignored
        };
        match s.send.apply(inc) {
            Ok(true) => {
                if let Some(w) = s.send_waker.take() {
                    st.woken.push(w);
                }
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(_) => self.role.reset_stream(
                st,
                id,
                Status::resource_exhausted(format!(
                    "flow control: bad WINDOW_UPDATE from the {} (increment {inc})",
                    R::PEER
                )),
            ),
        }
    }

    fn on_too_large(&mut self, st: &mut State<R::Stream>, h: FrameHeader) -> Result<(), ConnError> {
        if h.frame_type() == Some(FrameType::Data) {
            // The sender counted these bytes against the connection window.
            if st.recv_window.receive(h.payload_len as usize).is_err() {
                return Err(ConnError::flow_control(format!(
                    "the {} exceeded the connection window",
                    R::PEER
                )));
            }
            st.credit_conn(h.payload_len as usize);
        }
        let (max_metadata, max_message) =
            (self.codec.max_metadata_len(), self.codec.max_message_len());
        let why = if h.metadata_len as usize > max_metadata {
            format!(
                "metadata of {} bytes exceeds the limit of {max_metadata} bytes",
                h.metadata_len
            )
        } else {
            format!(
                "message of {} bytes exceeds the limit of {max_message} bytes",
                h.payload_len
            )
        };
        self.role.on_too_large(st, h, why)
    }

    /// When the partial frame in `rbuf` times out: its header must be
    /// complete within the frame timeout of its first byte (a trickle does
    /// not extend that), and its body must keep receiving bytes.
    fn frame_deadline(&self) -> Option<Instant> {
        let since = self.mid_frame_since?;
        let timeout = self.frame_timeout?;
        let base = if self.codec.is_mid_header(&self.rbuf) {
            since
        } else {
            self.frame_progress
        };
        Some(base + timeout)
    }

    fn arm_timer(&mut self, now: Instant) {
        let mut at = now + Duration::from_secs(3600);
        let candidates = [
            self.keepalive.next_check(self.last_read),
            self.frame_deadline(),
            self.write_blocked_since
                .zip(self.write_timeout)
                .map(|(since, t)| since + t),
            self.release_at,
        ];
        for c in candidates.into_iter().flatten() {
            at = at.min(c);
        }
        self.timer.reset(at.max(now));
    }

    fn on_timer(&mut self) -> Result<(), ConnError> {
        let now = Instant::now();
        if self.release_at.is_some_and(|at| now >= at) {
            self.release_at = None;
            let idle = self.shared.lock().streams.is_empty();
            if idle && self.wbuf.is_empty() {
                self.release_buffers();
            }
        }
        if let (Some(since), Some(t)) = (self.write_blocked_since, self.write_timeout) {
            if now >= since + t {
                return Err(ConnError::Gone(format!(
                    "write timeout: the {} read nothing for {}",
                    R::PEER,
                    crate::util::fmt_duration(t)
                )));
            }
        }
        if let Some(frame_at) = self.frame_deadline() {
            if !self.reading() || self.backlog {
                // We paused reading (backpressure): the peer is not late.
                self.mid_frame_since = Some(now);
                self.frame_progress = now;
            } else if now >= frame_at {
                let ft = crate::util::fmt_duration(self.frame_timeout.unwrap_or_default());
                let why = if self.codec.is_mid_header(&self.rbuf) {
                    format!(
                        "read timeout: frame header incomplete ({} of {} bytes) {ft} after its first byte",
                        self.rbuf.len(),
                        frame::HEADER_LEN
                    )
                } else {
                    format!("read timeout: incomplete frame and no bytes for {ft}")
                };
                return Err(ConnError::goaway(GoawayCode::Timeout, why));
            }
        }
        match self.keepalive.poll(now, self.last_read) {
            Due::Nothing => {}
            Due::Ping => self.wbuf.put(|b| frame::put_ping(b, false, PING_DATA)),
            Due::Dead(t) => {
                return Err(ConnError::Gone(format!(
                    "keepalive timeout: the {} answered no PING within {}",
                    R::PEER,
                    crate::util::fmt_duration(t)
                )))
            }
        }
        {
            let mut st = self.shared.lock();
            self.role.on_timer(&mut st, now)?;
            self.wakers.append(&mut st.woken);
        }
        wake_all(&mut self.wakers);
        self.arm_timer(now);
        Ok(())
    }
}
