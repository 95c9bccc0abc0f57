//! [`Channel`]: a cheap-to-clone `tower::Service` over a small pool of
//! multiplexed connections to one endpoint.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tower_service::Service;

use super::connection::{self, Conn};
use super::endpoint::Endpoint;
use crate::body::Body;
use crate::request::{Request, Response};
use crate::status::Status;
use crate::util::fmt_duration;

/// How often a call that was refused (never processed: GOAWAY, idle close)
/// is transparently re-sent on another connection.
const REFUSED_RETRIES: u8 = 2;

/// A client for one endpoint: clone it freely, every clone shares the pool.
///
/// `Channel` is a `Service<Request<Body>, Response = Response<Body>, Error =
/// Status>`; wrap it in any tower layers, and in [`Client`](crate::Client) for
/// typed calls. It is always ready: calls fail fast with `Unavailable` while
/// the endpoint cannot be reached (reconnects back off exponentially).
#[derive(Clone)]
pub struct Channel {
    transport: Transport,
}

/// What a channel speaks: the native protocol over its pool, or gRPC
/// (`grpc://`, `http://`, `https://` endpoints, see [`crate::grpc`]).
#[derive(Clone)]
enum Transport {
    Trpc(Arc<Pool>),
    Grpc(Arc<crate::grpc::client::GrpcClient>),
}

struct Pool {
    endpoint: Endpoint,
    slots: Box<[Mutex<Slot>]>,
    next: AtomicUsize,
    changed: Notify,
    /// False for a channel over one given connection
    /// ([`Endpoint::connect_with_io`]): nothing to reconnect to.
    reconnect: bool,
}

enum Slot {
    Empty {
        failures: u32,
    },
    Connecting {
        failures: u32,
    },
    Ready(Arc<Conn>),
    Backoff {
        until: Instant,
        error: Status,
        failures: u32,
        /// Not reported yet: the callers waiting for this attempt get the
        /// plain error; later callers also learn when the next attempt is.
        fresh: bool,
    },
}

enum Pick {
    Conn(Arc<Conn>),
    Wait,
    Fail(Status),
}

fn lock(m: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    fn pick(self: &Arc<Self>) -> Pick {
        let n = self.slots.len();
        let start = if n == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        let mut waiting = false;
        let mut failure = None;
        for k in 0..n {
            let i = (start + k) % n;
            let mut slot = lock(&self.slots[i]);
            let failures = match &mut *slot {
                Slot::Ready(c) if c.is_usable() => return Pick::Conn(c.clone()),
                Slot::Ready(_) if !self.reconnect => {
                    failure = Some(Status::unavailable(
                        "connection closed (this channel does not reconnect)",
                    ));
                    continue;
                }
                Slot::Ready(_) => 0,
                Slot::Empty { failures } => *failures,
                Slot::Connecting { .. } => {
                    waiting = true;
                    continue;
                }
                Slot::Backoff {
                    until,
                    error,
                    failures,
                    fresh,
                } => {
                    let now = Instant::now();
                    if now < *until {
                        failure = Some(if std::mem::take(fresh) {
                            error.clone()
                        } else {
                            Status::unavailable(format!(
                                "{} (next connection attempt in {})",
                                error.message(),
                                fmt_duration(*until - now)
                            ))
                            .with_refused(true)
                        });
                        continue;
                    }
                    *failures
                }
            };
            *slot = Slot::Connecting { failures };
            drop(slot);
            tokio::spawn(self.clone().connect_slot(i));
            waiting = true;
        }
        if waiting {
            Pick::Wait
        } else {
            Pick::Fail(failure.unwrap_or_else(|| Status::unavailable("no connection")))
        }
    }

    async fn connect_slot(self: Arc<Self>, i: usize) {
        let result = self.endpoint.connect_one().await;
        {
            let mut slot = lock(&self.slots[i]);
            let failures = match &mut *slot {
                Slot::Connecting { failures } => *failures,
                _ => 0,
            };
            *slot = match result {
                Ok(conn) => Slot::Ready(conn),
                Err(error) => {
                    let delay = self.endpoint.config.backoff_delay(failures);
                    tracing::debug!(endpoint = self.endpoint.uri(), %error, retry_in = ?delay, "connect failed");
                    Slot::Backoff {
                        until: Instant::now() + delay,
                        error: error.with_refused(true),
                        failures: failures.saturating_add(1),
                        fresh: true,
                    }
                }
            };
        }
        self.changed.notify_waiters();
    }

    /// Waits until a connection is usable, or fails when the endpoint is down.
    async fn ready_conn(self: &Arc<Self>) -> Result<Arc<Conn>, Status> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.pick() {
                Pick::Conn(c) => return Ok(c),
                Pick::Fail(e) => return Err(e),
                Pick::Wait => notified.await,
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Calls still running (a response stream being read) keep their
        // connection until they end; then it closes.
        for slot in self.slots.iter() {
            if let Slot::Ready(conn) = &*lock(slot) {
                conn.release();
            }
        }
    }
}

