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
#[cfg(test)]
mod tests;

pub use codec::{Encoding, Level};

use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;
use trpc::metadata::MetadataValue;
use trpc::{Body, BoxError, MetadataMap, Payload, Request, Response, Status};

use self::codec::{compress, decompress, EncodingSet};
use self::error::UnsupportedEncoding;
use self::future::ResponseFuture;

/// The metadata key naming the encoding of a side's compressed messages.
pub const ENCODING: &str = "trpc-encoding";
/// The metadata key listing the encodings a side can decompress.
pub const ACCEPT_ENCODING: &str = "trpc-accept-encoding";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

/// Compression settings shared by a layer and its services.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    side: Side,
    send: Option<Encoding>,
    accept: EncodingSet,
    min_size: usize,
    level: Level,
    max_decompressed: usize,
}

/// Applies [`Compression`]; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct CompressionLayer {
    config: Config,
    accept_header: MetadataValue,
}

impl CompressionLayer {
    fn new(side: Side) -> Self {
        let accept = EncodingSet::all();
        CompressionLayer {
            config: Config {
                side,
                send: Encoding::ALL.first().copied(),
                accept,
                min_size: 1024,
                level: Level::Default,
                max_decompressed: 4 * 1024 * 1024,
            },
            accept_header: header_value(accept.header()),
        }
    }

    /// For client stacks: compresses requests, decompresses responses.
    pub fn client() -> Self {
        CompressionLayer::new(Side::Client)
    }

    /// For server stacks: decompresses requests, compresses responses with an
    /// encoding the client accepts.
    pub fn server() -> Self {
        CompressionLayer::new(Side::Server)
    }

    /// The encoding of outgoing messages (default: gzip, or the first one
    /// compiled in). On a server it is the preferred one, used when the client
    /// accepts it.
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.config.send = Some(encoding);
        self
    }

    /// Sends everything uncompressed; incoming messages are still decompressed.
    pub fn decompress_only(mut self) -> Self {
        self.config.send = None;
        self
    }

    /// The encodings this side decompresses and announces (default: all
    /// compiled in).
    pub fn accept(mut self, encodings: impl IntoIterator<Item = Encoding>) -> Self {
        self.config.accept = EncodingSet::of(encodings);
        self.accept_header = header_value(self.config.accept.header());
        self
    }

    /// Messages smaller than `bytes` are sent uncompressed (default 1024).
    pub fn min_size(mut self, bytes: usize) -> Self {
        self.config.min_size = bytes;
        self
    }

    /// The compression level (default [`Level::Default`]).
    pub fn level(mut self, level: Level) -> Self {
        self.config.level = level;
        self
    }

    /// The largest message this side decompresses (default 4 MiB).
    pub fn max_decompressed_size(mut self, bytes: usize) -> Self {
        self.config.max_decompressed = bytes;
        self
    }
}

impl<S> Layer<S> for CompressionLayer {
    type Service = Compression<S>;

    fn layer(&self, inner: S) -> Compression<S> {
        Compression::new(inner, self.clone())
    }
}

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

/// The encoding a peer named for its compressed messages.
#[derive(Clone, Debug)]
pub(crate) enum PeerEncoding {
    Known(Encoding),
    Unknown(Option<Box<str>>),
}

impl PeerEncoding {
    fn from_metadata(md: &MetadataMap, accept: EncodingSet) -> PeerEncoding {
        match md.get(ENCODING) {
            Some(name) => match Encoding::parse(name) {
                Some(e) if accept.contains(e) => PeerEncoding::Known(e),
                _ => PeerEncoding::Unknown(Some(name.into())),
            },
            None => PeerEncoding::Unknown(None),
        }
    }
}

/// Compresses `p` if it is worth it.
fn compress_payload(p: Payload, enc: Encoding, cfg: &Config) -> Payload {
    if p.compressed || p.len() < cfg.min_size {
        return p;
    }
    match compress(enc, cfg.level, &p.bytes) {
        Ok(c) if c.len() < p.len() => Payload {
            bytes: c,
            compressed: true,
        },
        Ok(_) => p,
        Err(e) => {
            tracing::debug!(encoding = %enc, error = %e, "compression failed; sending uncompressed");
            p
        }
    }
}

/// Decompresses `p` if it is compressed, mapping failures to the status this
/// side reports.
fn decompress_payload(p: Payload, peer: &PeerEncoding, cfg: &Config) -> Result<Payload, Status> {
    if !p.compressed {
        return Ok(p);
    }
    let enc = match peer {
        PeerEncoding::Known(e) => *e,
        PeerEncoding::Unknown(name) => {
            let err = UnsupportedEncoding::new(name.as_deref());
            let status = match cfg.side {
                Side::Server => Status::unimplemented(format!(
                    "{err}: this server decompresses {}",
                    cfg.accept.header()
                )),
                Side::Client => Status::internal(format!("response: {err}")),
            };
            return Err(status.with_source(err));
        }
    };
    match decompress(enc, &p.bytes, cfg.max_decompressed) {
        Ok(bytes) => Ok(Payload {
            bytes,
            compressed: false,
        }),
        Err(e) => {
            let status = if e.is_too_large() {
                Status::resource_exhausted(e.to_string())
            } else {
                match cfg.side {
                    Side::Server => Status::invalid_argument(format!("request: {e}")),
                    Side::Client => Status::internal(format!("response: {e}")),
                }
            };
            Err(status.with_source(e))
        }
    }
}

/// The response encoding a server uses for a client that accepts `accepted`.
fn choose(cfg: &Config, accepted: EncodingSet, requested: Option<Encoding>) -> Option<Encoding> {
    let preferred = cfg.send?;
    [Some(preferred), requested]
        .into_iter()
        .flatten()
        .chain(cfg.accept.iter())
        .find(|e| accepted.contains(*e) && (cfg.accept.contains(*e) || *e == preferred))
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

/// The `trpc-accept-encoding` value for a list of encoding names (ASCII).
fn header_value(names: String) -> MetadataValue {
    MetadataValue::try_from(names).unwrap_or_else(|_| MetadataValue::from_static(""))
}
