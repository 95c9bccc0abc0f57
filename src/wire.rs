//! Call-level encoding on top of frames: the pseudo-headers of HEADERS and
//! TRAILERS blocks (`:path`, `:timeout`, `:status`, ...) and user metadata.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::body::Payload;
use crate::frame::{header_bytes, put_header, Flags, FrameType, WriteBuf, HEADER_LEN};
use crate::metadata::{self, encode_entry, entry_len, BlockIter, MetadataMap, ReceivedEntries};
use crate::request::Method;
use crate::status::{Code, Status};

pub(crate) const PATH: &[u8] = b":path";
pub(crate) const TIMEOUT: &[u8] = b":timeout";
pub(crate) const STATUS: &[u8] = b":status";
pub(crate) const MESSAGE: &[u8] = b":message";
pub(crate) const DETAILS: &[u8] = b":details";
pub(crate) const REFUSED: &[u8] = b":refused";

/// Status messages longer than this are truncated when sent.
const MAX_STATUS_MESSAGE: usize = 4 * 1024;

/// A request's HEADERS block, decoded.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub(crate) method: Method,
    pub(crate) timeout: Option<Duration>,
    /// The codec alone: the other entries are in `entries`.
    pub(crate) metadata: MetadataMap,
    /// The user entries, validated, when there are any.
    pub(crate) entries: Option<ReceivedEntries>,
}

/// A response HEADERS or TRAILERS block, decoded.
#[derive(Debug, Default)]
pub(crate) struct ResponseHead {
    pub(crate) metadata: MetadataMap,
    pub(crate) code: Option<Code>,
    pub(crate) message: Bytes,
    pub(crate) details: Bytes,
    pub(crate) refused: bool,
}

impl ResponseHead {
    /// The status this block carries, or an error if it has none.
    pub(crate) fn into_status(self) -> Status {
        let Some(code) = self.code else {
            return Status::internal("protocol error: stream ended without a :status");
        };
        let message = String::from_utf8_lossy(&self.message).into_owned();
        Status::new(code, message)
            .with_details(self.details)
            .with_metadata(self.metadata)
            .with_refused(self.refused)
    }
}

/// Parses the decimal ASCII digits of a pseudo-header (`:timeout`, `:status`):
/// one or more digits, nothing else, no overflow.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let d = d.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

fn bad(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("malformed metadata: {e}"))
}

/// Decodes a request HEADERS block. Errors are for that call only.
pub(crate) fn decode_request_head(block: Bytes) -> Result<RequestHead, Status> {
    let mut method = None;
    let mut timeout = None;
    let mut metadata = MetadataMap::new();
    // Where the user entries start and end in the block.
    let mut user_entries: Option<std::ops::Range<usize>> = None;
    for entry in BlockIter::new(&block) {
        let (key, value) = entry.map_err(bad)?;
        if key.first() == Some(&b':') {
            match key {
                PATH => {
                    if method.is_some() {
                        return Err(bad("repeated :path"));
                    }
                    method = Some(Method::from_bytes(block.slice_ref(value))?);
                }
                TIMEOUT => {
                    if timeout.is_some() {
                        return Err(bad("repeated :timeout"));
                    }
                    let micros = parse_decimal(value)
                        .ok_or_else(|| bad(":timeout is not a decimal number of microseconds"))?;
                    timeout = Some(Duration::from_micros(micros));
                }
                _ => {} // unknown pseudo-headers are ignored
            }
        } else {
            if metadata::check_wire_entry(&mut metadata, &block, key, value).map_err(bad)? {
                let span = metadata::entry_span(&block, key, value);
                user_entries = Some(user_entries.map_or(span.clone(), |s| s.start..span.end));
            }
        }
    }
    let method = method.ok_or_else(|| Status::invalid_argument("request without :path"))?;
    Ok(RequestHead {
        method,
        timeout,
        metadata,
        entries: user_entries.map(|span| ReceivedEntries::new(block, span)),
    })
}

