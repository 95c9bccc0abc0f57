//! The messages of `grpc.health.v1.Health`, written from the documented field
//! numbers (`HealthCheckRequest.service = 1`, `HealthCheckResponse.status = 1`)
//! and enum values, for protobuf (prost) and JSON (the proto3 JSON mapping:
//! enum values by name).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct HealthCheckRequest {
    /// The service to check; `""` is the whole server.
    #[prost(string, tag = "1")]
    #[serde(default)]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct HealthCheckResponse {
    /// A [`ServingStatus`] value.
    #[prost(enumeration = "ServingStatus", tag = "1")]
    #[serde(
        default,
        serialize_with = "status_by_name",
        deserialize_with = "status_from_name"
    )]
    pub status: i32,
}

impl HealthCheckResponse {
    /// A response carrying `status`.
    pub fn new(status: ServingStatus) -> Self {
        HealthCheckResponse {
            status: status as i32,
        }
    }

    /// The status, `Unknown` for a value this version does not know.
    pub fn serving_status(&self) -> ServingStatus {
        ServingStatus::try_from(self.status).unwrap_or(ServingStatus::Unknown)
    }
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ServingStatus {
    /// `UNKNOWN` (0): the status is not known.
    Unknown = 0,
    /// `SERVING` (1).
    Serving = 1,
    /// `NOT_SERVING` (2).
    NotServing = 2,
    /// `SERVICE_UNKNOWN` (3): only from `Watch`, for a service not registered.
    ServiceUnknown = 3,
}

impl ServingStatus {
    /// The name in the `.proto` file: `SERVING`, `NOT_SERVING`...
    pub fn as_str(self) -> &'static str {
        match self {
            ServingStatus::Unknown => "UNKNOWN",
            ServingStatus::Serving => "SERVING",
            ServingStatus::NotServing => "NOT_SERVING",
            ServingStatus::ServiceUnknown => "SERVICE_UNKNOWN",
        }
    }

    /// Parses a name as written by [`as_str`](Self::as_str).
    pub fn from_name(name: &str) -> Option<ServingStatus> {
        [
            ServingStatus::Unknown,
            ServingStatus::Serving,
            ServingStatus::NotServing,
            ServingStatus::ServiceUnknown,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

impl fmt::Display for ServingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn status_by_name<S: Serializer>(status: &i32, s: S) -> Result<S::Ok, S::Error> {
    match ServingStatus::try_from(*status) {
        Ok(known) => s.serialize_str(known.as_str()),
        Err(_) => s.serialize_i32(*status),
    }
}

/// Accepts the name (`"SERVING"`) or the number, as the proto3 JSON mapping does.
fn status_from_name<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NameOrNumber {
        Name(String),
        Number(i32),
    }
    match NameOrNumber::deserialize(d)? {
        NameOrNumber::Number(n) => Ok(n),
        NameOrNumber::Name(name) => ServingStatus::from_name(&name)
            .map(|s| s as i32)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown serving status {name:?}"))),
    }
}
