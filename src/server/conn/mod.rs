//! The server side of a trpc connection ([`ServerRole`]): admits new calls
//! (stream ids, limits, request-byte budget), starts their handlers — in
//! the runner tasks of the connection's pool by default, so one
//! connection's calls use every core — and
//! answers for calls that are cancelled, time out or break the rules; plus
//! the server's own timers (handshake, idle, idle streams, connection age)
//! and graceful drain.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower_service::Service;

use super::accept::{ConnCtx, ConnService};
use super::call::{write_response, CallStart, CallTask};
use super::limits::CancelBudget;
use super::local::LocalCalls;
use super::pool::{CallPool, Job as _};
use super::stream::{answer, close_stream, CallRef, Reply, ServerStream};
use super::ServerConfig;
use crate::body::{Body, Payload};
use crate::frame::{self, Flags, Frame, FrameHeader, FrameType, Goaway, GoawayCode};
use crate::metadata::ReceivedEntries;
use crate::proto::{
    ConnError, Driver, DriverConfig, Exit, PeerSettings, Role, Shared, State, Stream, StreamState,
};
use crate::request::{Origin, Request, Response};
use crate::status::{BoxError, Code, Status};
use crate::stream::HoldCredit;
use crate::wire;

mod role;

/// The largest stream id (ids are 31-bit).
const MAX_STREAM_ID: u32 = (1 << 31) - 1;

type Call<S> = CallTask<S, <S as Service<Request<Body>>>::Future>;

/// A request waiting for the service.
struct Queued {
    id: u32,
    req: Request<Body>,
    /// Its metadata entries, added where the call runs.
    entries: Option<ReceivedEntries>,
}

/// The server's part of a trpc connection.
pub(crate) struct ServerRole<S: Service<Request<Body>>> {
    svc: S,
    cfg: Arc<ServerConfig>,
    peer: SocketAddr,
    shared: Arc<Shared<ServerStream>>,
    /// The peer and the deadline watch, shared by every request.
    origin: Arc<Origin>,
    conn_extensions: Option<http::Extensions>,
    /// Admitted calls waiting for the service.
    queue: VecDeque<Queued>,
    /// The last dispatch stopped with calls left: the service was not ready
    /// or the output is backed up. Nothing more is read meanwhile.
    backed_up: bool,
    /// Replies taken from the calls' tasks, being written.
    replies: Vec<(u32, Reply)>,
    /// A call was handed to a task this turn.
    spawned: bool,
    /// The runtime has more than one worker (yielding can hand the
    /// connection to another one).
    multi_worker: bool,
    /// Calls started this turn, whose handle is stored in one locked pass.
    started: Vec<(u32, CallRef)>,
    /// Inline mode's executor (`None`: every call is a task).
    local: Option<LocalCalls<Call<S>>>,
    /// The tasks calls run in (unless inline).
    pool: CallPool<CallStart<S>>,
    /// Calls and requests to drop once the state is unlocked (dropping a
    /// handler may return flow-control credit, which locks the state).
    drop_local: Vec<usize>,
    drop_requests: Vec<Request<Body>>,
    /// Calls started or answered by the frames just read.
    batch: usize,
    highest_id: u32,
    cancel_budget: Option<CancelBudget>,
    started_at: Instant,
    last_call: Instant,
    next_idle_stream_check: Option<Instant>,
    draining: bool,
    forced: Option<&'static str>,
    /// When the connection's maximum age is reached, and when the grace
    /// period after it ends.
    age_at: Option<Instant>,
    age_grace_end: Option<Instant>,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    shutdown_token: CancellationToken,
    /// Created once the connection drains: only then can the grace period end.
    force: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    force_token: CancellationToken,
    tokens_registered: bool,
}

