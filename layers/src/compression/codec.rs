//! The compression algorithms: [`Encoding`] and bounded decompression.

use std::fmt;
use std::io;

use bytes::Bytes;

use super::error::DecompressError;

/// A compression algorithm, named on the wire in `trpc-encoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encoding {
    /// `gzip` (flate2).
    #[cfg(feature = "gzip")]
    Gzip,
    /// `snappy`: the raw (block) snappy format, one block per message (snap).
    #[cfg(feature = "snappy")]
    Snappy,
    /// `zstd`: one zstd frame per message.
    #[cfg(feature = "zstd")]
    Zstd,
}

impl Encoding {
    /// Every encoding compiled in, in the default order of preference.
    pub const ALL: &'static [Encoding] = &[
        #[cfg(feature = "gzip")]
        Encoding::Gzip,
        #[cfg(feature = "zstd")]
        Encoding::Zstd,
        #[cfg(feature = "snappy")]
        Encoding::Snappy,
    ];

    /// The name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            #[cfg(feature = "gzip")]
            Encoding::Gzip => "gzip",
            #[cfg(feature = "snappy")]
            Encoding::Snappy => "snappy",
            #[cfg(feature = "zstd")]
            Encoding::Zstd => "zstd",
        }
    }

    /// The encoding called `name` (ASCII case-insensitive), if compiled in.
    pub fn parse(name: &str) -> Option<Encoding> {
        let name = name.trim();
        Encoding::ALL
            .iter()
            .copied()
            .find(|e| e.as_str().eq_ignore_ascii_case(name))
    }

    const fn bit(self) -> u8 {
        match self {
            #[cfg(feature = "gzip")]
            Encoding::Gzip => 1,
            #[cfg(feature = "snappy")]
            Encoding::Snappy => 2,
            #[cfg(feature = "zstd")]
            Encoding::Zstd => 4,
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How hard to compress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Level {
    /// Fastest (gzip 1, zstd 1).
    Fastest,
    /// A balance (gzip 6, zstd 3). The default.
    #[default]
    Default,
    /// Smallest output (gzip 9, zstd 19).
    Best,
}

/// A set of encodings (a bit per encoding).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct EncodingSet(u8);

impl EncodingSet {
    pub(crate) fn all() -> EncodingSet {
        EncodingSet::of(Encoding::ALL.iter().copied())
    }

    pub(crate) fn of(encodings: impl IntoIterator<Item = Encoding>) -> EncodingSet {
        EncodingSet(encodings.into_iter().fold(0, |b, e| b | e.bit()))
    }

    /// The encodings named in a comma-separated list (unknown names ignored).
    pub(crate) fn parse(list: &str) -> EncodingSet {
        EncodingSet::of(list.split(',').filter_map(Encoding::parse))
    }

    pub(crate) fn contains(self, e: Encoding) -> bool {
        self.0 & e.bit() != 0
    }

    pub(crate) fn iter(self) -> impl Iterator<Item = Encoding> {
        Encoding::ALL
            .iter()
            .copied()
            .filter(move |e| self.contains(*e))
    }

    /// `gzip,zstd,snappy`: the `trpc-accept-encoding` value.
    pub(crate) fn header(self) -> String {
        self.iter()
            .map(Encoding::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl fmt::Debug for EncodingSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Compresses `src`.
#[allow(unused_variables)]
pub(crate) fn compress(enc: Encoding, level: Level, src: &[u8]) -> io::Result<Bytes> {
    match enc {
        #[cfg(feature = "gzip")]
        Encoding::Gzip => {
            use std::io::Write;
            let level = match level {
                Level::Fastest => flate2::Compression::fast(),
                Level::Default => flate2::Compression::default(),
                Level::Best => flate2::Compression::best(),
            };
            let mut enc =
                flate2::write::GzEncoder::new(Vec::with_capacity(src.len() / 4 + 64), level);
            enc.write_all(src)?;
            Ok(enc.finish()?.into())
        }
        #[cfg(feature = "snappy")]
        Encoding::Snappy => snap::raw::Encoder::new()
            .compress_vec(src)
            .map(Bytes::from)
            .map_err(io::Error::other),
        #[cfg(feature = "zstd")]
        Encoding::Zstd => {
            let level = match level {
                Level::Fastest => 1,
                Level::Default => 3,
                Level::Best => 19,
            };
            zstd::bulk::compress(src, level).map(Bytes::from)
        }
    }
}

/// Decompresses `src`, failing once the output would exceed `limit` bytes
/// (a small compressed message must not expand into gigabytes).
#[allow(unused_variables)]
pub(crate) fn decompress(
    enc: Encoding,
    src: &[u8],
    limit: usize,
) -> Result<Bytes, DecompressError> {
    match enc {
        #[cfg(feature = "gzip")]
        Encoding::Gzip => read_bounded(flate2::read::GzDecoder::new(src), enc, limit),
        #[cfg(feature = "snappy")]
        Encoding::Snappy => {
            let len = snap::raw::decompress_len(src)
                .map_err(|e| DecompressError::corrupt(enc, io::Error::other(e)))?;
            if len > limit {
                return Err(DecompressError::too_large(enc, limit));
            }
            snap::raw::Decoder::new()
                .decompress_vec(src)
                .map(Bytes::from)
                .map_err(|e| DecompressError::corrupt(enc, io::Error::other(e)))
        }
        #[cfg(feature = "zstd")]
        Encoding::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(src)
                .map_err(|e| DecompressError::corrupt(enc, e))?;
            read_bounded(decoder, enc, limit)
        }
    }
}

#[cfg(any(feature = "gzip", feature = "zstd"))]
fn read_bounded(r: impl io::Read, enc: Encoding, limit: usize) -> Result<Bytes, DecompressError> {
    use std::io::Read;
    let mut out = Vec::new();
    r.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecompressError::corrupt(enc, e))?;
    if out.len() > limit {
        return Err(DecompressError::too_large(enc, limit));
    }
    Ok(out.into())
}
