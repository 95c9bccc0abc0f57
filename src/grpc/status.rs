//! gRPC status on the wire: `grpc-status` (the code as decimal),
//! `grpc-message` (percent-encoded UTF-8) and `grpc-status-details-bin`
//! (base64 of the status details), plus the trailing metadata of a
//! [`Status`], in trailers or in a trailers-only response.

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::metadata;
use crate::metadata::MetadataMap;
use crate::status::{Code, Status};

pub(crate) const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub(crate) const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
pub(crate) const GRPC_DETAILS: HeaderName = HeaderName::from_static("grpc-status-details-bin");

/// `grpc-status` values, by code.
const CODES: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
];

/// The `grpc-status` value of `code`.
pub(crate) fn code_value(code: Code) -> HeaderValue {
    HeaderValue::from_static(CODES[code as usize])
}

/// Percent-encodes a status message as gRPC asks: every byte outside
/// printable ASCII (0x20..=0x7E), and `%` itself, becomes `%XX`.
pub(crate) fn percent_encode(msg: &str) -> HeaderValue {
    let plain = |b: u8| (0x20..=0x7e).contains(&b) && b != b'%';
    if msg.bytes().all(plain) {
        return HeaderValue::from_str(msg).unwrap_or_else(|_| HeaderValue::from_static(""));
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(msg.len() * 3);
    for b in msg.bytes() {
        if plain(b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Decodes a percent-encoded message; malformed escapes are kept as they are
/// and invalid UTF-8 is replaced (the message is for humans).
pub(crate) fn percent_decode(v: &[u8]) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' && i + 2 < v.len() {
            if let (Some(h), Some(l)) = (hex(v[i + 1]), hex(v[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// base64 for `-bin` values: sent without padding, accepted with or without.
pub(crate) fn b64_encode(v: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(v)
}

/// Decodes a `-bin` value (padded or not).
pub(crate) fn b64_decode(v: &[u8]) -> Option<Bytes> {
    let v = v
        .strip_suffix(b"==")
        .or_else(|| v.strip_suffix(b"="))
        .unwrap_or(v);
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(v)
        .ok()
        .map(Bytes::from)
}

/// Writes `status` (code, message, details and its trailing metadata) into
/// `headers`.
pub(crate) fn write(status: &Status, headers: &mut HeaderMap) {
    headers.insert(GRPC_STATUS, code_value(status.code()));
    if !status.message().is_empty() {
        headers.insert(GRPC_MESSAGE, percent_encode(status.message()));
    }
    if !status.details().is_empty() {
        if let Ok(v) = HeaderValue::from_str(&b64_encode(status.details())) {
            headers.insert(GRPC_DETAILS, v);
        }
    }
    metadata::write(status.metadata(), headers);
}

/// The status in `headers` (trailers, or the headers of a trailers-only
/// response), with the other entries as its trailing metadata; `None` when
/// there is no `grpc-status`.
pub(crate) fn read(headers: &HeaderMap) -> Option<Status> {
    let code = headers.get(&GRPC_STATUS)?;
    let code = match std::str::from_utf8(code.as_bytes())
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    {
        Some(n) => Code::from_u32(n),
        None => {
            return Some(Status::internal(format!(
                "malformed grpc-status {:?}",
                String::from_utf8_lossy(code.as_bytes())
            )))
        }
    };
    let message = headers
        .get(&GRPC_MESSAGE)
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    let mut status = Status::new(code, message);
    if let Some(details) = headers
        .get(&GRPC_DETAILS)
        .and_then(|v| b64_decode(v.as_bytes()))
    {
        status = status.with_details(details);
    }
    let mut md = MetadataMap::new();
    metadata::read(headers, &mut md);
    Some(status.with_metadata(md))
}

/// The code for an HTTP response that carries no `grpc-status` (gRPC's
/// mapping for responses from proxies and non-gRPC servers).
pub(crate) fn code_of_http(status: u16) -> Code {
    match status {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_percent_encoded_and_decoded() {
        let msg = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n 100%";
        let v = percent_encode(msg);
        assert!(v.as_bytes().iter().all(|b| (0x20..=0x7e).contains(b)));
        assert!(v.to_str().unwrap().contains("%E2%98%BA"));
        assert_eq!(percent_decode(v.as_bytes()), msg);
        assert_eq!(percent_encode("plain").as_bytes(), b"plain");
        assert_eq!(percent_decode(b"bad %zz %4"), "bad %zz %4");
    }

    #[test]
    fn a_status_round_trips_through_headers() {
        let mut md = MetadataMap::new();
        md.insert("x-trailer", "t");
        md.insert_bin("x-trailer-bin", vec![0u8, 255, 1]);
        let s = Status::not_found("no such ☃")
            .with_details(vec![1u8, 2, 3])
            .with_metadata(md);
        let mut h = HeaderMap::new();
        write(&s, &mut h);
        assert_eq!(h.get("grpc-status").unwrap(), "5");
        let back = read(&h).unwrap();
        assert_eq!(back.code(), Code::NotFound);
        assert_eq!(back.message(), "no such ☃");
        assert_eq!(&back.details()[..], &[1, 2, 3]);
        assert_eq!(back.metadata().get("x-trailer"), Some("t"));
        assert_eq!(
            back.metadata().get_bin("x-trailer-bin").map(|b| &b[..]),
            Some(&[0u8, 255, 1][..])
        );
        assert_eq!(b64_decode(b"AP8B").unwrap(), b64_decode(b"AP8B").unwrap());
        assert_eq!(&b64_decode(b"AQ==").unwrap()[..], &[1]);
    }
}
