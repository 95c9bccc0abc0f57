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

use clap::{Parser, Subcommand};
use trpc::Status;

mod call;
mod tls;

use call::call;
use tls::TlsArgs;

#[derive(Parser, Debug)]
#[command(
    name = "trpc",
    version,
    about = "Call trpc services from the command line"
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
