//! The code generated for `tests/proto` (every feature trpc-build handles)
//! matches the checked-in `tests/golden/`. After a deliberate change to the
//! generator, rewrite it with `UPDATE_GOLDEN=1 cargo test -p trpc-build --test golden`
//! and review the diff. `tests/interop.rs` compiles and runs the golden code.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Generates the kitchen protos into `out` the way the golden files were made.
fn generate(out: &Path) -> Vec<PathBuf> {
    trpc_build::configure()
        .serde(true)
        .include_file("protos.rs")
        .emit_rerun_if_changed(false)
        .out_dir(out)
        .compile_fds(
            trpc_build::compile_descriptor_set(
                &["kitchen/v1/kitchen.proto"],
                &[manifest_dir().join("tests/proto")],
            )
            .expect("the kitchen protos compile"),
        )
        .expect("code generation succeeds")
}

fn read_dir(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&p).expect("read generated file"))
        })
        .collect()
}

/// A fresh output directory per test.
fn out_dir(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("trpc-build-{tag}-{}", std::process::id()))
}

#[test]
fn generated_code_matches_the_checked_in_golden_files() {
    let out = out_dir("golden");
    let _ = fs::remove_dir_all(&out);
    let written = generate(&out);
    assert!(written.iter().all(|p| p.is_file()));
    let fresh = read_dir(&out);
    let golden_dir = manifest_dir().join("tests/golden");

    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let _ = fs::remove_dir_all(&golden_dir);
        fs::create_dir_all(&golden_dir).expect("create golden dir");
        for (name, bytes) in &fresh {
            fs::write(golden_dir.join(name), bytes).expect("write golden file");
        }
    }
    let golden = read_dir(&golden_dir);
    let _ = fs::remove_dir_all(&out);
    assert_eq!(
        fresh.keys().collect::<Vec<_>>(),
        golden.keys().collect::<Vec<_>>(),
        "generated file names differ from tests/golden (UPDATE_GOLDEN=1 to accept)"
    );
    for (name, bytes) in &fresh {
        if bytes != &golden[name] {
            let first = bytes
                .iter()
                .zip(&golden[name])
                .position(|(a, b)| a != b)
                .unwrap_or(bytes.len().min(golden[name].len()));
            let line = bytes[..first].iter().filter(|b| **b == b'\n').count() + 1;
            panic!(
                "{name} differs from tests/golden/{name} from line {line} on \
                 (UPDATE_GOLDEN=1 cargo test -p trpc-build --test golden to accept)"
            );
        }
    }
}

#[test]
fn the_generated_code_has_every_feature_of_the_kitchen_protos() {
    let out = out_dir("features");
    let _ = fs::remove_dir_all(&out);
    generate(&out);
    let code = fs::read_to_string(out.join("kitchen.v1.rs")).expect("kitchen.v1.rs");
    let _ = fs::remove_dir_all(&out);
    for needle in [
        "MethodKind::Unary",
        "MethodKind::ServerStreaming",
        "MethodKind::ClientStreaming",
        "MethodKind::BidiStreaming",
        "Idempotency::NoSideEffects",
        "Idempotency::Idempotent",
        "fn r#type(",
        "pub async fn new_(",
        "pub struct Self_",
        "pub r#type: ::prost::alloc::string::String",
        "::pbjson_types::Timestamp",
        "::pbjson_types::Any",
        "::pbjson_types::Struct",
        "pub enum Payment",
        "::std::collections::HashMap<",
        "pub note: ::core::option::Option<::prost::alloc::string::String>",
        "super::super::common::v1::Money",
        "/// Takes and serves orders.",
        "/// Places an order (unary, not idempotent).",
        "impl serde::Serialize for Order",
        "pub const FILE_DESCRIPTOR_SET: &[u8]",
    ] {
        assert!(code.contains(needle), "kitchen.v1.rs lacks {needle:?}");
    }
}
