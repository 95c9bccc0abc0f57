//! The wire format of metadata blocks (docs/PROTOCOL.md): encoding,
//! decoding, and checking received entries.

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::{
    is_binary_key, is_printable_ascii, validate_key, Entry, InvalidMetadata, MetadataMap, Value,
    CODEC_KEY, MAX_KEY_LEN,
};

/// Bytes needed for one entry: key length (1), key, value length (varint), value.
pub(crate) fn entry_len(key_len: usize, value_len: usize) -> usize {
    1 + key_len + varint_len(value_len as u64) + value_len
}

/// Writes one entry: `key_len: u8 | key | value_len: varint | value`.
pub(crate) fn encode_entry(dst: &mut BytesMut, key: &[u8], value: &[u8]) {
    debug_assert!(!key.is_empty() && key.len() <= MAX_KEY_LEN);
    dst.put_u8(key.len() as u8);
    dst.put_slice(key);
    put_varint(dst, value.len() as u64);
    dst.put_slice(value);
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(dst: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        dst.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    dst.put_u8(v as u8);
}

/// Reads a LEB128 varint of at most 5 bytes (values < 2^32) in its
/// minimal encoding: a last byte of 0 after another byte (e.g. `80 00` for
/// 0) is malformed, so every length has exactly one encoding.
fn get_varint(src: &[u8], pos: &mut usize) -> Option<u32> {
    let mut v: u64 = 0;
    for i in 0..5 {
        let b = *src.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return None;
            }
            return u32::try_from(v).ok();
        }
    }
    None
}

/// Iterates over the entries of an encoded metadata block without copying
/// or counting references: every key and value is a borrowed slice of the
/// block; what is kept is sliced out of the block's `Bytes` with
/// [`Bytes::slice_ref`] (as [`push_wire_entry`] does), the rest costs nothing.
#[derive(Debug)]
pub(crate) struct BlockIter<'a> {
    block: &'a [u8],
    pos: usize,
}

impl<'a> BlockIter<'a> {
    pub(crate) fn new(block: &'a [u8]) -> Self {
        BlockIter { block, pos: 0 }
    }
}

impl<'a> Iterator for BlockIter<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), InvalidMetadata>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.block.len() {
            return None;
        }
        Some(self.next_entry())
    }
}

impl<'a> BlockIter<'a> {
    fn next_entry(&mut self) -> Result<(&'a [u8], &'a [u8]), InvalidMetadata> {
        let src = self.block;
        let key_len = src[self.pos] as usize;
        let key_start = self.pos + 1;
        let key_end = key_start + key_len;
        if key_len == 0 || key_end > src.len() {
            self.pos = src.len();
            return Err(InvalidMetadata::new("truncated or empty key"));
        }
        let mut pos = key_end;
        let Some(value_len) = get_varint(src, &mut pos) else {
            self.pos = src.len();
            return Err(InvalidMetadata::new("bad value length"));
        };
        let value_end = pos.saturating_add(value_len as usize);
        if value_end > src.len() {
            self.pos = src.len();
            return Err(InvalidMetadata::new("value runs past the end of the block"));
        }
        self.pos = value_end;
        Ok((&src[key_start..key_end], &src[pos..value_end]))
    }
}

/// Checks the key of a received entry (`key` and `value` are slices of
/// `block`). The `trpc-codec` entry goes to the map's own slot at once
/// (false: nothing left to add); a built-in codec's name is held as a
/// static, not as a reference to the read buffer, whose shared count the
/// threads that end calls then fight over.
fn check_wire_key(
    map: &mut MetadataMap,
    block: &Bytes,
    key: &[u8],
    value: &[u8],
) -> Result<bool, InvalidMetadata> {
    if key == CODEC_KEY {
        map.codec = Some(match value {
            b"proto" => Bytes::from_static(b"proto"),
            b"json" => Bytes::from_static(b"json"),
            _ => {
                std::str::from_utf8(value).map_err(|_| not_utf8(key))?;
                block.slice_ref(value)
            }
        });
        return Ok(false);
    }
    validate_key(key)?;
    Ok(true)
}

