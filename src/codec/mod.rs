//! Pluggable serialisation: the [`Codec`] trait with [`Json`] (serde_json) and
//! [`Proto`] (prost) implementations.
//!
//! The codec's name travels in the `trpc-codec` request metadata (absent means
//! `json`); the server answers with the same codec. A server method can accept
//! several codecs at once: see [`CodecSet`].
//!
//! Writing a codec of your own takes one impl:
//!
//! ```
//! use bytes::{Bytes, BytesMut, BufMut};
//! use trpc::{codec::Codec, Status};
//!
//! /// Sends UTF-8 strings as raw bytes.
//! #[derive(Clone, Copy, Debug, Default)]
//! struct Utf8;
//!
//! impl Codec<String> for Utf8 {
//!     fn name(&self) -> &'static str { "utf8" }
//!     fn encode(&self, item: &String, dst: &mut BytesMut) -> Result<(), Status> {
//!         dst.put_slice(item.as_bytes());
//!         Ok(())
//!     }
//!     fn decode(&self, src: Bytes) -> Result<String, Status> {
//!         String::from_utf8(src.to_vec()).map_err(|e| Status::invalid_argument(e.to_string()))
//!     }
//! }
//! ```

mod json;
mod proto;

pub use json::Json;
pub use proto::Proto;

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};

use crate::metadata::MetadataMap;
use crate::status::Status;

/// The metadata key naming the codec of a call's messages.
pub const CODEC_KEY: &str = "trpc-codec";
/// The codec assumed when a request carries no `trpc-codec`.
pub const DEFAULT_CODEC: &str = "json";

/// Serialises and deserialises messages of type `T`.
pub trait Codec<T>: Clone + Send + Sync + 'static {
    /// The name on the wire (`trpc-codec` metadata), e.g. `json`, `proto`.
    fn name(&self) -> &'static str;

    /// Appends the encoding of `item` to `dst`.
    fn encode(&self, item: &T, dst: &mut BytesMut) -> Result<(), Status>;

    /// Decodes a message. Errors should be `InvalidArgument` (the bytes are bad).
    fn decode(&self, src: Bytes) -> Result<T, Status>;

    /// Encodes into fresh bytes.
    fn encode_to_bytes(&self, item: &T) -> Result<Bytes, Status> {
        let mut buf = BytesMut::new();
        self.encode(item, &mut buf)?;
        Ok(buf.freeze())
    }
}

/// Room a message buffer starts from (a chunk serves many small messages).
const SCRATCH_CHUNK: usize = 4 << 10;
/// A chunk with less room left than this is replaced before encoding.
const SCRATCH_MIN_ROOM: usize = 256;
/// A thread's buffer grown past this (a large message) is not kept.
const SCRATCH_MAX_KEEP: usize = 64 << 10;

