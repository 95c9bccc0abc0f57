//! Compressing and decompressing one message, and choosing the response
//! encoding.

use trpc::{MetadataMap, Payload, Status};

use super::codec::{compress, decompress, Encoding, EncodingSet};
use super::error::UnsupportedEncoding;
use super::layer::Config;
use super::ENCODING;
use crate::Side;

/// The encoding a peer named for its compressed messages.
#[derive(Clone, Debug)]
pub(crate) enum PeerEncoding {
    Known(Encoding),
    Unknown(Option<Box<str>>),
}

impl PeerEncoding {
    pub(crate) fn from_metadata(md: &MetadataMap, accept: EncodingSet) -> PeerEncoding {
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
pub(crate) fn compress_payload(p: Payload, enc: Encoding, cfg: &Config) -> Payload {
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
pub(crate) fn decompress_payload(
    p: Payload,
    peer: &PeerEncoding,
    cfg: &Config,
) -> Result<Payload, Status> {
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
pub(crate) fn choose(
    cfg: &Config,
    accepted: EncodingSet,
    requested: Option<Encoding>,
) -> Option<Encoding> {
    let preferred = cfg.send?;
    [Some(preferred), requested]
        .into_iter()
        .flatten()
        .chain(cfg.accept.iter())
        .find(|e| accepted.contains(*e) && (cfg.accept.contains(*e) || *e == preferred))
}
