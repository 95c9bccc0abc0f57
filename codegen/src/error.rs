//! [`Error`]: what went wrong, with the `.proto` file, line and column when
//! the cause is in a `.proto`.

use std::fmt;
use std::path::{Path, PathBuf};

use miette::Diagnostic;

/// A code generation error. Its `Display` (and `Debug`, which is what a
/// `build.rs` returning it prints) starts with `file:line:column:` when the
/// cause is in a `.proto` file.
pub struct Error {
    location: Option<Location>,
    message: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Location {
    file: String,
    line: Option<(usize, usize)>,
}

impl Error {
    /// The file the error is in, as found on disk when possible (else as
    /// named in imports).
    pub fn file(&self) -> Option<&str> {
        self.location.as_ref().map(|l| l.file.as_str())
    }

    /// The 1-based line and column, when known.
    pub fn line_column(&self) -> Option<(usize, usize)> {
        self.location.as_ref().and_then(|l| l.line)
    }

    /// The message, without the location.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn other(message: impl Into<String>) -> Self {
        Error {
            location: None,
            message: message.into(),
        }
    }

    pub(crate) fn io(path: &Path, e: std::io::Error) -> Self {
        Error::other(format!("{}: {e}", path.display()))
    }

    pub(crate) fn from_protox(e: protox::Error, includes: &[impl AsRef<Path>]) -> Self {
        let (message, location) = match locate(&e) {
            Some((name, line)) => (e.to_string(), Some((name, line))),
            None => (e.to_string(), e.file().map(|f| (f.to_string(), None))),
        };
        let location = location.map(|(name, line)| Location {
            file: on_disk(&name, includes),
            line,
        });
        Error { location, message }
    }
}

/// The file name and 1-based line and column of the first label of `e`.
fn locate(e: &protox::Error) -> Option<(String, Option<(usize, usize)>)> {
    let source = e.source_code()?;
    let label = e.labels()?.next()?;
    let span = source.read_span(label.inner(), 0, 0).ok()?;
    let name = span
        .name()
        .map(str::to_string)
        .or_else(|| e.file().map(str::to_string))?;
    Some((name, Some((span.line() + 1, span.column() + 1))))
}

/// `name` (relative to an include directory) as a path that exists, if any.
fn on_disk(name: &str, includes: &[impl AsRef<Path>]) -> String {
    includes
        .iter()
        .map(|i| i.as_ref().join(name))
        .find(|p| p.is_file())
        .map(|p: PathBuf| p.display().to_string())
        .unwrap_or_else(|| name.to_string())
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(Location {
                file,
                line: Some((l, c)),
            }) => write!(f, "{file}:{l}:{c}: {}", self.message),
            Some(Location { file, line: None }) => write!(f, "{file}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl fmt::Debug for Error {
    // A build script returning `Err` prints it with `Debug`: keep it readable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::other(e.to_string())
    }
}