thread_local! {
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Encodes the one message of a unary request or response: `encode`
/// appends it to a buffer, and the message is cut from a per-thread chunk
/// shared by the messages encoded after it, instead of a fresh allocation
/// each. Such a message is copied into the connection's output (or sent
/// from it) and dropped within a turn, so a chunk is soon free again and
/// reused in place; a message kept longer keeps at most its chunk
/// (4 KiB) alive. Messages of streams do not come here: one waiting for
/// flow-control credit could keep a chunk per stream.
pub(crate) fn encode_once(
    encode: impl FnOnce(&mut BytesMut) -> Result<(), Status>,
) -> Result<Bytes, Status> {
    SCRATCH.with(|cell| {
        let Ok(mut buf) = cell.try_borrow_mut() else {
            // Encoding a message while encoding another (a codec that
            // calls trpc): a buffer of its own.
            let mut own = BytesMut::new();
            encode(&mut own)?;
            return Ok(own.freeze());
        };
        if buf.capacity() < SCRATCH_MIN_ROOM {
            // Reuses the chunk in place once every message cut from it is
            // gone; otherwise allocates the next one.
            buf.reserve(SCRATCH_CHUNK);
        }
        let result = encode(&mut buf);
        let message = buf.split();
        if result.is_err() || buf.capacity() > SCRATCH_MAX_KEEP {
            *buf = BytesMut::new();
        }
        result.map(|()| message.freeze())
    })
}

/// The codec named in `metadata` (`trpc-codec`), or `json` when absent.
pub fn codec_name(metadata: &MetadataMap) -> &str {
    metadata.codec().unwrap_or(DEFAULT_CODEC)
}

/// Sets `trpc-codec` in `metadata` (left out for the default, `json`).
pub fn set_codec_name(metadata: &mut MetadataMap, name: &'static str) {
    metadata.set_codec((name != DEFAULT_CODEC).then_some(name));
}

/// The codecs a server method accepts, chosen per call by name.
///
/// Implemented for [`Json`], [`Proto`], and tuples of one to three codecs, so
/// `(Json, Proto)` serves a method to JSON and protobuf clients alike; a codec of
/// your own is used as `(MyCodec,)`.
pub trait CodecSet<Req, Resp>: Clone + Send + Sync + 'static {
    /// The index of the codec called `name`, if accepted.
    fn pick(&self, name: &str) -> Option<usize>;
    /// The name of codec `which`.
    fn name_of(&self, which: usize) -> &'static str;
    /// Decodes a request with codec `which`.
    fn decode(&self, which: usize, src: Bytes) -> Result<Req, Status>;
    /// Encodes a response with codec `which`.
    fn encode(&self, which: usize, item: &Resp, dst: &mut BytesMut) -> Result<(), Status>;
    /// All accepted names, for error messages.
    fn names(&self) -> Vec<&'static str>;
}

macro_rules! codec_single {
    ($($C:ident),+) => {$(
        impl<Req, Resp> CodecSet<Req, Resp> for $C
        where
            $C: Codec<Req> + Codec<Resp>,
        {
            fn pick(&self, name: &str) -> Option<usize> {
                (<$C as Codec<Req>>::name(self) == name).then_some(0)
            }
            fn name_of(&self, _: usize) -> &'static str {
                <$C as Codec<Req>>::name(self)
            }
            fn decode(&self, _: usize, src: Bytes) -> Result<Req, Status> {
                <$C as Codec<Req>>::decode(self, src)
            }
            fn encode(&self, _: usize, item: &Resp, dst: &mut BytesMut) -> Result<(), Status> {
                <$C as Codec<Resp>>::encode(self, item, dst)
            }
            fn names(&self) -> Vec<&'static str> {
                vec![<$C as Codec<Req>>::name(self)]
            }
        }
    )+};
}

codec_single!(Json, Proto);

macro_rules! codec_tuple {
    ($($C:ident $i:tt),+) => {
        impl<$($C,)+ Req, Resp> CodecSet<Req, Resp> for ($($C,)+)
        where
            $($C: Codec<Req> + Codec<Resp>,)+
        {
            fn pick(&self, name: &str) -> Option<usize> {
                $(if <$C as Codec<Req>>::name(&self.$i) == name { return Some($i); })+
                None
            }
            fn name_of(&self, which: usize) -> &'static str {
                match which {
                    $($i => <$C as Codec<Req>>::name(&self.$i),)+
                    _ => "",
                }
            }
            fn decode(&self, which: usize, src: Bytes) -> Result<Req, Status> {
                match which {
                    $($i => <$C as Codec<Req>>::decode(&self.$i, src),)+
                    _ => Err(Status::internal("codec index out of range")),
                }
            }
            fn encode(&self, which: usize, item: &Resp, dst: &mut BytesMut) -> Result<(), Status> {
                match which {
                    $($i => <$C as Codec<Resp>>::encode(&self.$i, item, dst),)+
                    _ => Err(Status::internal("codec index out of range")),
                }
            }
            fn names(&self) -> Vec<&'static str> {
                vec![$(<$C as Codec<Req>>::name(&self.$i)),+]
            }
        }
    };
}

