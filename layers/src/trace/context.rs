//! W3C trace context: [`TraceContext`], the `traceparent` header, and the
//! context of the call being handled on the current thread.

use std::cell::Cell;
use std::fmt;

use crate::util::random_u64;

/// The metadata key of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// A 16-byte W3C trace id; displays as 32 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

/// An 8-byte W3C span (parent) id; displays as 16 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId([u8; 8]);

impl TraceId {
    /// A random, non-zero trace id.
    pub fn random() -> TraceId {
        loop {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&random_u64().to_be_bytes());
            b[8..].copy_from_slice(&random_u64().to_be_bytes());
            if b != [0; 16] {
                return TraceId(b);
            }
        }
    }

    /// The id's bytes.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// An id from bytes; `None` for the invalid all-zero id.
    pub fn from_bytes(b: [u8; 16]) -> Option<TraceId> {
        (b != [0; 16]).then_some(TraceId(b))
    }
}

impl SpanId {
    /// A random, non-zero span id.
    pub fn random() -> SpanId {
        loop {
            let b = random_u64().to_be_bytes();
            if b != [0; 8] {
                return SpanId(b);
            }
        }
    }

    /// The id's bytes.
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0
    }

    /// An id from bytes; `None` for the invalid all-zero id.
    pub fn from_bytes(b: [u8; 8]) -> Option<SpanId> {
        (b != [0; 8]).then_some(SpanId(b))
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    let mut buf = [0u8; 32];
    let hex = &mut buf[..2 * bytes.len()];
    put_hex(hex, bytes);
    // Only ASCII hex digits were written.
    f.write_str(std::str::from_utf8(hex).unwrap_or_default())
}

/// The value of each lower-case hex digit, 0xff for other bytes.
const HEX_VALUE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

fn parse_hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    let mut chunks = s.chunks_exact(16);
    let mut outs = out.chunks_exact_mut(8);
    for (chunk, o) in (&mut chunks).zip(&mut outs) {
        let mut word = [0u8; 16];
        word.copy_from_slice(chunk);
        o.copy_from_slice(&parse_hex16(word)?);
    }
    // What is left (under 16 digits) goes through the table.
    let tail = chunks.remainder();
    let mut bad = 0u8;
    for (o, pair) in outs.into_remainder().iter_mut().zip(tail.chunks_exact(2)) {
        let (hi, lo) = (HEX_VALUE[pair[0] as usize], HEX_VALUE[pair[1] as usize]);
        bad |= hi | lo;
        *o = hi << 4 | (lo & 0xf);
    }
    (bad & 0xf0 == 0).then_some(out)
}

/// 16 lower-case hex digits as 8 bytes, eight digits at a time in a `u64`
/// (a third of the instructions of a table lookup per digit).
fn parse_hex16(digits: [u8; 16]) -> Option<[u8; 8]> {
    const LOW: u64 = 0x0101_0101_0101_0101;
    let mut out = [0u8; 8];
    for (half, o) in digits.chunks_exact(8).zip(out.chunks_exact_mut(4)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(half);
        let v = u64::from_be_bytes(b);
        // '0'..'9' are 0x30..0x39, 'a'..'f' 0x61..0x66: the low nibble,
        // plus 9 when bit 6 (a letter) is set.
        let letter = (v >> 6) & LOW;
        let nib = (v & (0x0f * LOW)) + letter * 9;
        // Valid if every nibble is below 16 and writes back as the digit it
        // came from (this rejects upper case, punctuation, non-ASCII).
        let above9 = ((nib + 6 * LOW) >> 4) & LOW;
        let back = nib + 0x30 * LOW + above9 * 0x27;
        if nib & (0xf0 * LOW) != 0 || back != v {
            return None;
        }
        // Pairs of nibbles into bytes, then the bytes together.
        let x = (nib | (nib >> 4)) & 0x00ff_00ff_00ff_00ff;
        let x = (x | (x >> 8)) & 0x0000_ffff_0000_ffff;
        let x = (x | (x >> 16)) & 0x0000_0000_ffff_ffff;
        o.copy_from_slice(&(x as u32).to_be_bytes());
    }
    Some(out)
}

/// Writes the lower-case hex of `bytes` into `out` (twice as long).
fn put_hex(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[(b >> 4) as usize];
        pair[1] = HEX[(b & 0xf) as usize];
    }
}

macro_rules! hex_fmt {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }
    )*};
}
hex_fmt!(TraceId, SpanId);

/// The trace context of one call (one span of a W3C trace).
///
/// On the server, [`TraceLayer::server`](super::TraceLayer::server) puts the
/// context of the call in the request extensions, so handlers can read it:
///
/// ```
/// use trpc::{Request, Response, Status};
/// use trpc_layers::trace::TraceContext;
///
/// async fn handler(req: Request<String>) -> Result<Response<String>, Status> {
///     let trace_id = req
///         .extensions()
///         .get::<TraceContext>()
///         .map(|ctx| ctx.trace_id().to_string())
///         .unwrap_or_default();
///     Ok(Response::new(trace_id))
/// }
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: TraceId,
    span_id: SpanId,
    parent_id: Option<SpanId>,
    flags: u8,
}

impl TraceContext {
    /// The start of a new trace (random ids, sampled).
    pub fn new_root() -> TraceContext {
        TraceContext {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            parent_id: None,
            flags: 0x01,
        }
    }