impl<S> ServerRole<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    fn new(ctx: ConnCtx<S>, shared: Arc<Shared<ServerStream>>, started_at: Instant) -> Self {
        let ConnCtx {
            peer,
            svc,
            cfg,
            shutdown,
            force,
            extensions,
        } = ctx;
        let now = Instant::now();
        let age_at = cfg.max_connection_age.map(|age| {
            // ±10% so that the connections of a fleet opened together do not
            // all end together.
            started_at + crate::util::jitter(age, 0.1)
        });
        ServerRole {
            svc,
            peer,
            origin: Arc::new(Origin {
                remote_addr: Some(peer),
                deadline_watch: Some(shared.clone()),
            }),
            shared,
            conn_extensions: extensions,
            queue: VecDeque::new(),
            backed_up: false,
            replies: Vec::new(),
            spawned: false,
            multi_worker: tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.metrics().num_workers() > 1),
            started: Vec::new(),
            local: cfg.inline_handlers.then(LocalCalls::new),
            pool: CallPool::new(),
            drop_local: Vec::new(),
            drop_requests: Vec::new(),
            batch: 0,
            highest_id: 0,
            cancel_budget: cfg
                .max_cancels
                .map(|(n, per)| CancelBudget::new(n, per, now)),
            started_at,
            last_call: now,
            next_idle_stream_check: None,
            draining: false,
            forced: None,
            age_at,
            age_grace_end: None,
            shutdown: Box::pin(shutdown.clone().cancelled_owned()),
            shutdown_token: shutdown,
            force: None,
            force_token: force,
            tokens_registered: false,
            cfg,
        }
    }

    fn check_new_stream_id(&mut self, id: u32) -> Result<(), ConnError> {
        if id == 0 || id % 2 == 0 || id <= self.highest_id || id > MAX_STREAM_ID {
            return Err(ConnError::protocol(format!(
                "stream id {id} is not odd, below 2^31 and greater than the last one ({})",
                self.highest_id
            )));
        }
        self.highest_id = id;
        Ok(())
    }

    /// Answers a new stream without opening it.
    fn refuse(&mut self, st: &mut State<ServerStream>, id: u32, status: Status) {
        self.batch += 1;
        answer(st, id, false, &status);
    }

    fn start_drain(&mut self, st: &mut State<ServerStream>, why: &str) {
        if self.draining {
            return;
        }
        self.draining = true;
        let last = self.highest_id;
        st.wb
            .put(|b| frame::put_goaway(b, last, GoawayCode::NoError, why));
        tracing::debug!(peer = %self.peer, last_stream = last, in_flight = st.streams.len(), "sent GOAWAY: {why}");
    }

    /// Stops a call the connection took over (cancelled, timed out, broke
    /// a rule).
    fn stop(&mut self, call: CallRef, id: u32) {
        match call {
            CallRef::Task(call) => self.pool.stop(call),
            CallRef::Local(idx) => self.drop_local.push(idx),
            CallRef::Queued => {
                if let Some(pos) = self.queue.iter().position(|q| q.id == id) {
                    if let Some(q) = self.queue.remove(pos) {
                        self.drop_requests.push(q.req);
                    }
                }
            }
        }
    }

    /// Ends stream `id` with `status` and stops its call.
    fn fail_stream(&mut self, st: &mut State<ServerStream>, id: u32, status: Status) {
        let Some(sent) = st.streams.get(&id).map(|s| s.ext.headers_sent) else {
            return;
        };
        answer(st, id, sent, &status);
        if let Some(call) = close_stream(st, id, status.message()) {
            self.stop(call, id);
        }
        self.batch += 1;
    }

    /// Counts a call the client cancelled (or made us cancel) against the
    /// rapid-reset budget.
    fn count_cancel(&mut self, now: Instant) -> Result<(), ConnError> {
        let Some(budget) = self.cancel_budget.as_mut() else {
            return Ok(());
        };
        if budget.take(now) {
            return Ok(());
        }
        let (n, per) = self.cfg.max_cancels.unwrap_or_default();
        Err(ConnError::goaway(
            GoawayCode::EnhanceYourCalm,
            format!(
                "too many cancelled calls: more than {n} in {}",
                crate::util::fmt_duration(per)
            ),
        ))
    }

    /// Starts the calls waiting for the service, unless the output is
    /// backed up (a client that reads nothing gets no more work done).
    fn dispatch(&mut self, cx: &mut Context<'_>) -> bool {
        let mut did = false;
        self.backed_up = true;
        if !self.shared.lock().has_write_room() {
            return false;
        }
        while !self.queue.is_empty() {
            let ready = match self.svc.poll_ready(cx) {
                Poll::Pending => break,
                Poll::Ready(r) => r,
            };
            let Some(Queued { id, req, entries }) = self.queue.pop_front() else {
                break;
            };
            did = true;
            if let Err(e) = ready {
                drop(req);
                let status = Status::from_error(e.into());
                let mut st = self.shared.lock();
                if let Some(sent) = st.streams.get(&id).map(|s| s.ext.headers_sent) {
                    answer(&mut st, id, sent, &status);
                    close_stream(&mut st, id, status.message());
                }
                continue;
            }
            // The instance made ready goes with the call (tower's
            // ready-then-call contract), which calls it; a clone takes its
            // place here.
            let fresh = self.svc.clone();
            let svc = std::mem::replace(&mut self.svc, fresh);
            let start = CallStart {
                shared: self.shared.clone(),
                id,
                svc,
                req,
                entries,
            };
            let call = match &mut self.local {
                Some(local) => match local.push(start.start()) {
                    Some(idx) => CallRef::Local(idx),
                    None => continue, // finished at once
                },
                None => {
                    self.spawned = true;
                    CallRef::Task(self.pool.run(start))
                }
            };
            self.started.push((id, call));
        }
        self.backed_up = !self.queue.is_empty();
        self.pool.flush();
        if !self.started.is_empty() {
            let mut st = self.shared.lock();
            for (id, call) in self.started.drain(..) {
                match st.streams.get_mut(&id) {
                    Some(s) => s.ext.call = call,
                    // It finished (and was answered) already, or it was
                    // cancelled meanwhile.
                    None => match call {
                        CallRef::Task(call) => self.pool.stop(call),
                        CallRef::Local(idx) => self.drop_local.push(idx),
                        CallRef::Queued => {}
                    },
                }
            }
        }
        did
    }

    fn poll_tokens(&mut self, cx: &mut Context<'_>) -> bool {
        let fresh = !self.tokens_registered;
        self.tokens_registered = true;
        let mut progress = false;
        if self.draining || self.force_token.is_cancelled() {
            let token = &self.force_token;
            let force = self
                .force
                .get_or_insert_with(|| Box::pin(token.clone().cancelled_owned()));
            if force.as_mut().poll(cx).is_ready() && self.forced.is_none() {
                self.forced = Some("shutdown grace period over");
                progress = true;
            }
        }
        if !self.draining
            && (fresh || self.shutdown_token.is_cancelled())
            && self.shutdown.as_mut().poll(cx).is_ready()
        {
            let shared = self.shared.clone();
            let mut st = shared.lock();
            self.start_drain(&mut st, "server shutting down");
            progress = true;
        }
        progress
    }

    /// Ends streams whose client has sent nothing for the stream idle
    /// timeout while the request stream is still open.
    fn expire_idle_streams(&mut self, st: &mut State<ServerStream>, now: Instant) {
        let timeout = self.cfg.stream_idle_timeout;
        let mut next: Option<Instant> = None;
        let mut expired = Vec::new();
        for (&id, s) in &st.streams {
            if s.state.can_recv() {
                let at = s.ext.last_recv + timeout;
                if now >= at {
                    expired.push(id);
                } else {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            }
        }
        for id in expired {
            tracing::debug!(peer = %self.peer, stream = id, "stream idle timeout");
            let status = Status::deadline_exceeded(format!(
                "stream idle timeout: no message from the client for {}",
                crate::util::fmt_duration(timeout)
            ));
            self.fail_stream(st, id, status);
        }
        self.next_idle_stream_check = next;
    }

    fn is_idle(&self, st: &State<ServerStream>) -> bool {
        st.streams.is_empty() && self.queue.is_empty()
    }
}

