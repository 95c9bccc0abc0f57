//! What the server keeps about each open stream ([`ServerStream`]), and how
//! a stream is answered for and closed by whoever ends it: its call's task
//! or the connection.

use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::metadata::MetadataMap;
use crate::proto::{RoleStream, Shared, State};
use crate::request::DeadlineWatch;
use crate::status::Status;
use crate::wire;

use super::call::log_failure;

/// Who runs a call.
#[derive(Debug)]
pub(crate) enum CallRef {
    /// Not started yet (waiting for the service).
    Queued,
    /// Its own task.
    Task(AbortHandle),
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

    fn reader_dropped(_st: &mut State<Self>, _id: u32) {
        // A handler that stops reading its request stream does not end the
        // call: later DATA is discarded (and credited at once).
    }
}

impl DeadlineWatch for Shared<ServerStream> {
    fn tighten(&self, stream_id: u32, deadline: Instant) {
        let task = {
            let mut st = self.lock();
            st.tighten_deadline(stream_id, deadline);
            st.take_task()
        };
        if let Some(w) = task {
            w.wake();
        }
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
