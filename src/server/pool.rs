//! The default mode's executor: every call runs in a tokio task of its own,
//! so one connection's calls use every worker thread and a handler that
//! burns CPU holds up nothing else — but the tasks are reused. A task whose
//! call ended goes back to its connection's free list and waits there for
//! the next call instead of ending.
//!
//! Spawning a task per call costs an aligned allocation (tokio's task cell
//! is cache-line aligned, which glibc's malloc serves on its slow path),
//! a registration in the runtime's task list under a lock, and a free on
//! whichever thread the task ended — often another thread's malloc arena,
//! whose lock the two threads then fight over. Handing a call to a parked
//! task costs two uncontended locks and a wake-up, the same scheduling a
//! spawn does.
//!
//! The free tasks end when the connection goes idle, and the first call
//! after that (or the first of a new connection) gets a task of its own:
//! a connection used once, or once in a while, keeps no task parked.
//!
//! Stopping a call (cancelled, timed out, connection closed) marks its
//! generation on the task and wakes it: the task drops the call on its next
//! turn, as tokio drops an aborted task.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use pin_project_lite::pin_project;
use tokio::task::AbortHandle;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A call as handed to the pool: small to move. It becomes its future only
/// in the task that runs it, so the whole future (every layer's state) is
/// written once in place instead of being copied through the hand-over.
pub(crate) trait Job: Send + 'static {
    /// The call's future.
    type Task: Future<Output = ()> + Send + 'static;
    /// Makes the call's future.
    fn start(self) -> Self::Task;
}

/// The part of a pooled task the connection reaches without knowing the
/// call's type: how to stop a call.
pub(crate) trait Stop: Send + Sync {
    /// Stops call `generation` if it is still this task's.
    fn stop(&self, generation: u64);
}

/// A running call's handle, kept with its stream.
pub(crate) enum PoolCall {
    /// A task of the pool, running call `generation`.
    Pooled {
        task: Arc<dyn Stop>,
        generation: u64,
    },
    /// A task of its own (the first call of a cold pool).
    Spawned(AbortHandle),
}

impl PoolCall {
    /// Stops the call (its handler is dropped on the task's next turn).
    pub(crate) fn stop(self) {
        match self {
            PoolCall::Pooled { task, generation } => task.stop(generation),
            PoolCall::Spawned(handle) => handle.abort(),
        }
    }
}

impl std::fmt::Debug for PoolCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolCall::Pooled { generation, .. } => f
                .debug_struct("Pooled")
                .field("generation", generation)
                .finish(),
            PoolCall::Spawned(_) => f.write_str("Spawned"),
        }
    }
}

/// What a pooled task and its connection share.
struct Worker<T> {
    /// The next call, handed over by the connection.
    inbox: Mutex<Option<(u64, T)>>,
    /// The generation of the last call stopped.
    stopped: AtomicU64,
    /// The task ends once it has no call.
    quit: AtomicBool,
    waker: AtomicWaker,
}

impl<T: Send> Stop for Worker<T> {
    fn stop(&self, generation: u64) {
        self.stopped.store(generation, Ordering::Release);
        self.waker.wake();
    }
}

impl<T> Worker<T> {
    fn quit(&self) {
        self.quit.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// Tasks without a call, handed back by the tasks themselves.
struct FreeList<T> {
    tasks: Vec<Arc<Worker<T>>>,
    /// Tasks coming back are kept; otherwise (the connection is idle or
    /// gone) they end.
    keep: bool,
}

/// Puts a task back on `free`; false when it should end instead.
fn put_back<T>(free: &Mutex<FreeList<T>>, task: &Arc<Worker<T>>) -> bool {
    let mut free = lock(free);
    if free.keep {
        free.tasks.push(task.clone());
    }
    free.keep
}

/// One connection's pool of call tasks.
pub(crate) struct CallPool<T> {
    free: Arc<Mutex<FreeList<T>>>,
    /// Free tasks taken from the shared list in one go.
    spare: Vec<Arc<Worker<T>>>,
    generation: u64,
    /// Calls went to the pool since it was created or last released; when
    /// not, a call gets a task of its own: a connection used for one call
    /// now and then (or once) keeps no pooled task and pays only a spawn.
    warm: bool,
}

impl<T> std::fmt::Debug for CallPool<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallPool")
            .field("spare", &self.spare.len())
            .finish()
    }
}

