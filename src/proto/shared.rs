//! The state of one connection that its task and the owners of its streams
//! (callers on a client, handler tasks on a server) share: the output
//! queued for the socket, the stream table, the connection's flow-control
//! windows, the peer's settings and the deadline queue.
//!
//! Stream owners never touch the socket: they lock the state, encode their
//! frames into [`State::wb`] and wake the connection task, which writes
//! everything queued with one (vectored) write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;
use tokio::time::Instant;

use super::deadlines::Deadlines;
use super::flow::{RecvWindow, SendWindow};
use super::settings::PeerSettings;
use super::streams::Stream;
use crate::body::{Body, Payload};
use crate::frame::{self, WriteBuf};
use crate::stats::TransportStats;
use crate::status::Status;
use crate::stream::{CreditSink, InboundShared, Incoming};
use crate::util::IdMap;
use crate::wire;

/// Stream owners stop adding output while this much waits for the socket.
pub(crate) const WRITE_HIGH_WATER: usize = 1 << 20;

/// What a role keeps about each stream, and how it reacts when the reader of
/// a stream's messages goes away early.
pub(crate) trait RoleStream: Send + Sized + 'static {
    /// What the role keeps about the connection, next to its streams.
    type Conn: Default + Send + std::fmt::Debug;
    /// What the role shares with its streams' owners outside the lock.
    type Side: Default + Send + Sync + std::fmt::Debug;

    /// The reader of stream `id`'s messages was dropped before the end of
    /// the stream (a client cancels the call; a server lets the handler go on).
    fn reader_dropped(st: &mut State<Self>, id: u32);
}

/// The mutable state of a connection, behind [`Shared`]'s lock.
#[derive(Debug)]
pub(crate) struct State<X: RoleStream> {
    /// Frames queued by stream owners (and by the task while it holds the
    /// lock), not yet taken by the task.
    pub(crate) wb: WriteBuf,
    /// Open streams.
    pub(crate) streams: IdMap<Stream<X>>,
    /// The connection's send window.
    pub(crate) send_window: SendWindow,
    /// Senders waiting for the connection window or for room in the output.
    pub(crate) send_blocked: Vec<Waker>,
    /// The connection's receive window.
    pub(crate) recv_window: RecvWindow,
    /// DATA bytes received and not yet given back as credit: queued for a
    /// reader or held by one (counted in a server's request-byte budget).
    pub(crate) recv_held: usize,
    /// The peer's settings.
    pub(crate) peer: PeerSettings,
    /// Deadlines of open streams: one timer for the whole connection.
    /// Created by the first deadline and dropped when the connection goes
    /// idle (an idle connection holds no timer or heap).
    pub(crate) deadlines: Option<Deadlines>,
    /// Set once the connection is closed: why.
    pub(crate) closed: Option<Status>,
    /// Tasks to wake once the lock is released (filled under the lock).
    pub(crate) woken: Vec<Waker>,
    /// Request bytes (HEADERS metadata and message) held by a server's
    /// calls while their handlers run.
    pub(crate) held_bytes: usize,
    /// Output the task has taken and not yet written.
    pub(crate) out_pending: usize,
    /// The role's part.
    pub(crate) conn: X::Conn,
}

impl<X: RoleStream> State<X> {
    /// True while stream owners may queue more output.
    pub(crate) fn has_write_room(&self) -> bool {
        self.wb.len() + self.out_pending < WRITE_HIGH_WATER
    }

    /// Gives back connection-level credit for `n` received bytes (batched).
    pub(crate) fn credit_conn(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if let Some(inc) = self.recv_window.release(n) {
            self.wb.put(|b| frame::put_window_update(b, 0, inc));
        }
    }

