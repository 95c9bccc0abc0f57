//! [`Role`] for [`ServerRole`]: what the shared driver calls on each frame,
//! timer and turn of a server connection.

use super::*;

impl<S> Role for ServerRole<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Stream = ServerStream;
    const PEER: &'static str = "client";

    fn on_headers(
        &mut self,
        st: &mut State<ServerStream>,
        f: Frame,
        now: Instant,
    ) -> Result<(), ConnError> {
        let id = f.stream_id();
        self.check_new_stream_id(id)?;
        self.last_call = now;
        if self.draining {
            let status = Status::unavailable("server is shutting down; call not processed")
                .with_refused(true);
            self.refuse(st, id, status);
            return Ok(());
        }
        if st.streams.len() >= self.cfg.max_concurrent_streams as usize {
            let status = Status::resource_exhausted(format!(
                "too many concurrent calls on this connection (limit {})",
                self.cfg.max_concurrent_streams
            ))
            .with_refused(true);
            self.refuse(st, id, status);
            return Ok(());
        }
        // HEADERS payloads are not flow controlled: bound what the calls of
        // one connection may hold, buffered request DATA included (one call
        // is always admitted).
        let cost = f.metadata.len() + f.payload.len();
        let held = st.held_bytes + st.recv_held;
        if held > 0 && held.saturating_add(cost) > self.cfg.max_buffered_request_bytes {
            let status = Status::resource_exhausted(format!(
                "too many request bytes buffered on this connection: calls in flight \
                 hold {held} bytes, this one brings {cost}, the limit is {}",
                self.cfg.max_buffered_request_bytes
            ))
            .with_refused(true);
            self.refuse(st, id, status);
            return Ok(());
        }
        let flags = f.header.flags;
        let head = match wire::decode_request_head(f.metadata) {
            Ok(h) if !f.payload.is_empty() && !flags.contains(Flags::MESSAGE) => {
                drop(h);
                Err(Status::invalid_argument(
                    "malformed HEADERS: a payload without the MESSAGE flag",
                ))
            }
            other => other,
        };
        let head = match head {
            Ok(h) => h,
            Err(status) => {
                tracing::debug!(peer = %self.peer, stream = id, %status, "bad request headers");
                self.refuse(st, id, status);
                return Ok(());
            }
        };
        if head.timeout == Some(Duration::ZERO) {
            let status =
                Status::deadline_exceeded("deadline exceeded before the call reached the server");
            self.refuse(st, id, status);
            return Ok(());
        }
        let message = flags.contains(Flags::MESSAGE).then(|| Payload {
            bytes: f.payload,
            compressed: flags.contains(Flags::COMPRESSED),
        });
        let mut stream = Stream::new(
            st.peer.stream_window,
            self.shared.recv_stream_window,
            ServerStream {
                call: CallRef::Queued,
                held: cost,
                headers_sent: false,
                last_recv: now,
            },
        );
        let mut hold = None;
        let body = if flags.contains(Flags::END_STREAM) {
            stream.state = StreamState::HalfClosedRemote;
            message.map_or_else(Body::empty, Body::once)
        } else {
            // A streaming request: messages follow in DATA frames.
            let (inbound, body) = self.shared.incoming(id, message);
            stream.inbound = Some(inbound.clone());
            hold = Some(HoldCredit(inbound));
            if self.next_idle_stream_check.is_none() {
                self.next_idle_stream_check = Some(now + self.cfg.stream_idle_timeout);
            }
            body
        };
        let mut req = Request::new(body).with_method(head.method);
        *req.metadata_mut() = head.metadata;
        req.set_stream_id(id);
        if let Some(ext) = &self.conn_extensions {
            *req.extensions_mut() = ext.clone();
        }
        if let Some(hold) = hold {
            req.extensions_mut().insert(hold);
        }
        let server_deadline = self.cfg.timeout.map(|t| now + t);
        let client_deadline = head.timeout.map(|t| now + t);
        let deadline = match (server_deadline, client_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // The deadline first, then the origin (with the deadline watch):
        // with the state locked here, the request must not report to it.
        req.replace_deadline(deadline);
        req.set_origin(self.origin.clone());
        st.held_bytes += cost;
        st.streams.insert(id, stream);
        if let Some(d) = deadline {
            st.tighten_deadline(id, d);
        }
        self.queue.push_back(Queued {
            id,
            req,
            entries: head.entries,
        });
        self.batch += 1;
        Ok(())
    }

    fn on_data(
        &mut self,
        st: &mut State<ServerStream>,
        f: Frame,
        now: Instant,
    ) -> Result<(), ConnError> {
        let id = f.stream_id();
        let len = f.payload.len();
        if st.recv_window.receive(len).is_err() {
            return Err(ConnError::flow_control(
                "flow control: the client exceeded the connection window",
            ));
        }
        let end = f.header.flags.contains(Flags::END_STREAM);
        let Some(s) = st.streams.get_mut(&id).filter(|s| s.state.can_recv()) else {
            // Unknown or finished stream, or data after the end of the
            // request stream: ignored.
            st.credit_conn(len);
            return Ok(());
        };
        s.ext.last_recv = now;
        if s.recv.receive(len).is_err() {
            st.credit_conn(len);
            return self.reset_stream(
                st,
                id,
                Status::resource_exhausted("flow control: the client exceeded the stream window"),
            );
        }
        let delivered = s.inbound.as_ref().is_some_and(|i| {
            i.push(Payload {
                bytes: f.payload,
                compressed: f.header.flags.contains(Flags::COMPRESSED),
            })
        });
        if delivered {
            st.recv_held += len;
        } else if len > 0 {
            // Nobody reads this stream: credit it back at once.
            if let Some(inc) = s.recv.release_now(len) {
                st.wb.put(|b| frame::put_window_update(b, id, inc));
            }
            st.credit_conn(len);
        }
        if end {
            if let Some(s) = st.streams.get_mut(&id) {
                s.state = s.state.close_remote();
                if let Some(i) = s.inbound.take() {
                    i.finish(None);
                }
            }
        }
        Ok(())
    }

    fn on_trailers(&mut self, st: &mut State<ServerStream>, f: Frame) -> Result<(), ConnError> {
        // The client half-closed its request stream.
        if let Some(s) = st.streams.get_mut(&f.stream_id()) {
            if s.state.can_recv() {
                s.state = s.state.close_remote();
                if let Some(i) = s.inbound.take() {
                    i.finish(None);
                }
            }
        }
        Ok(())
    }

    fn on_cancel(
        &mut self,
        st: &mut State<ServerStream>,
        id: u32,
        _code: Code,
    ) -> Result<(), ConnError> {
        let Some(call) = close_stream(st, id, "call cancelled by the client") else {
            return Ok(()); // unknown or finished stream: ignored
        };
        tracing::debug!(peer = %self.peer, stream = id, "call cancelled by the client");
        self.stop(call, id);
        self.batch += 1;
        self.count_cancel(Instant::now())
    }

    fn on_goaway(&mut self, _st: &mut State<ServerStream>, g: Goaway) {
        tracing::debug!(peer = %self.peer, code = ?g.code, "client sent GOAWAY: {}", g.message);
    }

    fn on_too_large(
        &mut self,
        st: &mut State<ServerStream>,
        h: FrameHeader,
        why: String,
    ) -> Result<(), ConnError> {
        let id = h.stream_id;
        tracing::debug!(peer = %self.peer, stream = id, "request {why}");
        let status = Status::resource_exhausted(format!("request {why}"));
        match h.frame_type() {
            Some(FrameType::Headers) => {
                self.check_new_stream_id(id)?;
                self.refuse(st, id, status);
                Ok(())
            }
            Some(FrameType::Data | FrameType::Trailers) => {
                if st.streams.contains_key(&id) {
                    self.fail_stream(st, id, status);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn reset_stream(
        &mut self,
        st: &mut State<ServerStream>,
        id: u32,
        status: Status,
    ) -> Result<(), ConnError> {
        if !st.streams.contains_key(&id) {
            return Ok(());
        }
        self.fail_stream(st, id, status);
        self.count_cancel(Instant::now())
    }

    fn on_deadline(&mut self, st: &mut State<ServerStream>, id: u32) {
        tracing::debug!(peer = %self.peer, stream = id, "deadline exceeded");
        self.fail_stream(
            st,
            id,
            Status::deadline_exceeded("deadline exceeded: the server cancelled the call"),
        );
    }

    fn on_eof(&mut self, st: &mut State<ServerStream>) -> Result<Exit, ConnError> {
        // The protocol has no half-close: EOF means the client is gone, and
        // so are its calls.
        if !self.is_idle(st) {
            tracing::debug!(peer = %self.peer, in_flight = st.streams.len(), "client disconnected; cancelling its calls");
        }
        Ok(Exit::Graceful("client closed the connection"))
    }

    fn poll_work(
        &mut self,
        cx: &mut Context<'_>,
        _shared: &Arc<Shared<ServerStream>>,
    ) -> Result<bool, ConnError> {
        let mut progress = self.poll_tokens(cx);
        // What was stopped with the state locked is dropped now.
        if let Some(local) = &mut self.local {
            for idx in self.drop_local.drain(..) {
                drop(local.remove(idx));
            }
        }
        self.drop_requests.clear();
        if !self.queue.is_empty() && self.dispatch(cx) {
            progress = true;
        }
        if std::mem::take(&mut self.spawned) && self.multi_worker {
            // Go to the back of the run queue once: the runtime then wakes
            // an idle worker, which takes this connection (or the new calls)
            // while this one runs a call that may burn CPU for long; the
            // newest task waits in a slot no other worker may take.
            cx.waker().wake_by_ref();
        }
        if let Some(local) = &mut self.local {
            progress |= local.poll(cx);
        }
        Ok(progress)
    }

    fn reading(&self) -> bool {
        // While the service is not ready (or the output backed up),
        // admitted calls wait and nothing more is read.
        !self.backed_up
    }

    fn exit(&mut self, st: &State<ServerStream>, output_idle: bool) -> Option<Exit> {
        if let Some(why) = self.forced {
            tracing::info!(peer = %self.peer, in_flight = st.streams.len(), "{why}; closing connection");
            return Some(Exit::Forced);
        }
        if self.draining && output_idle && self.is_idle(st) {
            return Some(Exit::Graceful("drained"));
        }
        None
    }

    fn on_turn(&mut self, st: &mut State<ServerStream>) -> bool {
        if self.replies.is_empty() {
            self.shared.side.take(&mut self.replies);
        }
        let limits = (
            st.peer.max_message.min(self.shared.max_send_message),
            st.peer.max_metadata,
        );
        let mut done = 0;
        // While the output has room; what is left waits for a later turn
        // (and so do the results of the calls behind it).
        while done < self.replies.len() && st.has_write_room() {
            let (id, reply) =
                std::mem::replace(&mut self.replies[done], (0, Err(Status::new(Code::Ok, ""))));
            done += 1;
            // A call cancelled or timed out meanwhile was answered already.
            if st.streams.contains_key(&id) {
                write_response(&mut st.wb, id, reply, limits);
                close_stream(st, id, "the call already finished");
            }
        }
        self.replies.drain(..done);
        done > 0
    }

    fn closing(&self) -> bool {
        self.draining || self.forced.is_some()
    }

    fn next_timer(&self, st: &State<ServerStream>) -> Option<Instant> {
        let mut next = self.next_idle_stream_check;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        if !st.peer.received {
            consider(Some(self.started_at + self.cfg.handshake_timeout));
        }
        if !self.draining {
            if self.is_idle(st) {
                consider(self.cfg.idle_timeout.map(|t| self.last_call + t));
            }
            consider(self.age_at);
        }
        consider(self.age_grace_end);
        next
    }

    fn on_timer(&mut self, st: &mut State<ServerStream>, now: Instant) -> Result<(), ConnError> {
        if !st.peer.received && now >= self.started_at + self.cfg.handshake_timeout {
            return Err(ConnError::goaway(
                GoawayCode::Timeout,
                "handshake timeout: no SETTINGS received",
            ));
        }
        if let Some(idle) = self.cfg.idle_timeout {
            if !self.draining && self.is_idle(st) && now >= self.last_call + idle {
                self.start_drain(st, "idle timeout");
            }
        }
        if self.next_idle_stream_check.is_some_and(|t| now >= t) {
            self.expire_idle_streams(st, now);
        }
        if !self.draining && self.age_at.is_some_and(|t| now >= t) {
            self.start_drain(st, "maximum connection age reached; reconnect");
            self.age_grace_end = Some(now + self.cfg.max_connection_age_grace);
        }
        if self.age_grace_end.is_some_and(|t| now >= t) && self.forced.is_none() {
            self.forced = Some("maximum connection age: grace period over");
        }
        Ok(())
    }

    fn take_batch(&mut self) -> usize {
        std::mem::take(&mut self.batch)
    }

    fn output_coming(&mut self, waker: &std::task::Waker) -> bool {
        self.pool.calls_queued(waker)
    }

    fn release_idle(&mut self) {
        self.pool.release_idle();
        crate::util::release_empty!(
            self.queue,
            self.replies,
            self.started,
            self.drop_local,
            self.drop_requests,
        );
    }
}
