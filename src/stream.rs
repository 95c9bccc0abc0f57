//! Streaming calls: the receive side of a stream (`Incoming`, with
//! flow-control credit) and the typed [`Streaming`] that handlers and clients use.
//!
//! A stream of messages ends in one of three ways, as seen through [`Body`]:
//! the stream ends (`None`): success, no trailers; a final `Err(status)` with a
//! non-OK code: the call failed with that status, after the messages already
//! delivered; a final `Err(status)` whose code is OK: success, and
//! `status.metadata()` holds the trailers. [`Streaming`] hides the third case
//! behind [`Streaming::trailers`]. A handler that wants to send trailers ends its
//! response stream with `Err(Status::ok_with_trailers(md))`.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_core::Stream;

use crate::body::{Body, Payload};
use crate::metadata::MetadataMap;
use crate::stats::TransportStats;
use crate::status::{Code, Status};

/// Where a consumer returns flow-control credit: its connection.
pub(crate) trait CreditSink: Send + Sync + 'static {
    /// `n` bytes of stream `id` were consumed by the application.
    fn consumed(&self, id: u32, n: usize);
    /// The consumer is done with the stream: `ended` when it saw the end of
    /// the stream, false when it was dropped (or timed out) before;
    /// `unconsumed`: flow-controlled bytes whose credit is still owed back
    /// (never read, or read but not yet credited).
    fn dropped(&self, id: u32, ended: bool, unconsumed: usize);
}

/// The shared queue between a connection (producer) and an [`Incoming`]
/// (consumer).
pub(crate) struct InboundShared {
    state: Mutex<InState>,
    stats: Option<Arc<TransportStats>>,
}

struct InState {
    /// Messages, each with whether it is flow controlled (credit owed).
    queue: VecDeque<(Payload, bool)>,
    buffered: usize,
    /// `Some(None)`: ended OK without trailers; `Some(Some(s))`: ended with `s`.
    end: Option<Option<Status>>,
    waker: Option<Waker>,
    consumer_gone: bool,
    /// The reader takes one message and waits for the end of the stream (a
    /// unary request): the credit of what it holds comes back only then.
    hold: bool,
}

impl InboundShared {
    pub(crate) fn new(stats: Option<Arc<TransportStats>>) -> Arc<Self> {
        Arc::new(InboundShared {
            state: Mutex::new(InState {
                queue: VecDeque::new(),
                buffered: 0,
                end: None,
                waker: None,
                consumer_gone: false,
                hold: false,
            }),
            stats,
        })
    }

    fn lock(&self) -> MutexGuard<'_, InState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The reader will take one message and then wait for the end of the
    /// stream: hold that message's credit until the end (see [`Incoming`]).
    pub(crate) fn hold_credit(&self) {
        self.lock().hold = true;
    }

    /// Queues a flow-controlled message (a DATA frame's). Returns false (and
    /// drops it) when the consumer is gone: the caller returns its credit.
    pub(crate) fn push(&self, p: Payload) -> bool {
        self.push_inner(p, true)
    }

    /// Queues a message that is not flow controlled (a HEADERS frame's).
    pub(crate) fn push_uncredited(&self, p: Payload) {
        self.push_inner(p, false);
    }

    fn push_inner(&self, p: Payload, credited: bool) -> bool {
        let waker;
        {
            let mut st = self.lock();
            if st.consumer_gone || st.end.is_some() {
                return false;
            }
            st.buffered += p.len();
            if let Some(s) = &self.stats {
                s.add_recv_buffered(p.len());
            }
            st.queue.push_back((p, credited));
            waker = st.waker.take();
        }
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Ends the stream (first call wins): `None` = OK without trailers.
    pub(crate) fn finish(&self, end: Option<Status>) {
        let waker;
        {
            let mut st = self.lock();
            if st.end.is_some() {
                return;
            }
            let end = match end {
                Some(s) if s.code() == Code::Ok && s.metadata().is_empty() => None,
                other => other,
            };
            st.end = Some(end);
            waker = st.waker.take();
        }
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl fmt::Debug for InboundShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundShared").finish_non_exhaustive()
    }
}

impl Drop for InboundShared {
    fn drop(&mut self) {
        if let Some(s) = &self.stats {
            let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
            s.sub_recv_buffered(st.buffered);
        }
    }
}

/// Carried in the extensions of a server request whose messages arrive in
/// DATA frames: a unary handler, which reads one message and then waits for
/// the end of the stream, asks the transport to hold that message's credit
/// until the end ([`hold_request_credit`]).
#[derive(Clone, Debug)]
pub(crate) struct HoldCredit(pub(crate) Arc<InboundShared>);

/// Called by handlers that read exactly one request message (unary and
/// server-streaming methods) before they read it.
pub(crate) fn hold_request_credit(extensions: &http::Extensions) {
    if let Some(h) = extensions.get::<HoldCredit>() {
        h.0.hold_credit();
    }
}

/// The receive side of a stream: a `Stream` of payloads fed by the connection.
///
/// Consuming messages returns flow-control credit to the sender, in batches
/// of half the window. The credit for a message is owed once the reader comes
/// back for the next item: a reader that keeps a message while it does other
/// work holds the sender back by that much. A unary reader (one message, then
/// it waits for the end: see [`InboundShared::hold_credit`]) gives the credit
/// back only at the end of the stream, so a peer that opens many calls, sends
/// one message on each and never ends them cannot make a server hold more
/// than its windows allow.
pub(crate) struct Incoming {
    shared: Arc<InboundShared>,
    sink: Arc<dyn CreditSink>,
    id: u32,
    threshold: usize,
    /// Consumed bytes whose credit is owed (not yet a full batch).
    unacked: usize,
    /// The flow-controlled size of the message last handed out.
    held: usize,
    done: bool,
}

impl Incoming {
    pub(crate) fn new(
        shared: Arc<InboundShared>,
        sink: Arc<dyn CreditSink>,
        id: u32,
        window: usize,
    ) -> Self {
        Incoming {
            shared,
            sink,
            id,
            threshold: (window / 2).max(1),
            unacked: 0,
            held: 0,
            done: false,
        }
    }