fn not_utf8(key: &[u8]) -> InvalidMetadata {
    InvalidMetadata::new(format!(
        "value of text key {:?} is not UTF-8 (binary keys must end in -bin)",
        String::from_utf8_lossy(key)
    ))
}

/// Validates a user entry decoded from the wire (`key` and `value` are
/// slices of `block`) and adds it to `map`.
pub(crate) fn push_wire_entry(
    map: &mut MetadataMap,
    block: &Bytes,
    key: &[u8],
    value: &[u8],
) -> Result<(), InvalidMetadata> {
    if check_wire_key(map, block, key, value)? {
        let entry = wire_entry(block, key, value).ok_or_else(|| not_utf8(key))?;
        map.entries.push(entry);
    }
    Ok(())
}

/// The entry `key`, `value` (slices of `block`) as the map holds it: a
/// text value is checked as UTF-8 here, once (reading it as `&str` is then
/// free); `None` if it is not.
fn wire_entry(block: &Bytes, key: &[u8], value: &[u8]) -> Option<Entry> {
    let value = block.slice_ref(value);
    let value = if is_binary_key(key) {
        Value::Binary(value)
    } else {
        Value::Text(ByteString::try_from(value).ok()?)
    };
    Some(Entry {
        key: block.slice_ref(key),
        value,
    })
}

/// Validates an entry of a request's block where the block is decoded (the
/// codec goes to `map` at once); true for a user entry, which
/// [`ReceivedEntries`] adds later.
pub(crate) fn check_wire_entry(
    map: &mut MetadataMap,
    block: &Bytes,
    key: &[u8],
    value: &[u8],
) -> Result<bool, InvalidMetadata> {
    let user = check_wire_key(map, block, key, value)?;
    // Printable ASCII (the usual text value) is UTF-8, and is recognised a
    // word at a time: the full check, which `add_to` makes again to hold
    // the value as text, only for the rest.
    if user && !is_binary_key(key) && !is_printable_ascii(value) {
        std::str::from_utf8(value).map_err(|_| not_utf8(key))?;
    }
    Ok(user)
}

/// Where the entry with `key` and `value` (slices of `block`, as
/// [`BlockIter`] gives them) starts and ends in `block`.
pub(crate) fn entry_span(block: &[u8], key: &[u8], value: &[u8]) -> std::ops::Range<usize> {
    let base = block.as_ptr() as usize;
    // One byte of key length before the key.
    let start = (key.as_ptr() as usize - base).saturating_sub(1);
    start..value.as_ptr() as usize - base + value.len()
}

/// The user entries of a request's block, every one validated by
/// [`check_wire_entry`] where the block was decoded, added to the request's
/// map by the task that runs the call ([`ReceivedEntries::add_to`]): the
/// entries' vector is then allocated and freed by one thread. Allocated by
/// the connection's thread and freed by the call's, it went back to the
/// connection thread's malloc arena under that arena's lock, contended by
/// the connection's own allocations: most of a server's futex calls once
/// requests carried metadata.
#[derive(Debug)]
pub(crate) struct ReceivedEntries(Bytes);

impl ReceivedEntries {
    /// The user entries of `block`, validated: `span` is the part of the
    /// block from the first user entry to the end of the last (see
    /// [`entry_span`]); the entries before and after are not read again.
    pub(crate) fn new(mut block: Bytes, span: std::ops::Range<usize>) -> Self {
        // Narrowed in place: no reference counted.
        block.truncate(span.end);
        let start = span.start.min(block.len());
        bytes::Buf::advance(&mut block, start);
        ReceivedEntries(block)
    }

    /// Adds the entries to `map`, in order.
    pub(crate) fn add_to(self, map: &mut MetadataMap) {
        let block = &self.0;
        let entries = BlockIter::new(block)
            .map_while(Result::ok)
            .filter(|(key, _)| key.first() != Some(&b':') && *key != CODEC_KEY)
            // Every one was validated when the block was decoded.
            .filter_map(|(key, value)| wire_entry(block, key, value));
        map.entries.extend(entries);
    }
}