    /// Stream `id` must end by `at` (an earlier deadline replaces a later one).
    pub(crate) fn tighten_deadline(&mut self, id: u32, at: Instant) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let queue = self.deadlines.get_or_insert_with(Deadlines::new);
        s.deadline = Some(queue.tighten(id, s.deadline, at));
    }

    /// The next stream whose deadline passed (its deadline cleared), if
    /// any; registers the task for the earliest deadline otherwise.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Option<u32> {
        let queue = self.deadlines.as_mut().filter(|q| !q.is_empty())?;
        let streams = &mut self.streams;
        let id = queue.poll_expired(cx, |id| streams.get(&id).and_then(|s| s.deadline))?;
        if let Some(s) = streams.get_mut(&id) {
            s.deadline = None;
        }
        Some(id)
    }

    /// Gives back what an idle connection does not need: the deadline
    /// queue and the stream table's capacity.
    pub(crate) fn release_idle(&mut self) {
        if self.deadlines.as_ref().is_some_and(|q| q.is_empty()) {
            self.deadlines = None;
        }
        crate::util::release_empty!(self.streams, self.send_blocked, self.woken);
    }

    /// Removes stream `id` (and its deadline) from the table.
    pub(crate) fn remove_stream(&mut self, id: u32) -> Option<Stream<X>> {
        let mut s = self.streams.remove(&id)?;
        if let (Some(_), Some(queue)) = (s.deadline.take(), self.deadlines.as_mut()) {
            let streams = &self.streams;
            queue.removed(|id| streams.get(&id).and_then(|s| s.deadline));
        }
        Some(s)
    }

    /// Closes the connection's state: every stream is dropped with its
    /// deadline. Returns the streams for the role to fail.
    pub(crate) fn close(&mut self, why: Status) -> Vec<(u32, Stream<X>)> {
        if self.closed.is_none() {
            self.closed = Some(why);
        }
        self.deadlines = None;
        self.streams.drain().collect()
    }
}

/// Why a message could not be sent.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The stream (or the connection) is closed: the message is dropped.
    Closed,
    /// The message is larger than the peer (or this side) allows.
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// A connection's state shared by its task and its streams' owners.
#[derive(Debug)]
pub(crate) struct Shared<X: RoleStream> {
    state: Mutex<State<X>>,
    /// The receive window each new stream starts with.
    pub(crate) recv_stream_window: u32,
    /// Largest message this side sends (the peer's limit also applies).
    pub(crate) max_send_message: usize,
    /// Transport counters.
    pub(crate) stats: Option<Arc<TransportStats>>,
    /// Cleared when no new stream may be started (closed, draining).
    usable: AtomicBool,
    /// The connection task, woken when output is queued (without the lock).
    task: AtomicWaker,
    /// The role's part that lives outside the lock.
    pub(crate) side: X::Side,
}

/// Wakes every waker in `wakers`.
pub(crate) fn wake_all(wakers: &mut Vec<Waker>) {
    for w in wakers.drain(..) {
        w.wake();
    }
}

impl<X: RoleStream> Shared<X> {
    /// A connection's state: `recv_stream`/`recv_conn` are the windows we
    /// announced, `peer` what the peer announced so far.
    pub(crate) fn new(
        recv_stream: u32,
        recv_conn: u32,
        peer: PeerSettings,
        max_send_message: usize,
        stats: Option<Arc<TransportStats>>,
    ) -> Self {
        Shared {
            state: Mutex::new(State {
                wb: WriteBuf::new(),
                streams: IdMap::default(),
                send_window: SendWindow::new(peer.connection_window),
                send_blocked: Vec::new(),
                recv_window: RecvWindow::new(recv_conn),
                recv_held: 0,
                peer,
                deadlines: None,
                closed: None,
                woken: Vec::new(),
                held_bytes: 0,
                out_pending: 0,
                conn: X::Conn::default(),
            }),
            recv_stream_window: recv_stream,
            max_send_message,
            stats,
            usable: AtomicBool::new(true),
            task: AtomicWaker::new(),
            side: X::Side::default(),
        }
    }

    /// Locks the state. A panic while it was held (a bug) does not make the
    /// connection unusable: the state is consistent between operations.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State<X>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the connection task (call it after releasing the lock); true
    /// if it was waiting to be woken (false: already woken, or running).
    pub(crate) fn wake_task(&self) -> bool {
        match self.task.take() {
            Some(waker) => {
                waker.wake();
                true
            }
            None => false,
        }
    }

    /// The connection task registers for [`Shared::wake_task`].
    pub(crate) fn register_task(&self, waker: &Waker) {
        self.task.register(waker);
    }

    /// True while new streams may be started.
    pub(crate) fn is_usable(&self) -> bool {
        self.usable.load(Ordering::Acquire)
    }

    /// No new stream may be started any more.
    pub(crate) fn set_unusable(&self) {
        self.usable.store(false, Ordering::Release);
    }

