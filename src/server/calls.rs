//! The calls in flight on one server connection, polled inside the connection's
//! task (no task spawned per call), removable by stream id (cancellation drops
//! the handler future at once).
//!
//! A call has two phases: the handler future, then — for a streaming response —
//! the response stream, which the connection polls only while the peer's
//! flow-control window allows. Both phases are bounded by the call's deadline
//! and isolated from panics.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use futures_core::Stream;
use futures_util::task::AtomicWaker;
use pin_project_lite::pin_project;
use slab::Slab;
use tokio::time::{Instant, Sleep};

use crate::body::{Body, Payload};
use crate::request::{Method, Response};
use crate::status::{BoxError, Status};
use crate::stream::CreditSink;

pin_project! {
    /// A handler future, then its response stream, plus the call's deadline
    /// and panic isolation.
    pub(crate) struct CallFuture<F> {
        #[pin]
        handler: Option<F>,
        #[pin]
        sleep: Option<Sleep>,
        stream: Option<Body>,
        method: Method,
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

fn deadline_status() -> Status {
    Status::deadline_exceeded("deadline exceeded: the server cancelled the call")
}

impl<F, E> CallFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
    E: Into<BoxError>,
{
    pub(crate) fn new(handler: F, deadline: Option<Instant>, method: Method) -> Self {
        CallFuture {
            handler: Some(handler),
            sleep: deadline.map(tokio::time::sleep_until),
            stream: None,
            method,
        }
    }

    /// A finished call holding nothing (what a recycled box contains).
    fn vacant() -> Self {
        CallFuture {
            handler: None,
            sleep: None,
            stream: None,
            method: Method::default(),
        }
    }

    fn panicked(method: &Method, panic: &(dyn Any + Send)) -> Status {
        let msg = panic_message(panic);
        tracing::error!(method = %method, panic = msg, "handler panicked; the call fails with INTERNAL");
        Status::internal(format!("handler panicked: {msg}"))
    }

    /// Polls the handler future (phase 1).
    fn poll_handler(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<Body>, Status>> {
        let mut this = self.project();
        let Some(handler) = this.handler.as_mut().as_pin_mut() else {
            return Poll::Ready(Err(Status::internal("handler polled after completion")));
        };
        let out = match catch_unwind(AssertUnwindSafe(|| handler.poll(cx))) {
            Ok(Poll::Ready(Ok(resp))) => Ok(resp),
            Ok(Poll::Ready(Err(e))) => Err(Status::from_error(e.into())),
            Ok(Poll::Pending) => {
                return match this.sleep.as_pin_mut().map(|s| s.poll(cx)) {
                    Some(Poll::Ready(())) => Poll::Ready(Err(deadline_status())),
                    _ => Poll::Pending,
                }
            }
            Err(panic) => Err(Self::panicked(this.method, &*panic)),
        };
        this.handler.set(None);
        Poll::Ready(out)
    }

    /// Enters phase 2: the response stream.
    fn set_stream(self: Pin<&mut Self>, body: Body) {
        let mut this = self.project();
        this.handler.set(None);
        *this.stream = Some(body);
    }

    /// True once the deadline has passed (registers for the wake-up otherwise).
    fn poll_deadline(self: Pin<&mut Self>, cx: &mut Context<'_>) -> bool {
        let this = self.project();
        matches!(
            this.sleep.as_pin_mut().map(|s| s.poll(cx)),
            Some(Poll::Ready(()))
        )
    }

    /// Polls the response stream (phase 2).
    fn poll_item(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Payload, Status>>> {
        let this = self.project();
        let Some(body) = this.stream.as_mut() else {
            return Poll::Ready(None);
        };
        match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *body).poll_next(cx))) {
            Ok(Poll::Pending) => match this.sleep.as_pin_mut().map(|s| s.poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Some(Err(deadline_status()))),
                _ => Poll::Pending,
            },
            Ok(ready) => ready,
            Err(panic) => Poll::Ready(Some(Err(Self::panicked(this.method, &*panic)))),
        }
    }
}

