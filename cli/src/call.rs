//! `trpc call`: one call with a JSON request; the reply (or each message of a
//! streamed reply) printed as JSON. With `--repeat N`, N calls and a tally of
//! the replies per `served-by` (the replica that answered).
//!
//! When the target is one server that offers reflection and describes the
//! method, the JSON is converted to protobuf (and the replies back) through
//! the reflected schema (`reflect.rs`); otherwise (and for discovered targets,
//! whose replicas are not asked) the call uses the JSON codec.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tower::ServiceExt;
use trpc::{Body, Payload, Request, Status};

use crate::reflect::{self, MethodSchema};
use crate::target::{self, Policy};
use crate::tls::TlsArgs;

/// The arguments of `trpc call`.
#[derive(clap::Args, Debug)]
pub(crate) struct CallArgs {
    /// Target: host:port, tcp://host:port, grpc://host:port (or http://,
    /// https://: a gRPC server), static://a:1,b:2, dns://host:port or
    /// etcd://host:port/name.
    addr: String,
    /// Method: package.Service/Method.
    method: String,
    /// Request as JSON (default `{}`); `-` reads it from stdin.
    json: Option<String>,
    /// Deadline for each call, e.g. 500ms, 2s.
    #[arg(long, value_parser = trpc::util::parse_duration)]
    timeout: Option<Duration>,
    /// Connect timeout (and, for discovered targets, how long to wait for
    /// discovery).
    #[arg(long, value_parser = trpc::util::parse_duration, default_value = "5s")]
    connect_timeout: Duration,
    /// Request metadata, repeatable: -H key=value.
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// Print response metadata on stderr.
    #[arg(short, long)]
    verbose: bool,
    /// Make N calls and print how many replies each replica (`served-by`
    /// response metadata) sent, instead of the replies.
    #[arg(long, value_name = "N")]
    repeat: Option<u32>,
    /// Balancing policy for discovered targets.
    #[arg(long, value_enum, default_value_t)]
    policy: Policy,
    /// Send plain JSON without asking the server's reflection for the schema.
    #[arg(long)]
    no_reflection: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

/// The request: `body` in the method's protobuf form when `schema` is known,
/// else as JSON.
fn request(
    args: &CallArgs,
    body: &Bytes,
    value: &serde_json::Value,
    schema: Option<&MethodSchema>,
) -> Result<Request<Body>, Status> {
    let mut req =
        Request::new(Body::once(Payload::new(body.clone()))).with_method(args.method.clone());
    reflect::apply_headers(req.metadata_mut(), &args.headers)?;
    if let Some(t) = args.timeout {
        req.set_timeout(t);
    }
    if let Some(schema) = schema {
        *req.get_mut() = schema.encode_request(value)?;
        reflect::use_protobuf(&mut req);
    }
    Ok(req)
}

pub(crate) async fn call(args: CallArgs) -> Result<(), Status> {
    let json = match args.json.as_deref() {
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
    let body = Bytes::from(
        serde_json::to_vec(&value)
            .map_err(|e| Status::invalid_argument(format!("request JSON: {e}")))?,
    );
    let connected =
        target::connect(&args.addr, args.connect_timeout, args.policy, &args.tls).await?;
    let schema = match connected.channel() {
        Some(channel) if !args.no_reflection => {
            let mut client = reflect::client(channel.clone(), &args.headers, args.timeout)?;
            MethodSchema::lookup(&mut client, &args.method, args.verbose).await?
        }
        _ => None,
    };
    let svc = connected.service();
    if let Some(n) = args.repeat {
        return repeat(&args, &body, &value, schema.as_ref(), svc, n).await;
    }
    let req = request(&args, &body, &value, schema.as_ref())?;
    let resp = svc.oneshot(req).await?;
    if args.verbose {
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
                if args.verbose {
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

/// `--repeat N`: N calls in sequence; prints the tally of replies per
/// `served-by` (errors per code). Fails with the last error if any call failed.
async fn repeat(
    args: &CallArgs,
    body: &Bytes,
    value: &serde_json::Value,
    schema: Option<&MethodSchema>,
    svc: crate::target::TargetService,
    n: u32,
) -> Result<(), Status> {
    let mut tally: BTreeMap<String, u32> = BTreeMap::new();
    let mut last_error = None;
    for _ in 0..n {
        let outcome = async {
            let resp = svc
                .clone()
                .oneshot(request(args, body, value, schema)?)
                .await?;
            let by = resp
                .metadata()
                .get("served-by")
                .unwrap_or("(no served-by)")
                .to_string();
            // Read the whole reply, so a failing stream counts as a failure.
            let mut reply = resp.into_inner();
            while let Some(item) = reply.next().await {
                match item {
                    Ok(_) => {}
                    Err(s) if s.is_ok() => break,
                    Err(s) => return Err(s),
                }
            }
            Ok::<_, Status>(by)
        }
        .await;
        let key = match outcome {
            Ok(by) => by,
            Err(e) => {
                if args.verbose {
                    eprintln!("{}: {}", e.code().as_str(), e.message());
                }
                let key = format!("error {}", e.code().as_str());
                last_error = Some(e);
                key
            }
        };
        *tally.entry(key).or_insert(0) += 1;
    }
    println!("{n} calls to {}:", args.addr);
    let width = tally.keys().map(String::len).max().unwrap_or(0);
    for (by, count) in &tally {
        println!(
            "  {by:<width$}  {count:>6}  {:>5.1}%",
            *count as f64 * 100.0 / n.max(1) as f64
        );
    }
    match last_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
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
