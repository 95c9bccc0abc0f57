//! A write buffer that coalesces small frames and queues big payloads by
//! reference, flushed with vectored writes: payloads of 16 KiB or more are
//! never copied; smaller ones are copied next to their frame headers (one
//! write instead of many slices, cheaper than a reference for a few bytes).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWrite;

/// Payloads at least this large are queued by reference instead of copied.
const BY_REFERENCE: usize = 16 * 1024;
/// Most slices handed to one vectored write.
const MAX_SLICES: usize = 64;

/// Pending output of one connection.
#[derive(Debug, Default)]
pub(crate) struct WriteBuf {
    /// Segments ready to go, in order, before `tail`.
    queue: VecDeque<Bytes>,
    /// Small frames being coalesced; goes after `queue`.
    tail: BytesMut,
    /// Total pending bytes.
    len: usize,
}

impl WriteBuf {
    pub(crate) fn new() -> Self {
        WriteBuf::default()
    }

    /// Pending bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Runs `f` to append header/metadata bytes (or any small frame) to the tail.
    pub(crate) fn put(&mut self, f: impl FnOnce(&mut BytesMut)) {
        let before = self.tail.len();
        f(&mut self.tail);
        self.len += self.tail.len() - before;
    }

    /// Appends a payload: copied when small, queued by reference when large.
    pub(crate) fn put_payload(&mut self, payload: &Bytes) {
        if payload.len() >= BY_REFERENCE {
            if !self.tail.is_empty() {
                self.queue.push_back(self.tail.split().freeze());
            }
            self.queue.push_back(payload.clone());
        } else {
            self.tail.extend_from_slice(payload);
        }
        self.len += payload.len();
    }

    /// Moves all pending output of `other` behind ours.
    pub(crate) fn append(&mut self, other: &mut WriteBuf) {
        if other.is_empty() {
            return;
        }
        if !other.queue.is_empty() {
            if !self.tail.is_empty() {
                self.queue.push_back(self.tail.split().freeze());
            }
            self.queue.append(&mut other.queue);
        }
        if self.tail.is_empty() && self.queue.is_empty() {
            std::mem::swap(&mut self.tail, &mut other.tail);
        } else {
            self.tail.extend_from_slice(&other.tail);
            other.tail.clear();
        }
        self.len += other.len;
        other.len = 0;
    }

    /// Frees the buffers (used when a connection goes idle).
    pub(crate) fn release(&mut self) {
        if self.is_empty() {
            self.tail = BytesMut::new();
            self.queue = VecDeque::new();
        }
    }

    /// Writes as much as possible; `Ready(Ok)` once everything is written.
    pub(crate) fn poll_flush<W: AsyncWrite + ?Sized>(
        &mut self,
        mut io: Pin<&mut W>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.len > 0 {
            let n = if self.queue.is_empty() {
                ready!(io.as_mut().poll_write(cx, &self.tail))?
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut count = 0;
                for seg in self.queue.iter().take(MAX_SLICES - 1) {
                    slices[count] = IoSlice::new(seg);
                    count += 1;
                }
                if !self.tail.is_empty() {
                    slices[count] = IoSlice::new(&self.tail);
                    count += 1;
                }
                ready!(io.as_mut().poll_write_vectored(cx, &slices[..count]))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.consume(n);
        }
        if self.tail.capacity() > 4 * 1024 * 1024 {
            // Don't keep a huge buffer around after a burst.
            self.tail = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }

    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            match self.queue.front_mut() {
                Some(seg) => {
                    if n >= seg.len() {
                        n -= seg.len();
                        self.queue.pop_front();
                    } else {
                        seg.advance(n);
                        n = 0;
                    }
                }
                None => {
                    self.tail.advance(n);
                    n = 0;
                }
            }
        }
        if self.tail.is_empty() {
            self.tail.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Poll;

    /// A writer that accepts at most `chunk` bytes per call, one slice at most.
    struct Trickle {
        out: Vec<u8>,
        chunk: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.chunk);
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn order_is_kept_across_copied_and_referenced_payloads() {
        let big = Bytes::from(vec![7u8; BY_REFERENCE + 3]);
        let mut wb = WriteBuf::new();
        let mut expected = Vec::new();
        wb.put(|b| b.extend_from_slice(b"head1"));
        expected.extend_from_slice(b"head1");
        wb.put_payload(&big);
        expected.extend_from_slice(&big);
        wb.put(|b| b.extend_from_slice(b"head2"));
        expected.extend_from_slice(b"head2");
        wb.put_payload(&Bytes::from_static(b"small"));
        expected.extend_from_slice(b"small");
        let mut other = WriteBuf::new();
        other.put(|b| b.extend_from_slice(b"other"));
        other.put_payload(&big);
        expected.extend_from_slice(b"other");
        expected.extend_from_slice(&big);
        wb.append(&mut other);
        assert!(other.is_empty());
        assert_eq!(wb.len(), expected.len());

        let mut w = Trickle {
            out: Vec::new(),
            chunk: 1000,
        };
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(wb.poll_flush(Pin::new(&mut w), &mut cx).is_ready());
        assert_eq!(w.out, expected);
        assert!(wb.is_empty());
    }
}
