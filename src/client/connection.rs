//! One multiplexed client connection.
//!
//! Callers and the connection task share a [`Conn`]: a caller encodes its
//! request frame straight into the shared write buffer and parks in the call
//! table; the task (one per connection, owning the socket) flushes the buffer
//! with coalesced writes, reads response frames, fills the call table and wakes
//! the callers. There is no channel or task per unary call.
//!
//! Streaming calls add, per call: an [`InboundShared`] queue for response
//! messages (consumed through [`Incoming`], which returns flow-control credit),
//! and for streaming requests a pump task that sends the request stream as the
//! peer's window allows.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::AbortHandle;
use tokio::time::{Instant, Sleep};
use tokio_util::codec::Decoder;
use tokio_util::time::{delay_queue, DelayQueue};

use super::endpoint::ClientConfig;
use crate::body::{Body, Payload};
use crate::frame::{
    self, Decoded, Flags, Frame, FrameCodec, FrameHeader, FrameType, Goaway, GoawayCode, Settings,
    WriteBuf, MAX_WINDOW,
};
use crate::metadata::MetadataMap;
use crate::request::{Request, Response};
use crate::stats::TransportStats;
use crate::status::{Code, Status};
use crate::stream::{CreditSink, InboundShared, Incoming};
use crate::util::IdMap;
use crate::wire::{self, ResponseHead};

/// Highest stream id a client uses before it must open a new connection.
const MAX_STREAM_ID: u32 = (1 << 31) - 1;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Trailing metadata of a successful response whose trailers came in a
/// separate TRAILERS frame, found in the response's extensions.
#[derive(Clone, Debug, Default)]
pub struct Trailers(pub MetadataMap);

/// What the server announced in its SETTINGS.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerLimits {
    pub(crate) max_message: usize,
    pub(crate) max_metadata: usize,
    pub(crate) max_streams: usize,
    pub(crate) stream_window: u32,
    pub(crate) connection_window: u32,
}

impl PeerLimits {
    fn from_settings(s: &Settings) -> Self {
        PeerLimits {
            max_message: s
                .max_message_size
                .map_or(frame::DEFAULT_MAX_MESSAGE, |v| v as usize),
            max_metadata: s
                .max_metadata_size
                .map_or(frame::DEFAULT_MAX_METADATA, |v| {
                    frame::metadata_limit(v as usize)
                }),
            max_streams: s.max_concurrent_streams.map_or(usize::MAX, |v| v as usize),
            stream_window: s
                .initial_stream_window
                .unwrap_or(frame::DEFAULT_STREAM_WINDOW),
            connection_window: s
                .initial_connection_window
                .unwrap_or(frame::DEFAULT_CONNECTION_WINDOW),
        }
    }
}

/// State shared by callers and the connection task.
pub(crate) struct Conn {
    state: Mutex<ConnState>,
    usable: AtomicBool,
    pub(crate) id: u64,
    pub(crate) peer: SocketAddr,
    recv_stream_window: u32,
    recv_conn_window: u32,
}

struct ConnState {
    wb: WriteBuf,
    calls: IdMap<Call>,
    next_id: u32,
    closed: Option<Status>,
    draining: bool,
    task: Option<Waker>,
    limits: PeerLimits,
    max_send_message: usize,
    conn_send_window: i64,
    conn_blocked: Vec<Waker>,
    conn_recv_window: i64,
    conn_recv_unacked: usize,
    /// Deadlines of the calls waiting for their response: one timer for the
    /// connection instead of one per call.
    deadlines: DelayQueue<u32>,
}

/// One call on the connection.
struct Call {
    response: Resp,
    /// The response stream, while open.
    inbound: Option<Arc<InboundShared>>,
    /// The request stream, while open.
    outbound: Option<Outbound>,
    /// Receive window left for this stream's DATA.
    recv_window: i64,
    deadline: Option<Instant>,
    /// The call's entry in `ConnState::deadlines`, while it waits.
    timer: Option<delay_queue::Key>,
}

enum Resp {
    Waiting(Option<Waker>),
    Ready(Result<Response<Body>, Status>),
    Taken,
}

struct Outbound {
    window: i64,
    waker: Option<Waker>,
    pump: Option<AbortHandle>,
}