/// A block of entries decoded into a map, as a response head is.
#[cfg(test)]
pub(super) fn decode(block: Bytes) -> MetadataMap {
    let mut map = MetadataMap::new();
    for e in BlockIter::new(&block) {
        let (k, v) = e.expect("a well-formed block");
        push_wire_entry(&mut map, &block, k, v).expect("valid entries");
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_round_trips() {
        let mut md = MetadataMap::new();
        md.try_insert("a", &"x".repeat(300)).unwrap();
        md.insert_bin("b-bin", vec![0xff, 0, 1]);
        let mut buf = BytesMut::new();
        md.encode(&mut buf);
        assert_eq!(buf.len(), md.encoded_len());
        assert_eq!(decode(buf.freeze()), md);
    }

    #[test]
    fn a_request_blocks_entries_are_checked_where_decoded_and_added_later() {
        let mut b = BytesMut::new();
        for (k, v) in [
            (&b":path"[..], &b"/a.B/C"[..]),
            (b"x-a", b"1"),
            (b"trpc-codec", b"json"),
            (b"t-bin", b"\xff\x00"),
            (b":timeout", b"5"),
            (b"x-u", "caf\u{e9}\tok".as_bytes()),
            (b":x", b"last"),
        ] {
            encode_entry(&mut b, k, v);
        }
        let block = b.freeze();
        let mut map = MetadataMap::new();
        let mut span: Option<std::ops::Range<usize>> = None;
        for e in BlockIter::new(&block) {
            let (k, v) = e.unwrap();
            if k.first() == Some(&b':') {
                continue;
            }
            if check_wire_entry(&mut map, &block, k, v).unwrap() {
                let s = entry_span(&block, k, v);
                assert_eq!(&block[s.clone()][1..=k.len()], k);
                span = Some(span.map_or(s.clone(), |a| a.start..s.end));
            }
        }
        // The codec went to its slot at once; the rest waits.
        assert_eq!(map.len(), 1);
        assert_eq!(map.get("trpc-codec"), Some("json"));
        ReceivedEntries::new(block.clone(), span.unwrap()).add_to(&mut map);
        let mut want = MetadataMap::new();
        want.append("x-a", "1").unwrap();
        want.append("trpc-codec", "json").unwrap();
        want.insert_bin("t-bin", vec![0xff, 0]);
        want.append("x-u", "caf\u{e9}\tok").unwrap();
        assert_eq!(map, want);

        // Text that is not UTF-8 is refused where the block is decoded.
        let mut map = MetadataMap::new();
        let bad = Bytes::from_static(b"x-a\xc3(");
        let err = check_wire_entry(&mut map, &bad, &bad[..3], &bad[3..]).unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
        assert!(check_wire_entry(&mut map, &bad, b"Upper", b"x").is_err());
        assert!(check_wire_entry(&mut map, &bad, b"trpc-codec", &bad[3..]).is_err());
    }

    #[test]
    fn every_length_has_one_encoding() {
        for n in [0u64, 1, 127, 128, 300, 16_383, 16_384, u32::MAX as u64] {
            let mut b = BytesMut::new();
            put_varint(&mut b, n);
            assert_eq!(b.len(), varint_len(n));
            let mut pos = 0;
            assert_eq!(get_varint(&b, &mut pos), Some(n as u32), "{n}");
            assert_eq!(pos, b.len());
        }
    }

    #[test]
    fn bad_blocks_are_errors_not_panics() {
        for block in [
            &[5u8, b'a'][..],
            &[0u8][..],
            &[1, b'a', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
            &[1, b'a', 10, 1, 2][..],
            // Non-minimal value lengths: 0 as `80 00`, 1 as `81 80 00`.
            &[1, b'a', 0x80, 0x00][..],
            &[1, b'a', 0x81, 0x80, 0x00, b'v'][..],
        ] {
            let r: Result<Vec<_>, _> = BlockIter::new(block).collect();
            assert!(r.is_err(), "{block:?}");
        }
        let mut md = MetadataMap::new();
        let block = Bytes::from_static(b"t-bin\xff");
        let (text, bin, bad) = (&block[..1], &block[..5], &block[5..]);
        assert!(push_wire_entry(&mut md, &block, text, bad).is_err());
        assert!(push_wire_entry(&mut md, &block, bin, bad).is_ok());
    }
}
