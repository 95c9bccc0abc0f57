//! The hello world client:
//! `cargo run -p trpc-example-helloworld --bin helloworld_client -- --connect 127.0.0.1:50051 --name you`.

use clap::Parser;
use helloworld::helloworld::{GreeterClient, HelloRequest};
use trpc::Status;

#[derive(Parser, Debug)]
#[command(about = "Call helloworld.Greeter/SayHello and print the greeting")]
struct Args {
    /// Server address: host:port or tcp://host:port.
    #[arg(long, default_value = "127.0.0.1:50051")]
    connect: String,
    /// Who to greet.
    #[arg(long, default_value = "world")]
    name: String,
}

#[tokio::main]
async fn main() -> Result<(), Status> {
    let args = Args::parse();
    let channel = trpc::Endpoint::new(&args.connect)?.connect().await?;
    let mut client = GreeterClient::new(channel);
    let reply = client.say_hello(HelloRequest { name: args.name }).await?;
    println!("{}", reply.into_inner().message);
    Ok(())
}