impl Channel {
    pub(crate) fn new(endpoint: Endpoint) -> Channel {
        if let super::endpoint::Wire::Grpc { tls } = endpoint.wire {
            let client = crate::grpc::client::GrpcClient::new(endpoint, tls);
            return Channel {
                transport: Transport::Grpc(Arc::new(client)),
            };
        }
        let n = endpoint.config.pool_size.max(1);
        let slots = (0..n)
            .map(|_| Mutex::new(Slot::Empty { failures: 0 }))
            .collect();
        Channel::with_slots(endpoint, slots, true)
    }

    /// A channel over `conn` alone, which it never replaces.
    pub(crate) fn with_conn(endpoint: Endpoint, conn: Arc<Conn>) -> Channel {
        let slots = Box::new([Mutex::new(Slot::Ready(conn))]);
        Channel::with_slots(endpoint, slots, false)
    }

    fn with_slots(endpoint: Endpoint, slots: Box<[Mutex<Slot>]>, reconnect: bool) -> Channel {
        Channel {
            transport: Transport::Trpc(Arc::new(Pool {
                endpoint,
                slots,
                next: AtomicUsize::new(0),
                changed: Notify::new(),
                reconnect,
            })),
        }
    }

    /// The endpoint this channel connects to.
    pub fn endpoint(&self) -> &Endpoint {
        match &self.transport {
            Transport::Trpc(pool) => &pool.endpoint,
            Transport::Grpc(client) => client.endpoint(),
        }
    }

    /// Waits until at least one connection is established.
    pub async fn wait_connected(&self) -> Result<(), Status> {
        match &self.transport {
            Transport::Trpc(pool) => pool.ready_conn().await.map(drop),
            Transport::Grpc(client) => client.wait_connected().await,
        }
    }

    /// Connections currently established and usable.
    pub fn connections(&self) -> usize {
        let pool = match &self.transport {
            Transport::Trpc(pool) => pool,
            Transport::Grpc(client) => return usize::from(client.connected()),
        };
        pool.slots
            .iter()
            .filter(|s| matches!(&*lock(s), Slot::Ready(c) if c.is_usable()))
            .count()
    }

    /// Calls in flight over all connections (native channels; 0 for gRPC).
    pub fn in_flight(&self) -> usize {
        let Transport::Trpc(pool) = &self.transport else {
            return 0;
        };
        pool.slots
            .iter()
            .map(|s| match &*lock(s) {
                Slot::Ready(c) => c.in_flight(),
                _ => 0,
            })
            .sum()
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.transport {
            Transport::Trpc(pool) => f
                .debug_struct("Channel")
                .field("endpoint", &pool.endpoint.uri())
                .field("pool_size", &pool.slots.len())
                .finish(),
            Transport::Grpc(client) => f
                .debug_struct("Channel")
                .field("endpoint", &client.endpoint().uri())
                .field("protocol", &"grpc")
                .finish(),
        }
    }
}

impl Service<Request<Body>> for Channel {
    type Response = Response<Body>;
    type Error = Status;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> ResponseFuture {
        match &self.transport {
            Transport::Trpc(pool) => ResponseFuture::start(pool, req),
            Transport::Grpc(client) => ResponseFuture {
                state: State::Slow(crate::grpc::client::start(client, req)),
            },
        }
    }
}

/// A call registered on a connection; dropping it before completion cancels
/// the call on the server.
struct InFlight {
    conn: Arc<Conn>,
    id: u32,
    done: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            self.conn.cancel(self.id);
        }
    }
}

type BoxResponse = Pin<Box<dyn Future<Output = Result<Response<Body>, Status>> + Send>>;

enum State {
    InFlight {
        call: InFlight,
        pool: Arc<Pool>,
        /// Kept for a transparent re-send if the server refuses the call;
        /// `None` for streaming requests, which cannot be replayed.
        req: Option<Request<Body>>,
    },
    Slow(BoxResponse),
    Failed(Option<Status>),
}