    /// Ready when stream `id` may send a DATA frame now (its window and the
    /// connection's are open and the output has room); `Err` once the stream
    /// can no longer send.
    pub(crate) fn poll_send_capacity(
        &self,
        id: u32,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendError>> {
        let mut st = self.lock();
        Self::check_capacity(&mut st, id, cx)
    }

    fn check_capacity(
        st: &mut State<X>,
        id: u32,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendError>> {
        if st.closed.is_some() {
            return Poll::Ready(Err(SendError::Closed));
        }
        let conn_open = st.send_window.is_open() && st.has_write_room();
        let Some(s) = st.streams.get_mut(&id).filter(|s| s.state.can_send()) else {
            return Poll::Ready(Err(SendError::Closed));
        };
        if s.send.is_open() && conn_open {
            return Poll::Ready(Ok(()));
        }
        if !s.send.is_open() {
            s.send_waker = Some(cx.waker().clone());
        }
        if !conn_open {
            st.send_blocked.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Sends `item` as a DATA frame on stream `id` once the windows allow
    /// (checked and consumed under one lock, so concurrent senders never
    /// overshoot the connection window by more than one message).
    pub(crate) fn poll_send_data(
        &self,
        id: u32,
        cx: &mut Context<'_>,
        item: &mut Option<Payload>,
    ) -> Poll<Result<(), SendError>> {
        let Some(len) = item.as_ref().map(Payload::len) else {
            return Poll::Ready(Ok(()));
        };
        {
            let mut st = self.lock();
            let max = st.peer.max_message.min(self.max_send_message);
            if len > max {
                return Poll::Ready(Err(SendError::TooLarge { len, max }));
            }
            match Self::check_capacity(&mut st, id, cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            let Some(p) = item.take() else {
                return Poll::Ready(Ok(()));
            };
            st.send_window.consume(len);
            if let Some(s) = st.streams.get_mut(&id) {
                s.send.consume(len);
            }
            wire::put_data(&mut st.wb, id, &p, false);
        }
        self.wake_task();
        Poll::Ready(Ok(()))
    }
}

impl<X: RoleStream + 'static> Shared<X> {
    /// The message stream of stream `id` whose opening HEADERS did not end
    /// it (a streaming request or response): `first` is the message that
    /// rode in the HEADERS (not flow controlled, so no credit is owed for
    /// it); the rest arrive in DATA frames, credited as they are consumed.
    pub(crate) fn incoming(
        self: &Arc<Self>,
        id: u32,
        first: Option<Payload>,
    ) -> (Arc<InboundShared>, Body) {
        let inbound = InboundShared::new(self.stats.clone());
        if let Some(m) = first {
            inbound.push_uncredited(m);
        }
        let sink: Arc<dyn CreditSink> = self.clone();
        let body = Body::stream(Incoming::new(
            inbound.clone(),
            sink,
            id,
            self.recv_stream_window as usize,
        ));
        (inbound, body)
    }
}

impl<X: RoleStream> CreditSink for Shared<X> {
    fn consumed(&self, id: u32, n: usize) {
        {
            let mut st = self.lock();
            if st.closed.is_some() {
                return;
            }
            st.recv_held = st.recv_held.saturating_sub(n);
            if let Some(s) = st.streams.get_mut(&id) {
                if s.state.can_recv() {
                    if let Some(inc) = s.recv.release_now(n) {
                        st.wb.put(|b| frame::put_window_update(b, id, inc));
                    }
                }
            }
            st.credit_conn(n);
        }
        self.wake_task();
    }

    fn dropped(&self, id: u32, ended: bool, unconsumed: usize) {
        {
            let mut st = self.lock();
            if st.closed.is_some() {
                return;
            }
            st.recv_held = st.recv_held.saturating_sub(unconsumed);
            // The peer may still be sending: its stream credit for what was
            // never read comes back too, so it is not left waiting.
            if let Some(s) = st.streams.get_mut(&id) {
                if s.state.can_recv() {
                    if let Some(inc) = s.recv.release_now(unconsumed) {
                        st.wb.put(|b| frame::put_window_update(b, id, inc));
                    }
                }
            }
            st.credit_conn(unconsumed);
            if !ended {
                X::reader_dropped(&mut st, id);
            }
        }
        self.wake_task();
    }
}