/// A request stream's consumer tells the connection about consumed or
/// abandoned bytes through this queue.
#[derive(Debug)]
pub(crate) enum Signal {
    /// Bytes consumed on a stream: return credit.
    Credit(u32, usize),
    /// The handler dropped its request stream with bytes unconsumed.
    Dropped(u32, usize),
}

/// State shared between the connection task, the slot wakers and the request
/// stream consumers.
pub(crate) struct Shared {
    ready: Mutex<Vec<usize>>,
    signals: Mutex<Vec<Signal>>,
    task: AtomicWaker,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn signal(&self, s: Signal) {
        lock(&self.signals).push(s);
        self.task.wake();
    }
}

impl CreditSink for Shared {
    fn consumed(&self, id: u32, n: usize) {
        self.signal(Signal::Credit(id, n));
    }

    fn dropped(&self, id: u32, _ended: bool, unconsumed: usize) {
        // On the server a handler that stops reading does not cancel the call.
        self.signal(Signal::Dropped(id, unconsumed));
    }
}

struct SlotWaker {
    idx: usize,
    queued: AtomicBool,
    shared: Arc<Shared>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            lock(&self.shared.ready).push(self.idx);
            self.shared.task.wake();
        }
    }
}

struct Entry<F> {
    stream_id: u32,
    fut: Pin<Box<CallFuture<F>>>,
}

/// A finished handler: its future (kept for a streaming response) and output.
pub(crate) type Finished<F> = (Pin<Box<CallFuture<F>>>, Result<Response<Body>, Status>);

/// Most finished call boxes kept for reuse.
const SPARE_BOXES: usize = 32;

/// The set of in-flight calls of one connection.
pub(crate) struct CallSet<F> {
    slots: Slab<Entry<F>>,
    /// Boxes of finished calls, reused for new ones (one allocation less per
    /// call).
    spare: Vec<Pin<Box<CallFuture<F>>>>,
    /// One waker per slab index, created once and reused by later calls.
    wakers: Vec<(Arc<SlotWaker>, Waker)>,
    shared: Arc<Shared>,
}

