//! Protocol Buffers via prost.

use bytes::{Bytes, BytesMut};

use super::Codec;
use crate::status::Status;

/// Protocol Buffers (prost) for any `prost::Message + Default`. Wire name `proto`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Proto;

impl<T> Codec<T> for Proto
where
    T: prost::Message + Default + Send + 'static,
{
    fn name(&self) -> &'static str {
        "proto"
    }

    fn encode(&self, item: &T, dst: &mut BytesMut) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode(dst)
            .map_err(|e| Status::internal(format!("protobuf encode: {e}")))
    }

    fn decode(&self, src: Bytes) -> Result<T, Status> {
        T::decode(src).map_err(|e| Status::invalid_argument(format!("protobuf decode: {e}")))
    }
}
