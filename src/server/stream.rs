//! What the server keeps about each open stream ([`ServerStream`]), and how
//! a stream is answered for and closed by whoever ends it: its call's task
//! or the connection.

use std::sync::Mutex;

use tokio::time::Instant;

use crate::body::Payload;
use crate::metadata::MetadataMap;
use crate::proto::{RoleStream, Shared, State};
use crate::request::DeadlineWatch;
use crate::status::Status;
use crate::wire;

use super::call::log_failure;
use super::pool::PoolCall;

/// A finished unary call's outcome: response metadata and message, or
/// the error.
pub(crate) type Reply = Result<(MetadataMap, Option<Payload>), Status>;

/// Replies of unary calls, handed by their tasks to the connection without
/// taking its lock: the connection writes them on its next turn, while its
/// output has room.
#[derive(Debug, Default)]
pub(crate) struct Replies(Mutex<Vec<(u32, Reply)>>);

impl Replies {
    /// Hands over the reply of stream `id`.
    pub(crate) fn push(&self, id: u32, reply: Reply) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, reply));
    }

    /// Takes every reply handed over so far into `out`.
    pub(crate) fn take(&self, out: &mut Vec<(u32, Reply)>) {
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !q.is_empty() {
            std::mem::swap(&mut *q, out);
        }
    }
}

/// Who runs a call.
#[derive(Debug)]
pub(crate) enum CallRef {
    /// Not started yet (waiting for the service).
    Queued,
    /// A task of the connection's pool.
    Task(PoolCall),
    /// A slot of the connection's inline executor.
    Local(usize),
}

/// What the server keeps about each open stream.
#[derive(Debug)]
pub(crate) struct ServerStream {
    pub(crate) call: CallRef,
    /// Request bytes (HEADERS metadata and message) the call holds while its
    /// handler runs; counted in [`State::held_bytes`].
    pub(crate) held: usize,
    /// The response HEADERS went out (a later end is a TRAILERS frame).
    pub(crate) headers_sent: bool,
    /// When the client last sent something on the stream.
    pub(crate) last_recv: Instant,
}

impl RoleStream for ServerStream {
    type Conn = ();
    type Side = Replies;

    fn reader_dropped(_st: &mut State<Self>, _id: u32) {
        // A handler that stops reading its request stream does not end the
        // call: later DATA is discarded (and credited at once).
    }
}

impl DeadlineWatch for Shared<ServerStream> {
    fn tighten(&self, stream_id: u32, deadline: Instant) {
        self.lock().tighten_deadline(stream_id, deadline);
        self.wake_task();
    }
}

/// Removes stream `id` after its end was sent (or it was dropped): gives
/// back its request bytes and ends its request stream with CANCELLED `why`.
/// Returns who ran the call, for the caller to stop it.
pub(crate) fn close_stream(st: &mut State<ServerStream>, id: u32, why: &str) -> Option<CallRef> {
    let s = st.remove_stream(id)?;
    st.held_bytes -= s.ext.held;
    if let Some(inbound) = s.inbound {
        inbound.finish(Some(Status::cancelled(why.to_string())));
    }
    Some(s.ext.call)
}

/// Answers stream `id` with an error status (in HEADERS or, once they went
/// out, TRAILERS).
pub(crate) fn answer(st: &mut State<ServerStream>, id: u32, headers_sent: bool, status: &Status) {
    log_failure(id, status);
    let max_metadata = st.peer.max_metadata;
    if headers_sent {
        wire::put_trailers(&mut st.wb, id, Some(status), max_metadata);
    } else {
        wire::put_response_headers(
            &mut st.wb,
            id,
            &MetadataMap::new(),
            None,
            Some(status),
            max_metadata,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{PeerSettings, Stream};
    use std::time::Duration;

    fn stream() -> Stream<ServerStream> {
        Stream::new(
            1 << 16,
            1 << 16,
            ServerStream {
                call: CallRef::Queued,
                held: 0,
                headers_sent: false,
                last_recv: Instant::now(),
            },
        )
    }

    /// The deadline queue (a heap and a timer) exists only while a
    /// stream has a deadline, or until the connection next goes idle.
    #[tokio::test]
    async fn an_idle_connection_holds_no_deadline_queue() {
        let shared: Shared<ServerStream> =
            Shared::new(1 << 16, 1 << 20, PeerSettings::default(), 1 << 20, None);
        let mut st = shared.lock();
        assert!(st.deadlines.is_none(), "created before any deadline");
        st.streams.insert(1, stream());
        st.tighten_deadline(1, Instant::now() + Duration::from_secs(5));
        assert_eq!(st.deadlines.as_ref().map(|q| q.len()), Some(1));
        st.release_idle();
        assert!(
            st.deadlines.is_some(),
            "released while a deadline is pending"
        );
        assert!(st.remove_stream(1).is_some());
        assert_eq!(st.deadlines.as_ref().map(|q| q.len()), Some(0));
        st.release_idle();
        assert!(st.deadlines.is_none(), "kept by an idle connection");
        assert!(st.streams.capacity() == 0, "stream table capacity kept");
    }
}