impl Call {
    fn set_response(&mut self, r: Result<Response<Body>, Status>, wakers: &mut Vec<Waker>) {
        if let Resp::Waiting(w) = &mut self.response {
            if let Some(w) = w.take() {
                wakers.push(w);
            }
            self.response = Resp::Ready(r);
        }
    }

    fn close_outbound(&mut self, wakers: &mut Vec<Waker>) {
        if let Some(o) = self.outbound.take() {
            if let Some(p) = o.pump {
                p.abort();
            }
            if let Some(w) = o.waker {
                wakers.push(w);
            }
        }
    }

    /// Fails whatever is still open of the call with `status`.
    fn fail(&mut self, status: Status, wakers: &mut Vec<Waker>) {
        if let Some(inbound) = self.inbound.take() {
            inbound.finish(Some(status.clone()));
        }
        self.set_response(Err(status), wakers);
        self.close_outbound(wakers);
    }

    /// True when nothing of the call is left to deliver or send.
    fn finished(&self) -> bool {
        matches!(self.response, Resp::Taken) && self.inbound.is_none() && self.outbound.is_none()
    }

    /// True while the server may still send frames for this call.
    fn open_at_server(&self) -> bool {
        matches!(self.response, Resp::Waiting(_)) || self.inbound.is_some()
    }
}

fn lock(m: &Mutex<ConnState>) -> MutexGuard<'_, ConnState> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn wake_all(wakers: &mut Vec<Waker>) {
    for w in wakers.drain(..) {
        w.wake();
    }
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

impl ConnState {
    /// Returns connection-level credit for `n` received bytes.
    fn credit_conn(&mut self, n: usize, window: u32) {
        if n == 0 {
            return;
        }
        self.conn_recv_unacked += n;
        if self.conn_recv_unacked >= (window as usize / 2).max(1) {
            let inc = self.conn_recv_unacked.min(MAX_WINDOW as usize);
            self.conn_recv_unacked -= inc;
            self.conn_recv_window += inc as i64;
            self.wb.put(|b| frame::put_window_update(b, 0, inc as u32));
        }
    }

    fn remove_if_finished(&mut self, id: u32) {
        if self.calls.get(&id).is_some_and(Call::finished) {
            self.calls.remove(&id);
        }
    }

    /// Takes call `id`'s deadline out of the queue.
    fn disarm(&mut self, timer: Option<delay_queue::Key>) {
        if let Some(key) = timer {
            self.deadlines.try_remove(&key);
        }
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

    fn wake_task(&self, st: &mut ConnState) -> Option<Waker> {
        st.task.take()
    }

    /// Encodes the request's HEADERS (with the message, for unary requests)
    /// into the write buffer and registers the call. For a streaming request
    /// body the caller then starts [`pump`]. A `refused` error means nothing
    /// was sent: the call may go elsewhere.
    pub(crate) fn start_call(
        &self,
        req: &Request<Body>,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
    ) -> Result<u32, Status> {
        let body = req.get_ref();
        let streaming = body.is_stream();
        let payload = body.as_once();
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
            !streaming,
            max_metadata,
        )?;
        st.next_id += 2;
        let timer = deadline.map(|d| st.deadlines.insert_at(id, d));
        let outbound = streaming.then(|| Outbound {
            window: i64::from(st.limits.stream_window),
            waker: None,
            pump: None,
        });
        st.calls.insert(
            id,
            Call {
                response: Resp::Waiting(None),
                inbound: None,
                outbound,
                recv_window: i64::from(self.recv_stream_window),
                deadline,
                timer,
            },
        );
        let task = self.wake_task(&mut st);
        drop(st);
        if let Some(w) = task {
            w.wake();
        }
        Ok(id)
    }

    /// Records the pump task of call `id` (aborted when the call ends).
    pub(crate) fn set_pump(&self, id: u32, pump: AbortHandle) {
        let mut st = lock(&self.state);
        match st.calls.get_mut(&id).and_then(|c| c.outbound.as_mut()) {
            Some(o) => o.pump = Some(pump),
            None => pump.abort(),
        }
    }