impl<T: Job> CallPool<T> {
    pub(crate) fn new() -> Self {
        CallPool {
            free: Arc::new(Mutex::new(FreeList {
                tasks: Vec::new(),
                keep: true,
            })),
            spare: Vec::new(),
            generation: 0,
            warm: false,
        }
    }

    /// Runs `call` in a free task, or in a new one when every task is busy.
    pub(crate) fn run(&mut self, call: T) -> PoolCall {
        if !self.warm {
            self.warm = true;
            return PoolCall::Spawned(tokio::spawn(call.start()).abort_handle());
        }
        self.generation += 1;
        let generation = self.generation;
        if self.spare.is_empty() {
            let mut free = lock(&self.free);
            // Busy again (after `release_idle`): tasks come back.
            free.keep = true;
            std::mem::swap(&mut free.tasks, &mut self.spare);
        }
        let task = match self.spare.pop() {
            Some(task) => {
                *lock(&task.inbox) = Some((generation, call));
                task.waker.wake();
                task
            }
            None => {
                let task = Arc::new(Worker {
                    inbox: Mutex::new(None),
                    stopped: AtomicU64::new(0),
                    quit: AtomicBool::new(false),
                    waker: AtomicWaker::new(),
                });
                drop(tokio::spawn(PooledTask {
                    task: task.clone(),
                    free: self.free.clone(),
                    generation,
                    call: Some(call.start()),
                }));
                task
            }
        };
        PoolCall::Pooled { task, generation }
    }

    /// Ends the tasks without a call, and those still finishing their last
    /// one (a task hands its reply over before it comes back): the
    /// connection is idle, parked tasks would only hold memory.
    pub(crate) fn release_idle(&mut self) {
        self.end_free_tasks();
        self.spare = Vec::new();
        self.warm = false;
    }
}

impl<T> CallPool<T> {
    fn end_free_tasks(&mut self) {
        let free = {
            let mut free = lock(&self.free);
            free.keep = false;
            std::mem::take(&mut free.tasks)
        };
        for task in free.into_iter().chain(self.spare.drain(..)) {
            task.quit();
        }
    }
}

impl<T> Drop for CallPool<T> {
    fn drop(&mut self) {
        self.end_free_tasks();
    }
}

pin_project! {
    /// A pooled task: runs a call, goes back to the free list, waits for
    /// the next one.
    struct PooledTask<T: Job> {
        task: Arc<Worker<T>>,
        free: Arc<Mutex<FreeList<T>>>,
        generation: u64,
        #[pin]
        call: Option<T::Task>,
    }
}

