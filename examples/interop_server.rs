//! The gRPC interop suite's `grpc.testing.TestService` on trpc, native trpc
//! and gRPC on one port: `cargo run --example interop_server -- --port 10000`
//! (docs/GRPC.md, "Interop").

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "grpc.testing.TestService (gRPC interop server) on trpc")]
struct Args {
    /// Port to listen on (127.0.0.1); 0 picks a free one.
    #[arg(long, default_value_t = 10000)]
    port: u16,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    println!("listening {}", listener.local_addr()?.port());
    trpc_integration::interop::server::serve(listener, trpc::server::shutdown_signal()).await
}
