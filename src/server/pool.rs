//! The default mode's executor: every call runs in a tokio task other than
//! the connection's, so one connection's calls use every worker thread and a
//! handler that burns CPU holds up nothing else — but a task is not made
//! (or woken) per call.
//!
//! The connection puts the calls of a read batch on its pool's queue in one
//! go and wakes one *runner* (a task of the pool) unless one is already on
//! its way to the queue. A runner takes the calls one at a time and runs
//! each until it is done or waits; a call that waits stays with its runner,
//! which takes no other meanwhile. A runner that takes a call while more
//! are queued and no other runner is on its way wakes one more (up to as
//! many running as the runtime has workers) and goes to the back of the run
//! queue first, where an idle worker may take it: so a handler that burns
//! CPU never has queued calls behind it, and a long queue is shared by the
//! workers, while cheap calls run one after the other in one runner — one
//! wake-up per batch instead of one per call, and far fewer crossings
//! between cores (each crossing costs a parked worker's wake-up and its
//! context switches: see docs/PERFORMANCE.md).
//!
//! Runners end when the connection goes idle, and the first call after
//! that (or the first of a new connection) gets a task of its own: a
//! connection used once, or once in a while, keeps no task parked.
//!
//! Stopping a call (cancelled, timed out, connection closed) marks it: a
//! queued call is dropped when it is taken, a running one on its runner's
//! next turn, as tokio drops an aborted task.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;
use pin_project_lite::pin_project;
use tokio::task::AbortHandle;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Calls a runner runs in one turn before it lets the worker run other
/// tasks (other connections, and an idle worker a chance to take it).
const CALLS_PER_TURN: usize = 32;

thread_local! {
    /// A call run on this thread woke its connection's task.
    static WOKE_CONNECTION: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Notes that a call woke its connection's task: the task was put in this
/// worker's slot for the next task to run, which no other worker takes, so
/// the runner lets it run before it starts another call (one that may burn
/// CPU for long).
pub(crate) fn woke_connection() {
    WOKE_CONNECTION.with(|w| w.set(true));
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

/// A running or queued call's handle, kept with its stream; stopped with
/// [`CallPool::stop`].
#[derive(Debug)]
pub(crate) enum PoolCall {
    /// Call `generation` of the pool's queue.
    Pooled { generation: u64 },
    /// A task of its own (the first call of a cold pool).
    Spawned(AbortHandle),
}

/// A runner's state: running a call, or waiting on one.
const BUSY: u8 = 0;
/// Woken (or made) to take calls, not at the queue yet (counted in
/// `Queue::searching`).
const SEARCHING: u8 = 1;
/// On the idle list.
const IDLE: u8 = 2;

/// A task of the pool, as its connection and the other runners see it.
#[derive(Debug)]
struct Runner {
    /// The generation of the call it runs (0: none); written under the
    /// pool's lock.
    current: AtomicU64,
    /// The generation of the last call stopped while this runner ran it.
    stopped: AtomicU64,
    /// [`BUSY`], [`SEARCHING`] or [`IDLE`]; written under the pool's lock.
    state: AtomicU8,
    /// The task ends (the pool is gone or idle).
    quit: AtomicBool,
    waker: AtomicWaker,
}

impl Runner {
    fn new() -> Arc<Self> {
        Arc::new(Runner {
            current: AtomicU64::new(0),
            stopped: AtomicU64::new(0),
            state: AtomicU8::new(SEARCHING),
            quit: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        })
    }
}

/// What the connection and its runners share, under one lock.
struct Queue<T> {
    calls: VecDeque<(u64, T)>,
    /// Queued calls stopped before a runner took them.
    stopped: Vec<u64>,
    /// Runners waiting for calls.
    idle: Vec<Arc<Runner>>,
    /// Every runner alive (to find the one running a call being stopped).
    runners: Vec<Arc<Runner>>,
    /// Runners woken (or made) to take calls that have not reached the
    /// queue yet.
    searching: usize,
    /// Runners that run out of calls wait for more; otherwise (the
    /// connection is idle or gone) they end.
    keep: bool,
    /// Woken when the last queued call is taken (the connection holds its
    /// output for their replies meanwhile).
    on_empty: Option<Waker>,
}

struct PoolShared<T> {
    queue: Mutex<Queue<T>>,
    /// Runners running a call or on their way to the queue (not waiting
    /// on a call, not idle).
    active: AtomicUsize,
    /// How many may be active at once: the runtime's workers.
    workers: usize,
}

/// Someone to take queued calls: an idle runner to wake, or a new one to
/// start.
enum Helper {
    Woken(Arc<Runner>),
    New(Arc<Runner>),
}

impl Helper {
    fn go<T: Job>(self, shared: &Arc<PoolShared<T>>) {
        match self {
            Helper::Woken(runner) => runner.waker.wake(),
            Helper::New(runner) => drop(tokio::spawn(RunnerTask {
                me: runner,
                shared: shared.clone(),
                generation: 0,
                waiting: false,
                call: None,
            })),
        }
    }
}

impl<T> Queue<T> {
    /// Drops an ending runner from the list of those alive.
    fn forget(&mut self, runner: &Arc<Runner>) {
        if let Some(i) = self.runners.iter().position(|r| Arc::ptr_eq(r, runner)) {
            self.runners.swap_remove(i);
        }
    }
}

impl<T: Job> Queue<T> {
    /// Marks a runner as on its way to the queue: the idle one that waited
    /// least, or a new one.
    fn helper(&mut self, shared: &PoolShared<T>) -> Helper {
        self.searching += 1;
        shared.active.fetch_add(1, Ordering::Relaxed);
        match self.idle.pop() {
            Some(runner) => {
                runner.state.store(SEARCHING, Ordering::Relaxed);
                Helper::Woken(runner)
            }
            None => {
                let runner = Runner::new();
                self.runners.push(runner.clone());
                Helper::New(runner)
            }
        }
    }
}

/// One connection's pool of call runners.
pub(crate) struct CallPool<T> {
    /// Made by the first call queued, let go when the connection is idle.
    shared: Option<Arc<PoolShared<T>>>,
    /// Calls handed over this turn, queued together by [`CallPool::flush`].
    batch: Vec<(u64, T)>,
    generation: u64,
    /// Calls went to the pool since it was created or last released; when
    /// not, a call gets a task of its own: a connection used for one call
    /// now and then (or once) keeps no runner.
    warm: bool,
}

impl<T> std::fmt::Debug for CallPool<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallPool")
            .field("generation", &self.generation)
            .field("warm", &self.warm)
            .finish()
    }
}

