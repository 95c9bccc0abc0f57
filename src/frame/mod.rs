//! The trpc wire format: 16-byte frame headers, frame types, flags and settings.
//!
//! docs/PROTOCOL.md is the normative description; this module implements it.
//!
//! ```text
//!  0       1       2       3       4       5       6       7
//! +-------+-------+-------+-------+-------+-------+-------+-------+
//! |   magic 't' 'R'  | version | type  | flags |  metadata length (u24)|
//! +-------+-------+-------+-------+-------+-------+-------+-------+
//! |          stream id (u32)       |      payload length (u32)     |
//! +-------+-------+-------+-------+-------+-------+-------+-------+
//! ```
//! followed by `metadata length` bytes of metadata block and `payload length`
//! bytes of payload. All integers are big-endian.

mod codec;
mod settings;
mod write_buf;

pub use codec::{Decoded, FrameCodec, FrameError};
pub use settings::{SettingId, Settings};
pub(crate) use write_buf::WriteBuf;

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

/// The two magic bytes every frame starts with: `t` `R`.
pub const MAGIC: [u8; 2] = [0x74, 0x52];
/// The protocol version this implementation speaks.
pub const VERSION: u8 = 1;
/// Length of the fixed frame header.
pub const HEADER_LEN: usize = 16;
/// Largest metadata block the u24 length field can describe.
pub const MAX_METADATA_FIELD: usize = (1 << 24) - 1;
/// Largest payload a control frame (SETTINGS, PING, PONG, GOAWAY,
/// WINDOW_UPDATE, CANCEL) may carry.
pub const MAX_CONTROL_PAYLOAD: usize = 16 * 1024;
/// Default largest message (payload) accepted: 4 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// Default largest metadata block accepted: 16 KiB.
pub const DEFAULT_MAX_METADATA: usize = 16 * 1024;
/// The smallest MAX_METADATA_SIZE a side may announce (a status block always
/// fits); smaller configured or received values are raised to it.
pub const MIN_MAX_METADATA: usize = 1024;

/// A MAX_METADATA_SIZE as it is used, configured or received: at least
/// [`MIN_MAX_METADATA`], at most what the u24 length field can describe.
pub(crate) fn metadata_limit(n: usize) -> usize {
    n.clamp(MIN_MAX_METADATA, MAX_METADATA_FIELD)
}
/// Default initial per-stream receive window (flow control): 1 MiB.
pub const DEFAULT_STREAM_WINDOW: u32 = 1 << 20;
/// Default initial connection receive window (flow control): 16 MiB.
pub const DEFAULT_CONNECTION_WINDOW: u32 = 16 << 20;
/// Largest flow-control window.
pub const MAX_WINDOW: i64 = (1 << 31) - 1;

/// Frame types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Connection settings; the first frame each side sends (stream 0).
    Settings = 0,
    /// Opens a stream (client) or carries response headers (server).
    Headers = 1,
    /// One message.
    Data = 2,
    /// Ends the sender's side of a stream with metadata (server: the status).
    Trailers = 3,
    /// Aborts a stream (payload: empty, or a 4-byte status code).
    Cancel = 4,
    /// Liveness probe (stream 0, 8 opaque bytes).
    Ping = 5,
    /// Answer to a PING with the same 8 bytes.
    Pong = 6,
    /// The sender will accept no new streams (stream 0).
    Goaway = 7,
    /// Flow-control credit for a stream (or the connection on stream 0).
    WindowUpdate = 8,
}

impl FrameType {
    /// The type for a wire byte; `None` for unknown types (which receivers skip).
    pub fn from_u8(b: u8) -> Option<FrameType> {
        Some(match b {
            0 => FrameType::Settings,
            1 => FrameType::Headers,
            2 => FrameType::Data,
            3 => FrameType::Trailers,
            4 => FrameType::Cancel,
            5 => FrameType::Ping,
            6 => FrameType::Pong,
            7 => FrameType::Goaway,
            8 => FrameType::WindowUpdate,
            _ => return None,
        })
    }

    /// True for the frame types that carry metadata or messages (HEADERS,
    /// DATA, TRAILERS), whose sizes are bounded by the receiver's limits; the
    /// others (SETTINGS, CANCEL, PING, PONG, GOAWAY, WINDOW_UPDATE) are
    /// control frames, bounded to 16 KiB with exact payload sizes.
    pub fn is_stream_frame(self) -> bool {
        matches!(
            self,
            FrameType::Headers | FrameType::Data | FrameType::Trailers
        )
    }

    /// Whether `len` is a valid payload size for this control frame type
    /// (docs/PROTOCOL.md §2): SETTINGS a multiple of 6, CANCEL 0 or 4, PING
    /// and PONG 8, GOAWAY at least 8, WINDOW_UPDATE 4. Stream frames
    /// (HEADERS, DATA, TRAILERS) are bounded by the size limits instead and
    /// always pass. The decoder rejects any other size
    /// ([`FrameError::BadControlPayload`], a connection
    /// error reported as FRAME_SIZE_ERROR).
    pub fn payload_size_ok(self, len: usize) -> bool {
        match self {
            FrameType::Settings => len % 6 == 0,
            FrameType::Cancel => len == 0 || len == 4,
            FrameType::Ping | FrameType::Pong => len == 8,
            FrameType::Goaway => len >= 8,
            FrameType::WindowUpdate => len == 4,
            FrameType::Headers | FrameType::Data | FrameType::Trailers => true,
        }
    }
}