/// Decodes a response HEADERS or TRAILERS block.
pub(crate) fn decode_response_head(block: Bytes) -> Result<ResponseHead, Status> {
    let mut head = ResponseHead::default();
    // The usual end of a unary call, recognised whole.
    let plain = match &block[..] {
        OK_BLOCK => Some(None),
        OK_PROTO_BLOCK => Some(Some("proto")),
        OK_JSON_BLOCK => Some(Some("json")),
        _ => None,
    };
    if let Some(codec) = plain {
        head.code = Some(Code::Ok);
        head.metadata.set_codec(codec);
        return Ok(head);
    }
    // Each known pseudo-header at most once: bit 0 :status, 1 :message,
    // 2 :details, 3 :refused.
    let mut seen = 0u8;
    for entry in BlockIter::new(&block) {
        let (key, value) = entry.map_err(internal_bad)?;
        if key.first() == Some(&b':') {
            let bit = match key {
                STATUS => 1,
                MESSAGE => 2,
                DETAILS => 4,
                REFUSED => 8,
                _ => 0,
            };
            if seen & bit != 0 {
                return Err(internal_bad(format!(
                    "repeated {}",
                    String::from_utf8_lossy(key)
                )));
            }
            seen |= bit;
            match key {
                STATUS => {
                    let n = parse_decimal(value)
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| internal_bad(":status is not a number"))?;
                    head.code = Some(Code::from_u32(n));
                }
                MESSAGE => head.message = block.slice_ref(value),
                DETAILS => head.details = block.slice_ref(value),
                REFUSED => head.refused = value == b"1",
                _ => {}
            }
        } else {
            metadata::push_wire_entry(&mut head.metadata, &block, key, value)
                .map_err(internal_bad)?;
        }
    }
    Ok(head)
}

fn internal_bad(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("malformed response metadata: {e}"))
}

fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Encodes a client's opening HEADERS frame. `payload` is the first (and for
/// unary calls only) message. Fails with `ResourceExhausted` when the metadata
/// block would exceed `max_metadata`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn put_request_headers(
    wb: &mut WriteBuf,
    stream_id: u32,
    method: &Method,
    timeout: Option<Duration>,
    metadata: &MetadataMap,
    payload: Option<&Payload>,
    end_stream: bool,
    max_metadata: usize,
) -> Result<(), Status> {
    let mut num = [0u8; 20];
    let timeout_digits =
        timeout.map(|t| decimal(t.as_micros().min(u64::MAX as u128) as u64, &mut num));
    let mut meta_len = entry_len(PATH.len(), method.as_bytes().len()) + metadata.encoded_len();
    if let Some(d) = timeout_digits {
        meta_len += entry_len(TIMEOUT.len(), d.len());
    }
    if meta_len > max_metadata {
        return Err(Status::resource_exhausted(format!(
            "request metadata of {meta_len} bytes exceeds the limit of {max_metadata} bytes"
        )));
    }
    let flags = Flags::NONE
        .with_if(Flags::END_STREAM, end_stream)
        .with_if(Flags::MESSAGE, payload.is_some())
        .with_if(Flags::COMPRESSED, payload.is_some_and(|p| p.compressed));
    let payload_len = payload.map_or(0, |p| p.len());
    wb.put(|b| {
        b.reserve(HEADER_LEN + meta_len);
        put_header(
            b,
            FrameType::Headers,
            flags,
            stream_id,
            meta_len,
            payload_len,
        );
        encode_entry(b, PATH, method.as_bytes());
        if let Some(d) = timeout_digits {
            encode_entry(b, TIMEOUT, d);
        }
        metadata.encode(b);
    });
    if let Some(p) = payload {
        wb.put_payload(&p.bytes);
    }
    Ok(())
}

/// Encodes a DATA frame carrying one message.
pub(crate) fn put_data(wb: &mut WriteBuf, stream_id: u32, payload: &Payload, end_stream: bool) {
    let flags = Flags::NONE
        .with_if(Flags::END_STREAM, end_stream)
        .with_if(Flags::COMPRESSED, payload.compressed);
    wb.put(|b| put_header(b, FrameType::Data, flags, stream_id, 0, payload.len()));
    wb.put_payload(&payload.bytes);
}

/// Encodes a server's HEADERS frame: response metadata, optionally a message,
/// and when `status` is given also the end of the stream (headers, message and
/// trailers in one frame — the unary fast path).
///
/// If the block would exceed `max_metadata` (the peer's limit), the metadata is
/// dropped and the status replaced by `Internal`, so the caller still learns
/// what happened.
pub(crate) fn put_response_headers(
    wb: &mut WriteBuf,
    stream_id: u32,
    metadata: &MetadataMap,
    payload: Option<&Payload>,
    status: Option<&Status>,
    max_metadata: usize,
) {
    let fallback;
    let mut metadata = metadata;
    let mut status = status;
    let mut payload = payload;
    let empty = MetadataMap::new();
    // The usual end of a unary call is a constant block.
    let plain = plain_ok_block(metadata, status).filter(|b| b.len() <= max_metadata);
    let mut meta_len = plain.map_or_else(|| response_block_len(metadata, status), <[u8]>::len);
    if meta_len > max_metadata {
        fallback = Status::internal(format!(
            "response metadata of {meta_len} bytes exceeds the peer's limit of {max_metadata} bytes"
        ));
        metadata = &empty;
        status = Some(&fallback);
        payload = None;
        meta_len = response_block_len(metadata, status);
    }
    let flags = Flags::NONE
        .with_if(Flags::END_STREAM, status.is_some())
        .with_if(Flags::MESSAGE, payload.is_some())
        .with_if(Flags::COMPRESSED, payload.is_some_and(|p| p.compressed));
    let payload_len = payload.map_or(0, |p| p.len());
    wb.put(|b| {
        b.reserve(HEADER_LEN + meta_len);
        b.extend_from_slice(&header_bytes(
            FrameType::Headers,
            flags,
            stream_id,
            meta_len,
            payload_len,
        ));
        match plain {
            Some(block) => b.extend_from_slice(block),
            None => {
                put_status_entries(b, status);
                metadata.encode(b);
            }
        }
    });
    if let Some(p) = payload {
        wb.put_payload(&p.bytes);
    }
}

