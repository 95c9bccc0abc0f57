//! The gRPC interop suite's client test cases on a trpc gRPC channel:
//! `cargo run --example interop_client -- --server_host 127.0.0.1
//! --server_port 10000 --test_case all` (exit status 0 only when every case
//! passes; docs/GRPC.md, "Interop").

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use trpc_integration::interop::client::{run, CASES};

#[derive(Parser, Debug)]
#[command(about = "gRPC interop test cases with trpc's gRPC client")]
struct Args {
    /// The server's host.
    #[arg(long = "server_host", default_value = "127.0.0.1")]
    server_host: String,
    /// The server's port.
    #[arg(long = "server_port", default_value_t = 10000)]
    server_port: u16,
    /// A case name, a comma-separated list, or `all`.
    #[arg(long = "test_case", default_value = "all")]
    test_case: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let target = format!("grpc://{}:{}", args.server_host, args.server_port);
    let channel = match trpc::Endpoint::new(&target) {
        Ok(e) => e.connect_timeout(Duration::from_secs(5)).connect_lazy(),
        Err(e) => {
            eprintln!("bad target {target}: {e}");
            return ExitCode::from(2);
        }
    };
    let cases: Vec<&str> = if args.test_case == "all" {
        CASES.to_vec()
    } else {
        args.test_case.split(',').collect()
    };
    let mut failed = 0;
    for case in cases {
        match run(case, channel.clone()).await {
            Ok(()) => println!("ok    {case}"),
            Err(e) => {
                println!("FAIL  {case}: {e}");
                failed += 1;
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