/// Serves a connection that [`super::accept`] identified as trpc: `rbuf`
/// holds the bytes read during detection, `started` is when the connection
/// was accepted (the handshake timeout runs from there).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve_trpc<IO, S>(io: IO, rbuf: BytesMut, started: Instant, ctx: ConnCtx<S>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ConnService,
{
    let (peer, cfg) = (ctx.peer, ctx.cfg.clone());
    let shared = Arc::new(Shared::new(
        cfg.stream_window,
        cfg.connection_window,
        PeerSettings::default(),
        cfg.max_send_message,
        cfg.stats.clone(),
    ));
    shared.lock().wb.put(|b| cfg.settings().encode(b));
    let role = ServerRole::new(ctx, shared.clone(), started);
    let driver = Driver::new(
        io,
        rbuf,
        shared,
        role,
        DriverConfig {
            max_message: cfg.max_message,
            max_metadata: cfg.max_metadata,
            keepalive: cfg.keepalive,
            frame_timeout: Some(cfg.frame_timeout),
            write_timeout: Some(cfg.write_timeout),
            settings_received: false,
            stats: cfg.stats.clone(),
        },
    );
    tracing::debug!(%peer, "trpc connection opened");
    let (driver, result) = driver.run().await;
    // The cold path, boxed: it would otherwise make every connection's task
    // larger for its whole life.
    Box::pin(finish(driver, result)).await;
}

/// Ends a connection: stops every call, says why (GOAWAY) when the peer can
/// still read it, flushes and closes.
async fn finish<IO, S>(mut driver: Driver<IO, ServerRole<S>>, result: Result<Exit, ConnError>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let peer = driver.role.peer;
    let last = driver.role.highest_id;
    let mut goaway = None;
    let flush = match &result {
        Ok(Exit::Graceful(why)) => {
            tracing::debug!(%peer, why, "trpc connection closed");
            true
        }
        Ok(Exit::Forced) => true,
        Err(ConnError::Goaway { code, reason }) => {
            tracing::warn!(%peer, ?code, reason, "closing trpc connection");
            goaway = Some((*code, reason.clone()));
            true
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "trpc connection lost");
            false
        }
    };
    // Stop every call: handlers are dropped (cancellation).
    let streams = driver
        .shared()
        .lock()
        .close(Status::unavailable("connection closed"));
    for (id, s) in streams {
        if let Some(inbound) = &s.inbound {
            inbound.finish(Some(Status::unavailable("connection closed")));
        }
        driver.role.stop(s.ext.call, id);
    }
    let role = &mut driver.role;
    role.queue.clear();
    role.drop_requests.clear();
    if let Some(local) = &mut role.local {
        local.clear();
    }
    if flush {
        driver
            .close(Duration::from_secs(1), |wb| {
                if let Some((code, reason)) = goaway {
                    wb.put(|b| frame::put_goaway(b, last, code, &reason));
                }
            })
            .await;
    }
}
