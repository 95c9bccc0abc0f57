//! Generates the reflection service (v1 and v1alpha) from `proto/` with trpc-build.
fn main() -> Result<(), trpc_build::Error> {
    trpc_build::compile_protos(
        &[
            "grpc/reflection/v1/reflection.proto",
            "grpc/reflection/v1alpha/reflection.proto",
        ],
        &["proto"],
    )
}
