//! `trpc`: the command line for trpc services.
//!
//! ```text
//! trpc call TARGET METHOD [JSON] [--timeout 500ms] [-H key=value]... [-v]
//!            [--repeat N [--policy round-robin|random|weighted|least-outstanding|p2c]]
//!            [--ca ca.crt [--cert client.crt --key client.key] [--domain NAME]]
//! trpc health TARGET [SERVICE] [--watch] [--timeout 5s]
//! ```
//!
//! TARGET is `host:port`, `tcp://host:port`, or a discovered service:
//! `static://a:1,b:2,c:3`, `dns://host:port`, `etcd://host:port/name`
//! (balanced over its replicas).
//!
//! `call` sends `JSON` (default `{}`) with the JSON codec and prints the reply
//! as JSON on stdout; with `--repeat N` it makes N calls and prints how many
//! replies each replica (`served-by` metadata) sent. On error it prints
//! `CODE_NAME: message` on stderr and exits with 64 + the status code (like
//! grpcurl); usage errors exit 2.
//!
//! `health` prints the status and exits 0 for `SERVING`, 1 for any other
//! status, 64 + the code when the check itself fails (69: `NOT_FOUND`, the
//! service is unknown).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use trpc::Status;

mod call;
mod health;
mod target;
mod tls;

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
    Call(call::CallArgs),
    /// Check a server's health (grpc.health.v1): exit 0 when SERVING.
    Health(health::HealthArgs),
}

fn fail(status: &Status) -> ExitCode {
    eprintln!("{}: {}", status.code().as_str(), status.message());
    ExitCode::from(64 + status.code() as u8)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Call(args) => match call::call(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(status) => fail(&status),
        },
        Command::Health(args) => match health::health(args).await {
            Ok(code) => code,
            Err(status) => fail(&status),
        },
    }
}
