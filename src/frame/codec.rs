//! [`FrameCodec`]: a `tokio_util::codec` Decoder/Encoder for trpc frames.

use std::fmt;
use std::io;

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{
    parse_header, put_header, Frame, FrameHeader, FrameType, GoawayCode, DEFAULT_MAX_MESSAGE,
    DEFAULT_MAX_METADATA, HEADER_LEN, MAX_CONTROL_PAYLOAD, MAX_METADATA_FIELD,
};

/// Frames up to this size get their whole buffer reserved as soon as the header
/// is read; larger ones grow with the bytes that actually arrive, so a peer that
/// announces a big frame and then trickles cannot make us allocate it up front.
const FULL_RESERVE: usize = 1 << 20;

/// What the decoder produces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A complete frame.
    Frame(Frame),
    /// A frame whose metadata or payload exceeds the configured limit. Its bytes
    /// are skipped as they arrive (never buffered); the receiver fails the
    /// frame's stream with `ResourceExhausted` and the connection carries on.
    TooLarge(FrameHeader),
}

/// A connection-fatal decoding error.
#[derive(Debug)]
pub enum FrameError {
    /// The first two bytes were not the trpc magic.
    BadMagic([u8; 2]),
    /// The version byte is one this implementation does not speak.
    UnsupportedVersion(u8),
    /// A control frame carried metadata or a payload over 16 KiB.
    BadControlFrame {
        /// The frame type.
        kind: FrameType,
        /// Metadata length.
        metadata_len: u32,
        /// Payload length.
        payload_len: u32,
    },
    /// A control frame whose payload does not have its type's size
    /// ([`FrameType::payload_size_ok`]): a FRAME_SIZE_ERROR.
    BadControlPayload {
        /// The frame type.
        kind: FrameType,
        /// Payload length.
        len: u32,
    },
    /// (Encoding) a message or metadata larger than the configured limit.
    TooLarge {
        /// What was too large: "message" or "metadata".
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// (Encoding) a frame of a type this implementation does not know.
    UnknownType(u8),
    /// An I/O error.
    Io(io::Error),
}

impl FrameError {
    /// The GOAWAY code a receiver reports this error with.
    pub fn goaway_code(&self) -> GoawayCode {
        match self {
            FrameError::BadControlPayload { .. } => GoawayCode::FrameSizeError,
            _ => GoawayCode::ProtocolError,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadMagic(m) => write!(
                f,
                "not a trpc frame: bad magic {:#04x} {:#04x} (expected 0x74 0x52)",
                m[0], m[1]
            ),
            FrameError::UnsupportedVersion(v) => {
                write!(f, "unsupported protocol version {v} (this peer speaks 1)")
            }
            FrameError::BadControlFrame {
                kind,
                metadata_len,
                payload_len,
            } => write!(
                f,
                "malformed {kind:?} frame: metadata {metadata_len} bytes, payload {payload_len} bytes"
            ),
            FrameError::BadControlPayload { kind, len } => {
                write!(f, "malformed {kind:?} frame: a {len}-byte payload")
            }
            FrameError::UnknownType(t) => write!(f, "cannot encode a frame of unknown type {t}"),
            FrameError::TooLarge { what, len, max } => {
                write!(f, "{what} of {len} bytes exceeds the limit of {max} bytes")
            }
            FrameError::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// Decodes and encodes frames, enforcing size limits before allocating.
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use tokio_util::codec::{Decoder, Encoder};
/// use trpc::frame::{Decoded, Flags, Frame, FrameCodec, FrameType};
///
/// let mut codec = FrameCodec::new();
/// let frame = Frame::new(FrameType::Data, Flags::NONE, 1, Bytes::new(), Bytes::from("hi"));
/// let mut buf = BytesMut::new();
/// codec.encode(frame.clone(), &mut buf).unwrap();
/// assert_eq!(codec.decode(&mut buf).unwrap(), Some(Decoded::Frame(frame)));
/// ```
#[derive(Clone, Debug)]
pub struct FrameCodec {
    max_message: usize,
    max_metadata: usize,
    max_send_message: usize,
    discard: u64,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new()
    }
}

impl FrameCodec {
    /// A codec with the default limits (4 MiB messages, 16 KiB metadata).
    pub fn new() -> Self {
        FrameCodec {
            max_message: DEFAULT_MAX_MESSAGE,
            max_metadata: DEFAULT_MAX_METADATA,
            max_send_message: DEFAULT_MAX_MESSAGE,
            discard: 0,
        }
    }

    /// Largest payload accepted when decoding (and, unless set separately, sent).
    pub fn max_message(mut self, n: usize) -> Self {
        self.max_message = n.min(u32::MAX as usize);
        self.max_send_message = self.max_message;
        self
    }

    /// Largest payload allowed when encoding.
    pub fn max_send_message(mut self, n: usize) -> Self {
        self.max_send_message = n.min(u32::MAX as usize);
        self
    }

    /// Largest metadata block accepted (at most 16 MiB - 1, the u24 field).
    pub fn max_metadata(mut self, n: usize) -> Self {
        self.max_metadata = n.min(MAX_METADATA_FIELD);
        self
    }

    /// The decode message limit.
    pub fn max_message_len(&self) -> usize {
        self.max_message
    }

    /// The decode metadata limit.
    pub fn max_metadata_len(&self) -> usize {
        self.max_metadata
    }

    /// True while the bytes of an oversized frame are being skipped.
    pub fn is_discarding(&self) -> bool {
        self.discard > 0
    }

    /// True if `src` holds part of a frame (or an oversized frame is being
    /// skipped): the peer owes us bytes.
    pub fn is_mid_frame(&self, src: &BytesMut) -> bool {
        self.discard > 0 || !src.is_empty()
    }

    /// True if `src` holds the start of a frame header but not all of its
    /// [`HEADER_LEN`] bytes (and no oversized frame is being skipped).
    pub fn is_mid_header(&self, src: &BytesMut) -> bool {
        self.discard == 0 && !src.is_empty() && src.len() < HEADER_LEN
    }

    fn skip(&mut self, src: &mut BytesMut) {
        let n = (self.discard.min(src.len() as u64)) as usize;
        src.advance(n);
        self.discard -= n as u64;
    }
}

impl Decoder for FrameCodec {
    type Item = Decoded;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Decoded>, FrameError> {
        if self.discard > 0 {
            self.skip(src);
            if self.discard > 0 {
                return Ok(None);
            }
        }
        let Some(head) = src.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut arr = [0u8; HEADER_LEN];
        arr.copy_from_slice(head);
        let header = parse_header(&arr)?;
        let metadata_len = header.metadata_len as usize;
        let payload_len = header.payload_len as usize;

        match header.frame_type() {
            Some(kind) if !kind.is_stream_frame() => {
                if metadata_len != 0 || payload_len > MAX_CONTROL_PAYLOAD {
                    return Err(FrameError::BadControlFrame {
                        kind,
                        metadata_len: header.metadata_len,
                        payload_len: header.payload_len,
                    });
                }
                if !kind.payload_size_ok(payload_len) {
                    return Err(FrameError::BadControlPayload {
                        kind,
                        len: header.payload_len,
                    });
                }
            }
            _ => {
                if metadata_len > self.max_metadata || payload_len > self.max_message {
                    src.advance(HEADER_LEN);
                    self.discard = metadata_len as u64 + payload_len as u64;
                    self.skip(src);
                    return Ok(Some(Decoded::TooLarge(header)));
                }
            }
        }

        let total = HEADER_LEN + metadata_len + payload_len;
        if src.len() < total {
            let missing = total - src.len();
            let grow = if total <= FULL_RESERVE {
                missing
            } else {
                missing.min(src.len().max(64 * 1024))
            };
            src.reserve(grow);
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let metadata = src.split_to(metadata_len).freeze();
        let payload = src.split_to(payload_len).freeze();
        Ok(Some(Decoded::Frame(Frame {
            header,
            metadata,
            payload,
        })))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        if frame.metadata.len() > self.max_metadata.min(MAX_METADATA_FIELD) {
            return Err(FrameError::TooLarge {
                what: "metadata",
                len: frame.metadata.len(),
                max: self.max_metadata,
            });
        }
        if frame.payload.len() > self.max_send_message {
            return Err(FrameError::TooLarge {
                what: "message",
                len: frame.payload.len(),
                max: self.max_send_message,
            });
        }
        let kind = frame
            .frame_type()
            .ok_or(FrameError::UnknownType(frame.header.kind))?;
        dst.reserve(HEADER_LEN + frame.metadata.len() + frame.payload.len());
        put_header(
            dst,
            kind,
            frame.header.flags,
            frame.header.stream_id,
            frame.metadata.len(),
            frame.payload.len(),
        );
        dst.extend_from_slice(&frame.metadata);
        dst.extend_from_slice(&frame.payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Flags;
    use bytes::Bytes;

    fn data(id: u32, n: usize) -> Frame {
        Frame::new(
            FrameType::Data,
            Flags::NONE,
            id,
            Bytes::new(),
            Bytes::from(vec![id as u8; n]),
        )
    }

    #[test]
    fn byte_by_byte_and_coalesced_decode_agree() {
        let mut codec = FrameCodec::new();
        let frames: Vec<Frame> = (1..20).map(|i| data(i, i as usize * 7)).collect();
        let mut wire = BytesMut::new();
        for f in &frames {
            codec.encode(f.clone(), &mut wire).unwrap();
        }
        // All at once.
        let mut all = wire.clone();
        let mut got = Vec::new();
        while let Some(Decoded::Frame(f)) = codec.decode(&mut all).unwrap() {
            got.push(f);
        }
        assert_eq!(got, frames);
        // One byte at a time.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.extend_from_slice(&[*b]);
            while let Some(Decoded::Frame(f)) = codec.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn oversized_frame_is_skipped_without_buffering() {
        let mut codec = FrameCodec::new().max_message(16);
        let mut wire = BytesMut::new();
        FrameCodec::new().encode(data(1, 100), &mut wire).unwrap();
        FrameCodec::new().encode(data(3, 4), &mut wire).unwrap();
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        for chunk in wire.chunks(5) {
            buf.extend_from_slice(chunk);
            while let Some(d) = codec.decode(&mut buf).unwrap() {
                events.push(d);
            }
            assert!(buf.len() < 40, "oversized bytes must not accumulate");
        }
        assert!(
            matches!(events[0], Decoded::TooLarge(h) if h.stream_id == 1 && h.payload_len == 100)
        );
        assert_eq!(events[1], Decoded::Frame(data(3, 4)));
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn huge_length_claim_allocates_nothing() {
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::new();
        put_header(
            &mut buf,
            FrameType::Data,
            Flags::NONE,
            1,
            0,
            u32::MAX as usize,
        );
        let cap_before = buf.capacity();
        assert!(matches!(
            codec.decode(&mut buf).unwrap(),
            Some(Decoded::TooLarge(_))
        ));
        assert!(codec.is_discarding());
        assert!(buf.capacity() <= cap_before);
    }

    #[test]
    fn bad_magic_and_version_are_errors() {
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::BadMagic(_))
        ));
        let mut buf = BytesMut::new();
        put_header(&mut buf, FrameType::Ping, Flags::NONE, 0, 0, 8);
        buf[2] = 9;
        buf.extend_from_slice(&[0; 8]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::UnsupportedVersion(9))
        ));
    }

    #[test]
    fn control_frames_are_bounded() {
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::new();
        put_header(&mut buf, FrameType::Ping, Flags::NONE, 0, 0, 1 << 20);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::BadControlFrame { .. })
        ));
    }

    #[test]
    fn unknown_frame_types_decode_for_skipping() {
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[
            0x74, 0x52, 1, 0xee, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 9, 9,
        ]);
        match codec.decode(&mut buf).unwrap() {
            Some(Decoded::Frame(f)) => {
                assert_eq!(f.frame_type(), None);
                assert_eq!(f.payload, Bytes::from_static(&[9, 9]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn encoding_an_unknown_type_says_so() {
        let mut frame = data(1, 1);
        frame.header.kind = 0x42;
        let err = FrameCodec::new()
            .encode(frame, &mut BytesMut::new())
            .unwrap_err();
        assert!(matches!(err, FrameError::UnknownType(0x42)));
        assert_eq!(err.to_string(), "cannot encode a frame of unknown type 66");
    }

    #[test]
    fn encode_enforces_send_limit() {
        let mut codec = FrameCodec::new().max_send_message(8);
        let mut buf = BytesMut::new();
        assert!(matches!(
            codec.encode(data(1, 9), &mut buf),
            Err(FrameError::TooLarge {
                what: "message",
                ..
            })
        ));
        assert!(buf.is_empty());
    }
}
