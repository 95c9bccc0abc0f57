//! `trpc`: the command line for trpc services.
//!
//! ```text
//! trpc call TARGET METHOD [JSON] [--timeout 500ms] [-H key=value]... [-v] [--no-reflection]
//!            [--repeat N [--policy round-robin|random|weighted|least-outstanding|p2c]]
//!            [--ca ca.crt [--cert client.crt --key client.key] [--domain NAME]]
//! trpc health TARGET [SERVICE] [--watch] [--timeout 5s]
//! trpc list ADDR [SERVICE]
//! trpc describe ADDR SYMBOL
//! trpc gen FILE.proto... --out DIR [-I DIR]... [--serde]
//! ```
//!
//! `call` sends `JSON` (default `{}`) and prints the reply as JSON on stdout.
//! When the server offers reflection (`trpc-reflection`), the JSON is converted
//! to protobuf through the method's reflected schema; otherwise it is sent with
//! the JSON codec. `list` and `describe` read the server's reflection. On error
//! these print `CODE_NAME: message` on stderr and exit with 64 + the status
//! code (like grpcurl); usage errors exit 2. `gen` writes the code `trpc-build`
//! generates; a `.proto` error exits 1 naming `file:line:column`.
//!
//! TARGET is `host:port`, `tcp://host:port`, a gRPC server
//! (`grpc://host:port`, `http://…`, `https://…`), or a discovered service:
//! `static://a:1,b:2,c:3`, `dns://host:port`, `etcd://host:port/name`
//! (balanced over its replicas). With `--repeat N`, `call` makes N calls and
//! prints how many replies each replica (`served-by` metadata) sent.
//!
//! `health` prints the status and exits 0 for `SERVING`, 1 for any other
//! status, 64 + the code when the check itself fails (69: `NOT_FOUND`, the
//! service is unknown).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use trpc::Status;

mod call;
mod gen;
mod health;
mod reflect;
mod target;
mod tls;

use gen::GenArgs;

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
    Call(call::CallArgs),
    /// Check a server's health (grpc.health.v1): exit 0 when SERVING.
    Health(health::HealthArgs),
    /// List the services a server offers (or the methods of one), by reflection.
    List {
        /// Server address: host:port or tcp://host:port.
        addr: String,
        /// A service whose methods to list.
        service: Option<String>,
        #[command(flatten)]
        conn: reflect::ConnArgs,
    },
    /// Describe a service, method, message or enum as .proto text, by reflection.
    Describe {
        /// Server address: host:port or tcp://host:port.
        addr: String,
        /// A fully qualified name: pkg.Service, pkg.Service/Method (or
        /// pkg.Service.Method), pkg.Message, pkg.Enum.
        symbol: String,
        #[command(flatten)]
        conn: reflect::ConnArgs,
    },
    /// Generate Rust code from .proto files (what trpc-build does in build.rs).
    Gen(GenArgs),
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
        Command::List {
            addr,
            service,
            conn,
        } => {
            print(async {
                reflect::list(&mut conn.reflection(&addr).await?, service.as_deref()).await
            })
            .await
        }
        Command::Describe { addr, symbol, conn } => {
            print(async { reflect::describe(&mut conn.reflection(&addr).await?, &symbol).await })
                .await
        }
        Command::Gen(args) => match gen::gen(args) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Prints the text `f` makes, or fails with its status.
async fn print(f: impl std::future::Future<Output = Result<String, Status>>) -> ExitCode {
    match f.await {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(status) => fail(&status),
    }
}