    /// A child span in the same trace: same trace id and flags, a new span
    /// id, this span as the parent.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id,
            span_id: SpanId::random(),
            parent_id: Some(self.span_id),
            flags: self.flags,
        }
    }

    /// The context of the remote span that sent `traceparent` (version `00`
    /// and later versions, parsed as version 00). `None` if malformed.
    ///
    /// ```
    /// use trpc_layers::trace::TraceContext;
    /// let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    /// let ctx = TraceContext::from_traceparent(tp).unwrap();
    /// assert_eq!(ctx.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    /// assert_eq!(ctx.traceparent(), tp);
    /// ```
    pub fn from_traceparent(s: &str) -> Option<TraceContext> {
        // Bytes, not chars: every valid field is ASCII, and slicing bytes
        // cannot fall inside a character.
        let b = s.trim_ascii().as_bytes();
        if b.len() < 55 {
            return None;
        }
        let version = parse_hex::<1>(&b[0..2])?[0];
        if version == 0xff || (version == 0 && b.len() != 55) {
            return None;
        }
        if b.len() > 55 && b[55] != b'-' {
            return None;
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        Some(TraceContext {
            trace_id: TraceId::from_bytes(parse_hex(&b[3..35])?)?,
            span_id: SpanId::from_bytes(parse_hex(&b[36..52])?)?,
            parent_id: None,
            flags: parse_hex::<1>(&b[53..55])?[0],
        })
    }

    /// The `traceparent` value announcing this span to a callee.
    pub fn traceparent(&self) -> String {
        self.with_traceparent(str::to_owned)
    }

    /// Calls `f` with the `traceparent` value, formatted on the stack.
    pub(crate) fn with_traceparent<T>(&self, f: impl FnOnce(&str) -> T) -> T {
        let mut b = *b"00-00000000000000000000000000000000-0000000000000000-00";
        put_hex(&mut b[3..35], &self.trace_id.0);
        put_hex(&mut b[36..52], &self.span_id.0);
        put_hex(&mut b[53..55], &[self.flags]);
        // Only ASCII hex digits and dashes were written.
        f(std::str::from_utf8(&b).unwrap_or_default())
    }

    /// The trace id, shared by every span of the trace.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// This span's id.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The caller's span id, if this span has a parent.
    pub fn parent_id(&self) -> Option<SpanId> {
        self.parent_id
    }

    /// True if the trace is sampled (flag `01`).
    pub fn sampled(&self) -> bool {
        self.flags & 0x01 != 0
    }

    /// The context of the server call being handled on this thread, if any:
    /// set by [`TraceLayer::server`](super::TraceLayer::server) while it
    /// polls the handler, so client calls a handler makes join its trace
    /// without any plumbing.
    pub fn current() -> Option<TraceContext> {
        CURRENT.with(Cell::get)
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceContext")
            .field("trace_id", &self.trace_id)
            .field("span_id", &self.span_id)
            .field("parent_id", &self.parent_id)
            .field("flags", &self.flags)
            .finish()
    }
}

thread_local! {
    static CURRENT: Cell<Option<TraceContext>> = const { Cell::new(None) };
}

/// Makes `ctx` the current context until dropped (restoring the previous one).
pub(crate) struct CurrentGuard(Option<TraceContext>);

impl CurrentGuard {
    pub(crate) fn enter(ctx: TraceContext) -> CurrentGuard {
        CurrentGuard(CURRENT.with(|c| c.replace(Some(ctx))))
    }
}

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_garbage() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::from_traceparent(tp).unwrap();
        assert!(ctx.sampled());
        assert_eq!(ctx.span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(ctx.traceparent(), tp);
        // A future version with extra fields is accepted.
        assert!(TraceContext::from_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra"
        )
        .is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é",
        ] {
            assert!(TraceContext::from_traceparent(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn hex_parses_like_the_table_for_every_byte_in_every_position() {
        let reference = |s: &[u8]| -> Option<[u8; 8]> {
            let mut out = [0u8; 8];
            for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
                let (hi, lo) = (HEX_VALUE[pair[0] as usize], HEX_VALUE[pair[1] as usize]);
                if (hi | lo) & 0xf0 != 0 {
                    return None;
                }
                *o = hi << 4 | lo;
            }
            Some(out)
        };
        let base = *b"0123456789abcdef";
        assert_eq!(
            parse_hex16(base),
            Some([0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef])
        );
        for pos in 0..16 {
            for b in 0..=255u8 {
                let mut s = base;
                s[pos] = b;
                assert_eq!(parse_hex16(s), reference(&s), "byte {b:#x} at {pos}");
            }
        }
    }

    #[test]
    fn children_share_the_trace_and_point_at_the_parent() {
        let root = TraceContext::new_root();
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child.span_id(), root.span_id());
        assert_eq!(child.parent_id(), Some(root.span_id()));
        assert_ne!(TraceContext::new_root().trace_id(), root.trace_id());
    }

    #[test]
    fn the_current_context_is_scoped() {
        assert_eq!(TraceContext::current(), None);
        let a = TraceContext::new_root();
        let b = TraceContext::new_root();
        {
            let _g = CurrentGuard::enter(a);
            assert_eq!(TraceContext::current(), Some(a));
            {
                let _g = CurrentGuard::enter(b);
                assert_eq!(TraceContext::current(), Some(b));
            }
            assert_eq!(TraceContext::current(), Some(a));
        }
        assert_eq!(TraceContext::current(), None);
    }
}
