//! `trpc`: the command line for trpc services.
//!
//! ```text
//! trpc call ADDR METHOD [JSON] [--timeout 500ms] [-H key=value]... [-v]
//!            [--ca ca.crt [--cert client.crt --key client.key] [--domain NAME]]
//! ```
//!
//! `call` sends `JSON` (default `{}`) with the JSON codec and prints the reply
//! as JSON on stdout. On error it prints `CODE_NAME: message` on stderr and
//! exits with 64 + the status code (like grpcurl); usage errors exit 2.

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use tower::ServiceExt;
use trpc::{Body, Endpoint, Payload, Request, Status};

#[derive(Parser, Debug)]
#[command(
    name = "trpc",
    version,
    about = "Call, check and load-test trpc services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Call a method with a JSON request and print the JSON reply.
    Call {
        /// Server address: host:port or tcp://host:port.
        addr: String,
        /// Method: package.Service/Method.
        method: String,
        /// Request as JSON (default `{}`); `-` reads it from stdin.
        json: Option<String>,
        /// Deadline for the call, e.g. 500ms, 2s.
        #[arg(long, value_parser = trpc::util::parse_duration)]
        timeout: Option<Duration>,
        /// Connect timeout.
        #[arg(long, value_parser = trpc::util::parse_duration, default_value = "5s")]
        connect_timeout: Duration,
        /// Request metadata, repeatable: -H key=value.
        #[arg(short = 'H', long = "header", value_name = "KEY=VALUE")]
        headers: Vec<String>,
        /// Print response metadata on stderr.
        #[arg(short, long)]
        verbose: bool,
        #[command(flatten)]
        tls: TlsArgs,
    },
}

/// TLS options: `--ca` turns TLS on.
#[derive(clap::Args, Debug, Default)]
struct TlsArgs {
    /// Use TLS, trusting the CA certificates in this PEM file.
    #[arg(long, value_name = "PEM")]
    ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, value_name = "PEM", requires = "key", requires = "ca")]
    cert: Option<std::path::PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, value_name = "PEM", requires = "cert")]
    key: Option<std::path::PathBuf>,
    /// Server name to verify (default: the host of ADDR).
    #[arg(long, requires = "ca")]
    domain: Option<String>,
}

impl TlsArgs {
    fn apply(&self, endpoint: Endpoint) -> Result<Endpoint, Status> {
        let Some(ca) = &self.ca else {
            return Ok(endpoint);
        };
        let mut tls = trpc::tls::ClientTlsConfig::new().ca_pem_file(ca)?;
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let read = |p: &std::path::Path| {
                std::fs::read(p)
                    .map_err(|e| Status::invalid_argument(format!("{}: {e}", p.display())))
            };
            tls = tls.identity_pem(read(cert)?, read(key)?)?;
        }
        if let Some(d) = &self.domain {
            tls = tls.domain_name(d.clone());
        }
        Ok(endpoint.tls_config(tls)?)
    }
}

fn fail(status: &Status) -> ExitCode {
    eprintln!("{}: {}", status.code().as_str(), status.message());
    ExitCode::from(64 + status.code() as u8)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Call {
            addr,
            method,
            json,
            timeout,
            connect_timeout,
            headers,
            verbose,
            tls,
        } => match call(
            addr,
            method,
            json,
            timeout,
            connect_timeout,
            headers,
            verbose,
            &tls,
        )
        .await
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(status) => fail(&status),
        },
    }
}

#[allow(clippy::too_many_arguments)]
async fn call(
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
    let payload = resp.into_inner().into_single().await?;
    match serde_json::from_slice::<serde_json::Value>(&payload.bytes) {
        Ok(v) => println!(
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
        ),
        Err(_) => println!("{}", String::from_utf8_lossy(&payload.bytes)),
    }
    Ok(())
}