/// The future of a [`Channel`] call.
///
/// Its deadline is enforced by the connection (one timer for all of its
/// calls), or, while no connection is ready yet, by the slow path.
pub struct ResponseFuture {
    state: State,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

fn deadline_exceeded(sent: bool) -> Status {
    if sent {
        Status::deadline_exceeded("deadline exceeded while waiting for the response")
    } else {
        Status::deadline_exceeded("deadline exceeded before the call was sent")
    }
}

type Begun = Result<(u32, Option<Request<Body>>), (Status, Request<Body>)>;

/// Starts `req` on `conn`; a streaming request body gets its pump task. On
/// success returns the stream id and, for unary requests, the request (kept
/// for a re-send if refused). On failure the request comes back untouched.
// The error carries the request back for a retry; returning it by value
// avoids an allocation on a path taken only when a call is refused.
#[allow(clippy::result_large_err)]
fn begin(conn: &Arc<Conn>, req: Request<Body>) -> Begun {
    let deadline = req.deadline();
    let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    if timeout == Some(Duration::ZERO) {
        return Err((deadline_exceeded(false), req));
    }
    match conn.start_call(&req, deadline, timeout) {
        Ok(id) if req.get_ref().is_stream() => {
            let pump = tokio::spawn(connection::pump(conn.clone(), id, req.into_inner()));
            conn.set_pump(id, pump.abort_handle());
            Ok((id, None))
        }
        Ok(id) => Ok((id, Some(req))),
        Err(e) => Err((e, req)),
    }
}

impl ResponseFuture {
    fn start(pool: &Arc<Pool>, mut req: Request<Body>) -> ResponseFuture {
        if req.deadline().is_none() {
            if let Some(t) = pool.endpoint.config.timeout {
                req.set_timeout(t);
            }
        }
        let deadline = req.deadline();
        if let Some(d) = deadline {
            // Every path below (the connection's timer, the slow path's
            // timeout, an immediate failure) ends the call by `d`.
            super::DeadlineProbe::enforced(d);
        }
        let failed = |s| ResponseFuture {
            state: State::Failed(Some(s)),
        };
        let state = match pool.pick() {
            Pick::Conn(conn) => match begin(&conn, req) {
                Ok((id, req)) => State::InFlight {
                    call: InFlight {
                        conn,
                        id,
                        done: false,
                    },
                    pool: pool.clone(),
                    req,
                },
                Err((e, req)) if e.is_refused() => {
                    State::Slow(Box::pin(slow_call(pool.clone(), req, deadline)))
                }
                Err((e, _)) => return failed(e),
            },
            Pick::Wait => State::Slow(Box::pin(slow_call(pool.clone(), req, deadline))),
            Pick::Fail(e) => return failed(e),
        };
        ResponseFuture { state }
    }
}

/// The path through connection establishment and refused-call retries,
/// bounded by the call's deadline.
async fn slow_call(
    pool: Arc<Pool>,
    req: Request<Body>,
    deadline: Option<Instant>,
) -> Result<Response<Body>, Status> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, slow_call_inner(pool, req))
            .await
            .unwrap_or_else(|_| Err(deadline_exceeded(true))),
        None => slow_call_inner(pool, req).await,
    }
}

async fn slow_call_inner(
    pool: Arc<Pool>,
    mut req: Request<Body>,
) -> Result<Response<Body>, Status> {
    let mut last = None;
    for _ in 0..=REFUSED_RETRIES {
        let conn = pool.ready_conn().await?;
        let (id, kept) = match begin(&conn, req) {
            Ok(x) => x,
            Err((e, r)) if e.is_refused() => {
                last = Some(e);
                req = r;
                tokio::task::yield_now().await;
                continue;
            }
            Err((e, _)) => return Err(e),
        };
        let mut call = InFlight {
            conn,
            id,
            done: false,
        };
        let result = poll_fn(|cx| call.conn.poll_call(call.id, cx)).await;
        call.done = true;
        match (result, kept) {
            (Err(e), Some(r)) if e.is_refused() => {
                last = Some(e);
                req = r;
            }
            (other, _) => return other,
        }
    }
    Err(last.unwrap_or_else(|| Status::unavailable("call refused by every connection")))
}

impl Future for ResponseFuture {
    type Output = Result<Response<Body>, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.state {
            State::InFlight { call, pool, req } => match call.conn.poll_call(call.id, cx) {
                Poll::Ready(Err(e)) if e.is_refused() && req.is_some() => {
                    call.done = true;
                    if let Some(req) = req.take() {
                        let deadline = req.deadline();
                        this.state = State::Slow(Box::pin(slow_call(pool.clone(), req, deadline)));
                    }
                    self_poll_again(cx)
                }
                Poll::Ready(r) => {
                    call.done = true;
                    Poll::Ready(r)
                }
                Poll::Pending => Poll::Pending,
            },
            State::Slow(fut) => fut.as_mut().poll(cx),
            State::Failed(s) => Poll::Ready(Err(s
                .take()
                .unwrap_or_else(|| Status::internal("polled after completion")))),
        }
    }
}

fn self_poll_again<T>(cx: &mut Context<'_>) -> Poll<T> {
    cx.waker().wake_by_ref();
    Poll::Pending
}
