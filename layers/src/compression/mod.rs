//! Per-message compression: [`CompressionLayer`] compresses outgoing messages
//! and decompresses incoming ones, in both directions, on clients and servers.
//!
//! On the wire (docs/PROTOCOL.md §2.1, §4.2) every message has its own
//! COMPRESSED flag ([`Payload::compressed`]); the sender names its encoding in
//! `trpc-encoding` and lists what it can decompress in `trpc-accept-encoding`.
//!
//! * **Client**: compresses request messages of at least `min_size` bytes
//!   (default 1 KiB) with its encoding (default gzip) and sends
//!   `trpc-accept-encoding`; decompresses compressed response messages.
//! * **Server**: decompresses request messages; compresses response messages
//!   only with an encoding the client accepts (its preferred encoding, else
//!   the one the client used, else any other the client accepts), so an old
//!   client that sent no `trpc-accept-encoding` never gets a compressed reply.
//!
//! A message that does not shrink is sent uncompressed. Streams are handled
//! message by message (nothing is buffered). Decompressed messages are limited
//! to `max_decompressed_size` (default 4 MiB, like the default message limit)
//! so a small message cannot expand into gigabytes: `RESOURCE_EXHAUSTED`.
//! A corrupt message fails the call: `INVALID_ARGUMENT` on the server (the
//! client sent garbage), `INTERNAL` on the client; an encoding this side
//! cannot decompress is `UNIMPLEMENTED` on the server (as PROTOCOL.md §8 says)
//! and `INTERNAL` on the client.
//!
//! Cargo features: `gzip` (flate2), `snappy` (snap, raw block format), `zstd`.
//!
//! ```
//! use tower::ServiceBuilder;
//! use trpc_layers::compression::{CompressionLayer, Encoding, Level};
//!
//! # #[cfg(feature = "zstd")]
//! # fn wrap<S>(channel: S) -> impl Sized {
//! let stack = ServiceBuilder::new()
//!     .layer(CompressionLayer::client().encoding(Encoding::Zstd).level(Level::Fastest).min_size(512))
//!     .service(channel);
//! # stack }
//! ```
//!
//! [`Payload::compressed`]: trpc::Payload::compressed

mod codec;
pub mod error;
pub mod future;
mod layer;
mod message;
#[cfg(test)]
mod tests;

pub use codec::{Encoding, Level};
pub use layer::CompressionLayer;

use std::task::{Context, Poll};

use tower_service::Service;
use trpc::metadata::MetadataValue;
use trpc::{Body, BoxError, Request, Response};

use self::codec::EncodingSet;
use self::future::ResponseFuture;
use self::message::{choose, compress_payload, decompress_payload, PeerEncoding};
use crate::Side;

/// The metadata key naming the encoding of a side's compressed messages.
pub const ENCODING: &str = "trpc-encoding";
/// The metadata key listing the encodings a side can decompress.
pub const ACCEPT_ENCODING: &str = "trpc-accept-encoding";

/// Compresses and decompresses messages; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Compression<S> {
    inner: S,
    layer: CompressionLayer,
}

impl<S> Compression<S> {
    /// Wraps `inner` with the settings of `layer`.
    pub fn new(inner: S, layer: CompressionLayer) -> Self {
        Compression { inner, layer }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<Request<Body>> for Compression<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let cfg = self.layer.config;
        match cfg.side {
            Side::Client => {
                let (mut parts, body) = req.into_parts();
                parts
                    .metadata
                    .insert_value(ACCEPT_ENCODING, self.layer.accept_header.clone());
                let body = match cfg.send {
                    Some(enc) => {
                        match body.map_payloads(move |p| Ok(compress_payload(p, enc, &cfg))) {
                            Ok(body) => {
                                if body.is_stream() || body.as_once().is_some_and(|p| p.compressed)
                                {
                                    parts.metadata.insert_value(
                                        ENCODING,
                                        MetadataValue::from_static(enc.as_str()),
                                    );
                                }
                                body
                            }
                            Err(status) => return ResponseFuture::failed(status),
                        }
                    }
                    None => body,
                };
                ResponseFuture::called(self.inner.call(Request::from_parts(parts, body)), cfg, None)
            }
            Side::Server => {
                let (parts, body) = req.into_parts();
                let peer = PeerEncoding::from_metadata(&parts.metadata, cfg.accept);
                let requested = match &peer {
                    PeerEncoding::Known(e) => Some(*e),
                    PeerEncoding::Unknown(_) => None,
                };
                let body = match body.map_payloads(move |p| decompress_payload(p, &peer, &cfg)) {
                    Ok(b) => b,
                    Err(status) => return ResponseFuture::failed(status),
                };
                let accepted = parts.metadata.get(ACCEPT_ENCODING).map(EncodingSet::parse);
                let respond_with = accepted.and_then(|a| choose(&cfg, a, requested));
                let announce = accepted.is_some().then(|| self.layer.accept_header.clone());
                ResponseFuture::called(
                    self.inner.call(Request::from_parts(parts, body)),
                    cfg,
                    Some((respond_with, announce)),
                )
            }
        }
    }
}