    /// Ends the stream for the reader: what is owed goes back to the
    /// connection (`ended`: the stream ended normally, so nothing is cancelled).
    fn finish(&mut self, ended: bool, unconsumed: usize) {
        self.done = true;
        let owed = unconsumed + std::mem::take(&mut self.unacked) + std::mem::take(&mut self.held);
        self.sink.dropped(self.id, ended, owed);
    }
}

impl Stream for Incoming {
    type Item = Result<Payload, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let mut st = this.shared.lock();
        if this.held > 0 && !st.hold {
            // The reader is done with the message it took last.
            this.unacked += std::mem::take(&mut this.held);
            if this.unacked >= this.threshold && st.queue.is_empty() {
                drop(st);
                this.sink
                    .consumed(this.id, std::mem::take(&mut this.unacked));
                st = this.shared.lock();
            }
        }
        if let Some((p, credited)) = st.queue.pop_front() {
            st.buffered -= p.len();
            drop(st);
            if let Some(s) = &this.shared.stats {
                s.sub_recv_buffered(p.len());
            }
            // The previous message is done with: its credit is owed now.
            this.unacked += std::mem::replace(&mut this.held, if credited { p.len() } else { 0 });
            if this.unacked >= this.threshold {
                this.sink.consumed(this.id, this.unacked);
                this.unacked = 0;
            }
            return Poll::Ready(Some(Ok(p)));
        }
        if let Some(end) = st.end.take() {
            drop(st);
            this.finish(true, 0);
            return Poll::Ready(end.map(Err));
        }
        if !st.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            st.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        let (buffered, unconsumed) = {
            let mut st = self.shared.lock();
            st.consumer_gone = true;
            let owed: usize = st
                .queue
                .iter()
                .filter(|(_, c)| *c)
                .map(|(p, _)| p.len())
                .sum();
            let n = st.buffered;
            st.queue.clear();
            st.buffered = 0;
            (n, owed)
        };
        if let Some(s) = &self.shared.stats {
            s.sub_recv_buffered(buffered);
        }
        if !self.done {
            self.finish(false, unconsumed);
        }
    }
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("stream_id", &self.id)
            .field("done", &self.done)
            .finish()
    }
}

type DecodeFn<T> = Arc<dyn Fn(Payload) -> Result<T, Status> + Send + Sync>;

/// A typed stream of messages: what a streaming handler receives and what a
/// client gets back from a streaming call.
///
/// Iterate it as a `Stream<Item = Result<T, Status>>` or with
/// [`Streaming::message`]. An error ends the stream; after the end,
/// [`Streaming::trailers`] holds the trailing metadata, if any.
pub struct Streaming<T> {
    body: Body,
    decode: DecodeFn<T>,
    trailers: Option<MetadataMap>,
    done: bool,
}

impl<T> Streaming<T> {
    /// A typed stream over `body`, decoding each payload with `decode`.
    pub fn new(
        body: Body,
        decode: impl Fn(Payload) -> Result<T, Status> + Send + Sync + 'static,
    ) -> Self {
        Streaming {
            body,
            decode: Arc::new(decode),
            trailers: None,
            done: false,
        }
    }

    /// The next message; `Ok(None)` at the end.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        use futures_util::StreamExt;
        self.next().await.transpose()
    }

    /// Trailing metadata, once the stream has ended successfully.
    pub fn trailers(&self) -> Option<&MetadataMap> {
        self.trailers.as_ref()
    }

    /// The untyped body.
    pub fn into_body(self) -> Body {
        self.body
    }
}

