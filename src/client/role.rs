//! The client's [`Role`] in the shared engine: what the frames of a server
//! do to the calls of a connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::connection::{
    close_local, fail, open_at_server, remove_if_finished, set_response, ClientStream, Resp,
    Trailers,
};
use crate::body::{Body, Payload};
use crate::frame::{Flags, Frame, FrameHeader, Goaway, GoawayCode};
use crate::proto::{ConnError, Exit, Role, Shared, State, StreamState};
use crate::request::Response;
use crate::status::{Code, Status};
use crate::wire::{self, ResponseHead};

/// The client's part of a connection.
pub(crate) struct ClientRole {
    pub(crate) shared: Arc<Shared<ClientStream>>,
    pub(crate) peer: SocketAddr,
    pub(crate) conn_id: u64,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) idle_since: Option<Instant>,
    pub(crate) idle_exit: bool,
    /// Callers woken by the frames just read.
    pub(crate) batch: usize,
    /// On the way out (draining, released or idle), as of the last turn.
    pub(crate) closing: bool,
}

impl ClientRole {
    fn payload(h: &FrameHeader, bytes: Bytes) -> Payload {
        Payload {
            bytes,
            compressed: h.flags.contains(Flags::COMPRESSED),
        }
    }

    /// Fails call `id` with a stream error and tells the server (CANCEL).
    fn reset(&mut self, st: &mut State<ClientStream>, id: u32, status: Status, code: Code) {
        let Some(s) = st.streams.get_mut(&id) else {
            return;
        };
        let open = open_at_server(s);
        let mut woken = std::mem::take(&mut st.woken);
        fail(s, status, &mut woken);
        st.woken = woken;
        if open {
            wire::put_cancel(&mut st.wb, id, code);
        }
        remove_if_finished(st, id);
        self.batch += 1;
    }
}

