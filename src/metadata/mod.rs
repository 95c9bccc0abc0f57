//! Call metadata: text and binary key/value pairs sent with requests and responses.
//!
//! Keys are lower-case ASCII (`a-z 0-9 - _ .`), at most 255 bytes. A key ending in
//! `-bin` carries an arbitrary binary value; other values are UTF-8 text. Keys may
//! repeat ([`MetadataMap::append`]). Keys starting with `:` are reserved for the
//! protocol (docs/PROTOCOL.md) and never appear in a `MetadataMap`.
//!
//! ```
//! use trpc::MetadataMap;
//! let mut md = MetadataMap::new();
//! md.insert("x-user", "alice");
//! md.insert_bin("trace-bin", vec![0u8, 1, 2]);
//! assert_eq!(md.get("x-user"), Some("alice"));
//! assert_eq!(md.get_bin("trace-bin").map(|b| &b[..]), Some(&[0u8, 1, 2][..]));
//! ```

use std::fmt;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

/// Maximum key length in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// An error for an invalid metadata key or value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidMetadata {
    reason: String,
}

impl InvalidMetadata {
    fn new(reason: impl Into<String>) -> Self {
        InvalidMetadata {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for InvalidMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid metadata: {}", self.reason)
    }
}

impl std::error::Error for InvalidMetadata {}

/// A validated text value, cheap to clone: build it once (a token held by a
/// layer, a header computed per call) and insert it with
/// [`MetadataMap::insert_value`] without copying or checking it again.
///
/// ```
/// use trpc::metadata::{MetadataMap, MetadataValue};
/// let token = MetadataValue::try_from(format!("Bearer {}", "s3cret")).unwrap();
/// let mut md = MetadataMap::new();
/// md.insert_value("authorization", token.clone());
/// assert_eq!(md.get("authorization"), Some("Bearer s3cret"));
/// assert!(MetadataValue::try_from("bad\nvalue").is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct MetadataValue(ByteString);

fn check_text(value: &str) -> Result<(), InvalidMetadata> {
    let b = value.as_bytes();
    if is_printable_ascii(b) {
        return Ok(());
    }
    // Control characters: C0 (below 0x20, but tab) and DEL are single bytes;
    // C1 (U+0080..=U+009F) is encoded as 0xC2 followed by 0x80..=0x9F.
    let c0 = |c: u8| (c < 0x20 && c != b'\t') || c == 0x7f;
    let c1 = |w: &[u8]| w[0] == 0xc2 && (0x80..=0x9f).contains(&w[1]);
    // A fold without early exit is vectorised; C1 needs non-ASCII bytes.
    let has_c0 = b.iter().fold(false, |bad, &c| bad | c0(c));
    if has_c0 || (!b.is_ascii() && b.windows(2).any(c1)) {
        return Err(InvalidMetadata::new(
            "text value contains control characters",
        ));
    }
    Ok(())
}

/// True if every byte is printable ASCII (0x20..=0x7E), eight bytes at a
/// time: the common case, decided without a byte loop. False may still be a
/// valid value (a tab, non-ASCII text): the caller checks those byte by byte.
fn is_printable_ascii(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        let x = u64::from_le_bytes(word);
        // A byte below 0x20 or equal to 0x7F sets its high bit in `below`
        // or `del` (exact once bytes over 0x7F are ruled out by `x & HIGH`).
        let below = x.wrapping_sub(0x20 * ONES) & !x;
        let y = x ^ (0x7f * ONES);
        let del = y.wrapping_sub(ONES) & !y;
        if (x | below | del) & HIGH != 0 {
            return false;
        }
    }
    words.remainder().iter().all(|c| (0x20..0x7f).contains(c))
}