/// `:status` 0: a successful end, with no other entry.
const OK_BLOCK: &[u8] = b"\x07:status\x010";
/// The same with `trpc-codec: proto`.
const OK_PROTO_BLOCK: &[u8] = b"\x07:status\x010\x0atrpc-codec\x05proto";
/// The same with `trpc-codec: json`.
const OK_JSON_BLOCK: &[u8] = b"\x07:status\x010\x0atrpc-codec\x04json";

/// The block of the usual end of a unary call (`:status` 0, no text, no
/// metadata but a built-in codec's name), encoded once at compile time.
fn plain_ok_block(metadata: &MetadataMap, status: Option<&Status>) -> Option<&'static [u8]> {
    let s = status?;
    if s.code() != Code::Ok
        || !s.message().is_empty()
        || !s.details().is_empty()
        || s.is_refused()
        || !s.metadata().is_empty()
    {
        return None;
    }
    match metadata.codec_only()? {
        None => Some(OK_BLOCK),
        Some(b"proto") => Some(OK_PROTO_BLOCK),
        Some(b"json") => Some(OK_JSON_BLOCK),
        Some(_) => None,
    }
}

/// Encodes a TRAILERS frame ending a stream with `status` (server) or just
/// half-closing it (client, `status` = None).
pub(crate) fn put_trailers(
    wb: &mut WriteBuf,
    stream_id: u32,
    status: Option<&Status>,
    max_metadata: usize,
) {
    let empty = MetadataMap::new();
    let fallback;
    let mut status = status;
    let mut meta_len = response_block_len(&empty, status);
    if meta_len > max_metadata {
        fallback = Status::internal(format!(
            "trailers of {meta_len} bytes exceed the peer's limit of {max_metadata} bytes"
        ));
        status = Some(&fallback);
        meta_len = response_block_len(&empty, status);
    }
    wb.put(|b| {
        put_header(
            b,
            FrameType::Trailers,
            Flags::END_STREAM,
            stream_id,
            meta_len,
            0,
        );
        put_status_entries(b, status);
    });
}

/// The status message as sent: at most `MAX_STATUS_MESSAGE` bytes, cut at a
/// character boundary so the receiver still sees valid UTF-8.
fn status_message(s: &Status) -> &[u8] {
    let m = s.message();
    let mut end = m.len().min(MAX_STATUS_MESSAGE);
    while !m.is_char_boundary(end) {
        end -= 1;
    }
    &m.as_bytes()[..end]
}

fn response_block_len(metadata: &MetadataMap, status: Option<&Status>) -> usize {
    let mut n = metadata.encoded_len();
    if let Some(s) = status {
        let mut num = [0u8; 20];
        n += entry_len(STATUS.len(), decimal(s.code() as u64, &mut num).len());
        if !s.message().is_empty() {
            n += entry_len(MESSAGE.len(), status_message(s).len());
        }
        if !s.details().is_empty() {
            n += entry_len(DETAILS.len(), s.details().len());
        }
        if s.is_refused() {
            n += entry_len(REFUSED.len(), 1);
        }
        n += s.metadata().encoded_len();
    }
    n
}

fn put_status_entries(b: &mut BytesMut, status: Option<&Status>) {
    if let Some(s) = status {
        let mut num = [0u8; 20];
        encode_entry(b, STATUS, decimal(s.code() as u64, &mut num));
        if !s.message().is_empty() {
            encode_entry(b, MESSAGE, status_message(s));
        }
        if !s.details().is_empty() {
            encode_entry(b, DETAILS, s.details());
        }
        if s.is_refused() {
            encode_entry(b, REFUSED, b"1");
        }
        s.metadata().encode(b);
    }
}

