//! The one error type that crosses the wire: [`Status`], with gRPC-aligned [`Code`]s.
//!
//! Every failure a caller can see — a handler's error, a deadline, a broken
//! connection, an error of some tower middleware — ends up as a `Status`.
//! [`Status::from_error`] is the single place where arbitrary errors are mapped.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::Arc;

use bytes::Bytes;

use crate::metadata::MetadataMap;

/// A type-erased error, as tower middleware passes errors between layers.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Status codes, numerically identical to gRPC's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Code {
    /// Not an error; returned on success.
    Ok = 0,
    /// The operation was cancelled, typically by the caller.
    Cancelled = 1,
    /// Unknown error, e.g. an error without more information.
    Unknown = 2,
    /// The client specified an invalid argument (includes undecodable payloads).
    InvalidArgument = 3,
    /// The deadline expired before the operation could complete.
    DeadlineExceeded = 4,
    /// Some requested entity was not found.
    NotFound = 5,
    /// The entity that a client attempted to create already exists.
    AlreadyExists = 6,
    /// The caller is authenticated but does not have permission.
    PermissionDenied = 7,
    /// A resource (size limit, quota, capacity) has been exhausted.
    ResourceExhausted = 8,
    /// The system is not in a state required for the operation.
    FailedPrecondition = 9,
    /// The operation was aborted, typically due to a concurrency issue.
    Aborted = 10,
    /// The operation was attempted past the valid range.
    OutOfRange = 11,
    /// The operation (method) is not implemented or supported.
    Unimplemented = 12,
    /// Internal error: an invariant was broken (includes handler panics).
    Internal = 13,
    /// The service is currently unavailable; retrying may succeed.
    Unavailable = 14,
    /// Unrecoverable data loss or corruption.
    DataLoss = 15,
    /// The request does not have valid authentication credentials.
    Unauthenticated = 16,
}

impl Code {
    /// All codes, in numeric order.
    pub const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The code for a number received on the wire; numbers out of range map to
    /// [`Code::Unknown`] (as gRPC specifies).
    pub fn from_u32(n: u32) -> Code {
        Code::ALL.get(n as usize).copied().unwrap_or(Code::Unknown)
    }

    /// The canonical upper-case name, e.g. `DEADLINE_EXCEEDED`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// Parses a canonical name (`"UNAVAILABLE"`, case-insensitive) or a number (`"14"`).
    pub fn parse(s: &str) -> Option<Code> {
        if let Ok(n) = s.parse::<u32>() {
            return Code::ALL.get(n as usize).copied();
        }
        Code::ALL
            .iter()
            .copied()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
    }
}

