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
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use tokio::time::{Instant, Sleep};

use crate::body::{Body, Payload};
use crate::metadata::MetadataMap;
use crate::stats::TransportStats;
use crate::status::{Code, Status};

/// Where a consumer returns flow-control credit: its connection.
pub(crate) trait CreditSink: Send + Sync + 'static {
    /// `n` bytes of stream `id` were consumed by the application.
    fn consumed(&self, id: u32, n: usize);
    /// The consumer was dropped. `ended`: it had seen the end of the stream;
    /// `unconsumed`: bytes it never consumed (their credit is owed back).
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
            }),
            stats,
        })
    }

    fn lock(&self) -> MutexGuard<'_, InState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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

impl Drop for InboundShared {
    fn drop(&mut self) {
        if let Some(s) = &self.stats {
            let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
            s.sub_recv_buffered(st.buffered);
        }
    }
}

/// The receive side of a stream: a `Stream` of payloads fed by the connection.
/// Consuming messages returns flow-control credit to the sender.
pub(crate) struct Incoming {
    shared: Arc<InboundShared>,
    sink: Arc<dyn CreditSink>,
    id: u32,
    threshold: usize,
    unacked: usize,
    done: bool,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl Incoming {
    pub(crate) fn new(
        shared: Arc<InboundShared>,
        sink: Arc<dyn CreditSink>,
        id: u32,
        window: usize,
        deadline: Option<Instant>,
    ) -> Self {
        Incoming {
            shared,
            sink,
            id,
            threshold: (window / 2).max(1),
            unacked: 0,
            done: false,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
        }
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
        if let Some((p, credited)) = st.queue.pop_front() {
            st.buffered -= p.len();
            drop(st);
            if let Some(s) = &this.shared.stats {
                s.sub_recv_buffered(p.len());
            }
            if credited {
                this.unacked += p.len();
            }
            if this.unacked >= this.threshold {
                this.sink.consumed(this.id, this.unacked);
                this.unacked = 0;
            }
            return Poll::Ready(Some(Ok(p)));
        }
        if let Some(end) = st.end.take() {
            drop(st);
            this.done = true;
            return Poll::Ready(end.map(Err));
        }
        if !st.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            st.waker = Some(cx.waker().clone());
        }
        drop(st);
        if let Some(sleep) = &mut this.deadline {
            if sleep.as_mut().poll(cx).is_ready() {
                this.done = true;
                this.sink.dropped(this.id, false, this.unacked);
                this.unacked = 0;
                return Poll::Ready(Some(Err(Status::deadline_exceeded(
                    "deadline exceeded while receiving the stream",
                ))));
            }
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
            self.sink.dropped(self.id, false, unconsumed + self.unacked);
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

    #[derive(Default)]
    struct Sink {
        consumed: AtomicUsize,
        dropped: AtomicUsize,
    }

    impl CreditSink for Sink {
        fn consumed(&self, _id: u32, n: usize) {
            self.consumed.fetch_add(n, Ordering::SeqCst);
        }
        fn dropped(&self, _id: u32, ended: bool, unconsumed: usize) {
            assert!(!ended);
            self.dropped.fetch_add(unconsumed + 1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn consuming_returns_credit_in_batches_and_end_is_delivered() {
        use futures_util::StreamExt;
        let shared = InboundShared::new(None);
        let sink = Arc::new(Sink::default());
        let mut inc = Incoming::new(shared.clone(), sink.clone(), 1, 10, None);
        for _ in 0..4 {
            assert!(shared.push(Payload::new(vec![0u8; 3])));
        }
        shared.finish(Some(Status::ok_with_trailers({
            let mut md = MetadataMap::new();
            md.insert("k", "v");
            md
        })));
        let mut n = 0;
        while let Some(Ok(_)) = inc.next().await {
            n += 1;
            if n == 4 {
                break;
            }
        }
        // threshold is 5: credit after 6 and after 12 bytes.
        assert_eq!(sink.consumed.load(Ordering::SeqCst), 12);
        let end = inc.next().await;
        assert!(
            matches!(end, Some(Err(ref s)) if s.code() == Code::Ok && s.metadata().get("k") == Some("v"))
        );
        assert!(inc.next().await.is_none());
        drop(inc);
        assert_eq!(sink.dropped.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn dropping_early_reports_unconsumed_bytes() {
        let shared = InboundShared::new(None);
        let sink = Arc::new(Sink::default());
        let inc = Incoming::new(shared.clone(), sink.clone(), 1, 1000, None);
        shared.push(Payload::new(vec![0u8; 7]));
        drop(inc);
        assert_eq!(sink.dropped.load(Ordering::SeqCst), 8);
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
