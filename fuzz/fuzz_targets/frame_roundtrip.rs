//! Encode/decode round trips: frames of every type built from the input
//! decode to exactly what was encoded (also when many are coalesced into one
//! buffer); SETTINGS and GOAWAY payloads survive encode → parse, and parsing
//! arbitrary payloads never panics.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};
use trpc::frame::{
    put_goaway, Decoded, Flags, Frame, FrameCodec, FrameType, Goaway, GoawayCode, Settings,
    HEADER_LEN, MAX_CONTROL_PAYLOAD,
};

/// Reads little pieces off the input.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn u32(&mut self) -> Option<u32> {
        let b = self.0.get(..4)?;
        let v = u32::from_be_bytes(b.try_into().ok()?);
        self.0 = &self.0[4..];
        Some(v)
    }
    fn bytes(&mut self, n: usize) -> Bytes {
        let n = n.min(self.0.len());
        let b = Bytes::copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        b
    }
}

const KINDS: [FrameType; 9] = [
    FrameType::Settings,
    FrameType::Headers,
    FrameType::Data,
    FrameType::Trailers,
    FrameType::Cancel,
    FrameType::Ping,
    FrameType::Pong,
    FrameType::Goaway,
    FrameType::WindowUpdate,
];

fn opt(v: u32, present: bool) -> Option<u32> {
    present.then_some(v)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    // Limits above anything the input can build (u16 lengths).
    let mut codec = FrameCodec::new().max_metadata(1 << 24);
    let mut frames = Vec::new();
    let mut wire = BytesMut::new();
    while let (Some(k), Some(flags), Some(stream), Some(lens)) =
        (input.u8(), input.u8(), input.u32(), input.u32())
    {
        let kind = KINDS[k as usize % KINDS.len()];
        let control = !kind.is_stream_frame();
        let metadata = if control {
            Bytes::new()
        } else {
            input.bytes((lens >> 16) as usize)
        };
        let payload = input.bytes(((lens & 0xffff) as usize).min(if control {
            MAX_CONTROL_PAYLOAD
        } else {
            usize::MAX
        }));
        // Control frames of the wrong size for their type are decode errors
        // (FRAME_SIZE_ERROR), not frames: only well-sized ones round-trip.
        if control && !kind.payload_size_ok(payload.len()) {
            continue;
        }
        let frame = Frame::new(kind, Flags(flags), stream, metadata, payload);
        codec
            .encode(frame.clone(), &mut wire)
            .expect("encode within limits");
        frames.push(frame);
    }
    let mut decoded = Vec::new();
    while let Some(d) = codec.decode(&mut wire).expect("decode what we encoded") {
        match d {
            Decoded::Frame(f) => decoded.push(f),
            Decoded::TooLarge(h) => panic!("frame within limits reported too large: {h:?}"),
        }
    }
    assert!(wire.is_empty(), "{} bytes left over", wire.len());
    assert_eq!(decoded, frames);

    // SETTINGS: arbitrary payloads parse or are rejected without panicking;
    // what parses re-encodes to the same settings.
    if let Some(s) = Settings::parse(data) {
        let mut b = BytesMut::new();
        s.encode(&mut b);
        assert_eq!(Settings::parse(&b[HEADER_LEN..]), Some(s));
    }
    let v = |i: usize| {
        data.get(i * 4..i * 4 + 4)
            .map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap()))
    };
    let present = data.first().copied().unwrap_or(0);
    let s = Settings {
        max_concurrent_streams: opt(v(0), present & 1 != 0),
        initial_stream_window: opt(v(1), present & 2 != 0),
        initial_connection_window: opt(v(2), present & 4 != 0),
        max_message_size: opt(v(3), present & 8 != 0),
        max_metadata_size: opt(v(4), present & 16 != 0),
    };
    let mut b = BytesMut::new();
    s.encode(&mut b);
    assert_eq!(Settings::parse(&b[HEADER_LEN..]), Some(s));

    // GOAWAY: arbitrary payloads never panic; a UTF-8 message round-trips.
    let _ = Goaway::parse(data);
    let text = String::from_utf8_lossy(data);
    let text: String = text.chars().take(100).collect();
    let mut b = BytesMut::new();
    put_goaway(&mut b, v(0), GoawayCode::from_u32(v(1)), &text);
    let g = Goaway::parse(&b[HEADER_LEN..]).expect("our GOAWAY parses");
    assert_eq!(
        (g.last_stream_id, g.message.as_str()),
        (v(0), text.as_str())
    );
});