impl<T: Job> CallPool<T> {
    pub(crate) fn new() -> Self {
        CallPool {
            shared: None,
            batch: Vec::new(),
            generation: 0,
            warm: false,
        }
    }

    /// Hands `call` over: it runs once [`CallPool::flush`] has queued it
    /// (or at once in a task of its own, for the first call of a cold
    /// pool).
    pub(crate) fn run(&mut self, call: T) -> PoolCall {
        if !self.warm {
            self.warm = true;
            return PoolCall::Spawned(tokio::spawn(call.start()).abort_handle());
        }
        self.generation += 1;
        self.batch.push((self.generation, call));
        PoolCall::Pooled {
            generation: self.generation,
        }
    }

    /// Queues the calls handed over since the last flush and wakes a
    /// runner unless one is on its way to the queue already.
    pub(crate) fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let shared = self.shared.get_or_insert_with(|| {
            let workers = tokio::runtime::Handle::try_current()
                .map_or(1, |h| h.metrics().num_workers())
                .max(1);
            Arc::new(PoolShared {
                queue: Mutex::new(Queue {
                    calls: VecDeque::new(),
                    stopped: Vec::new(),
                    idle: Vec::new(),
                    runners: Vec::new(),
                    searching: 0,
                    keep: true,
                    on_empty: None,
                }),
                active: AtomicUsize::new(0),
                workers,
            })
        });
        let helper = {
            let mut q = lock(&shared.queue);
            q.calls.extend(self.batch.drain(..));
            (q.searching == 0).then(|| q.helper(shared))
        };
        if let Some(helper) = helper {
            helper.go(shared);
        }
    }

    /// True while calls are queued (not taken by a runner yet); `waker`
    /// is then woken when the last one is taken.
    pub(crate) fn calls_queued(&self, waker: &Waker) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        let mut q = lock(&shared.queue);
        if q.calls.is_empty() {
            return false;
        }
        if !q.on_empty.as_ref().is_some_and(|w| w.will_wake(waker)) {
            q.on_empty = Some(waker.clone());
        }
        true
    }

    /// Stops a call handed over: it is dropped on its runner's next turn,
    /// or when it is taken if still queued.
    pub(crate) fn stop(&self, call: PoolCall) {
        let generation = match call {
            PoolCall::Spawned(handle) => return handle.abort(),
            PoolCall::Pooled { generation } => generation,
        };
        let Some(shared) = &self.shared else {
            return;
        };
        let q = &mut *lock(&shared.queue);
        if let Some(runner) = q
            .runners
            .iter()
            .find(|r| r.current.load(Ordering::Relaxed) == generation)
        {
            runner.stopped.store(generation, Ordering::Release);
            runner.waker.wake();
        } else if q.calls.iter().any(|(g, _)| *g == generation) {
            q.stopped.push(generation);
        }
    }

    /// Ends the runners without a call, and lets those still finishing
    /// one (a call hands its reply over before its runner is free) end:
    /// the connection is idle, parked runners would only hold memory.
    pub(crate) fn release_idle(&mut self) {
        self.end_idle_runners();
        self.shared = None;
        self.batch = Vec::new();
        self.warm = false;
    }
}

