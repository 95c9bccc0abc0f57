//! Error types of the compression layer. Each is the `source()` of the
//! [`Status`](trpc::Status) a call fails with.

use std::fmt;
use std::io;

use super::Encoding;

/// A compressed message could not be decompressed.
#[derive(Debug)]
pub struct DecompressError {
    encoding: Encoding,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Corrupt(io::Error),
    TooLarge(usize),
}

impl DecompressError {
    pub(crate) fn corrupt(encoding: Encoding, e: io::Error) -> Self {
        DecompressError {
            encoding,
            kind: Kind::Corrupt(e),
        }
    }

    pub(crate) fn too_large(encoding: Encoding, limit: usize) -> Self {
        DecompressError {
            encoding,
            kind: Kind::TooLarge(limit),
        }
    }

    /// The message's encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// True if the message decompresses to more than the limit (as opposed
    /// to being corrupt).
    pub fn is_too_large(&self) -> bool {
        matches!(self.kind, Kind::TooLarge(_))
    }
}

impl fmt::Display for DecompressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Corrupt(e) => write!(f, "corrupt {} message: {e}", self.encoding),
            Kind::TooLarge(limit) => write!(
                f,
                "{} message decompresses to more than {limit} bytes",
                self.encoding
            ),
        }
    }
}

impl std::error::Error for DecompressError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Corrupt(e) => Some(e),
            Kind::TooLarge(_) => None,
        }
    }
}

/// A message is compressed with an encoding this side cannot decompress (or
/// the sender named none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedEncoding {
    name: Option<Box<str>>,
}

impl UnsupportedEncoding {
    pub(crate) fn new(name: Option<&str>) -> Self {
        UnsupportedEncoding {
            name: name.map(Into::into),
        }
    }

    /// The encoding named by the sender, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl fmt::Display for UnsupportedEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "unsupported message encoding {n:?}"),
            None => f.write_str("compressed message without trpc-encoding"),
        }
    }
}

impl std::error::Error for UnsupportedEncoding {}
