//! [`CompressionLayer`]: what a side compresses, and how.

use tower_layer::Layer;
use trpc::metadata::MetadataValue;

use super::codec::{Encoding, EncodingSet, Level};
use super::Compression;
use crate::Side;

/// Compression settings shared by a layer and its services.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) side: Side,
    pub(crate) send: Option<Encoding>,
    pub(crate) accept: EncodingSet,
    pub(crate) min_size: usize,
    pub(crate) level: Level,
    pub(crate) max_decompressed: usize,
}

/// Applies [`Compression`]; see the [module docs](super).
#[derive(Clone, Debug)]
pub struct CompressionLayer {
    pub(super) config: Config,
    pub(super) accept_header: MetadataValue,
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

/// The `trpc-accept-encoding` value for a list of encoding names (ASCII).
fn header_value(names: String) -> MetadataValue {
    MetadataValue::try_from(names).unwrap_or_else(|_| MetadataValue::from_static(""))
}
