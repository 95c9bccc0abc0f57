//! The messages the tests exchange: each works with both codecs (protobuf
//! through prost, JSON through serde), plus request bodies encoded by hand
//! for raw-frame tests.

/// A message with one string field: `echo.Echo/Say` answers it unchanged.
///
/// In JSON it is `{"message":"..."}`.
#[derive(Clone, PartialEq, Eq, prost::Message, serde::Serialize, serde::Deserialize)]
pub struct EchoMsg {
    /// The text.
    #[prost(string, tag = "1")]
    #[serde(default)]
    pub message: String,
}

impl EchoMsg {
    /// A message carrying `message`.
    pub fn new(message: impl Into<String>) -> Self {
        EchoMsg {
            message: message.into(),
        }
    }
}

/// A binary blob (protobuf `bytes`), for size tests.
#[derive(Clone, PartialEq, Eq, prost::Message, serde::Serialize, serde::Deserialize)]
pub struct Blob {
    /// The bytes.
    #[prost(bytes = "vec", tag = "1")]
    #[serde(default)]
    pub data: Vec<u8>,
}

/// Asks a handler for a reply of `len` bytes, or to sleep `millis`.
#[derive(Clone, PartialEq, Eq, prost::Message, serde::Serialize, serde::Deserialize)]
pub struct Ask {
    /// Size of the reply.
    #[prost(uint64, tag = "1")]
    #[serde(default)]
    pub len: u64,
    /// Time to sleep before answering.
    #[prost(uint64, tag = "2")]
    #[serde(default)]
    pub millis: u64,
}

/// A number, for counting and streaming tests. In JSON it is `{"n":7}`.
#[derive(Clone, PartialEq, Eq, prost::Message, serde::Serialize, serde::Deserialize)]
pub struct Num {
    /// The number.
    #[prost(uint64, tag = "1")]
    pub n: u64,
}

/// A deterministic byte pattern of `len` bytes (what size tests send and
/// compare).
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) % 251) as u8).collect()
}

/// The JSON body of an [`EchoMsg`] carrying `text`, for raw frames.
pub fn echo_body(text: &str) -> Vec<u8> {
    serde_json::to_vec(&EchoMsg::new(text)).expect("json")
}

/// A protobuf-encoded [`Ask`] for `len` bytes, for raw frames.
pub fn ask_body(len: u64) -> Vec<u8> {
    prost::Message::encode_to_vec(&Ask { len, millis: 0 })
}
