//! `trpc call`: one call with a JSON request; the reply (or each message of a
//! streamed reply) printed as JSON.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tower::ServiceExt;
use trpc::{Body, Endpoint, Payload, Request, Status};

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
    for h in &headers {
        let (k, v) = h
            .split_once('=')
            .ok_or_else(|| Status::invalid_argument(format!("header {h:?} is not key=value")))?;
        let k = k.trim().to_ascii_lowercase();
        let res = if k.ends_with("-bin") {
            req.metadata_mut()
                .try_insert_bin(&k, Bytes::from(v.to_string()))
        } else {
            req.metadata_mut().append(&k, v)
        };
        res.map_err(|e| Status::invalid_argument(e.to_string()))?;
    }
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    let endpoint = Endpoint::new(&addr)?.connect_timeout(connect_timeout);
    let channel = tls.apply(endpoint)?.connect().await?;
    let resp = channel.oneshot(req).await?;
    if verbose {
        for (k, v) in resp.metadata().iter() {
            eprintln!("< {k}: {}", String::from_utf8_lossy(v));
        }
    }
    let body = resp.into_inner();
    if !body.is_stream() {
        let payload = body.into_single().await?;
        println!("{}", render(&payload.bytes, true));
        return Ok(());
    }
    // A streamed reply (server streaming): one JSON document per line, in
    // order; the call's status comes at the end.
    let mut body = body;
    while let Some(item) = body.next().await {
        match item {
            Ok(payload) => println!("{}", render(&payload.bytes, false)),
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
/// message of a stream; bytes that are not JSON are printed as they are.
fn render(bytes: &[u8], pretty: bool) -> String {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(v) if pretty => serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string()),
        Ok(v) => v.to_string(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}
