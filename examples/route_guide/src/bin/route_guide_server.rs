//! The route guide server, with server reflection:
//! `cargo run -p trpc-example-route-guide --bin route_guide_server -- --listen 127.0.0.1:10000`.

use std::net::SocketAddr;

use clap::Parser;
use trpc::server::{shutdown_signal, Server};

#[derive(Parser, Debug)]
#[command(about = "Serve routeguide.RouteGuide (and server reflection) until Ctrl-C")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:10000")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("route guide listening on {}", listener.local_addr()?);
    let router = route_guide::router(route_guide::features());
    Server::builder()
        .serve_with_listener(listener, router, shutdown_signal())
        .await
}