/// Frame flags (a bit set).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u8);

impl Flags {
    /// No flags.
    pub const NONE: Flags = Flags(0);
    /// The sender has finished its side of the stream.
    pub const END_STREAM: Flags = Flags(0x01);
    /// HEADERS: the payload is a message (an empty payload may be a message).
    pub const MESSAGE: Flags = Flags(0x02);
    /// The message is compressed (see `trpc-encoding`).
    pub const COMPRESSED: Flags = Flags(0x04);

    /// True if every bit of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union.
    pub const fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    /// Sets `other` when `on`.
    pub const fn with_if(self, other: Flags, on: bool) -> Flags {
        if on {
            self.with(other)
        } else {
            self
        }
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.contains(Flags::END_STREAM) {
            parts.push("END_STREAM");
        }
        if self.contains(Flags::MESSAGE) {
            parts.push("MESSAGE");
        }
        if self.contains(Flags::COMPRESSED) {
            parts.push("COMPRESSED");
        }
        if self.0 & !0x07 != 0 {
            parts.push("UNKNOWN");
        }
        write!(f, "Flags({})", parts.join("|"))
    }
}

/// The fixed 16-byte header of a frame, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// The raw frame type byte (see [`FrameType::from_u8`]).
    pub kind: u8,
    /// Flags.
    pub flags: Flags,
    /// Stream id; 0 for connection-level frames.
    pub stream_id: u32,
    /// Length of the metadata block.
    pub metadata_len: u32,
    /// Length of the payload.
    pub payload_len: u32,
}

impl FrameHeader {
    /// The frame type, if known.
    pub fn frame_type(&self) -> Option<FrameType> {
        FrameType::from_u8(self.kind)
    }
}

/// A decoded frame. Metadata and payload are zero-copy slices of the read buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// The header.
    pub header: FrameHeader,
    /// The raw metadata block (see [`crate::metadata`]).
    pub metadata: Bytes,
    /// The payload.
    pub payload: Bytes,
}

impl Frame {
    /// A frame of a known type.
    pub fn new(
        kind: FrameType,
        flags: Flags,
        stream_id: u32,
        metadata: Bytes,
        payload: Bytes,
    ) -> Self {
        Frame {
            header: FrameHeader {
                kind: kind as u8,
                flags,
                stream_id,
                metadata_len: metadata.len() as u32,
                payload_len: payload.len() as u32,
            },
            metadata,
            payload,
        }
    }

    /// The frame type, if known.
    pub fn frame_type(&self) -> Option<FrameType> {
        self.header.frame_type()
    }

    /// The stream id.
    pub fn stream_id(&self) -> u32 {
        self.header.stream_id
    }

