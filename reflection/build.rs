//! Generates the reflection service from `proto/` with trpc-build: `v1` as
//! written, and `v1alpha`, the same protocol under its older package name,
//! derived from it here so the two cannot drift apart.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let v1 = "proto/grpc/reflection/v1/reflection.proto";
    println!("cargo:rerun-if-changed={v1}");
    let alpha_root = PathBuf::from(std::env::var("OUT_DIR")?).join("proto");
    let alpha = alpha_root.join("grpc/reflection/v1alpha/reflection.proto");
    std::fs::create_dir_all(alpha.parent().ok_or("no parent")?)?;
    let text = std::fs::read_to_string(v1)?;
    let alpha_text = text.replace(
        "package grpc.reflection.v1;",
        "package grpc.reflection.v1alpha;",
    );
    if alpha_text == text {
        return Err(format!("{v1} should declare package grpc.reflection.v1").into());
    }
    std::fs::write(&alpha, alpha_text)?;
    trpc_build::configure().compile(
        &[
            "grpc/reflection/v1/reflection.proto",
            "grpc/reflection/v1alpha/reflection.proto",
        ],
        &[PathBuf::from("proto"), alpha_root],
    )?;
    Ok(())
}
