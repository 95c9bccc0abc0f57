//! `trpc call`: one call with a JSON request; the reply (or each message of a
//! streamed reply) printed as JSON.
//!
//! When the server offers reflection and describes the method, the JSON is
//! converted to protobuf (and the replies back) through the reflected schema
//! (`reflect.rs`); otherwise the call uses the JSON codec.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tower::ServiceExt;
use trpc::{Body, Endpoint, Payload, Request, Status};

use crate::reflect::{self, MethodSchema};
use crate::tls::TlsArgs;

#[allow(clippy::too_many_arguments)]
pub(crate) async fn call(
    addr: String,
    method: String,
    json: Option<String>,
    timeout: Option<Duration>,
    connect_timeout: Duration,
    headers: Vec<String>,
    verbose: bool,
    reflection: bool,
    tls: &TlsArgs,
) -> Result<(), Status> {
    let json = match json.as_deref() {
        None => "{}".to_string(),
        Some("-") => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| Status::invalid_argument(format!("reading stdin: {e}")))?;
            s
        }
        Some(s) => s.to_string(),
    };
    let value: serde_json::Value = serde_json::from_str(&json)
        .map_err(|e| Status::invalid_argument(format!("request is not valid JSON: {e}")))?;
    let body = serde_json::to_vec(&value)
        .map_err(|e| Status::invalid_argument(format!("request JSON: {e}")))?;

    let mut req = Request::new(Body::once(Payload::new(Bytes::from(body)))).with_method(method);
    reflect::apply_headers(req.metadata_mut(), &headers)?;
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    let endpoint = Endpoint::new(&addr)?.connect_timeout(connect_timeout);
    let channel = tls.apply(endpoint)?.connect().await?;
    let schema = if reflection {
        let mut client = reflect::client(channel.clone(), &headers, timeout)?;
        MethodSchema::lookup(&mut client, req.method().as_str(), verbose).await?
    } else {
        None
    };
    if let Some(schema) = &schema {
        *req.get_mut() = schema.encode_request(&value)?;
        reflect::use_protobuf(&mut req);
    }
    let resp = channel.oneshot(req).await?;
    if verbose {
        for (k, v) in resp.metadata().iter() {
            eprintln!("< {k}: {}", String::from_utf8_lossy(v));
        }
    }
    let body = resp.into_inner();
    if !body.is_stream() {
        let payload = body.into_single().await?;
        println!("{}", render(schema.as_ref(), payload.bytes, true)?);
        return Ok(());
    }
    // A streamed reply (server streaming): one JSON document per line, in
    // order; the call's status comes at the end.
    let mut body = body;
    while let Some(item) = body.next().await {
        match item {
            Ok(payload) => println!("{}", render(schema.as_ref(), payload.bytes, false)?),
            Err(status) if status.is_ok() => {
                if verbose {
                    for (k, v) in status.metadata().iter() {
                        eprintln!("< (trailer) {k}: {}", String::from_utf8_lossy(v));
                    }
                }
                break;
            }
            Err(status) => return Err(status),
        }
    }
    Ok(())
}

/// A reply as text: pretty JSON for a single reply, one compact line per
/// message of a stream. Without a schema the reply is JSON already; bytes that
/// are not JSON are printed as they are.
fn render(schema: Option<&MethodSchema>, bytes: Bytes, pretty: bool) -> Result<String, Status> {
    let value = match schema {
        Some(schema) => schema.decode_reply(bytes)?,
        None => match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(v) => v,
            Err(_) => return Ok(String::from_utf8_lossy(&bytes).into_owned()),
        },
    };
    Ok(if pretty {
        serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
    } else {
        value.to_string()
    })
}
