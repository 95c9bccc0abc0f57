//! Hello world with generated code: the `helloworld` package generated from
//! `proto/helloworld.proto` by `build.rs`, and a [`Greeter`](helloworld::Greeter).
//!
//! ```text
//! cargo run -p trpc-example-helloworld --bin helloworld_server -- --listen 127.0.0.1:50051
//! cargo run -p trpc-example-helloworld --bin helloworld_client -- --connect 127.0.0.1:50051 --name you
//! ```

use trpc::{Request, Response, Status};

/// The generated `helloworld` package: `HelloRequest`, `HelloReply`, the
/// `Greeter` trait, `GreeterServer`, `GreeterClient` and `greeter_methods`.
pub mod helloworld {
    trpc::include_proto!("helloworld");
}

use helloworld::{HelloReply, HelloRequest};

/// Greets everyone by name.
#[derive(Debug, Default)]
pub struct MyGreeter;

impl helloworld::Greeter for MyGreeter {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let name = request.into_inner().name;
        if name.is_empty() {
            return Err(Status::invalid_argument("name is empty"));
        }
        Ok(Response::new(HelloReply {
            message: format!("Hello {name}!"),
        }))
    }
}

/// The server's routes: the greeter and server reflection.
pub fn router() -> trpc::server::Router {
    helloworld::GreeterServer::new(MyGreeter)
        .into_router()
        .merge(trpc_reflection::service(&[helloworld::FILE_DESCRIPTOR_SET]))
}
