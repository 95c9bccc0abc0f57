//! Call metadata ↔ HTTP headers.
//!
//! Text entries are headers as they are; `-bin` entries are base64 (sent
//! unpadded, accepted either way). `trpc-encoding` and
//! `trpc-accept-encoding` travel as `grpc-encoding` and
//! `grpc-accept-encoding`; `trpc-codec` is the content type (set by the
//! caller). HTTP's own and connection-specific headers and gRPC's reserved
//! `grpc-*` headers never become metadata.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::status::{b64_decode, b64_encode};
use crate::metadata::{is_binary_key, MetadataMap};

pub(crate) const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
pub(crate) const GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");
pub(crate) const TRPC_ENCODING: &str = "trpc-encoding";
pub(crate) const TRPC_ACCEPT_ENCODING: &str = "trpc-accept-encoding";

/// Headers that belong to HTTP itself (or to the connection) and are never
/// call metadata.
fn is_http_header(name: &str) -> bool {
    matches!(
        name,
        "content-type"
            | "content-length"
            | "content-encoding"
            | "accept-encoding"
            | "te"
            | "host"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "expect"
            | "trailer"
            | "date"
    )
}

/// Appends the metadata in `headers` to `md`. Entries that are not valid
/// metadata (bad keys, bad base64, control characters) are skipped.
pub(crate) fn read(headers: &HeaderMap, md: &mut MetadataMap) {
    for (name, value) in headers {
        let key = name.as_str();
        let res = if key == "grpc-encoding" {
            text(value).map(|v| md.append(TRPC_ENCODING, v))
        } else if key == "grpc-accept-encoding" {
            text(value).map(|v| md.append(TRPC_ACCEPT_ENCODING, v))
        } else if key.starts_with("grpc-") || is_http_header(key) {
            continue;
        } else if is_binary_key(key.as_bytes()) {
            b64_decode(value.as_bytes()).map(|v| md.try_insert_bin(key, v))
        } else {
            text(value).map(|v| md.append(key, v))
        };
        match res {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                tracing::debug!(header = key, error = %e, "header is not valid metadata; skipped")
            }
            None => tracing::debug!(header = key, "header value is not valid metadata; skipped"),
        }
    }
}

fn text(v: &HeaderValue) -> Option<&str> {
    std::str::from_utf8(v.as_bytes()).ok()
}

/// Writes every entry of `md` (but `trpc-codec`) into `headers`.
pub(crate) fn write(md: &MetadataMap, headers: &mut HeaderMap) {
    for (key, value) in md.iter() {
        let (name, value) = match key {
            "trpc-codec" => continue,
            TRPC_ENCODING => (GRPC_ENCODING, HeaderValue::from_bytes(value)),
            TRPC_ACCEPT_ENCODING => (GRPC_ACCEPT_ENCODING, HeaderValue::from_bytes(value)),
            k if k.starts_with("grpc-") || is_http_header(k) => continue,
            k => {
                let Ok(name) = HeaderName::from_bytes(k.as_bytes()) else {
                    continue;
                };
                let value = if is_binary_key(k.as_bytes()) {
                    HeaderValue::from_maybe_shared(bytes::Bytes::from(b64_encode(value)))
                } else {
                    HeaderValue::from_bytes(value)
                };
                (name, value)
            }
        };
        match value {
            Ok(v) => {
                headers.append(name, v);
            }
            Err(_) => tracing::debug!(key, "metadata value is not a valid header value; not sent"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_through_headers_and_reserved_names_stay_out() {
        let mut md = MetadataMap::new();
        md.insert("x-user", "alice");
        md.append("x-multi", "1").unwrap();
        md.append("x-multi", "2").unwrap();
        md.insert_bin("x-blob-bin", vec![0u8, 1, 2, 254]);
        md.insert("trpc-encoding", "gzip");
        md.insert("content-type", "nope");
        md.insert("grpc-status", "0");
        crate::codec::set_codec_name(&mut md, "proto");
        let mut h = HeaderMap::new();
        write(&md, &mut h);
        assert_eq!(h.get("grpc-encoding").unwrap(), "gzip");
        assert!(h.get("content-type").is_none() && h.get("grpc-status").is_none());
        assert!(h.get("trpc-codec").is_none());
        assert_eq!(h.get("x-blob-bin").unwrap(), "AAEC/g");
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("grpc-timeout", HeaderValue::from_static("1S"));
        let mut back = MetadataMap::new();
        read(&h, &mut back);
        assert_eq!(back.get("x-user"), Some("alice"));
        assert_eq!(back.get_all("x-multi").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(&back.get_bin("x-blob-bin").unwrap()[..], &[0, 1, 2, 254]);
        assert_eq!(back.get("trpc-encoding"), Some("gzip"));
        assert!(!back.contains_key("te") && !back.contains_key("grpc-timeout"));
    }
}