/// Encodes a CANCEL frame.
pub(crate) fn put_cancel(wb: &mut WriteBuf, stream_id: u32, code: Code) {
    wb.put(|b| crate::frame::put_cancel(b, stream_id, code));
}

/// Reads the status code of a CANCEL payload (CANCELLED when absent).
pub(crate) fn cancel_code(payload: &[u8]) -> Code {
    match payload.get(..4) {
        Some(b) => Code::from_u32(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => Code::Cancelled,
    }
}

/// Reads a WINDOW_UPDATE increment.
pub(crate) fn window_increment(payload: &[u8]) -> Option<u32> {
    let b = payload.get(..4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Decoded, FrameCodec};
    use tokio_util::codec::Decoder;

    fn drain(wb: &mut WriteBuf) -> BytesMut {
        let mut out: Vec<u8> = Vec::new();
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(wb
            .poll_flush(std::pin::Pin::new(&mut out), &mut cx)
            .is_ready());
        BytesMut::from(&out[..])
    }

    #[test]
    fn the_plain_ok_block_is_what_the_general_encoder_writes() {
        let payload = Payload {
            bytes: Bytes::from_static(b"hello"),
            compressed: false,
        };
        let ok = Status::new(Code::Ok, "");
        for codec in [None, Some("proto"), Some("json"), Some("custom")] {
            for message in [None, Some(&payload)] {
                let mut metadata = MetadataMap::new();
                metadata.set_codec(codec);
                let mut fast = WriteBuf::new();
                put_response_headers(&mut fast, 7, &metadata, message, Some(&ok), 1 << 20);
                // The same frame with its entries encoded one by one.
                let mut block = BytesMut::new();
                put_status_entries(&mut block, Some(&ok));
                metadata.encode(&mut block);
                let mut general = WriteBuf::new();
                general.put(|b| {
                    let flags = Flags::END_STREAM.with_if(Flags::MESSAGE, message.is_some());
                    let len = message.map_or(0, |p| p.len());
                    put_header(b, FrameType::Headers, flags, 7, block.len(), len);
                    b.extend_from_slice(&block);
                });
                if let Some(p) = message {
                    general.put_payload(&p.bytes);
                }
                assert_eq!(
                    drain(&mut fast),
                    drain(&mut general),
                    "{codec:?} {message:?}"
                );
                assert_eq!(
                    plain_ok_block(&metadata, Some(&ok)).is_some(),
                    codec != Some("custom")
                );
                if let Some(block) = plain_ok_block(&metadata, Some(&ok)) {
                    // Decoded whole, it reads as the entries do one by one.
                    let head = decode_response_head(Bytes::from_static(block)).unwrap();
                    assert_eq!(head.code, Some(Code::Ok));
                    assert_eq!(head.metadata, metadata);
                    let mut entries = BlockIter::new(block).map(Result::unwrap);
                    assert_eq!(entries.next(), Some((STATUS, &b"0"[..])));
                    assert_eq!(
                        entries.next().map(|(k, v)| (k.to_vec(), v.to_vec())),
                        codec.map(|c| (b"trpc-codec".to_vec(), c.as_bytes().to_vec()))
                    );
                }
            }
        }
        // Anything more takes the general path.
        let mut metadata = MetadataMap::new();
        metadata.insert("k", "v");
        assert!(plain_ok_block(&metadata, Some(&ok)).is_none());
        let md = MetadataMap::new();
        assert!(plain_ok_block(&md, Some(&Status::new(Code::Ok, "fine"))).is_none());
        assert!(plain_ok_block(&md, Some(&Status::internal("x"))).is_none());
        assert!(plain_ok_block(&md, None).is_none());
    }

    #[test]
    fn decimal_pseudo_headers() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"1500000"), Some(1_500_000));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"+5",
            b"-1",
            b"1.5",
            b" 1",
            b"1a",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn repeated_pseudo_headers_are_malformed() {
        use crate::metadata::encode_entry;
        let block = |entries: &[(&[u8], &[u8])]| {
            let mut b = BytesMut::new();
            for (k, v) in entries {
                encode_entry(&mut b, k, v);
            }
            b.freeze()
        };
        let twice_path = block(&[(PATH, b"a.B/C"), (PATH, b"a.B/D")]);
        let e = decode_request_head(twice_path).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("repeated :path"), "{e:?}");
        let twice_timeout = block(&[(PATH, b"a.B/C"), (TIMEOUT, b"5"), (TIMEOUT, b"9")]);
        assert!(decode_request_head(twice_timeout).is_err());
        let twice_status = block(&[(STATUS, b"0"), (STATUS, b"7")]);
        assert_eq!(
            decode_response_head(twice_status).unwrap_err().code(),
            Code::Internal
        );
        // An unknown pseudo-header may repeat: it is ignored.
        let unknown = block(&[(PATH, b"a.B/C"), (b":x", b"1"), (b":x", b"2")]);
        assert!(decode_request_head(unknown).is_ok());
    }

    #[test]
    fn request_headers_round_trip() {
        let mut md = MetadataMap::new();
        md.insert("x-a", "1");
        let mut wb = WriteBuf::new();
        put_request_headers(
            &mut wb,
            5,
            &Method::from_static("pkg.S/M"),
            Some(Duration::from_millis(1500)),
            &md,
            Some(&Payload::new("body")),
            true,
            16 * 1024,
        )
        .unwrap();
        let mut bytes = drain(&mut wb);
        let Some(Decoded::Frame(f)) = FrameCodec::new().decode(&mut bytes).unwrap() else {
            panic!("no frame")
        };
        assert_eq!(f.stream_id(), 5);
        assert!(f.flags().contains(Flags::END_STREAM.with(Flags::MESSAGE)));
        assert_eq!(f.payload, "body");
        let mut head = decode_request_head(f.metadata).unwrap();
        assert_eq!(head.method.as_str(), "pkg.S/M");
        assert_eq!(head.timeout, Some(Duration::from_millis(1500)));
        assert!(head.metadata.is_empty(), "the entries come apart");
        head.entries.unwrap().add_to(&mut head.metadata);
        assert_eq!(head.metadata, md);
    }

    #[test]
    fn oversized_request_metadata_is_refused_locally() {
        let mut md = MetadataMap::new();
        md.try_insert("big", &"x".repeat(100)).unwrap();
        let mut wb = WriteBuf::new();
        let err = put_request_headers(
            &mut wb,
            1,
            &Method::from_static("a/b"),
            None,
            &md,
            None,
            true,
            64,
        )
        .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(wb.is_empty());
    }

    #[test]
    fn error_status_round_trips_with_details_and_trailers() {
        let mut trailers = MetadataMap::new();
        trailers.insert("retry-after", "3");
        let status = Status::unavailable("busy")
            .with_details(Bytes::from_static(b"\x00\x01"))
            .with_metadata(trailers.clone())
            .with_refused(true);
        let mut wb = WriteBuf::new();
        put_response_headers(
            &mut wb,
            9,
            &MetadataMap::new(),
            None,
            Some(&status),
            16 * 1024,
        );
        let mut bytes = drain(&mut wb);
        let Some(Decoded::Frame(f)) = FrameCodec::new().decode(&mut bytes).unwrap() else {
            panic!("no frame")
        };
        let back = decode_response_head(f.metadata).unwrap().into_status();
        assert_eq!(back.code(), Code::Unavailable);
        assert_eq!(back.message(), "busy");
        assert_eq!(&back.details()[..], b"\x00\x01");
        assert_eq!(back.metadata(), &trailers);
        assert!(back.is_refused());
    }

    #[test]
    fn long_status_messages_are_cut_at_a_character_boundary() {
        // 4095 ASCII bytes, then 'é' (2 bytes) straddling the 4 KiB limit.
        let message = format!("{}é and more", "x".repeat(MAX_STATUS_MESSAGE - 1));
        let mut wb = WriteBuf::new();
        put_trailers(&mut wb, 3, Some(&Status::internal(message)), 16 * 1024);
        let mut bytes = drain(&mut wb);
        let Some(Decoded::Frame(f)) = FrameCodec::new().decode(&mut bytes).unwrap() else {
            panic!("no frame")
        };
        let back = decode_response_head(f.metadata).unwrap().into_status();
        assert_eq!(back.code(), Code::Internal);
        assert_eq!(back.message(), "x".repeat(MAX_STATUS_MESSAGE - 1));
    }

    #[test]
    fn response_metadata_over_peer_limit_becomes_internal() {
        let mut md = MetadataMap::new();
        md.try_insert("big", &"x".repeat(500)).unwrap();
        let mut wb = WriteBuf::new();
        put_response_headers(
            &mut wb,
            1,
            &md,
            Some(&Payload::new("p")),
            Some(&Status::new(Code::Ok, "")),
            128,
        );
        let mut bytes = drain(&mut wb);
        let Some(Decoded::Frame(f)) = FrameCodec::new().decode(&mut bytes).unwrap() else {
            panic!("no frame")
        };
        assert!(f.payload.is_empty());
        let st = decode_response_head(f.metadata).unwrap().into_status();
        assert_eq!(st.code(), Code::Internal);
    }
}
