//! Frame and metadata builders for raw-frame tests (docs/PROTOCOL.md §1–§4):
//! well-formed frames of every type, and frames with any type byte, flags
//! and length fields, well-formed or not.
//!
//! Builders return the encoded bytes, ready for [`crate::peer::Peer::send`].

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::Encoder;
use trpc::frame::{Flags, Frame, FrameCodec, FrameType, GoawayCode, Settings};
use trpc::Code;

/// Frame type bytes (docs/PROTOCOL.md §2).
pub mod kind {
    /// SETTINGS.
    pub const SETTINGS: u8 = 0;
    /// HEADERS.
    pub const HEADERS: u8 = 1;
    /// DATA.
    pub const DATA: u8 = 2;
    /// TRAILERS.
    pub const TRAILERS: u8 = 3;
    /// CANCEL.
    pub const CANCEL: u8 = 4;
    /// PING.
    pub const PING: u8 = 5;
    /// PONG.
    pub const PONG: u8 = 6;
    /// GOAWAY.
    pub const GOAWAY: u8 = 7;
    /// WINDOW_UPDATE.
    pub const WINDOW_UPDATE: u8 = 8;
}

/// Flag bytes (docs/PROTOCOL.md §2.1), for [`raw_frame`].
pub mod flag {
    /// END_STREAM.
    pub const END: u8 = 0x01;
    /// MESSAGE.
    pub const MESSAGE: u8 = 0x02;
    /// COMPRESSED.
    pub const COMPRESSED: u8 = 0x04;
}

/// A frame with raw header fields (any type byte, any flags) and a body;
/// the length fields match `metadata` and `payload`.
pub fn raw_frame(kind: u8, flags: u8, stream: u32, metadata: &[u8], payload: &[u8]) -> Bytes {
    raw_frame_lens(
        kind,
        flags,
        stream,
        metadata.len() as u32,
        payload.len() as u32,
        &[metadata, payload].concat(),
    )
}

/// A frame header claiming `metadata_len` / `payload_len` (the metadata
/// length is cut to its 24 bits), followed by `body` whatever its real
/// length.
pub fn raw_frame_lens(
    kind: u8,
    flags: u8,
    stream: u32,
    metadata_len: u32,
    payload_len: u32,
    body: &[u8],
) -> Bytes {
    let mut b = Vec::with_capacity(16 + body.len());
    b.extend_from_slice(&[0x74, 0x52, 1, kind, flags]);
    b.extend_from_slice(&metadata_len.to_be_bytes()[1..]);
    b.extend_from_slice(&stream.to_be_bytes());
    b.extend_from_slice(&payload_len.to_be_bytes());
    b.extend_from_slice(body);
    Bytes::from(b)
}

/// Encodes a metadata block (docs/PROTOCOL.md §4) by hand:
/// `key len (u8) | key | value len (LEB128) | value`.
pub fn metadata_block(entries: &[(&str, &[u8])]) -> Bytes {
    let mut b = BytesMut::new();
    for (k, v) in entries {
        b.put_u8(k.len() as u8);
        b.put_slice(k.as_bytes());
        let mut n = v.len();
        while n >= 0x80 {
            b.put_u8((n as u8) | 0x80);
            n >>= 7;
        }
        b.put_u8(n as u8);
        b.put_slice(v);
    }
    b.freeze()
}

/// Decodes a metadata block; panics if it is malformed.
pub fn parse_metadata(block: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < block.len() {
        let klen = block[pos] as usize;
        let key = String::from_utf8(block[pos + 1..pos + 1 + klen].to_vec()).expect("key");
        pos += 1 + klen;
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let b = block[pos];
            pos += 1;
            len |= ((b & 0x7f) as usize) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        out.push((key, block[pos..pos + len].to_vec()));
        pos += len;
    }
    out
}

/// Encodes a frame with [`FrameCodec`] (no limits in the way).
pub fn encode_frame(frame: Frame) -> Bytes {
    let mut codec = FrameCodec::new()
        .max_message(u32::MAX as usize)
        .max_metadata(1 << 24);
    let mut b = BytesMut::new();
    codec.encode(frame, &mut b).expect("encode frame");
    b.freeze()
}

/// A SETTINGS frame carrying `settings`.
pub fn settings(settings: Settings) -> Bytes {
    let mut b = BytesMut::new();
    settings.encode(&mut b);
    b.freeze()
}

/// The SETTINGS frame a raw client opens with (the limits of
/// docs/PROTOCOL.md §9's example).
pub fn client_settings() -> Bytes {
    settings(Settings {
        max_message_size: Some(4 << 20),
        max_metadata_size: Some(16 << 10),
        ..Settings::default()
    })
}