impl MetadataValue {
    /// A value from a literal.
    ///
    /// # Panics
    /// If `s` contains control characters.
    pub fn from_static(s: &'static str) -> Self {
        if let Err(e) = check_text(s) {
            panic!("MetadataValue::from_static({s:?}): {e}");
        }
        MetadataValue(ByteString::from_static(s))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What [`MetadataMap::insert`] takes: a string literal (checked like
/// [`MetadataValue::from_static`]) or an already validated [`MetadataValue`].
/// A `String` is not accepted: validate it with `MetadataValue::try_from`,
/// or use [`MetadataMap::try_insert`].
pub trait IntoMetadataValue: sealed::Sealed {
    /// The validated value.
    ///
    /// # Panics
    /// For a literal that contains control characters.
    fn into_metadata_value(self) -> MetadataValue;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for &'static str {}
    impl Sealed for super::MetadataValue {}
}

impl IntoMetadataValue for &'static str {
    fn into_metadata_value(self) -> MetadataValue {
        MetadataValue::from_static(self)
    }
}

impl IntoMetadataValue for MetadataValue {
    fn into_metadata_value(self) -> MetadataValue {
        self
    }
}

impl TryFrom<String> for MetadataValue {
    type Error = InvalidMetadata;
    fn try_from(s: String) -> Result<Self, InvalidMetadata> {
        check_text(&s)?;
        Ok(MetadataValue(ByteString::from(s)))
    }
}

impl TryFrom<&str> for MetadataValue {
    type Error = InvalidMetadata;
    fn try_from(s: &str) -> Result<Self, InvalidMetadata> {
        check_text(s)?;
        Ok(MetadataValue(ByteString::from(s)))
    }
}

impl fmt::Debug for MetadataValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A multimap of metadata entries, in insertion order.
///
/// The reserved `trpc-codec` entry (the serialisation of the call's messages,
/// see [`crate::codec`]) is kept in a slot of its own: it is on nearly every
/// call, and this way it costs neither an allocation nor a validation. It
/// behaves like any other (single-valued) entry.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct MetadataMap {
    codec: Option<Bytes>,
    entries: Vec<Entry>,
}

/// The key whose value lives in [`MetadataMap`]'s own slot.
const CODEC_KEY: &[u8] = b"trpc-codec";

#[derive(Clone, PartialEq, Eq)]
struct Entry {
    key: Bytes,
    value: Value,
}

/// An entry's value: text (UTF-8 checked once, on the way in, so reading it
/// as `&str` costs nothing) or, for `-bin` keys, bytes.
#[derive(Clone, PartialEq, Eq)]
enum Value {
    Text(ByteString),
    Binary(Bytes),
}

impl Value {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Value::Text(s) => s.as_bytes(),
            Value::Binary(b) => b,
        }
    }

    fn text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            Value::Binary(_) => None,
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Value::Text(s) => s.into_bytes(),
            Value::Binary(b) => b,
        }
    }
}

impl Entry {
    fn key_str(&self) -> &str {
        // Keys are validated ASCII on every way in.
        std::str::from_utf8(&self.key).unwrap_or_default()
    }
}

/// Which bytes may appear in a metadata key: `a-z 0-9 - _ .`.
const KEY_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.');
        b += 1;
    }
    t
};

/// Checks a user metadata key: 1..=255 bytes of `a-z 0-9 - _ .`.
pub fn validate_key(key: &[u8]) -> Result<(), InvalidMetadata> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(InvalidMetadata::new(format!(
            "key length {} not in 1..=255",
            key.len()
        )));
    }
    if !key.iter().all(|&b| KEY_BYTES[b as usize]) {
        return Err(InvalidMetadata::new(format!(
            "key {:?} has characters outside a-z 0-9 - _ .",
            String::from_utf8_lossy(key)
        )));
    }
    Ok(())
}

/// True for keys whose values are binary (`-bin` suffix).
pub fn is_binary_key(key: &[u8]) -> bool {
    key.ends_with(b"-bin")
}