/// True when no call on the connection is still open: every stream left is
/// closed with its response waiting for its caller to take it (a response
/// that arrived stays the caller's even after the connection ends). The
/// connection task sees this without being woken when a caller takes the
/// last response.
fn no_open_calls(st: &State<ClientStream>) -> bool {
    st.streams
        .values()
        .all(|s| s.state == StreamState::Closed && matches!(s.ext.response, Resp::Ready(_)))
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

impl Role for ClientRole {
    type Stream = ClientStream;
    const PEER: &'static str = "server";

    fn on_headers(
        &mut self,
        st: &mut State<ClientStream>,
        f: Frame,
        _now: Instant,
    ) -> Result<(), ConnError> {
        let id = f.stream_id();
        let Some(s) = st.streams.get(&id) else {
            return Ok(()); // a late answer for a cancelled call
        };
        if !matches!(s.ext.response, Resp::Waiting(_)) || !s.state.can_recv() {
            let status = Status::internal("protocol error: a second HEADERS frame on a stream");
            self.reset(st, id, status, Code::Internal);
            return Ok(());
        }
        let flags = f.header.flags;
        let head = match wire::decode_response_head(f.metadata) {
            Ok(_) if !f.payload.is_empty() && !flags.contains(Flags::MESSAGE) => Err(
                Status::internal("protocol error: a HEADERS payload without the MESSAGE flag"),
            ),
            other => other,
        };
        let head = match head {
            Ok(h) => h,
            Err(e) => {
                self.reset(st, id, e, Code::Internal);
                return Ok(());
            }
        };
        let message = flags
            .contains(Flags::MESSAGE)
            .then(|| Self::payload(&f.header, f.payload));
        self.batch += 1;
        let mut woken = std::mem::take(&mut st.woken);
        let Some(s) = st.streams.get_mut(&id) else {
            return Ok(());
        };
        if flags.contains(Flags::END_STREAM) {
            set_response(s, finish(head, message), &mut woken);
            close_local(s);
            s.state = StreamState::Closed;
        } else {
            // A streaming response: messages follow in DATA frames.
            let (inbound, body) = self.shared.incoming(id, message);
            let mut resp = Response::new(body);
            *resp.metadata_mut() = head.metadata;
            s.inbound = Some(inbound);
            set_response(s, Ok(resp), &mut woken);
        }
        st.woken = woken;
        Ok(())
    }

    fn on_data(
        &mut self,
        st: &mut State<ClientStream>,
        f: Frame,
        _now: Instant,
    ) -> Result<(), ConnError> {
        let id = f.stream_id();
        let len = f.payload.len();
        if st.recv_window.receive(len).is_err() {
            return Err(ConnError::flow_control(
                "flow control: the server exceeded the connection window",
            ));
        }
        let (inbound, waiting) = match st.streams.get(&id).filter(|s| s.state.can_recv()) {
            Some(s) => (
                s.inbound.clone(),
                matches!(s.ext.response, Resp::Waiting(_)),
            ),
            None => {
                st.credit_conn(len);
                return Ok(());
            }
        };
        let Some(inbound) = inbound else {
            st.credit_conn(len);
            if waiting {
                let status = Status::internal("protocol error: DATA before HEADERS");
                self.reset(st, id, status, Code::Internal);
            }
            return Ok(());
        };
        let window_ok = st
            .streams
            .get_mut(&id)
            .is_some_and(|s| s.recv.receive(len).is_ok());
        if !window_ok {
            st.credit_conn(len);
            return self.reset_stream(
                st,
                id,
                Status::resource_exhausted("flow control: the server exceeded the stream window"),
            );
        }
        let end = f.header.flags.contains(Flags::END_STREAM);
        if inbound.push(Self::payload(&f.header, f.payload)) {
            st.recv_held += len;
        } else {
            // Nobody reads this stream any more.
            st.credit_conn(len);
        }
        if end {
            inbound.finish(Some(Status::internal(
                "protocol error: the server ended the stream without a status",
            )));
            if let Some(s) = st.streams.get_mut(&id) {
                s.inbound = None;
                close_local(s);
                s.state = StreamState::Closed;
            }
            remove_if_finished(st, id);
        }
        Ok(())
    }

    fn on_trailers(&mut self, st: &mut State<ClientStream>, f: Frame) -> Result<(), ConnError> {
        let id = f.stream_id();
        let Some(s) = st.streams.get_mut(&id).filter(|s| s.state.can_recv()) else {
            return Ok(());
        };
        let status = match wire::decode_response_head(f.metadata) {
            Ok(h) => h.into_status(),
            Err(e) => e,
        };
        let mut woken = std::mem::take(&mut st.woken);
        if let Some(inbound) = s.inbound.take() {
            inbound.finish(Some(status));
        } else if status.code() == Code::Ok {
            let mut resp = Response::new(Body::empty());
            resp.extensions_mut()
                .insert(Trailers(status.metadata().clone()));
            set_response(s, Ok(resp), &mut woken);
        } else {
            set_response(s, Err(status), &mut woken);
        }
        st.woken = woken;
        close_local(s);
        s.state = StreamState::Closed;
        remove_if_finished(st, id);
        self.batch += 1;
        Ok(())
    }

    fn on_cancel(
        &mut self,
        st: &mut State<ClientStream>,
        id: u32,
        code: Code,
    ) -> Result<(), ConnError> {
        if let Some(s) = st.streams.get_mut(&id) {
            let mut woken = std::mem::take(&mut st.woken);
            fail(
                s,
                Status::new(code, "stream reset by the server"),
                &mut woken,
            );
            st.woken = woken;
            remove_if_finished(st, id);
            self.batch += 1;
        }
        Ok(())
    }

    fn on_goaway(&mut self, st: &mut State<ClientStream>, g: Goaway) {
        if g.code == GoawayCode::NoError {
            tracing::debug!(conn = self.conn_id, peer = %self.peer, last = g.last_stream_id, "server sent GOAWAY: {}", g.message);
        } else {
            tracing::warn!(conn = self.conn_id, peer = %self.peer, code = ?g.code, "server sent GOAWAY: {}", g.message);
        }
        st.conn.draining = true;
        self.shared.set_unusable();
        let refused = Status::unavailable(format!(
            "server is going away ({}); the call was not processed",
            g.message
        ))
        .with_refused(true);
        let mut woken = std::mem::take(&mut st.woken);
        let mut gone = Vec::new();
        for (&id, s) in st.streams.iter_mut() {
            if id > g.last_stream_id {
                fail(s, refused.clone(), &mut woken);
                gone.push(id);
            }
        }
        st.woken = woken;
        for id in gone {
            remove_if_finished(st, id);
        }
    }

    fn on_too_large(
        &mut self,
        st: &mut State<ClientStream>,
        h: FrameHeader,
        why: String,
    ) -> Result<(), ConnError> {
        tracing::debug!(
            conn = self.conn_id,
            stream = h.stream_id,
            "response frame over the limit: {why}"
        );
        if st.streams.contains_key(&h.stream_id) {
            let status = Status::resource_exhausted(format!("response {why}"));
            self.reset(st, h.stream_id, status, Code::ResourceExhausted);
        }
        Ok(())
    }

    fn reset_stream(
        &mut self,
        st: &mut State<ClientStream>,
        id: u32,
        status: Status,
    ) -> Result<(), ConnError> {
        let code = status.code();
        self.reset(st, id, status, code);
        Ok(())
    }

    fn on_deadline(&mut self, st: &mut State<ClientStream>, id: u32) {
        let waiting = st
            .streams
            .get(&id)
            .is_some_and(|s| matches!(s.ext.response, Resp::Waiting(_)));
        let status = if waiting {
            Status::deadline_exceeded("deadline exceeded while waiting for the response")
        } else {
            Status::deadline_exceeded("deadline exceeded while receiving the stream")
        };
        self.reset(st, id, status, Code::DeadlineExceeded);
    }

    fn on_eof(&mut self, _st: &mut State<ClientStream>) -> Result<Exit, ConnError> {
        Err(ConnError::Gone(format!(
            "connection to {} closed by the server",
            self.peer
        )))
    }

    fn poll_work(
        &mut self,
        _cx: &mut Context<'_>,
        _shared: &Arc<Shared<ClientStream>>,
    ) -> Result<bool, ConnError> {
        Ok(false)
    }

    fn reading(&self) -> bool {
        true
    }

    fn exit(&mut self, st: &State<ClientStream>, output_idle: bool) -> Option<Exit> {
        let c = &st.conn;
        self.closing = c.draining || c.released || self.idle_exit;
        if c.closed_by_client {
            return Some(Exit::Graceful("closed by the client"));
        }
        let idle = no_open_calls(st);
        match (idle, self.idle_since) {
            (true, None) => self.idle_since = Some(Instant::now()),
            (false, Some(_)) => self.idle_since = None,
            _ => {}
        }
        if !idle || !output_idle {
            return None;
        }
        if self.idle_exit {
            Some(Exit::Graceful("idle"))
        } else if c.draining {
            Some(Exit::Graceful("drained after GOAWAY"))
        } else if c.released {
            Some(Exit::Graceful("no channel uses it any more"))
        } else {
            None
        }
    }

    fn on_turn(&mut self, _st: &mut State<ClientStream>) -> bool {
        false
    }

    fn closing(&self) -> bool {
        self.closing
    }

    fn next_timer(&self, _st: &State<ClientStream>) -> Option<Instant> {
        Some(self.idle_since? + self.idle_timeout?)
    }

    fn on_timer(&mut self, st: &mut State<ClientStream>, now: Instant) -> Result<(), ConnError> {
        if let (Some(since), Some(t)) = (self.idle_since, self.idle_timeout) {
            if no_open_calls(st) && now >= since + t {
                self.idle_exit = true;
                self.shared.set_unusable();
            }
        }
        Ok(())
    }

    fn take_batch(&mut self) -> usize {
        std::mem::take(&mut self.batch)
    }
}