/// A unary request (§5.2 fast path): one HEADERS frame with
/// `MESSAGE | END_STREAM`, `:path` first, then `extra` metadata.
pub fn unary_request(
    stream_id: u32,
    method: &str,
    extra: &[(&str, &[u8])],
    payload: impl Into<Bytes>,
) -> Bytes {
    let mut entries: Vec<(&str, &[u8])> = vec![(":path", method.as_bytes())];
    entries.extend_from_slice(extra);
    encode_frame(Frame::new(
        FrameType::Headers,
        Flags::MESSAGE.with(Flags::END_STREAM),
        stream_id,
        metadata_block(&entries),
        payload.into(),
    ))
}

/// HEADERS opening a stream whose messages come in DATA frames.
pub fn open_stream(stream: u32, method: &str) -> Bytes {
    let md = metadata_block(&[(":path", method.as_bytes())]);
    raw_frame(kind::HEADERS, 0, stream, &md, &[])
}

/// DATA carrying one message (`flags`: [`flag::END`], [`flag::COMPRESSED`]).
pub fn data(stream: u32, flags: u8, payload: &[u8]) -> Bytes {
    raw_frame(kind::DATA, flags, stream, &[], payload)
}

/// TRAILERS (END_STREAM) with `entries`; a client half-closes with none.
pub fn trailers(stream: u32, entries: &[(&str, &[u8])]) -> Bytes {
    raw_frame(
        kind::TRAILERS,
        flag::END,
        stream,
        &metadata_block(entries),
        &[],
    )
}

/// CANCEL of `stream` with `code`.
pub fn cancel(stream: u32, code: Code) -> Bytes {
    raw_frame(kind::CANCEL, 0, stream, &[], &(code as u32).to_be_bytes())
}

/// PING carrying `data`.
pub fn ping(data: [u8; 8]) -> Bytes {
    raw_frame(kind::PING, 0, 0, &[], &data)
}

/// PONG carrying `data`.
pub fn pong(data: [u8; 8]) -> Bytes {
    raw_frame(kind::PONG, 0, 0, &[], &data)
}

/// GOAWAY with `last` stream id, `code` and debug `text`.
pub fn goaway(last: u32, code: GoawayCode, text: &str) -> Bytes {
    let mut payload = last.to_be_bytes().to_vec();
    payload.extend_from_slice(&(code as u32).to_be_bytes());
    payload.extend_from_slice(text.as_bytes());
    raw_frame(kind::GOAWAY, 0, 0, &[], &payload)
}

/// WINDOW_UPDATE of `stream` (0: the connection) by `increment`.
pub fn window_update(stream: u32, increment: u32) -> Bytes {
    raw_frame(
        kind::WINDOW_UPDATE,
        0,
        stream,
        &[],
        &increment.to_be_bytes(),
    )
}

/// The `:status` entry of `code`, for [`metadata_block`].
pub fn status_entry(code: Code) -> (&'static str, Vec<u8>) {
    (":status", (code as u32).to_string().into_bytes())
}

/// A server's whole answer in one frame (§5.2 fast path): HEADERS with
/// END_STREAM and `:status`; for OK the message too (MESSAGE).
pub fn reply(stream: u32, code: Code, payload: &[u8]) -> Bytes {
    let (k, v) = status_entry(code);
    let md = metadata_block(&[(k, &v)]);
    if code == Code::Ok {
        raw_frame(
            kind::HEADERS,
            flag::MESSAGE | flag::END,
            stream,
            &md,
            payload,
        )
    } else {
        raw_frame(kind::HEADERS, flag::END, stream, &md, &[])
    }
}

/// A server's HEADERS starting a streamed answer (no END_STREAM, no
/// message): messages follow in DATA frames, the status in TRAILERS.
pub fn response_headers(stream: u32, entries: &[(&str, &[u8])]) -> Bytes {
    raw_frame(kind::HEADERS, 0, stream, &metadata_block(entries), &[])
}

/// TRAILERS ending a streamed answer with `code`.
pub fn status_trailers(stream: u32, code: Code) -> Bytes {
    let (k, v) = status_entry(code);
    trailers(stream, &[(k, &v)])
}

/// Bytes from a hex string; whitespace is ignored.
pub fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let pairs = digits.chunks_exact(2);
    assert!(
        pairs.remainder().is_empty(),
        "odd number of hex digits in {s:?}"
    );
    pairs
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ascii"), 16).expect("hex digit"))
        .collect()
}