impl MetadataMap {
    /// An empty map (allocates nothing).
    pub const fn new() -> Self {
        MetadataMap {
            codec: None,
            entries: Vec::new(),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len() + usize::from(self.codec.is_some())
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.codec.is_none()
    }

    /// With no entry but (maybe) `trpc-codec`: that value. `None` when
    /// there are other entries.
    pub(crate) fn codec_only(&self) -> Option<Option<&[u8]>> {
        self.entries.is_empty().then_some(self.codec.as_deref())
    }

    /// The `trpc-codec` value, if set.
    pub(crate) fn codec(&self) -> Option<&str> {
        match self.codec.as_deref()? {
            // The built-in codecs, recognised without a UTF-8 check.
            b"proto" => Some("proto"),
            b"json" => Some("json"),
            v => std::str::from_utf8(v).ok(),
        }
    }

    /// Sets (or with `None` removes) the `trpc-codec` value, without copying.
    pub(crate) fn set_codec(&mut self, name: Option<&'static str>) {
        self.codec = name.map(|n| Bytes::from_static(n.as_bytes()));
    }

    /// Sets a text value, replacing every existing value of `key`.
    ///
    /// The value is typed: a string literal (checked like
    /// [`MetadataValue::from_static`]) or a [`MetadataValue`] validated once with
    /// `MetadataValue::try_from(string)?`. Keys and values that come from
    /// input go through [`MetadataMap::try_insert`] or [`MetadataMap::append`],
    /// which return an error instead.
    ///
    /// ```
    /// use trpc::metadata::{MetadataMap, MetadataValue};
    /// let mut md = MetadataMap::new();
    /// md.insert("x-tenant", "acme");
    /// let user = String::from("alice");
    /// md.insert("x-user", MetadataValue::try_from(user).unwrap());
    /// assert!(md.try_insert("x-bad", "line\nbreak").is_err());
    /// ```
    ///
    /// # Panics
    /// If `key` (a literal) is not a valid text key.
    pub fn insert(&mut self, key: &'static str, value: impl IntoMetadataValue) {
        self.insert_value(key, value.into_metadata_value());
    }

    /// Sets a text value, replacing existing values, validating key and value.
    pub fn try_insert(&mut self, key: &str, value: &str) -> Result<(), InvalidMetadata> {
        let (key, value) = Self::text_entry(key, value)?;
        self.remove(std::str::from_utf8(&key).unwrap_or_default());
        self.push(key, Value::Text(value));
        Ok(())
    }

    /// Adds a text value, keeping existing values of `key` (`trpc-codec`
    /// holds one value: it is replaced).
    pub fn append(&mut self, key: &str, value: &str) -> Result<(), InvalidMetadata> {
        let (key, value) = Self::text_entry(key, value)?;
        self.push(key, Value::Text(value));
        Ok(())
    }

    fn push(&mut self, key: Bytes, value: Value) {
        if key == CODEC_KEY {
            self.codec = Some(value.into_bytes());
        } else {
            self.entries.push(Entry { key, value });
        }
    }

    fn text_entry(key: &str, value: &str) -> Result<(Bytes, ByteString), InvalidMetadata> {
        validate_key(key.as_bytes())?;
        if is_binary_key(key.as_bytes()) {
            return Err(InvalidMetadata::new(format!(
                "key {key:?} ends in -bin: use insert_bin"
            )));
        }
        check_text(value).map_err(|_| {
            InvalidMetadata::new(format!("value of {key:?} contains control characters"))
        })?;
        Ok((
            Bytes::copy_from_slice(key.as_bytes()),
            ByteString::from(value),
        ))
    }

    /// Sets a pre-validated text value, replacing existing values of `key`;
    /// neither the key nor the value is copied.
    ///
    /// # Panics
    /// If `key` is not a valid text key.
    pub fn insert_value(&mut self, key: &'static str, value: MetadataValue) {
        if let Err(e) = validate_key(key.as_bytes()) {
            panic!("MetadataMap::insert_value({key:?}): {e}");
        }
        assert!(
            !is_binary_key(key.as_bytes()),
            "MetadataMap::insert_value({key:?}): -bin keys take insert_bin"
        );
        self.remove(key);
        self.push(Bytes::from_static(key.as_bytes()), Value::Text(value.0));
    }

    /// Sets a binary value (key must end in `-bin`), replacing existing values.
    ///
    /// # Panics
    /// If `key` is invalid or does not end in `-bin`.
    pub fn insert_bin(&mut self, key: &'static str, value: impl Into<Bytes>) {
        if let Err(e) = self.try_insert_bin(key, value) {
            panic!("MetadataMap::insert_bin({key:?}): {e}");
        }
    }

    /// Sets a binary value, validating the key.
    pub fn try_insert_bin(
        &mut self,
        key: &str,
        value: impl Into<Bytes>,
    ) -> Result<(), InvalidMetadata> {
        validate_key(key.as_bytes())?;
        if !is_binary_key(key.as_bytes()) {
            return Err(InvalidMetadata::new(format!(
                "binary key {key:?} must end in -bin"
            )));
        }
        self.remove(key);
        self.entries.push(Entry {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Value::Binary(value.into()),
        });
        Ok(())
    }

    /// The first text value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        if is_binary_key(key.as_bytes()) {
            return None;
        }
        if key.as_bytes() == CODEC_KEY {
            return self.codec();
        }
        self.entries
            .iter()
            .find(|e| e.key == key.as_bytes())
            .and_then(|e| e.value.text())
    }

    /// All text values of `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let codec = (key.as_bytes() == CODEC_KEY)
            .then(|| self.codec())
            .flatten();
        codec.into_iter().chain(
            self.entries
                .iter()
                .filter(move |e| e.key == key.as_bytes())
                .filter_map(|e| e.value.text()),
        )
    }

    /// The first binary value of `key` (which must end in `-bin`).
    pub fn get_bin(&self, key: &str) -> Option<&Bytes> {
        if !is_binary_key(key.as_bytes()) {
            return None;
        }
        self.entries
            .iter()
            .find(|e| e.key == key.as_bytes())
            .and_then(|e| match &e.value {
                Value::Binary(b) => Some(b),
                Value::Text(_) => None,
            })
    }

    /// True if `key` has at least one value.
    pub fn contains_key(&self, key: &str) -> bool {
        if key.as_bytes() == CODEC_KEY {
            return self.codec.is_some();
        }
        self.entries.iter().any(|e| e.key == key.as_bytes())
    }

    /// Removes every value of `key`; returns how many were removed.
    pub fn remove(&mut self, key: &str) -> usize {
        if key.as_bytes() == CODEC_KEY {
            return usize::from(self.codec.take().is_some());
        }
        let before = self.entries.len();
        self.entries.retain(|e| e.key != key.as_bytes());
        before - self.entries.len()
    }

    /// Iterates over `(key, value)` pairs; binary values are raw bytes.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        let codec = self.codec.as_deref().map(|v| ("trpc-codec", v));
        codec.into_iter().chain(
            self.entries
                .iter()
                .map(|e| (e.key_str(), e.value.as_bytes())),
        )
    }

    /// Moves every entry of `other` into `self` (appending).
    pub fn extend(&mut self, other: MetadataMap) {
        if other.codec.is_some() {
            self.codec = other.codec;
        }
        self.entries.extend(other.entries);
    }

    /// Encoded size of the entries in the wire format (see [`encode_entry`]).
    pub(crate) fn encoded_len(&self) -> usize {
        self.codec
            .as_ref()
            .map_or(0, |v| entry_len(CODEC_KEY.len(), v.len()))
            + self
                .entries
                .iter()
                .map(|e| entry_len(e.key.len(), e.value.as_bytes().len()))
                .sum::<usize>()
    }

    /// Appends every entry in wire format.
    pub(crate) fn encode(&self, dst: &mut BytesMut) {
        if let Some(v) = &self.codec {
            encode_entry(dst, CODEC_KEY, v);
        }
        for e in &self.entries {
            encode_entry(dst, &e.key, e.value.as_bytes());
        }
    }
}

