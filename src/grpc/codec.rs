//! gRPC message framing: every message is a 5-byte prefix (a compressed flag,
//! then the length as a big-endian u32) followed by the message bytes.
//!
//! The [`Decoder`] takes DATA chunks as they arrive, split anywhere, and
//! yields whole [`Payload`]s; a message that arrives in one chunk is sliced
//! out of it without a copy. Lengths are checked against the limit before
//! anything is buffered.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::body::Payload;
use crate::status::Status;

/// Bytes in a message prefix.
pub(crate) const PREFIX_LEN: usize = 5;

/// Messages up to this size are sent with their prefix in one buffer (one
/// small copy); larger ones as two chunks, the message bytes uncopied.
pub(crate) const COPY_LIMIT: usize = 8 * 1024;

/// The prefix of `p`.
pub(crate) fn prefix(p: &Payload) -> [u8; PREFIX_LEN] {
    let len = (p.len() as u32).to_be_bytes();
    [u8::from(p.compressed), len[0], len[1], len[2], len[3]]
}

/// One encoded message: the whole thing, or a prefix and the message bytes
/// (above [`COPY_LIMIT`]).
pub(crate) fn encode(p: Payload) -> (Bytes, Option<Bytes>) {
    let head = prefix(&p);
    if p.len() <= COPY_LIMIT {
        let mut buf = BytesMut::with_capacity(PREFIX_LEN + p.len());
        buf.put_slice(&head);
        buf.put_slice(&p.bytes);
        (buf.freeze(), None)
    } else {
        (Bytes::copy_from_slice(&head), Some(p.bytes))
    }
}

/// Reassembles messages from DATA chunks.
#[derive(Debug)]
pub(crate) struct Decoder {
    /// The unconsumed rest of the latest chunk (messages are sliced from it).
    cur: Bytes,
    /// A message that spans chunks, being assembled.
    acc: BytesMut,
    max: usize,
}

impl Decoder {
    /// A decoder for messages of at most `max` bytes.
    pub(crate) fn new(max: usize) -> Self {
        Decoder {
            cur: Bytes::new(),
            acc: BytesMut::new(),
            max,
        }
    }

    /// Adds a chunk of DATA.
    pub(crate) fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        if self.acc.is_empty() && self.cur.is_empty() {
            self.cur = chunk;
            return;
        }
        if !self.cur.is_empty() {
            let rest = std::mem::take(&mut self.cur);
            if rest.len() >= PREFIX_LEN {
                let want = PREFIX_LEN + message_len(&rest).min(self.max);
                self.acc.reserve(want);
            }
            self.acc.put_slice(&rest);
        }
        self.acc.put_slice(&chunk);
    }

    /// True when no partial message is buffered.
    pub(crate) fn is_empty(&self) -> bool {
        self.cur.is_empty() && self.acc.is_empty()
    }

    /// The next complete message, `Ok(None)` when more bytes are needed.
    pub(crate) fn next(&mut self) -> Result<Option<Payload>, Status> {
        if !self.acc.is_empty() {
            if self.acc.len() < PREFIX_LEN {
                return Ok(None);
            }
            let (compressed, len) = self.header(&self.acc[..PREFIX_LEN])?;
            if self.acc.len() < PREFIX_LEN + len {
                self.acc.reserve(PREFIX_LEN + len - self.acc.len());
                return Ok(None);
            }
            self.acc.advance(PREFIX_LEN);
            let bytes = self.acc.split_to(len).freeze();
            return Ok(Some(Payload { bytes, compressed }));
        }
        if self.cur.len() < PREFIX_LEN {
            return Ok(None);
        }
        let (compressed, len) = self.header(&self.cur[..PREFIX_LEN])?;
        if self.cur.len() < PREFIX_LEN + len {
            return Ok(None);
        }
        let bytes = self.cur.slice(PREFIX_LEN..PREFIX_LEN + len);
        self.cur.advance(PREFIX_LEN + len);
        Ok(Some(Payload { bytes, compressed }))
    }

    fn header(&self, h: &[u8]) -> Result<(bool, usize), Status> {
        let compressed = match h[0] {
            0 => false,
            1 => true,
            f => {
                return Err(Status::internal(format!(
                    "invalid gRPC message flag {f} (must be 0 or 1)"
                )))
            }
        };
        let len = message_len(h);
        if len > self.max {
            return Err(Status::resource_exhausted(format!(
                "message of {len} bytes exceeds the limit of {} bytes",
                self.max
            )));
        }
        Ok((compressed, len))
    }
}

fn message_len(h: &[u8]) -> usize {
    u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(msgs: &[(&[u8], bool)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (m, c) in msgs {
            let p = Payload {
                bytes: Bytes::copy_from_slice(m),
                compressed: *c,
            };
            let (a, b) = encode(p);
            out.extend_from_slice(&a);
            if let Some(b) = b {
                out.extend_from_slice(&b);
            }
        }
        out
    }

    #[test]
    fn messages_split_anywhere_are_reassembled() {
        let big = vec![7u8; COPY_LIMIT + 10];
        let msgs: Vec<(&[u8], bool)> = vec![(b"hello", false), (b"", false), (&big, true)];
        let wire = framed(&msgs);
        for split in [1, 2, 3, 5, 7, 64, wire.len()] {
            let mut d = Decoder::new(1 << 20);
            let mut got = Vec::new();
            for chunk in wire.chunks(split) {
                d.push(Bytes::copy_from_slice(chunk));
                while let Some(p) = d.next().unwrap() {
                    got.push(p);
                }
            }
            assert!(d.is_empty(), "split {split}");
            assert_eq!(got.len(), 3, "split {split}");
            assert_eq!(&got[0].bytes[..], b"hello");
            assert!(got[1].is_empty());
            assert_eq!(got[2].bytes.len(), big.len());
            assert!(got[2].compressed && !got[0].compressed);
        }
    }

    #[test]
    fn oversized_lengths_and_bad_flags_are_errors_before_buffering() {
        let mut d = Decoder::new(10);
        d.push(Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff]));
        let e = d.next().unwrap_err();
        assert_eq!(e.code(), crate::Code::ResourceExhausted);
        let mut d = Decoder::new(10);
        d.push(Bytes::from_static(&[2, 0, 0, 0, 0]));
        assert_eq!(d.next().unwrap_err().code(), crate::Code::Internal);
    }
}
