//! Property tests of the frame decoder: for arbitrary frame sequences
//! (valid, oversized, malformed control frames, unknown types), decoding the
//! bytes in arbitrary chunks gives exactly what decoding them at once gives;
//! arbitrary bytes never make it panic, and it never buffers more than one
//! frame its limits allow. (The `fuzz/` crate explores the same properties
//! with coverage guidance; these run in `make test`.)

use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::Decoder;
use trpc::frame::{Decoded, FrameCodec, HEADER_LEN, MAX_CONTROL_PAYLOAD};

/// What decoding produced: items, then possibly an error (which ends it).
fn decode_all(
    mut codec: FrameCodec,
    wire: &[u8],
    chunks: &[usize],
) -> Vec<Result<Decoded, String>> {
    // One frame the limits allow (control frames may carry 16 KiB whatever
    // the message limit).
    let bound =
        HEADER_LEN + codec.max_metadata_len() + codec.max_message_len().max(MAX_CONTROL_PAYLOAD);
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    let mut rest = wire;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = sizes
            .next()
            .copied()
            .unwrap_or(rest.len())
            .clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(d)) => out.push(Ok(d)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
        assert!(
            buf.len() <= bound,
            "buffered {} bytes (bound {bound})",
            buf.len()
        );
    }
    out
}

fn codec(small: bool) -> FrameCodec {
    if small {
        FrameCodec::new().max_message(100).max_metadata(40)
    } else {
        FrameCodec::new()
    }
}

/// One frame on the wire: any type byte (known or not), any flags, stream,
/// metadata and payload (control frames with metadata are malformed).
fn frame() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![0u8..=8, any::<u8>()],
        any::<u8>(),
        any::<u32>(),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(any::<u8>(), 0..300),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(kind, flags, stream, metadata, payload, no_meta)| {
            let metadata = if no_meta || kind != 1 {
                Vec::new()
            } else {
                metadata
            };
            let mut b = vec![0x74, 0x52, 1, kind, flags];
            b.extend_from_slice(&(metadata.len() as u32).to_be_bytes()[1..]);
            b.extend_from_slice(&stream.to_be_bytes());
            b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            b.extend_from_slice(&metadata);
            b.extend_from_slice(&payload);
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn chunked_decoding_equals_one_shot_decoding(
        frames in prop::collection::vec(frame(), 0..24),
        chunks in prop::collection::vec(1usize..200, 1..16),
        small in any::<bool>(),
        cut in any::<u16>(),
    ) {
        let mut wire: Vec<u8> = frames.concat();
        // Sometimes end mid-frame.
        if cut % 4 == 0 && !wire.is_empty() {
            wire.truncate(cut as usize % wire.len());
        }
        let once = decode_all(codec(small), &wire, &[wire.len().max(1)]);
        let chunked = decode_all(codec(small), &wire, &chunks);
        let bytewise = decode_all(codec(small), &wire, &[1]);
        prop_assert_eq!(&once, &chunked);
        prop_assert_eq!(&once, &bytewise);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        wire in prop::collection::vec(any::<u8>(), 0..2048),
        chunks in prop::collection::vec(1usize..64, 1..8),
        small in any::<bool>(),
    ) {
        let once = decode_all(codec(small), &wire, &[wire.len().max(1)]);
        let chunked = decode_all(codec(small), &wire, &chunks);
        prop_assert_eq!(once, chunked);
    }

    #[test]
    fn bytes_after_a_valid_prefix_never_panic(
        frames in prop::collection::vec(frame(), 1..8),
        tail in prop::collection::vec(any::<u8>(), 0..512),
        chunks in prop::collection::vec(1usize..64, 1..8),
    ) {
        let mut wire: Vec<u8> = frames.concat();
        wire.extend_from_slice(&tail);
        let once = decode_all(codec(false), &wire, &[wire.len()]);
        let chunked = decode_all(codec(false), &wire, &chunks);
        prop_assert_eq!(once, chunked);
    }
}