impl fmt::Debug for MetadataMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        if let Some(v) = &self.codec {
            m.entry(&"trpc-codec", &String::from_utf8_lossy(v));
        }
        for e in &self.entries {
            if is_binary_key(&e.key) {
                m.entry(&e.key_str(), &e.value.as_bytes());
            } else {
                m.entry(&e.key_str(), &String::from_utf8_lossy(e.value.as_bytes()));
            }
        }
        m.finish()
    }
}

mod block;

pub(crate) use block::{
    check_wire_entry, encode_entry, entry_len, entry_span, push_wire_entry, BlockIter,
    ReceivedEntries,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ascii_is_recognised_a_word_at_a_time() {
        let printable: Vec<u8> = (0x20..0x7f).collect();
        assert!(is_printable_ascii(&printable));
        assert!(is_printable_ascii(b""));
        // Every non-printable byte, at every position of a word and of the
        // tail, is caught.
        for bad in (0u8..0x20).chain([0x7f, 0x80, 0xc2, 0xff]) {
            for len in 1..=19 {
                for at in 0..len {
                    let mut v = vec![b'a'; len];
                    v[at] = bad;
                    assert!(!is_printable_ascii(&v), "{bad:#x} at {at} of {len}");
                }
            }
        }
        // The slow path still takes what the fast one leaves.
        assert!(check_text("a\tb").is_ok());
        assert!(check_text("caf\u{e9}").is_ok());
        assert!(check_text("a\u{85}b").is_err());
        assert!(check_text("a\x7fb").is_err());
    }

    #[test]
    fn insert_replaces_and_append_keeps() {
        let mut md = MetadataMap::new();
        md.insert("k", "1");
        md.insert("k", "2");
        assert_eq!(md.get_all("k").collect::<Vec<_>>(), ["2"]);
        md.append("k", "3").unwrap();
        assert_eq!(md.get_all("k").collect::<Vec<_>>(), ["2", "3"]);
        assert_eq!(md.remove("k"), 2);
        assert!(md.is_empty());
    }

    #[test]
    fn the_codec_entry_behaves_like_any_other() {
        let mut md = MetadataMap::new();
        md.insert("a", "1");
        md.insert("trpc-codec", "proto");
        assert_eq!(md.len(), 2);
        assert_eq!(md.get("trpc-codec"), Some("proto"));
        assert!(md.contains_key("trpc-codec"));
        assert_eq!(md.get_all("trpc-codec").collect::<Vec<_>>(), ["proto"]);
        let keys: Vec<&str> = md.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["trpc-codec", "a"]);
        let mut buf = BytesMut::new();
        md.encode(&mut buf);
        assert_eq!(buf.len(), md.encoded_len());
        assert_eq!(block::decode(buf.freeze()), md);
        assert_eq!(md.remove("trpc-codec"), 1);
        assert_eq!(md.get("trpc-codec"), None);
        assert_eq!(md.len(), 1);
    }

    #[test]
    fn keys_are_validated() {
        let mut md = MetadataMap::new();
        assert!(md.try_insert("Upper", "x").is_err());
        assert!(md.try_insert(":path", "x").is_err());
        assert!(md.try_insert("", "x").is_err());
        assert!(md.try_insert("a-bin", "x").is_err());
        assert!(md.try_insert_bin("a", vec![1]).is_err());
        assert!(md.try_insert("ok", "line\nbreak").is_err());
        assert!(md.try_insert("ok", "del\u{7f}").is_err());
        assert!(md.try_insert("ok", "c1\u{85}").is_err());
        assert!(md.try_insert("ok", "tab\tand ünïcödé").is_ok());
        assert!(md.try_insert(&"k".repeat(256), "x").is_err());
    }
}