impl<T: Job> Future for PooledTask<T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        // Registered before anything is looked at: a call handed over, a
        // stop or a quit after the look wakes this task.
        this.task.waker.register(cx.waker());
        loop {
            if let Some(call) = this.call.as_mut().as_pin_mut() {
                let stopped = this.task.stopped.load(Ordering::Acquire) == *this.generation;
                if !stopped && call.poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // Dropped before the task offers itself again: a handler
                // may give back flow-control credit as it goes.
                this.call.set(None);
                if !put_back(this.free, this.task) {
                    return Poll::Ready(());
                }
            }
            let next = lock(&this.task.inbox).take();
            match next {
                Some((generation, call)) => {
                    *this.generation = generation;
                    this.call.set(Some(call.start()));
                }
                None if this.task.quit.load(Ordering::Acquire) => return Poll::Ready(()),
                None => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::oneshot;

    /// A call that runs until told to finish, counting its drops.
    fn call(rx: oneshot::Receiver<()>, dropped: Arc<AtomicUsize>) -> impl Future<Output = ()> {
        struct OnDrop(Arc<AtomicUsize>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        // Made outside the block: dropped with the call even if it never ran.
        let guard = OnDrop(dropped);
        async move {
            let _guard = guard;
            let _ = rx.await;
        }
    }

    type BoxCall = Pin<Box<dyn Future<Output = ()> + Send>>;

    impl Job for BoxCall {
        type Task = BoxCall;
        fn start(self) -> BoxCall {
            self
        }
    }

    /// A pool past its first call (which gets a task of its own).
    fn warm_pool() -> CallPool<BoxCall> {
        let mut pool = CallPool::new();
        pool.warm = true;
        pool
    }

    /// Runs a call in `pool` that waits for the returned sender.
    fn start(
        pool: &mut CallPool<BoxCall>,
        dropped: &Arc<AtomicUsize>,
    ) -> (oneshot::Sender<()>, PoolCall) {
        let (tx, rx) = oneshot::channel();
        (tx, pool.run(Box::pin(call(rx, dropped.clone()))))
    }

    /// Yields until `done` holds, at most 10,000 times.
    async fn until(mut done: impl FnMut() -> bool) {
        for _ in 0..10_000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("condition not reached");
    }

    #[tokio::test]
    async fn a_finished_task_takes_the_next_call_and_a_stopped_call_is_dropped() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let mut pool = warm_pool();
        let (tx1, first) = start(&mut pool, &dropped);
        tx1.send(()).unwrap();
        // The task comes back to the free list once the call ends.
        until(|| !lock(&pool.free).tasks.is_empty()).await;
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        let (_tx2, second) = start(&mut pool, &dropped);
        // The same task took it: no task was spawned, the list is empty.
        assert!(lock(&pool.free).tasks.is_empty() && pool.spare.is_empty());
        second.stop();
        until(|| !lock(&pool.free).tasks.is_empty()).await;
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            2,
            "the stopped call was dropped"
        );
        // A call stopped while it waits (polled, pending) is dropped too,
        // in a task that took it over and in one spawned for it.
        let (tx3, third) = start(&mut pool, &dropped);
        let (tx4, fourth) = start(&mut pool, &dropped);
        until(|| lock(&pool.free).tasks.is_empty() && !tx3.is_closed()).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(dropped.load(Ordering::SeqCst), 2, "still running");
        third.stop();
        fourth.stop();
        until(|| tx3.is_closed() && tx4.is_closed()).await;
        assert_eq!(dropped.load(Ordering::SeqCst), 4);
        until(|| lock(&pool.free).tasks.len() == 2).await;
        // Dropping the pool ends its free tasks.
        drop(first);
        let weak = Arc::downgrade(&lock(&pool.free).tasks[0]);
        drop(pool);
        until(|| weak.strong_count() == 0).await;
    }

    #[tokio::test]
    async fn a_stale_stop_leaves_the_next_call_alone() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let mut pool = warm_pool();
        let (tx1, first) = start(&mut pool, &dropped);
        tx1.send(()).unwrap();
        until(|| !lock(&pool.free).tasks.is_empty()).await;
        let (tx2, _second) = start(&mut pool, &dropped);
        // The first call's stop comes late: the task's new call runs on.
        first.stop();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        tx2.send(()).unwrap();
        until(|| dropped.load(Ordering::SeqCst) == 2).await;
    }

    #[tokio::test]
    async fn a_task_finishing_after_the_connection_went_idle_ends() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let mut pool = warm_pool();
        let (tx1, first) = start(&mut pool, &dropped);
        let PoolCall::Pooled { task, .. } = &first else {
            panic!("a warm pool runs calls in its tasks");
        };
        let task = Arc::downgrade(task);
        drop(first);
        // The connection saw the reply and went idle before the task came
        // back: the task must not stay parked.
        pool.release_idle();
        tx1.send(()).unwrap();
        until(|| task.strong_count() == 0).await;
        assert!(lock(&pool.free).tasks.is_empty());
        // Cold again: the next call gets a task of its own, the one after
        // it a pooled task, kept when its call ends.
        let (tx2, second) = start(&mut pool, &dropped);
        assert!(matches!(second, PoolCall::Spawned(_)));
        let (tx3, third) = start(&mut pool, &dropped);
        assert!(matches!(third, PoolCall::Pooled { .. }));
        tx2.send(()).unwrap();
        tx3.send(()).unwrap();
        until(|| lock(&pool.free).tasks.len() == 1).await;
        assert_eq!(dropped.load(Ordering::SeqCst), 3);
    }
}
