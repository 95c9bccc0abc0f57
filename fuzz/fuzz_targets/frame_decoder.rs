//! The frame decoder on arbitrary bytes: it never panics, decoding the input
//! fed in random chunks gives exactly what decoding it at once gives, and the
//! bytes it buffers stay within one frame allowed by its limits.
//!
//! Input: byte 0 picks the limits, bytes 1..9 seed the chunk sizes, the rest
//! is the wire.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use trpc::frame::{Decoded, FrameCodec, HEADER_LEN, MAX_CONTROL_PAYLOAD};

#[derive(Debug, PartialEq)]
enum Event {
    Item(Decoded),
    Error(String),
}

fn codec(pick: u8) -> FrameCodec {
    let (message, metadata) = match pick % 4 {
        0 => (
            trpc::frame::DEFAULT_MAX_MESSAGE,
            trpc::frame::DEFAULT_MAX_METADATA,
        ),
        1 => (16, 8),
        2 => (0, 0),
        _ => (1 << 10, 1 << 24),
    };
    FrameCodec::new()
        .max_message(message)
        .max_metadata(metadata)
}

/// Decodes until the decoder wants more bytes or fails.
fn drain(codec: &mut FrameCodec, buf: &mut BytesMut, out: &mut Vec<Event>) -> bool {
    loop {
        match codec.decode(buf) {
            Ok(Some(d)) => out.push(Event::Item(d)),
            Ok(None) => return true,
            Err(e) => {
                out.push(Event::Error(e.to_string()));
                return false;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let pick = data[0];
    let mut seed = u64::from_le_bytes(data[1..9].try_into().unwrap()) | 1;
    let wire = &data[9..];

    // At once.
    let mut one_shot = Vec::new();
    let mut c = codec(pick);
    let mut buf = BytesMut::from(wire);
    drain(&mut c, &mut buf, &mut one_shot);

    // In chunks of 1..=64 bytes.
    let mut chunked = Vec::new();
    let mut c = codec(pick);
    // One frame the limits allow (control frames may carry 16 KiB whatever
    // the message limit), plus the chunk just added.
    let bound =
        HEADER_LEN + c.max_metadata_len() + c.max_message_len().max(MAX_CONTROL_PAYLOAD) + 64;
    let mut buf = BytesMut::new();
    let mut rest = wire;
    while !rest.is_empty() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let n = (1 + (seed % 64) as usize).min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        if !drain(&mut c, &mut buf, &mut chunked) {
            break;
        }
        assert!(
            buf.len() <= bound,
            "decoder buffers {} bytes, more than one allowed frame ({bound})",
            buf.len()
        );
    }
    assert_eq!(one_shot, chunked, "chunked decoding differs from one-shot");
});
