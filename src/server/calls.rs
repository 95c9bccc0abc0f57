//! The calls in flight on one server connection, polled inside the connection's
//! task (no task spawned per call), removable by stream id (cancellation drops
//! the handler future at once).

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use pin_project_lite::pin_project;
use slab::Slab;
use tokio::time::{Instant, Sleep};

use crate::body::Body;
use crate::request::{Method, Response};
use crate::status::{BoxError, Status};

pin_project! {
    /// A handler future plus the call's deadline and panic isolation.
    pub(crate) struct CallFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Sleep>,
        method: Method,
    }
}

impl<F> CallFuture<F> {
    pub(crate) fn new(inner: F, deadline: Option<Instant>, method: Method) -> Self {
        CallFuture {
            inner,
            sleep: deadline.map(tokio::time::sleep_until),
            method,
        }
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

impl<F, E> Future for CallFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<Body>, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(Ok(resp))) => Poll::Ready(Ok(resp)),
            Ok(Poll::Ready(Err(e))) => Poll::Ready(Err(Status::from_error(e.into()))),
            Ok(Poll::Pending) => match this.sleep.as_pin_mut().map(|s| s.poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(Status::deadline_exceeded(
                    "deadline exceeded: the server cancelled the call",
                ))),
                _ => Poll::Pending,
            },
            Err(panic) => {
                let msg = panic_message(&*panic);
                tracing::error!(method = %this.method, panic = msg, "handler panicked; the call fails with INTERNAL");
                Poll::Ready(Err(Status::internal(format!("handler panicked: {msg}"))))
            }
        }
    }
}

struct ReadyQueue {
    ready: Mutex<Vec<usize>>,
    task: AtomicWaker,
}

struct SlotWaker {
    idx: usize,
    queued: AtomicBool,
    queue: Arc<ReadyQueue>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.queue
                .ready
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self.idx);
            self.queue.task.wake();
        }
    }
}

struct Entry<F> {
    stream_id: u32,
    fut: Pin<Box<CallFuture<F>>>,
}

/// The set of in-flight calls of one connection.
pub(crate) struct CallSet<F> {
    slots: Slab<Entry<F>>,
    /// One waker per slab index, created once and reused by later calls.
    wakers: Vec<(Arc<SlotWaker>, Waker)>,
    queue: Arc<ReadyQueue>,
    scratch: Vec<usize>,
}

impl<F, E> CallSet<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
    E: Into<BoxError>,
{
    pub(crate) fn new() -> Self {
        CallSet {
            slots: Slab::new(),
            wakers: Vec::new(),
            queue: Arc::new(ReadyQueue {
                ready: Mutex::new(Vec::new()),
                task: AtomicWaker::new(),
            }),
            scratch: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Frees memory kept from busier times (when idle).
    pub(crate) fn shrink(&mut self) {
        if self.slots.is_empty() && self.slots.capacity() > 0 {
            self.slots = Slab::new();
            self.wakers = Vec::new();
            self.scratch = Vec::new();
        }
    }

    fn waker(&mut self, idx: usize) -> Waker {
        while self.wakers.len() <= idx {
            let w = Arc::new(SlotWaker {
                idx: self.wakers.len(),
                queued: AtomicBool::new(false),
                queue: self.queue.clone(),
            });
            let waker = Waker::from(w.clone());
            self.wakers.push((w, waker));
        }
        let (w, waker) = &self.wakers[idx];
        w.queued.store(false, Ordering::Release);
        waker.clone()
    }

    /// Adds a call and polls it once. Returns its output if it finished at once
    /// (then it was never stored), else the slot index.
    pub(crate) fn push(
        &mut self,
        stream_id: u32,
        fut: CallFuture<F>,
    ) -> Result<usize, Result<Response<Body>, Status>> {
        let mut fut = Box::pin(fut);
        let entry = self.slots.vacant_entry();
        let idx = entry.key();
        let waker = self.waker(idx);
        let mut cx = Context::from_waker(&waker);
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(out) => Err(out),
            Poll::Pending => {
                self.slots.insert(Entry { stream_id, fut });
                Ok(idx)
            }
        }
    }

    /// Drops call `idx` (cancellation). Returns its stream id.
    pub(crate) fn remove(&mut self, idx: usize) -> Option<u32> {
        self.slots.try_remove(idx).map(|e| e.stream_id)
    }

    /// Polls every call that was woken; `done` gets each finished one.
    /// Returns true if any call finished.
    pub(crate) fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        mut done: impl FnMut(u32, Result<Response<Body>, Status>),
    ) -> bool {
        self.queue.task.register(cx.waker());
        let mut any = false;
        loop {
            {
                let mut ready = self.queue.ready.lock().unwrap_or_else(|e| e.into_inner());
                if ready.is_empty() {
                    break;
                }
                std::mem::swap(&mut *ready, &mut self.scratch);
            }
            let mut scratch = std::mem::take(&mut self.scratch);
            for idx in scratch.drain(..) {
                if !self.slots.contains(idx) {
                    continue;
                }
                let waker = self.waker(idx);
                let mut task_cx = Context::from_waker(&waker);
                let entry = &mut self.slots[idx];
                if let Poll::Ready(out) = entry.fut.as_mut().poll(&mut task_cx) {
                    let entry = self.slots.remove(idx);
                    done(entry.stream_id, out);
                    any = true;
                }
            }
            self.scratch = scratch;
        }
        any
    }
}