impl<T> CallPool<T> {
    fn end_idle_runners(&mut self) {
        let Some(shared) = &self.shared else {
            return;
        };
        let (idle, calls) = {
            let mut q = lock(&shared.queue);
            q.keep = false;
            q.stopped.clear();
            q.on_empty = None;
            (std::mem::take(&mut q.idle), std::mem::take(&mut q.calls))
        };
        for runner in idle {
            runner.quit.store(true, Ordering::Release);
            runner.waker.wake();
        }
        // Only a pool going away has queued calls left.
        drop(calls);
    }
}

impl<T> Drop for CallPool<T> {
    fn drop(&mut self) {
        self.batch.clear();
        self.end_idle_runners();
    }
}

pin_project! {
    /// A runner: takes queued calls one at a time and runs them.
    struct RunnerTask<T: Job> {
        me: Arc<Runner>,
        shared: Arc<PoolShared<T>>,
        // The generation of `call`.
        generation: u64,
        // `call` waits (the runner is not counted active meanwhile).
        waiting: bool,
        #[pin]
        call: Option<T::Task>,
    }
}

/// What a runner does after looking at the queue.
enum Next {
    /// A call was started; the helper (if any) takes over the queue.
    Run(Option<Helper>),
    /// Nothing to run: wait to be woken.
    Wait,
    /// The pool is idle or gone.
    End,
}