impl<F, E> CallSet<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
    E: Into<BoxError>,
{
    pub(crate) fn new() -> Self {
        CallSet {
            slots: Slab::new(),
            spare: Vec::new(),
            wakers: Vec::new(),
            shared: Arc::new(Shared {
                ready: Mutex::new(Vec::new()),
                signals: Mutex::new(Vec::new()),
                task: AtomicWaker::new(),
            }),
        }
    }

    /// The shared state, as a credit sink for request streams.
    pub(crate) fn sink(&self) -> Arc<dyn CreditSink> {
        self.shared.clone()
    }

    /// Frees memory kept from busier times (when idle).
    pub(crate) fn shrink(&mut self) {
        if self.slots.is_empty() && self.slots.capacity() > 0 {
            self.slots = Slab::new();
            self.wakers = Vec::new();
        }
        self.spare = Vec::new();
    }

    /// Keeps the box of a finished call for the next call.
    pub(crate) fn recycle(&mut self, mut fut: Pin<Box<CallFuture<F>>>) {
        if self.spare.len() < SPARE_BOXES {
            fut.as_mut().set(CallFuture::vacant());
            self.spare.push(fut);
        }
    }

    fn ensure_waker(&mut self, idx: usize) {
        while self.wakers.len() <= idx {
            let w = Arc::new(SlotWaker {
                idx: self.wakers.len(),
                queued: AtomicBool::new(false),
                shared: self.shared.clone(),
            });
            let waker = Waker::from(w.clone());
            self.wakers.push((w, waker));
        }
    }

    /// Starts a call: polls the handler once. A handler that finished at once
    /// is returned (never stored); otherwise the call is stored and its slot
    /// index returned.
    pub(crate) fn push(
        &mut self,
        stream_id: u32,
        fut: CallFuture<F>,
    ) -> Result<usize, Finished<F>> {
        let mut fut = match self.spare.pop() {
            Some(mut boxed) => {
                boxed.as_mut().set(fut);
                boxed
            }
            None => Box::pin(fut),
        };
        let idx = self.slots.vacant_key();
        self.ensure_waker(idx);
        let (w, waker) = &self.wakers[idx];
        w.queued.store(false, Ordering::Release);
        let mut cx = Context::from_waker(waker);
        match fut.as_mut().poll_handler(&mut cx) {
            Poll::Ready(out) => Err((fut, out)),
            Poll::Pending => Ok(self.slots.insert(Entry { stream_id, fut })),
        }
    }

    /// Stores a call whose handler finished with a streaming response.
    pub(crate) fn insert_streaming(
        &mut self,
        stream_id: u32,
        mut fut: Pin<Box<CallFuture<F>>>,
        body: Body,
    ) -> usize {
        fut.as_mut().set_stream(body);
        let idx = self.slots.insert(Entry { stream_id, fut });
        self.ensure_waker(idx);
        idx
    }

    /// Drops call `idx` (cancellation). Returns its stream id.
    pub(crate) fn remove(&mut self, idx: usize) -> Option<u32> {
        let entry = self.slots.try_remove(idx)?;
        self.recycle(entry.fut);
        Some(entry.stream_id)
    }

    /// Schedules call `idx` to be polled again.
    pub(crate) fn wake(&self, idx: usize) {
        if let Some((w, _)) = self.wakers.get(idx) {
            w.wake_by_ref();
        }
    }

    /// Moves the indices of woken calls into `out`, and the consumers' signals
    /// into `signals`; registers the task for later wake-ups.
    pub(crate) fn take_ready(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<usize>,
        signals: &mut Vec<Signal>,
    ) {
        self.shared.task.register(cx.waker());
        std::mem::swap(&mut *lock(&self.shared.ready), out);
        let mut s = lock(&self.shared.signals);
        if !s.is_empty() {
            std::mem::swap(&mut *s, signals);
        }
    }

    /// The stream id and phase (true: streaming response) of call `idx`.
    pub(crate) fn info(&self, idx: usize) -> Option<(u32, bool)> {
        self.slots
            .get(idx)
            .map(|e| (e.stream_id, e.fut.stream.is_some()))
    }

    fn slot_cx(&mut self, idx: usize) -> Option<(&mut Entry<F>, Context<'_>)> {
        let entry = self.slots.get_mut(idx)?;
        let (w, waker) = self.wakers.get(idx)?;
        w.queued.store(false, Ordering::Release);
        Some((entry, Context::from_waker(waker)))
    }

    /// Polls the handler of call `idx`; a finished one is removed and returned.
    pub(crate) fn poll_handler(&mut self, idx: usize) -> Option<Finished<F>> {
        let (entry, mut cx) = self.slot_cx(idx)?;
        match entry.fut.as_mut().poll_handler(&mut cx) {
            Poll::Pending => None,
            Poll::Ready(out) => {
                let entry = self.slots.remove(idx);
                Some((entry.fut, out))
            }
        }
    }

    /// Polls the response stream of call `idx`.
    pub(crate) fn poll_item(&mut self, idx: usize) -> Poll<Option<Result<Payload, Status>>> {
        match self.slot_cx(idx) {
            Some((entry, mut cx)) => entry.fut.as_mut().poll_item(&mut cx),
            None => Poll::Ready(None),
        }
    }

    /// True once call `idx`'s deadline has passed.
    pub(crate) fn deadline_passed(&mut self, idx: usize) -> bool {
        match self.slot_cx(idx) {
            Some((entry, mut cx)) => entry.fut.as_mut().poll_deadline(&mut cx),
            None => false,
        }
    }
}