codec_tuple!(A 0);
codec_tuple!(A 0, B 1);
codec_tuple!(A 0, B 1, C 2);

#[cfg(test)]
mod tests {
    use super::*;

    fn put(bytes: &'static [u8]) -> impl FnOnce(&mut BytesMut) -> Result<(), Status> {
        move |buf| {
            buf.extend_from_slice(bytes);
            Ok(())
        }
    }

    #[test]
    fn unary_messages_share_a_chunk_that_is_reused_once_they_are_gone() {
        // A fresh thread: a fresh buffer.
        std::thread::spawn(|| {
            let a = encode_once(put(b"first")).unwrap();
            let b = encode_once(put(b"second")).unwrap();
            assert_eq!((&a[..], &b[..]), (&b"first"[..], &b"second"[..]));
            // Cut from one chunk, one after the other.
            assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr());
            let start = a.as_ptr();
            drop((a, b));
            // Fill the chunk; once nothing cut from it lives, the next
            // message starts at the beginning again, without a new chunk.
            let mut n = 0;
            loop {
                let m = encode_once(put(&[7; 100])).unwrap();
                n += 1;
                assert!(n < 100, "the chunk was never reused");
                if m.as_ptr() == start {
                    break;
                }
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_failed_encoding_leaves_nothing_behind_and_large_buffers_are_not_kept() {
        std::thread::spawn(|| {
            let err = encode_once(|buf| {
                buf.extend_from_slice(b"half");
                Err(Status::internal("no"))
            })
            .unwrap_err();
            assert_eq!(err.message(), "no");
            assert_eq!(&encode_once(put(b"next")).unwrap()[..], b"next");
            let big = encode_once(|buf| {
                buf.extend_from_slice(&vec![1; 200 << 10]);
                Ok(())
            })
            .unwrap();
            assert_eq!(big.len(), 200 << 10);
            let small = encode_once(put(b"after")).unwrap();
            assert_ne!(
                big.as_ptr().wrapping_add(big.len()),
                small.as_ptr(),
                "the large message's buffer was kept"
            );
            SCRATCH.with(|b| assert!(b.borrow().capacity() <= SCRATCH_MAX_KEEP));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn an_encoding_inside_an_encoding_gets_a_buffer_of_its_own() {
        let outer = encode_once(|buf| {
            let inner = encode_once(put(b"inner")).unwrap();
            buf.extend_from_slice(b"outer:");
            buf.extend_from_slice(&inner);
            Ok(())
        })
        .unwrap();
        assert_eq!(&outer[..], b"outer:inner");
    }

    #[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
    struct Msg {
        #[prost(string, tag = "1")]
        text: String,
        #[prost(uint32, tag = "2")]
        n: u32,
    }

    #[test]
    fn a_pair_of_codecs_picks_by_name() {
        let set = (Json, Proto);
        let msg = Msg {
            text: "hi".into(),
            n: 7,
        };
        for name in ["json", "proto"] {
            let which = CodecSet::<Msg, Msg>::pick(&set, name).unwrap();
            assert_eq!(CodecSet::<Msg, Msg>::name_of(&set, which), name);
            let mut buf = BytesMut::new();
            CodecSet::<Msg, Msg>::encode(&set, which, &msg, &mut buf).unwrap();
            let back: Msg = CodecSet::<Msg, Msg>::decode(&set, which, buf.freeze()).unwrap();
            assert_eq!(back, msg);
        }
        assert_eq!(CodecSet::<Msg, Msg>::pick(&set, "xml"), None);
    }

    #[test]
    fn garbage_is_invalid_argument() {
        let e = Codec::<Msg>::decode(&Json, Bytes::from_static(b"{nope")).unwrap_err();
        assert_eq!(e.code(), crate::Code::InvalidArgument);
        let e = Codec::<Msg>::decode(&Proto, Bytes::from_static(&[0xff, 0xff, 0xff])).unwrap_err();
        assert_eq!(e.code(), crate::Code::InvalidArgument);
    }
}
