//! Generates the `routeguide` package (messages with serde, server trait,
//! client, descriptors) from proto/route_guide.proto.
fn main() -> Result<(), trpc_build::Error> {
    trpc_build::configure()
        .serde(true)
        .compile(&["proto/route_guide.proto"], &["proto"])
}