    /// The flags.
    pub fn flags(&self) -> Flags {
        self.header.flags
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("type", &self.frame_type())
            .field("flags", &self.header.flags)
            .field("stream_id", &self.header.stream_id)
            .field("metadata_len", &self.metadata.len())
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// Writes a frame header.
///
/// # Panics
/// In debug builds, if `metadata_len` does not fit in 24 bits (callers check
/// limits first).
pub fn put_header(
    dst: &mut BytesMut,
    kind: FrameType,
    flags: Flags,
    stream_id: u32,
    metadata_len: usize,
    payload_len: usize,
) {
    dst.extend_from_slice(&header_bytes(
        kind,
        flags,
        stream_id,
        metadata_len,
        payload_len,
    ));
}

/// A frame header as bytes: what [`put_header`] writes, in one piece (one
/// capacity check and a fixed-size copy instead of one per field).
pub(crate) fn header_bytes(
    kind: FrameType,
    flags: Flags,
    stream_id: u32,
    metadata_len: usize,
    payload_len: usize,
) -> [u8; HEADER_LEN] {
    debug_assert!(metadata_len <= MAX_METADATA_FIELD);
    debug_assert!(payload_len <= u32::MAX as usize);
    let m = (metadata_len as u32).to_be_bytes();
    let id = stream_id.to_be_bytes();
    let len = (payload_len as u32).to_be_bytes();
    [
        MAGIC[0], MAGIC[1], VERSION, kind as u8, flags.0, m[1], m[2], m[3], id[0], id[1], id[2],
        id[3], len[0], len[1], len[2], len[3],
    ]
}

/// Parses a header from exactly [`HEADER_LEN`] bytes. Checks magic and version.
pub fn parse_header(b: &[u8; HEADER_LEN]) -> Result<FrameHeader, FrameError> {
    if b[0..2] != MAGIC {
        return Err(FrameError::BadMagic([b[0], b[1]]));
    }
    if b[2] != VERSION {
        return Err(FrameError::UnsupportedVersion(b[2]));
    }
    Ok(FrameHeader {
        kind: b[3],
        flags: Flags(b[4]),
        metadata_len: u32::from_be_bytes([0, b[5], b[6], b[7]]),
        stream_id: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        payload_len: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
    })
}

/// GOAWAY error codes (the second u32 of a GOAWAY payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum GoawayCode {
    /// Graceful shutdown or idle close.
    NoError = 0,
    /// The peer broke the protocol (bad magic, bad frame sequence...).
    ProtocolError = 1,
    /// An internal error in the sender.
    InternalError = 2,
    /// The peer broke flow control.
    FlowControlError = 3,
    /// A control frame's payload has the wrong size for its type (PING not 8
    /// bytes, SETTINGS not a multiple of 6, ...).
    FrameSizeError = 4,
    /// The peer is generating excessive load (e.g. rapid open/cancel).
    EnhanceYourCalm = 5,
    /// The peer was too slow: no SETTINGS within the handshake timeout, or a
    /// frame that did not complete within the frame timeout. (An idle
    /// connection is closed with NO_ERROR; a peer that reads nothing or
    /// answers no PING is closed without a GOAWAY.)
    Timeout = 6,
}

impl GoawayCode {
    /// From the wire value; unknown values are `InternalError`.
    pub fn from_u32(v: u32) -> GoawayCode {
        match v {
            0 => GoawayCode::NoError,
            1 => GoawayCode::ProtocolError,
            3 => GoawayCode::FlowControlError,
            4 => GoawayCode::FrameSizeError,
            5 => GoawayCode::EnhanceYourCalm,
            6 => GoawayCode::Timeout,
            _ => GoawayCode::InternalError,
        }
    }
}

/// Encodes a whole GOAWAY frame.
pub fn put_goaway(dst: &mut BytesMut, last_stream_id: u32, code: GoawayCode, message: &str) {
    let msg = &message.as_bytes()[..message.len().min(MAX_CONTROL_PAYLOAD - 8)];
    put_header(dst, FrameType::Goaway, Flags::NONE, 0, 0, 8 + msg.len());
    dst.put_u32(last_stream_id);
    dst.put_u32(code as u32);
    dst.put_slice(msg);
}

/// A decoded GOAWAY payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Goaway {
    /// Highest stream id the sender has processed or will process.
    pub last_stream_id: u32,
    /// Why.
    pub code: GoawayCode,
    /// Human-readable debug text.
    pub message: String,
}

impl Goaway {
    /// Parses a GOAWAY payload.
    pub fn parse(payload: &[u8]) -> Option<Goaway> {
        if payload.len() < 8 {
            return None;
        }
        Some(Goaway {
            last_stream_id: u32::from_be_bytes(payload[0..4].try_into().ok()?),
            code: GoawayCode::from_u32(u32::from_be_bytes(payload[4..8].try_into().ok()?)),
            message: String::from_utf8_lossy(&payload[8..]).into_owned(),
        })
    }
}

/// Encodes a CANCEL frame for `stream_id` carrying a status code.
pub fn put_cancel(dst: &mut BytesMut, stream_id: u32, code: crate::Code) {
    put_header(dst, FrameType::Cancel, Flags::NONE, stream_id, 0, 4);
    dst.put_u32(code as u32);
}

/// Encodes a PING or PONG frame.
pub fn put_ping(dst: &mut BytesMut, pong: bool, data: [u8; 8]) {
    let kind = if pong {
        FrameType::Pong
    } else {
        FrameType::Ping
    };
    put_header(dst, kind, Flags::NONE, 0, 0, 8);
    dst.put_slice(&data);
}

/// Encodes a WINDOW_UPDATE frame.
pub fn put_window_update(dst: &mut BytesMut, stream_id: u32, increment: u32) {
    put_header(dst, FrameType::WindowUpdate, Flags::NONE, stream_id, 0, 4);
    dst.put_u32(increment);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let mut b = BytesMut::new();
        put_header(&mut b, FrameType::Data, Flags::END_STREAM, 7, 0x012345, 99);
        assert_eq!(b.len(), HEADER_LEN);
        let arr: [u8; HEADER_LEN] = b[..].try_into().unwrap();
        let h = parse_header(&arr).unwrap();
        assert_eq!(h.frame_type(), Some(FrameType::Data));
        assert_eq!(h.flags, Flags::END_STREAM);
        assert_eq!(
            (h.stream_id, h.metadata_len, h.payload_len),
            (7, 0x012345, 99)
        );
    }

    #[test]
    fn goaway_round_trips() {
        let mut b = BytesMut::new();
        put_goaway(&mut b, 41, GoawayCode::NoError, "bye");
        let g = Goaway::parse(&b[HEADER_LEN..]).unwrap();
        assert_eq!(g.last_stream_id, 41);
        assert_eq!(g.code, GoawayCode::NoError);
        assert_eq!(g.message, "bye");
        assert!(Goaway::parse(&[0; 7]).is_none());
    }
}
