//! The hello world server:
//! `cargo run -p trpc-example-helloworld --bin helloworld_server -- --listen 127.0.0.1:50051`.

use std::net::SocketAddr;

use clap::Parser;
use trpc::server::{shutdown_signal, Server};

#[derive(Parser, Debug)]
#[command(about = "Serve helloworld.Greeter until Ctrl-C")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("greeter listening on {}", listener.local_addr()?);
    Server::builder()
        .serve_with_listener(listener, helloworld::router(), shutdown_signal())
        .await
}
