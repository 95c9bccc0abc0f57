//! Generates the `helloworld` package from proto/helloworld.proto.
fn main() -> Result<(), trpc_build::Error> {
    trpc_build::configure()
        .serde(true) // JSON too: `trpc call ADDR helloworld.Greeter/SayHello '{"name":"you"}'`
        .compile(&["proto/helloworld.proto"], &["proto"])
}
