//! JSON via serde_json.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};

use super::Codec;
use crate::status::Status;

/// JSON (serde_json) for any `Serialize + DeserializeOwned` type. Wire name `json`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Json;

impl<T> Codec<T> for Json
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn name(&self) -> &'static str {
        "json"
    }

    fn encode(&self, item: &T, dst: &mut BytesMut) -> Result<(), Status> {
        serde_json::to_writer(dst.writer(), item)
            .map_err(|e| Status::internal(format!("json encode: {e}")))
    }

    fn decode(&self, src: Bytes) -> Result<T, Status> {
        serde_json::from_slice(&src)
            .map_err(|e| Status::invalid_argument(format!("json decode: {e}")))
    }
}
