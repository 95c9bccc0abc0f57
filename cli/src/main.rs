//! `trpc`: the command line for trpc services.
//!
//! ```text
//! trpc call ADDR METHOD [JSON] [--timeout 500ms] [-H key=value]... [-v] [--no-reflection]
//!            [--ca ca.crt [--cert client.crt --key client.key] [--domain NAME]]
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

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use trpc::Status;

mod call;
mod gen;
mod reflect;
mod tls;

use call::call;
use gen::GenArgs;
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
        /// Send plain JSON without asking the server's reflection for the schema.
        #[arg(long)]
        no_reflection: bool,
        #[command(flatten)]
        tls: TlsArgs,
    },
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
        Command::Call {
            addr,
            method,
            json,
            timeout,
            connect_timeout,
            headers,
            verbose,
            no_reflection,
            tls,
        } => match call(
            addr,
            method,
            json,
            timeout,
            connect_timeout,
            headers,
            verbose,
            !no_reflection,
            &tls,
        )
        .await
        {
            Ok(()) => ExitCode::SUCCESS,
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
