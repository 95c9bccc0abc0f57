//! Inline mode's executor: the calls of one connection polled inside the
//! connection's own task (no task spawned per call), each with a waker of
//! its own so only woken calls are polled. Boxes of finished calls are reused.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use slab::Slab;

/// Most finished call boxes kept for reuse.
const SPARE_BOXES: usize = 32;

struct Ready {
    queue: Mutex<Vec<usize>>,
    task: AtomicWaker,
}

fn lock(m: &Mutex<Vec<usize>>) -> MutexGuard<'_, Vec<usize>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct SlotWaker {
    idx: usize,
    queued: AtomicBool,
    ready: Arc<Ready>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            lock(&self.ready.queue).push(self.idx);
            self.ready.task.wake();
        }
    }
}

/// A call's box: emptied when the call ends, so that it can be reused.
type Slot<T> = Pin<Box<Option<T>>>;

/// The calls polled by one connection task.
pub(crate) struct LocalCalls<T> {
    slots: Slab<Slot<T>>,
    spare: Vec<Slot<T>>,
    wakers: Vec<(Arc<SlotWaker>, Waker)>,
    ready: Arc<Ready>,
    woken: Vec<usize>,
}

impl<T> std::fmt::Debug for LocalCalls<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCalls")
            .field("calls", &self.slots.len())
            .finish()
    }
}

fn poll_slot<T: Future<Output = ()>>(slot: &mut Slot<T>, cx: &mut Context<'_>) -> Poll<()> {
    match slot.as_mut().as_pin_mut() {
        Some(fut) => fut.poll(cx),
        None => Poll::Ready(()),
    }
}

impl<T: Future<Output = ()>> LocalCalls<T> {
    /// An empty set.
    pub(crate) fn new() -> Self {
        LocalCalls {
            slots: Slab::new(),
            spare: Vec::new(),
            wakers: Vec::new(),
            ready: Arc::new(Ready {
                queue: Mutex::new(Vec::new()),
                task: AtomicWaker::new(),
            }),
            woken: Vec::new(),
        }
    }

    fn ensure_waker(&mut self, idx: usize) {
        while self.wakers.len() <= idx {
            let w = Arc::new(SlotWaker {
                idx: self.wakers.len(),
                queued: AtomicBool::new(false),
                ready: self.ready.clone(),
            });
            let waker = Waker::from(w.clone());
            self.wakers.push((w, waker));
        }
    }

    fn recycle(&mut self, mut slot: Slot<T>) {
        slot.set(None);
        if self.spare.len() < SPARE_BOXES {
            self.spare.push(slot);
        }
    }

    /// Starts a call: polls it once. `None` when it finished at once;
    /// otherwise its slot.
    pub(crate) fn push(&mut self, fut: T) -> Option<usize> {
        let mut boxed = match self.spare.pop() {
            Some(mut b) => {
                b.set(Some(fut));
                b
            }
            None => Box::pin(Some(fut)),
        };
        let idx = self.slots.vacant_key();
        self.ensure_waker(idx);
        let (w, waker) = &self.wakers[idx];
        w.queued.store(false, Ordering::Release);
        let mut cx = Context::from_waker(waker);
        match poll_slot(&mut boxed, &mut cx) {
            Poll::Ready(()) => {
                self.recycle(boxed);
                None
            }
            Poll::Pending => Some(self.slots.insert(boxed)),
        }
    }

    /// Takes call `idx` out (cancelled): the caller drops it.
    pub(crate) fn remove(&mut self, idx: usize) -> Option<Slot<T>> {
        self.slots.try_remove(idx)
    }

    /// Polls the calls woken since the last time; true if any was polled.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> bool {
        self.ready.task.register(cx.waker());
        std::mem::swap(&mut *lock(&self.ready.queue), &mut self.woken);
        if self.woken.is_empty() {
            return false;
        }
        let mut woken = std::mem::take(&mut self.woken);
        for idx in woken.drain(..) {
            let Some(slot) = self.slots.get_mut(idx) else {
                continue;
            };
            let Some((w, waker)) = self.wakers.get(idx) else {
                continue;
            };
            w.queued.store(false, Ordering::Release);
            let mut cx = Context::from_waker(waker);
            if poll_slot(slot, &mut cx).is_ready() {
                let done = self.slots.remove(idx);
                self.recycle(done);
            }
        }
        self.woken = woken;
        true
    }

    /// Drops every call.
    pub(crate) fn clear(&mut self) {
        self.slots.clear();
        self.spare.clear();
    }
}