impl<T> Stream for Streaming<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.body).poll_next(cx) {
            Poll::Ready(Some(Ok(p))) => Poll::Ready(Some((this.decode)(p))),
            Poll::Ready(Some(Err(s))) if s.code() == Code::Ok => {
                this.done = true;
                this.trailers = Some(s.metadata().clone());
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(s))) => {
                this.done = true;
                Poll::Ready(Some(Err(s)))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Streaming")
            .field("body", &self.body)
            .field("done", &self.done)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Sink {
        consumed: AtomicUsize,
        /// (ended, owed) of each `dropped` call.
        dropped: Mutex<Vec<(bool, usize)>>,
    }

    impl CreditSink for Sink {
        fn consumed(&self, _id: u32, n: usize) {
            self.consumed.fetch_add(n, Ordering::SeqCst);
        }
        fn dropped(&self, _id: u32, ended: bool, unconsumed: usize) {
            self.dropped.lock().unwrap().push((ended, unconsumed));
        }
    }

    #[tokio::test]
    async fn credit_comes_back_in_batches_a_message_late_and_in_full_at_the_end() {
        use futures_util::StreamExt;
        let shared = InboundShared::new(None);
        let sink = Arc::new(Sink::default());
        let mut inc = Incoming::new(shared.clone(), sink.clone(), 1, 10);
        for _ in 0..4 {
            assert!(shared.push(Payload::new(vec![0u8; 3])));
        }
        shared.finish(Some(Status::ok_with_trailers({
            let mut md = MetadataMap::new();
            md.insert("k", "v");
            md
        })));
        for _ in 0..4 {
            assert!(matches!(inc.next().await, Some(Ok(_))));
        }
        // Threshold 5; a message's credit is owed once the reader comes
        // back: 6 bytes owed (and sent) when the 3rd message is taken; the
        // 4th message's 3 bytes are still held by the reader.
        assert_eq!(sink.consumed.load(Ordering::SeqCst), 6);
        assert!(sink.dropped.lock().unwrap().is_empty());
        let end = inc.next().await;
        assert!(
            matches!(end, Some(Err(ref s)) if s.code() == Code::Ok && s.metadata().get("k") == Some("v"))
        );
        // Coming back for the end gives the rest back, without cancelling.
        assert_eq!(sink.consumed.load(Ordering::SeqCst), 12);
        assert_eq!(*sink.dropped.lock().unwrap(), vec![(true, 0)]);
        assert!(inc.next().await.is_none());
        drop(inc);
        assert_eq!(sink.dropped.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_reader_that_comes_back_gives_credit_even_if_nothing_is_there() {
        use futures_util::StreamExt;
        let shared = InboundShared::new(None);
        let sink = Arc::new(Sink::default());
        // One message fills the window: the sender waits for its credit, so
        // it must come back although the next message cannot arrive yet.
        let mut inc = Incoming::new(shared.clone(), sink.clone(), 1, 100);
        assert!(shared.push(Payload::new(vec![0u8; 100])));
        assert!(matches!(inc.next().await, Some(Ok(_))));
        assert_eq!(sink.consumed.load(Ordering::SeqCst), 0);
        assert!(futures_util::poll!(inc.next()).is_pending());
        assert_eq!(sink.consumed.load(Ordering::SeqCst), 100);
    }

    #[tokio::test]
    async fn a_unary_reader_holds_its_message_credit_until_the_end() {
        use futures_util::StreamExt;
        let shared = InboundShared::new(None);
        shared.hold_credit();
        let sink = Arc::new(Sink::default());
        let mut inc = Incoming::new(shared.clone(), sink.clone(), 1, 2);
        assert!(shared.push(Payload::new(vec![0u8; 100])));
        assert!(matches!(inc.next().await, Some(Ok(_))));
        // A unary reader now waits for the end of the stream: no credit yet.
        assert!(futures_util::poll!(inc.next()).is_pending());
        assert_eq!(sink.consumed.load(Ordering::SeqCst), 0);
        shared.finish(None);
        assert!(inc.next().await.is_none());
        assert_eq!(*sink.dropped.lock().unwrap(), vec![(true, 100)]);
    }

    #[tokio::test]
    async fn dropping_early_reports_unconsumed_and_held_bytes() {
        use futures_util::StreamExt;
        let shared = InboundShared::new(None);
        let sink = Arc::new(Sink::default());
        let mut inc = Incoming::new(shared.clone(), sink.clone(), 1, 1000);
        shared.push(Payload::new(vec![0u8; 5]));
        shared.push(Payload::new(vec![0u8; 7]));
        assert!(matches!(inc.next().await, Some(Ok(_))));
        drop(inc);
        assert_eq!(*sink.dropped.lock().unwrap(), vec![(false, 12)]);
        assert!(!shared.push(Payload::new(vec![0u8; 1])));
    }

    #[tokio::test]
    async fn typed_streaming_hides_ok_trailers() {
        use futures_util::StreamExt;
        let mut md = MetadataMap::new();
        md.insert("t", "1");
        let items: Vec<Result<Payload, Status>> = vec![
            Ok(Payload::new("a")),
            Ok(Payload::new("b")),
            Err(Status::ok_with_trailers(md)),
        ];
        let body = Body::stream(futures_util::stream::iter(items));
        let mut s = Streaming::new(body, |p| Ok(String::from_utf8_lossy(&p.bytes).into_owned()));
        assert_eq!(s.next().await.unwrap().unwrap(), "a");
        assert_eq!(s.message().await.unwrap().as_deref(), Some("b"));
        assert!(s.next().await.is_none());
        assert_eq!(s.trailers().unwrap().get("t"), Some("1"));
    }
}
