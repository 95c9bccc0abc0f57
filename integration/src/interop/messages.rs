//! The interop messages as prost structs, written by hand from
//! `integration/interop/proto/grpc/testing/*.proto` (same names, types and
//! field numbers).

#![allow(missing_docs)]

/// `grpc.testing.Empty`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Empty {}

/// `grpc.testing.BoolValue`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct BoolValue {
    #[prost(bool, tag = "1")]
    pub value: bool,
}

/// `grpc.testing.Payload` (type is always COMPRESSABLE = 0).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Payload {
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(bytes = "bytes", tag = "2")]
    pub body: bytes::Bytes,
}

/// `grpc.testing.EchoStatus`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct EchoStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// `grpc.testing.SimpleRequest`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SimpleRequest {
    #[prost(int32, tag = "1")]
    pub response_type: i32,
    #[prost(int32, tag = "2")]
    pub response_size: i32,
    #[prost(message, optional, tag = "3")]
    pub payload: Option<Payload>,
    #[prost(bool, tag = "4")]
    pub fill_username: bool,
    #[prost(bool, tag = "5")]
    pub fill_oauth_scope: bool,
    #[prost(message, optional, tag = "6")]
    pub response_compressed: Option<BoolValue>,
    #[prost(message, optional, tag = "7")]
    pub response_status: Option<EchoStatus>,
    #[prost(message, optional, tag = "8")]
    pub expect_compressed: Option<BoolValue>,
    #[prost(bool, tag = "9")]
    pub fill_server_id: bool,
}

/// `grpc.testing.SimpleResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SimpleResponse {
    #[prost(message, optional, tag = "1")]
    pub payload: Option<Payload>,
    #[prost(string, tag = "2")]
    pub username: String,
    #[prost(string, tag = "3")]
    pub oauth_scope: String,
    #[prost(string, tag = "4")]
    pub server_id: String,
}

/// `grpc.testing.StreamingInputCallRequest`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct StreamingInputCallRequest {
    #[prost(message, optional, tag = "1")]
    pub payload: Option<Payload>,
    #[prost(message, optional, tag = "2")]
    pub expect_compressed: Option<BoolValue>,
}

/// `grpc.testing.StreamingInputCallResponse`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct StreamingInputCallResponse {
    #[prost(int32, tag = "1")]
    pub aggregated_payload_size: i32,
}

/// `grpc.testing.ResponseParameters`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct ResponseParameters {
    #[prost(int32, tag = "1")]
    pub size: i32,
    #[prost(int32, tag = "2")]
    pub interval_us: i32,
    #[prost(message, optional, tag = "3")]
    pub compressed: Option<BoolValue>,
}

/// `grpc.testing.StreamingOutputCallRequest`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct StreamingOutputCallRequest {
    #[prost(int32, tag = "1")]
    pub response_type: i32,
    #[prost(message, repeated, tag = "2")]
    pub response_parameters: Vec<ResponseParameters>,
    #[prost(message, optional, tag = "3")]
    pub payload: Option<Payload>,
    #[prost(message, optional, tag = "7")]
    pub response_status: Option<EchoStatus>,
}

/// `grpc.testing.StreamingOutputCallResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct StreamingOutputCallResponse {
    #[prost(message, optional, tag = "1")]
    pub payload: Option<Payload>,
}

/// A payload of `n` zero bytes.
pub fn zeros(n: usize) -> Payload {
    Payload {
        r#type: 0,
        body: bytes::Bytes::from(vec![0u8; n]),
    }
}