/// The HTTP view of codes, for gateways (the HTTP/JSON form of
/// [`crate::http::HttpService`]).
impl Code {
    /// The HTTP status that stands for this code, as gRPC's HTTP mapping
    /// (google.rpc.Code) gives it:
    ///
    /// | code | HTTP |
    /// |---|---|
    /// | OK | 200 |
    /// | CANCELLED | 499 |
    /// | UNKNOWN, INTERNAL, DATA_LOSS | 500 |
    /// | INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE | 400 |
    /// | DEADLINE_EXCEEDED | 504 |
    /// | NOT_FOUND | 404 |
    /// | ALREADY_EXISTS, ABORTED | 409 |
    /// | PERMISSION_DENIED | 403 |
    /// | RESOURCE_EXHAUSTED | 429 |
    /// | UNIMPLEMENTED | 501 |
    /// | UNAVAILABLE | 503 |
    /// | UNAUTHENTICATED | 401 |
    ///
    /// ```
    /// use trpc::Code;
    /// assert_eq!(Code::NotFound.http_status(), 404);
    /// assert_eq!(Code::Unavailable.http_status(), 503);
    /// ```
    pub const fn http_status(self) -> u16 {
        match self {
            Code::Ok => 200,
            Code::Cancelled => 499,
            Code::Unknown | Code::Internal | Code::DataLoss => 500,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::Unauthenticated => 401,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of a call: a [`Code`], a human-readable message, optional binary
/// details and trailing metadata.
///
/// ```
/// use trpc::{Code, Status};
/// let s = Status::not_found("no such user");
/// assert_eq!(s.code(), Code::NotFound);
/// assert_eq!(s.message(), "no such user");
/// ```
#[derive(Clone)]
pub struct Status {
    code: Code,
    refused: bool,
    message: String,
    /// Details, trailers and source: most statuses have none, so they live
    /// behind one optional box and `Result<_, Status>` stays small.
    extra: Option<Box<Extra>>,
}

#[derive(Clone, Default)]
struct Extra {
    details: Bytes,
    metadata: MetadataMap,
    source: Option<Arc<dyn StdError + Send + Sync + 'static>>,
}

static NO_DETAILS: Bytes = Bytes::new();
static NO_METADATA: MetadataMap = MetadataMap::new();

macro_rules! status_ctors {
    ($($(#[$doc:meta])* $name:ident => $code:ident,)*) => {
        $(
            $(#[$doc])*
            pub fn $name(message: impl Into<String>) -> Status {
                Status::new(Code::$code, message)
            }
        )*
    };
}

impl Status {
    /// A status with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
            refused: false,
            extra: None,
        }
    }

    status_ctors! {
        /// A [`Code::Cancelled`] status.
        cancelled => Cancelled,
        /// A [`Code::Unknown`] status.
        unknown => Unknown,
        /// A [`Code::InvalidArgument`] status.
        invalid_argument => InvalidArgument,
        /// A [`Code::DeadlineExceeded`] status.
        deadline_exceeded => DeadlineExceeded,
        /// A [`Code::NotFound`] status.
        not_found => NotFound,
        /// A [`Code::AlreadyExists`] status.
        already_exists => AlreadyExists,
        /// A [`Code::PermissionDenied`] status.
        permission_denied => PermissionDenied,
        /// A [`Code::ResourceExhausted`] status.
        resource_exhausted => ResourceExhausted,
        /// A [`Code::FailedPrecondition`] status.
        failed_precondition => FailedPrecondition,
        /// A [`Code::Aborted`] status.
        aborted => Aborted,
        /// A [`Code::OutOfRange`] status.
        out_of_range => OutOfRange,
        /// A [`Code::Unimplemented`] status.
        unimplemented => Unimplemented,
        /// A [`Code::Internal`] status.
        internal => Internal,
        /// A [`Code::Unavailable`] status.
        unavailable => Unavailable,
        /// A [`Code::DataLoss`] status.
        data_loss => DataLoss,
        /// A [`Code::Unauthenticated`] status.
        unauthenticated => Unauthenticated,
    }

    /// A successful end of a stream carrying trailing metadata: a handler
    /// ends its response stream with `Err(Status::ok_with_trailers(md))` to send
    /// trailers (see [`crate::stream`]).
    pub fn ok_with_trailers(trailers: MetadataMap) -> Status {
        Status::new(Code::Ok, "").with_metadata(trailers)
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    /// The status code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Binary details (for example an encoded `google.rpc.Status`); empty when unset.
    pub fn details(&self) -> &Bytes {
        self.extra.as_ref().map_or(&NO_DETAILS, |e| &e.details)
    }

    /// Sets binary details.
    pub fn with_details(mut self, details: impl Into<Bytes>) -> Status {
        let details = details.into();
        if !details.is_empty() || self.extra.is_some() {
            self.extra_mut().details = details;
        }
        self
    }

    /// Trailing metadata sent with this status.
    pub fn metadata(&self) -> &MetadataMap {
        self.extra.as_ref().map_or(&NO_METADATA, |e| &e.metadata)
    }

    /// Mutable trailing metadata.
    pub fn metadata_mut(&mut self) -> &mut MetadataMap {
        &mut self.extra_mut().metadata
    }

    /// Sets trailing metadata.
    pub fn with_metadata(mut self, metadata: MetadataMap) -> Status {
        if !metadata.is_empty() || self.extra.is_some() {
            self.extra_mut().metadata = metadata;
        }
        self
    }

    /// Attaches the error that caused this status (kept locally, never sent).
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Status {
        self.extra_mut().source = Some(Arc::from(source.into()));
        self
    }

    /// True when the peer proved the call was never processed (it arrived after a
    /// GOAWAY, or was never written), so it is safe to retry even if not idempotent.
    pub fn is_refused(&self) -> bool {
        self.refused
    }

    /// Marks the status as "request never processed" (see [`Status::is_refused`]).
    pub fn with_refused(mut self, refused: bool) -> Status {
        self.refused = refused;
        self
    }

    /// True for [`Code::Ok`].
    pub fn is_ok(&self) -> bool {
        self.code == Code::Ok
    }

    /// Maps any error to a `Status`.
    ///
    /// The error itself and then its `source()` chain are searched for a known type:
    ///
    /// | error | code |
    /// |---|---|
    /// | `Status` | itself |
    /// | `tower::timeout::error::Elapsed`, `tokio::time::error::Elapsed` | `DeadlineExceeded` |
    /// | `tower::load_shed::error::Overloaded` | `ResourceExhausted` |
    /// | `tower::buffer::error::Closed` | `Unavailable` |
    /// | `tower::balance` discovery errors | `Unavailable` |
    /// | `std::io::Error` (refused, reset, broken pipe, EOF, ...) | `Unavailable` (`TimedOut`: `DeadlineExceeded`) |
    /// | anything else | `Unknown` with the error's text |
    ///
    /// ```
    /// use trpc::{Code, Status};
    /// let err: trpc::BoxError = Box::new(tower::timeout::error::Elapsed::new());
    /// assert_eq!(Status::from_error(err).code(), Code::DeadlineExceeded);
    /// ```
    pub fn from_error(err: BoxError) -> Status {
        let err = match err.downcast::<Status>() {
            Ok(status) => return *status,
            Err(err) => err,
        };
        let mut cur: Option<&(dyn StdError + 'static)> = Some(&*err);
        while let Some(e) = cur {
            if let Some(status) = Self::from_known(e) {
                return status;
            }
            cur = e.source();
        }
        let message = err.to_string();
        Status::new(Code::Unknown, message).with_source(err)
    }

    /// The code [`Status::from_error`] would give `err`, without consuming it:
    /// for layers that only observe an error and pass it on.
    pub fn code_of(err: &(dyn StdError + 'static)) -> Code {
        let mut cur = Some(err);
        while let Some(e) = cur {
            if let Some((code, _)) = Self::classify(e) {
                return code;
            }
            cur = e.source();
        }
        Code::Unknown
    }

    /// The one table of known error types: their code and a message prefix.
    fn classify(e: &(dyn StdError + 'static)) -> Option<(Code, &'static str)> {
        if let Some(s) = e.downcast_ref::<Status>() {
            return Some((s.code(), ""));
        }
        if e.is::<tower::timeout::error::Elapsed>() || e.is::<tokio::time::error::Elapsed>() {
            return Some((Code::DeadlineExceeded, "deadline exceeded"));
        }
        if e.is::<tower::load_shed::error::Overloaded>() {
            return Some((Code::ResourceExhausted, "load shed: service overloaded"));
        }
        if e.is::<tower::buffer::error::Closed>() {
            return Some((Code::Unavailable, "buffer closed"));
        }
        if e.is::<tower::balance::error::Discover>() {
            return Some((Code::Unavailable, "discovery failed"));
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some((Status::from_io_error(io).code(), ""));
        }
        None
    }

    fn from_known(e: &(dyn StdError + 'static)) -> Option<Status> {
        if let Some(s) = e.downcast_ref::<Status>() {
            return Some(s.clone());
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(Status::from_io_error(io));
        }
        let (code, prefix) = Self::classify(e)?;
        Some(Status::new(code, format!("{prefix}: {e}")))
    }

    /// Maps an I/O error: connection-level failures are `Unavailable`, `TimedOut`
    /// is `DeadlineExceeded`, others are `Unknown`.
    pub fn from_io_error(e: &io::Error) -> Status {
        use io::ErrorKind::*;
        let code = match e.kind() {
            ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected | BrokenPipe
            | UnexpectedEof | AddrNotAvailable | AddrInUse | WouldBlock | Interrupted => {
                Code::Unavailable
            }
            TimedOut => Code::DeadlineExceeded,
            InvalidData | InvalidInput => Code::Internal,
            _ => Code::Unavailable,
        };
        Status::new(code, format!("transport error: {e}"))
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Status");
        d.field("code", &self.code);
        if !self.message.is_empty() {
            d.field("message", &self.message);
        }
        if !self.details().is_empty() {
            d.field("details", self.details());
        }
        if !self.metadata().is_empty() {
            d.field("metadata", self.metadata());
        }
        if self.refused {
            d.field("refused", &true);
        }
        if let Some(source) = self.extra.as_ref().and_then(|e| e.source.as_ref()) {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl StdError for Status {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.extra
            .as_ref()
            .and_then(|e| e.source.as_deref())
            .map(|e| e as &(dyn StdError + 'static))
    }
}

impl From<io::Error> for Status {
    fn from(e: io::Error) -> Status {
        Status::from_io_error(&e).with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_numbers_and_names() {
        for code in Code::ALL {
            assert_eq!(Code::from_u32(code as u32), code);
            assert_eq!(Code::parse(code.as_str()), Some(code));
        }
        assert_eq!(Code::from_u32(99), Code::Unknown);
        assert_eq!(
            Code::parse("deadline_exceeded"),
            Some(Code::DeadlineExceeded)
        );
        assert_eq!(Code::parse("14"), Some(Code::Unavailable));
        assert_eq!(Code::parse("nope"), None);
    }

    #[test]
    fn from_error_maps_stock_tower_errors() {
        let cases: Vec<(BoxError, Code)> = vec![
            (Box::new(Status::not_found("x")), Code::NotFound),
            (
                Box::new(tower::timeout::error::Elapsed::new()),
                Code::DeadlineExceeded,
            ),
            (
                Box::new(tower::load_shed::error::Overloaded::new()),
                Code::ResourceExhausted,
            ),
            (
                Box::new(io::Error::from(io::ErrorKind::ConnectionRefused)),
                Code::Unavailable,
            ),
            ("something odd".into(), Code::Unknown),
        ];
        for (err, code) in cases {
            assert_eq!(Status::code_of(&*err), code);
            assert_eq!(Status::from_error(err).code(), code);
        }
    }

    #[derive(Debug)]
    struct Wrapper(Status);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_source_is_the_original_error() {
        let s = Status::unavailable("x").with_source(io::Error::other("boom"));
        let src = StdError::source(&s).expect("a source");
        assert!(src.is::<io::Error>());
    }

    #[test]
    fn from_error_walks_the_source_chain() {
        let err: BoxError = Box::new(Wrapper(Status::permission_denied("no")));
        let s = Status::from_error(err);
        assert_eq!(s.code(), Code::PermissionDenied);
        assert_eq!(s.message(), "no");
    }
}