    /// Ready when call `id` may send a DATA frame; `Err` when its request
    /// stream is closed (the call ended or was cancelled).
    fn poll_send_ready(&self, id: u32, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        let mut st = lock(&self.state);
        if st.closed.is_some() {
            return Poll::Ready(Err(()));
        }
        let conn_open = st.conn_send_window > 0;
        let Some(out) = st.calls.get_mut(&id).and_then(|c| c.outbound.as_mut()) else {
            return Poll::Ready(Err(()));
        };
        if out.window > 0 && conn_open {
            return Poll::Ready(Ok(()));
        }
        if out.window <= 0 {
            out.waker = Some(cx.waker().clone());
        }
        if !conn_open {
            st.conn_blocked.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Sends one request message of call `id`.
    fn send_data(&self, id: u32, p: &Payload) -> Result<(), ()> {
        let mut wakers = Vec::new();
        let mut st = lock(&self.state);
        if st.closed.is_some() {
            return Err(());
        }
        let max = st.limits.max_message.min(st.max_send_message);
        let Some(call) = st.calls.get_mut(&id) else {
            return Err(());
        };
        let Some(out) = call.outbound.as_mut() else {
            return Err(());
        };
        let result = if p.len() > max {
            call.fail(
                Status::resource_exhausted(format!(
                    "request message of {} bytes exceeds the limit of {max} bytes",
                    p.len()
                )),
                &mut wakers,
            );
            wire::put_cancel(&mut st.wb, id, Code::ResourceExhausted);
            st.remove_if_finished(id);
            Err(())
        } else {
            out.window -= p.len() as i64;
            st.conn_send_window -= p.len() as i64;
            wire::put_data(&mut st.wb, id, p, false);
            Ok(())
        };
        wakers.extend(self.wake_task(&mut st));
        drop(st);
        wake_all(&mut wakers);
        result
    }

    /// Half-closes call `id`: its request stream is complete.
    fn finish_send(&self, id: u32) {
        let mut st = lock(&self.state);
        let max_metadata = st.limits.max_metadata;
        let Some(call) = st.calls.get_mut(&id) else {
            return;
        };
        if call.outbound.take().is_none() || st.closed.is_some() {
            return;
        }
        wire::put_trailers(&mut st.wb, id, None, max_metadata);
        st.remove_if_finished(id);
        let task = self.wake_task(&mut st);
        drop(st);
        if let Some(w) = task {
            w.wake();
        }
    }

    /// The request stream of call `id` failed: cancel the call with `status`.
    fn abort_send(&self, id: u32, status: Status) {
        let mut wakers = Vec::new();
        let mut st = lock(&self.state);
        if let Some(call) = st.calls.get_mut(&id) {
            let open = call.open_at_server();
            call.fail(status, &mut wakers);
            if open && st.closed.is_none() {
                wire::put_cancel(&mut st.wb, id, Code::Cancelled);
            }
            st.remove_if_finished(id);
        }
        wakers.extend(self.wake_task(&mut st));
        drop(st);
        wake_all(&mut wakers);
    }

    /// Polls for the response of call `id`.
    pub(crate) fn poll_call(
        &self,
        id: u32,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<Body>, Status>> {
        let mut st = lock(&self.state);
        let Some(call) = st.calls.get_mut(&id) else {
            return Poll::Ready(Err(st
                .closed
                .clone()
                .unwrap_or_else(|| Status::internal("call state lost"))));
        };
        match &mut call.response {
            Resp::Waiting(w) => {
                if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *w = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Resp::Ready(_) => {
                let Resp::Ready(r) = std::mem::replace(&mut call.response, Resp::Taken) else {
                    return Poll::Ready(Err(Status::internal("call state lost")));
                };
                let timer = call.timer.take();
                st.disarm(timer);
                st.remove_if_finished(id);
                Poll::Ready(r)
            }
            Resp::Taken => Poll::Ready(Err(Status::internal("response already taken"))),
        }
    }

    /// Abandons call `id`: forgets it and tells the server (CANCEL) if the
    /// call is still running there.
    pub(crate) fn cancel(&self, id: u32) {
        let mut wakers = Vec::new();
        let mut st = lock(&self.state);
        if let Some(mut call) = st.calls.remove(&id) {
            st.disarm(call.timer.take());
            let open = call.open_at_server() || call.outbound.is_some();
            call.fail(
                Status::cancelled("call cancelled by the client"),
                &mut wakers,
            );
            if open && st.closed.is_none() {
                wire::put_cancel(&mut st.wb, id, Code::Cancelled);
                wakers.extend(self.wake_task(&mut st));
            }
        }
        drop(st);
        wake_all(&mut wakers);
    }

    /// Marks the connection closed and fails every call still open.
    pub(crate) fn close(&self, status: Status) {
        self.usable.store(false, Ordering::Release);
        let mut wakers = Vec::new();
        {
            let mut st = lock(&self.state);
            if st.closed.is_none() {
                st.closed = Some(status.clone());
            }
            for call in st.calls.values_mut() {
                call.fail(status.clone(), &mut wakers);
            }
            st.calls.retain(|_, c| !c.finished());
            st.deadlines.clear();
            for call in st.calls.values_mut() {
                call.timer = None;
            }
            wakers.append(&mut st.conn_blocked);
            wakers.extend(st.task.take());
        }
        wake_all(&mut wakers);
    }
}

impl CreditSink for Conn {
    fn consumed(&self, id: u32, n: usize) {
        let mut st = lock(&self.state);
        if st.closed.is_some() {
            return;
        }
        if let Some(call) = st.calls.get_mut(&id) {
            if call.inbound.is_some() {
                let inc = n.min(MAX_WINDOW as usize);
                call.recv_window += inc as i64;
                st.wb.put(|b| frame::put_window_update(b, id, inc as u32));
            }
        }
        st.credit_conn(n, self.recv_conn_window);
        let task = self.wake_task(&mut st);
        drop(st);
        if let Some(w) = task {
            w.wake();
        }
    }

    fn dropped(&self, id: u32, ended: bool, unconsumed: usize) {
        {
            let mut st = lock(&self.state);
            if st.closed.is_none() {
                st.credit_conn(unconsumed, self.recv_conn_window);
            }
        }
        if !ended {
            self.cancel(id);
        }
    }
}

/// Sends a streaming request body as the peer's flow-control windows allow,
/// then half-closes. Runs as its own task; aborted when the call ends.
pub(crate) async fn pump(conn: Arc<Conn>, id: u32, mut body: Body) {
    use futures_util::StreamExt;
    loop {
        if poll_fn(|cx| conn.poll_send_ready(id, cx)).await.is_err() {
            return;
        }
        match body.next().await {
            Some(Ok(p)) => {
                if conn.send_data(id, &p).is_err() {
                    return;
                }
            }
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
                let settings = Settings::parse(&f.payload).ok_or_else(|| {
                    Status::unavailable(format!("{addr} sent malformed SETTINGS"))
                })?;
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
    let limits = PeerLimits::from_settings(&settings);
    let conn = Arc::new(Conn {
        state: Mutex::new(ConnState {
            wb: WriteBuf::new(),
            calls: IdMap::default(),
            next_id: 1,
            closed: None,
            draining: false,
            task: None,
            limits,
            max_send_message: config.max_send_message,
            conn_send_window: i64::from(limits.connection_window),
            conn_blocked: Vec::new(),
            conn_recv_window: i64::from(config.connection_window),
            conn_recv_unacked: 0,
            deadlines: DelayQueue::new(),
        }),
        usable: AtomicBool::new(true),
        id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
        peer,
        recv_stream_window: config.stream_window,
        recv_conn_window: config.connection_window,
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
        timer_polled: false,
        read_sizer: crate::util::ReadSizer::new(),
        stats: config.stats.clone(),
        write_deferred: false,
        last_woken: 0,
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
    /// False after the timer was reset and not yet polled (registered).
    timer_polled: bool,
    read_sizer: crate::util::ReadSizer,
    stats: Option<Arc<TransportStats>>,
    /// The write of newly queued frames was put off by one scheduling round
    /// (see `poll_conn`).
    write_deferred: bool,
    /// Callers woken by the last frames read (their calls' responses).
    last_woken: usize,
}

/// Frames queued beyond this are written at once, without waiting a round
/// for more callers to add theirs.
const DEFER_WRITE_BELOW: usize = 64 * 1024;

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
        // Frames queued by callers at the end (CANCELs of calls dropped with
        // the channel) still go out.
        {
            let mut st = lock(&self.conn.state);
            self.wbuf.append(&mut st.wb);
        }
        // Best effort: flush what is queued, and close cleanly.
        let _ = tokio::time::timeout(Duration::from_millis(100), async {
            use tokio::io::AsyncWriteExt;
            let io = &mut self.io;
            let wbuf = &mut self.wbuf;
            let _ = poll_fn(|cx| wbuf.poll_flush(Pin::new(&mut *io), cx)).await;
            let _ = io.shutdown().await;
        })
        .await;
    }

    fn poll_conn(&mut self, cx: &mut Context<'_>) -> Poll<Exit> {
        // Set when this poll put the write off to the next one.
        let mut hold_writes = false;
        loop {
            let mut progress = false;
            // 1. Take the callers' frames; let them wake us for more.
            let calls_open;
            {
                let mut st = lock(&self.conn.state);
                if st.closed.is_some() {
                    return Poll::Ready(Exit::Graceful("closed by the client"));
                }
                if !st.deadlines.is_empty() {
                    expire_deadlines(&mut st, cx, &mut self.wakers);
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
            wake_all(&mut self.wakers);
            self.track_idle(calls_open);

            // 2. Write. A caller that queues a call wakes this task, which
            // the runtime then runs right after that caller (tokio's LIFO
            // slot), before the other callers woken by the same batch of
            // responses: writing then would cost a syscall per call. So
            // when a batch of callers was just woken, new frames wait one
            // scheduling round (a self-wake goes to the back of the run
            // queue) and go out together.
            let write_now = !hold_writes && !self.wbuf.is_empty();
            if write_now
                && !self.write_deferred
                && self.last_woken > 1
                && self.wbuf.len() < DEFER_WRITE_BELOW
            {
                self.write_deferred = true;
                hold_writes = true;
                cx.waker().wake_by_ref();
            } else if write_now {
                self.write_deferred = false;
                let before = self.wbuf.len();
                if let Some(s) = &self.stats {
                    s.observe_write_buffered(before);
                }
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
            let room = self.read_sizer.reserve(&mut self.rbuf);
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Exit::Error(Status::unavailable(format!(
                        "connection to {} closed by the server",
                        self.conn.peer
                    ))))
                }
                Poll::Ready(Ok(n)) => {
                    self.read_sizer.observe(n, room);
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
            if !self.timer_polled || self.timer.is_elapsed() {
                self.timer_polled = true;
                if self.timer.as_mut().poll(cx).is_ready() {
                    if let Some(exit) = self.on_timer(calls_open) {
                        return Poll::Ready(exit);
                    }
                    progress = true;
                }
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
        self.timer_polled = false;
    }

    /// Arms the timer for the next keepalive or idle check.
    fn arm_timer(&mut self, now: Instant) {
        let mut at = now + Duration::from_secs(3600);
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
                self.wbuf.put(|b| frame::put_ping(b, false, *b"trpcping"));
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
                    if let Err((code, e)) = self.on_frame(&mut st, f) {
                        tracing::warn!(conn = conn.id, peer = %conn.peer, error = %e, "protocol error from server");
                        st.wb.put(|b| frame::put_goaway(b, 0, code, e.message()));
                        break Err(e);
                    }
                }
                Ok(Some(Decoded::TooLarge(h))) => self.on_too_large(&mut st, h),
                Ok(None) => break Ok(()),
                Err(e) => {
                    tracing::warn!(conn = conn.id, peer = %conn.peer, error = %e, "protocol error from server");
                    st.wb
                        .put(|b| frame::put_goaway(b, 0, e.goaway_code(), &e.to_string()));
                    break Err(Status::internal(format!(
                        "protocol error from {}: {e}",
                        conn.peer
                    )));
                }
            }
        };
        // Control frames we queued (PONG, CANCEL, WINDOW_UPDATE) go out with
        // the callers' frames.
        self.wbuf.append(&mut st.wb);
        drop(st);
        self.last_woken = self.wakers.len();
        wake_all(&mut self.wakers);
        result
    }

    fn on_too_large(&mut self, st: &mut ConnState, h: FrameHeader) {
        let max = self.codec.max_message_len();
        if h.frame_type() == Some(FrameType::Data) {
            // The sender counted these bytes against the connection window.
            st.conn_recv_window -= i64::from(h.payload_len);
            st.credit_conn(h.payload_len as usize, self.conn.recv_conn_window);
        }
        let id = h.stream_id;
        if let Some(call) = st.calls.get_mut(&id) {
            tracing::debug!(
                conn = self.conn.id,
                stream = id,
                len = h.payload_len,
                "response frame over the limit"
            );
            let open = call.open_at_server();
            call.fail(
                Status::resource_exhausted(format!(
                    "response message of {} bytes (metadata {} bytes) exceeds the limit of {max} bytes",
                    h.payload_len, h.metadata_len
                )),
                &mut self.wakers,
            );
            if open {
                wire::put_cancel(&mut st.wb, id, Code::ResourceExhausted);
            }
            st.remove_if_finished(id);
        }
    }

    /// Applies one frame. An error is a connection error: (GOAWAY code, status
    /// for the pending calls).
    fn on_frame(&mut self, st: &mut ConnState, f: Frame) -> Result<(), (GoawayCode, Status)> {
        let id = f.stream_id();
        match f.frame_type() {
            Some(FrameType::Headers) => self.on_headers(st, f),
            Some(FrameType::Data) => return self.on_data(st, f),
            Some(FrameType::Trailers) => {
                let Some(call) = st.calls.get_mut(&id) else {
                    return Ok(());
                };
                let status = match wire::decode_response_head(f.metadata) {
                    Ok(h) => h.into_status(),
                    Err(e) => e,
                };
                if let Some(inbound) = call.inbound.take() {
                    inbound.finish(Some(status));
                } else if status.code() == Code::Ok {
                    let mut resp = Response::new(Body::empty());
                    resp.extensions_mut()
                        .insert(Trailers(status.metadata().clone()));
                    call.set_response(Ok(resp), &mut self.wakers);
                } else {
                    call.set_response(Err(status), &mut self.wakers);
                }
                call.close_outbound(&mut self.wakers);
                st.remove_if_finished(id);
            }
            Some(FrameType::Cancel) => {
                if let Some(call) = st.calls.get_mut(&id) {
                    let code = wire::cancel_code(&f.payload);
                    call.fail(
                        Status::new(code, "stream reset by the server"),
                        &mut self.wakers,
                    );
                    st.remove_if_finished(id);
                }
            }
            Some(FrameType::WindowUpdate) => return self.on_window_update(st, id, &f.payload),
            Some(FrameType::Ping) => {
                // The decoder admits only 8-byte PINGs.
                if let Ok(data) = <[u8; 8]>::try_from(&f.payload[..]) {
                    st.wb.put(|b| frame::put_ping(b, true, data));
                }
            }
            Some(FrameType::Pong) => {
                self.ping_sent = None;
            }
            Some(FrameType::Goaway) => self.on_goaway(st, &f.payload),
            Some(FrameType::Settings) => {
                if let Some(s) = Settings::parse(&f.payload) {
                    st.limits = PeerLimits::from_settings(&s);
                }
            }
            None => {}
        }
        Ok(())
    }

    fn on_headers(&mut self, st: &mut ConnState, f: Frame) {
        let id = f.stream_id();
        let Some(call) = st.calls.get_mut(&id) else {
            return; // late answer for a cancelled call
        };
        if !matches!(call.response, Resp::Waiting(_)) {
            call.fail(
                Status::internal("protocol error: a second HEADERS frame on a stream"),
                &mut self.wakers,
            );
            wire::put_cancel(&mut st.wb, id, Code::Internal);
            st.remove_if_finished(id);
            return;
        }
        let head = match wire::decode_response_head(f.metadata) {
            Ok(h) => h,
            Err(e) => {
                call.fail(e, &mut self.wakers);
                wire::put_cancel(&mut st.wb, id, Code::Internal);
                st.remove_if_finished(id);
                return;
            }
        };
        let message = f
            .header
            .flags
            .contains(Flags::MESSAGE)
            .then(|| payload(&f.header, f.payload));
        if f.header.flags.contains(Flags::END_STREAM) {
            call.set_response(finish(head, message), &mut self.wakers);
            call.close_outbound(&mut self.wakers);
        } else {
            // A streaming response: messages follow in DATA frames.
            let inbound = InboundShared::new(self.stats.clone());
            if let Some(m) = message {
                // Not flow controlled: no credit owed.
                inbound.push_uncredited(m);
            }
            let sink: Arc<dyn CreditSink> = self.conn.clone();
            let body = Body::stream(Incoming::new(
                inbound.clone(),
                sink,
                id,
                self.conn.recv_stream_window as usize,
                call.deadline,
            ));
            let mut resp = Response::new(body);
            *resp.metadata_mut() = head.metadata;
            call.inbound = Some(inbound);
            call.set_response(Ok(resp), &mut self.wakers);
        }
    }

    fn on_data(&mut self, st: &mut ConnState, f: Frame) -> Result<(), (GoawayCode, Status)> {
        let id = f.stream_id();
        let len = f.payload.len();
        if len > 0 {
            if st.conn_recv_window <= 0 {
                return Err((
                    GoawayCode::FlowControlError,
                    Status::internal("flow control: the server exceeded the connection window"),
                ));
            }
            st.conn_recv_window -= len as i64;
        }
        let window = self.conn.recv_conn_window;
        let Some(call) = st.calls.get_mut(&id) else {
            st.credit_conn(len, window);
            return Ok(());
        };
        let Some(inbound) = call.inbound.clone() else {
            if matches!(call.response, Resp::Waiting(_)) {
                call.fail(
                    Status::internal("protocol error: DATA before HEADERS"),
                    &mut self.wakers,
                );
                wire::put_cancel(&mut st.wb, id, Code::Internal);
                st.remove_if_finished(id);
            }
            st.credit_conn(len, window);
            return Ok(());
        };
        if len > 0 && call.recv_window <= 0 {
            call.fail(
                Status::resource_exhausted("flow control: the server exceeded the stream window"),
                &mut self.wakers,
            );
            wire::put_cancel(&mut st.wb, id, Code::ResourceExhausted);
            st.remove_if_finished(id);
            st.credit_conn(len, window);
            return Ok(());
        }
        call.recv_window -= len as i64;
        let end = f.header.flags.contains(Flags::END_STREAM);
        let delivered = inbound.push(payload(&f.header, f.payload));
        if end {
            call.inbound = None;
            inbound.finish(Some(Status::internal(
                "protocol error: the server ended the stream without a status",
            )));
            call.close_outbound(&mut self.wakers);
            st.remove_if_finished(id);
        }
        if !delivered {
            // Nobody reads this stream any more.
            st.credit_conn(len, window);
        }
        Ok(())
    }

    fn on_window_update(
        &mut self,
        st: &mut ConnState,
        id: u32,
        payload: &[u8],
    ) -> Result<(), (GoawayCode, Status)> {
        let inc = i64::from(wire::window_increment(payload).unwrap_or(0));
        if id == 0 {
            st.conn_send_window += inc;
            if inc == 0 || st.conn_send_window > MAX_WINDOW {
                return Err((
                    GoawayCode::FlowControlError,
                    Status::internal("flow control: bad connection WINDOW_UPDATE from the server"),
                ));
            }
            if st.conn_send_window > 0 {
                self.wakers.append(&mut st.conn_blocked);
            }
            return Ok(());
        }
        let Some(call) = st.calls.get_mut(&id) else {
            return Ok(());
        };
        let Some(out) = call.outbound.as_mut() else {
            return Ok(());
        };
        out.window += inc;
        if inc == 0 || out.window > MAX_WINDOW {
            call.fail(
                Status::resource_exhausted("flow control: bad WINDOW_UPDATE from the server"),
                &mut self.wakers,
            );
            wire::put_cancel(&mut st.wb, id, Code::ResourceExhausted);
            st.remove_if_finished(id);
        } else if out.window > 0 {
            if let Some(w) = out.waker.take() {
                self.wakers.push(w);
            }
        }
        Ok(())
    }

    fn on_goaway(&mut self, st: &mut ConnState, payload: &[u8]) {
        let g = Goaway::parse(payload).unwrap_or(Goaway {
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
        for (&id, call) in st.calls.iter_mut() {
            if id > g.last_stream_id {
                call.fail(refused.clone(), &mut self.wakers);
            }
        }
        st.calls.retain(|_, c| !c.finished());
    }
}

/// Fails the calls whose deadline passed before their response came, and
/// cancels them on the server.
fn expire_deadlines(st: &mut ConnState, cx: &mut Context<'_>, wakers: &mut Vec<Waker>) {
    while let Poll::Ready(Some(expired)) = st.deadlines.poll_expired(cx) {
        let id = expired.into_inner();
        let Some(call) = st.calls.get_mut(&id) else {
            continue;
        };
        call.timer = None;
        if matches!(call.response, Resp::Waiting(_)) {
            call.fail(
                Status::deadline_exceeded("deadline exceeded while waiting for the response"),
                wakers,
            );
            wire::put_cancel(&mut st.wb, id, Code::DeadlineExceeded);
        }
    }
}

fn payload(h: &FrameHeader, bytes: Bytes) -> Payload {
    Payload {
        bytes,
        compressed: h.flags.contains(Flags::COMPRESSED),
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