impl<T: Job> Future for RunnerTask<T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        // Registered before anything is looked at: a call queued, a stop or
        // a quit after the look wakes this task.
        this.me.waker.register(cx.waker());
        // Set by another task's call: whatever it woke has run by now.
        WOKE_CONNECTION.with(|w| w.set(false));
        if this.call.is_none() && this.me.quit.load(Ordering::Acquire) {
            // Told to end while idle (not counted active).
            lock(&this.shared.queue).forget(this.me);
            return Poll::Ready(());
        }
        if std::mem::take(this.waiting) {
            this.shared.active.fetch_add(1, Ordering::Relaxed);
        }
        let mut ran = 0;
        loop {
            if let Some(call) = this.call.as_mut().as_pin_mut() {
                let stopped = this.me.stopped.load(Ordering::Acquire) == *this.generation;
                if !stopped && call.poll(cx).is_pending() {
                    // Queued calls are not held up while this one waits:
                    // another runner takes them.
                    *this.waiting = true;
                    this.shared.active.fetch_sub(1, Ordering::Relaxed);
                    let helper = {
                        let mut q = lock(&this.shared.queue);
                        (!q.calls.is_empty() && q.searching == 0).then(|| q.helper(this.shared))
                    };
                    if let Some(helper) = helper {
                        helper.go(this.shared);
                    }
                    return Poll::Pending;
                }
                // Dropped before the runner takes another: a handler may
                // give back flow-control credit as it goes.
                this.call.set(None);
                ran += 1;
                if ran == CALLS_PER_TURN {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
            match next(this.me, this.shared, this.generation, this.call.as_mut()) {
                Next::Run(helper) => {
                    let mut yield_now = WOKE_CONNECTION.with(|w| w.replace(false));
                    if let Some(helper) = helper {
                        helper.go(this.shared);
                        yield_now = true;
                    }
                    if yield_now {
                        // The helper, or the connection, may be in this
                        // worker's slot for the next task, which no other
                        // worker takes: this runner goes to the back of the
                        // run queue before it polls the call it took, so a
                        // call that burns CPU holds up neither.
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
                Next::Wait => return Poll::Pending,
                Next::End => return Poll::Ready(()),
            }
        }
    }
}

/// The runner `me` looks at the queue, and starts the next call in `call`
/// (its generation in `generation`).
fn next<T: Job>(
    me: &Arc<Runner>,
    shared: &Arc<PoolShared<T>>,
    generation: &mut u64,
    mut call: Pin<&mut Option<T::Task>>,
) -> Next {
    let mut dropped = Vec::new();
    let mut emptied = None;
    let mut job = None;
    let next = {
        let q = &mut *lock(&shared.queue);
        match me.state.load(Ordering::Relaxed) {
            // Woken while idle, by a stale stop: nothing to do.
            IDLE => return Next::Wait,
            SEARCHING => q.searching -= 1,
            _ => {}
        }
        me.state.store(BUSY, Ordering::Relaxed);
        loop {
            match q.calls.pop_front() {
                Some((g, j)) => {
                    if let Some(i) = q.stopped.iter().position(|s| *s == g) {
                        q.stopped.swap_remove(i);
                        dropped.push(j);
                        continue;
                    }
                    me.current.store(g, Ordering::Relaxed);
                    *generation = g;
                    job = Some(j);
                    if q.calls.is_empty() {
                        emptied = q.on_empty.take();
                    }
                    let helper = (!q.calls.is_empty()
                        && q.searching == 0
                        && shared.active.load(Ordering::Relaxed) < shared.workers)
                        .then(|| q.helper(shared));
                    break Next::Run(helper);
                }
                None => {
                    emptied = q.on_empty.take();
                    me.current.store(0, Ordering::Relaxed);
                    shared.active.fetch_sub(1, Ordering::Relaxed);
                    if q.keep && !me.quit.load(Ordering::Acquire) {
                        me.state.store(IDLE, Ordering::Relaxed);
                        q.idle.push(me.clone());
                        break Next::Wait;
                    }
                    q.forget(me);
                    break Next::End;
                }
            }
        }
    };
    if let Some(job) = job {
        call.set(Some(job.start()));
    }
    if let Some(waker) = emptied {
        waker.wake();
        woke_connection();
    }
    drop(dropped);
    next
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

    /// Hands `pool` a call that waits for the returned sender (queued by
    /// the next flush).
    fn hand(
        pool: &mut CallPool<BoxCall>,
        dropped: &Arc<AtomicUsize>,
    ) -> (oneshot::Sender<()>, PoolCall) {
        let (tx, rx) = oneshot::channel();
        (tx, pool.run(Box::pin(call(rx, dropped.clone()))))
    }

    /// Hands `pool` a call and queues it at once.
    fn start(
        pool: &mut CallPool<BoxCall>,
        dropped: &Arc<AtomicUsize>,
    ) -> (oneshot::Sender<()>, PoolCall) {
        let started = hand(pool, dropped);
        pool.flush();
        started
    }

    impl CallPool<BoxCall> {
        fn shared(&self) -> &Arc<PoolShared<BoxCall>> {
            self.shared.as_ref().expect("a call was queued")
        }
    }

    /// (runners alive, runners idle, calls queued)
    fn counts(pool: &CallPool<BoxCall>) -> (usize, usize, usize) {
        let Some(shared) = &pool.shared else {
            return (0, 0, 0);
        };
        let q = lock(&shared.queue);
        (q.runners.len(), q.idle.len(), q.calls.len())
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
    async fn a_free_runner_takes_the_next_call_and_a_stopped_call_is_dropped() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let mut pool = warm_pool();
        let (tx1, _first) = start(&mut pool, &dropped);
        tx1.send(()).unwrap();
        // The runner waits for calls once the call ends.
        until(|| counts(&pool) == (1, 1, 0)).await;
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        let (tx2, second) = start(&mut pool, &dropped);
        // The same runner takes it (none is made) and runs it.
        until(|| counts(&pool) == (1, 0, 0) && !tx2.is_closed()).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        pool.stop(second);
        until(|| counts(&pool) == (1, 1, 0)).await;
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            2,
            "the stopped call was dropped"
        );
        assert!(tx2.is_closed());
        // A waiting call does not hold up the calls queued behind it:
        // another runner takes them. Both are dropped when stopped.
        let (tx3, third) = hand(&mut pool, &dropped);
        let (tx4, fourth) = hand(&mut pool, &dropped);
        pool.flush();
        until(|| counts(&pool) == (2, 0, 0)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(dropped.load(Ordering::SeqCst), 2, "still running");
        assert!(!tx3.is_closed() && !tx4.is_closed());
        pool.stop(third);
        pool.stop(fourth);
        until(|| tx3.is_closed() && tx4.is_closed()).await;
        assert_eq!(dropped.load(Ordering::SeqCst), 4);
        until(|| counts(&pool) == (2, 2, 0)).await;
        // Dropping the pool ends its runners.
        let weak = Arc::downgrade(&lock(&pool.shared().queue).runners[0]);
        let shared = Arc::downgrade(pool.shared());
        drop(pool);
        until(|| weak.strong_count() == 0 && shared.strong_count() == 0).await;
    }

    #[tokio::test]
    async fn a_queued_call_stopped_before_it_runs_is_dropped_unrun() {
        let ran = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        let mut pool = warm_pool();
        let (tx1, _first) = hand(&mut pool, &dropped);
        let counted = ran.clone();
        let second = pool.run(Box::pin(async move {
            counted.fetch_add(1, Ordering::SeqCst);
        }));
        pool.flush();
        // Stopped while queued: no runner has been polled yet (one thread).
        assert_eq!(counts(&pool), (1, 0, 2));
        pool.stop(second);
        until(|| counts(&pool).2 == 0).await;
        tx1.send(()).unwrap();
        until(|| counts(&pool).1 == counts(&pool).0 && dropped.load(Ordering::SeqCst) == 1).await;
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the stopped call never ran");
        assert!(lock(&pool.shared().queue).stopped.is_empty());
    }

    #[tokio::test]
    async fn a_stale_stop_leaves_the_next_call_alone() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let mut pool = warm_pool();
        let (tx1, first) = start(&mut pool, &dropped);
        tx1.send(()).unwrap();
        until(|| counts(&pool) == (1, 1, 0)).await;
        let (tx2, _second) = start(&mut pool, &dropped);
        until(|| counts(&pool) == (1, 0, 0)).await;
        // The first call's stop comes late: the runner's new call runs on.
        pool.stop(first);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        tx2.send(()).unwrap();
        until(|| dropped.load(Ordering::SeqCst) == 2).await;
    }

    #[tokio::test]
    async fn a_runner_finishing_after_the_connection_went_idle_ends() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let mut pool = warm_pool();
        let (tx1, _first) = start(&mut pool, &dropped);
        until(|| counts(&pool) == (1, 0, 0)).await;
        let runner = Arc::downgrade(&lock(&pool.shared().queue).runners[0]);
        // The connection saw the reply and went idle before the runner was
        // free: the runner must not stay parked.
        pool.release_idle();
        tx1.send(()).unwrap();
        until(|| runner.strong_count() == 0).await;
        assert_eq!(counts(&pool), (0, 0, 0));
        // Cold again: the next call gets a task of its own, the one after
        // it a runner, kept when its call ends.
        let (tx2, second) = start(&mut pool, &dropped);
        assert!(matches!(second, PoolCall::Spawned(_)));
        let (tx3, third) = start(&mut pool, &dropped);
        assert!(matches!(third, PoolCall::Pooled { .. }));
        tx2.send(()).unwrap();
        tx3.send(()).unwrap();
        until(|| counts(&pool) == (1, 1, 0)).await;
        assert_eq!(dropped.load(Ordering::SeqCst), 3);
        assert_eq!(pool.shared().active.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn the_connection_is_woken_when_the_last_queued_call_is_taken() {
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(woken.clone());
        let dropped = Arc::new(AtomicUsize::new(0));
        let mut pool = warm_pool();
        assert!(!pool.calls_queued(&waker), "no pool, nothing queued");
        let (tx1, _first) = hand(&mut pool, &dropped);
        let (tx2, _second) = hand(&mut pool, &dropped);
        pool.flush();
        // Nothing has run yet (one thread): both calls are queued.
        assert!(pool.calls_queued(&waker));
        assert!(pool.calls_queued(&waker), "asked again: one waker kept");
        // The runner takes the first, waits on it, hands the queue to a
        // second runner, which takes the last: the connection is woken
        // though neither call has ended.
        until(|| counts(&pool).2 == 0).await;
        until(|| woken.0.load(Ordering::SeqCst) == 1).await;
        assert!(!pool.calls_queued(&waker));
        tx1.send(()).unwrap();
        tx2.send(()).unwrap();
        until(|| dropped.load(Ordering::SeqCst) == 2).await;
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn cheap_calls_of_a_batch_run_in_one_runner() {
        let done = Arc::new(AtomicUsize::new(0));
        let mut pool = warm_pool();
        for _ in 0..100 {
            let done = done.clone();
            pool.run(Box::pin(async move {
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        pool.flush();
        until(|| done.load(Ordering::SeqCst) == 100).await;
        until(|| counts(&pool).1 == 1).await;
        assert_eq!(counts(&pool), (1, 1, 0), "one runner, one wake-up");
        assert_eq!(pool.shared().active.load(Ordering::SeqCst), 0);
    }
}
