//! Mistakes in a `.proto` are reported with the file, line and column: by the
//! library, and by a real `cargo build` of a crate whose `build.rs` uses it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("trpc-build-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Compiles `files` (name, text) written under a temp dir; the error text.
fn error_of(tag: &str, files: &[(&str, &str)]) -> (trpc_build::Error, PathBuf) {
    let dir = TempDir::new(tag);
    for (name, text) in files {
        let path = dir.0.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    let err = trpc_build::configure()
        .out_dir(dir.0.join("out"))
        .emit_rerun_if_changed(false)
        .compile(&[files[0].0], &[&dir.0])
        .expect_err("the proto is broken");
    (err, dir.0.clone())
}

#[test]
fn a_syntax_error_names_file_line_and_column() {
    let (err, dir) = error_of(
        "syntax",
        &[(
            "shop.proto",
            "syntax = \"proto3\";\npackage shop;\n\nmessage Item {\n  string name = 1\n}\n",
        )],
    );
    assert_eq!(err.line_column(), Some((6, 1)), "{err}");
    let text = err.to_string();
    let want = format!("{}:6:1: ", dir.join("shop.proto").display());
    assert!(text.starts_with(&want), "{text}");
    assert!(text.contains("expected ';'"), "{text}");
}

#[test]
fn an_unknown_type_names_the_line_that_uses_it() {
    let (err, _) = error_of(
        "unknown-type",
        &[(
            "shop.proto",
            "syntax = \"proto3\";\npackage shop;\n\nmessage Item {\n  string name = 1;\n  Price price = 2;\n}\n",
        )],
    );
    assert_eq!(err.line_column().map(|(l, _)| l), Some(6), "{err}");
    assert!(err.file().unwrap().ends_with("shop.proto"), "{err}");
    assert!(err.message().contains("Price"), "{err}");
}

#[test]
fn a_missing_import_names_the_import_line() {
    let (err, _) = error_of(
        "missing-import",
        &[(
            "shop.proto",
            "syntax = \"proto3\";\npackage shop;\nimport \"money.proto\";\nmessage Item {}\n",
        )],
    );
    assert_eq!(err.line_column().map(|(l, _)| l), Some(3), "{err}");
    assert!(err.message().contains("money.proto"), "{err}");
}

#[test]
fn an_error_in_an_imported_file_names_that_file() {
    let (err, _) = error_of(
        "imported",
        &[
            (
                "shop.proto",
                "syntax = \"proto3\";\npackage shop;\nimport \"money.proto\";\nmessage Item { Money m = 1; }\n",
            ),
            (
                "money.proto",
                "syntax = \"proto3\";\npackage shop;\nmessage Money {\n  int64 units = 1;\n  Currency currency = 2;\n}\n",
            ),
        ],
    );
    assert!(err.file().unwrap().ends_with("money.proto"), "{err}");
    assert_eq!(err.line_column().map(|(l, _)| l), Some(5), "{err}");
}

#[test]
fn a_missing_file_is_named() {
    let dir = TempDir::new("missing-file");
    let err = trpc_build::configure()
        .out_dir(dir.0.join("out"))
        .compile(&["nope.proto"], &[&dir.0])
        .expect_err("no such file");
    assert!(err.to_string().contains("nope.proto"), "{err}");
}

/// The workspace's target directory (this test runs from `<target>/debug/deps`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .nth(3)
        .expect("target dir above debug/deps")
        .to_path_buf()
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

#[test]
fn a_broken_proto_fails_cargo_build_with_file_and_line() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let krate = TempDir::new("broken-crate");
    write(
        &krate.0.join("Cargo.toml"),
        &format!(
            "[package]\nname = \"broken-proto-check\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
             [build-dependencies]\ntrpc-build = {{ path = {:?} }}\n\n[workspace]\n",
            manifest.display().to_string()
        ),
    );
    // The workspace's lock file: the same dependency versions, no network.
    fs::copy(manifest.join("../Cargo.lock"), krate.0.join("Cargo.lock")).expect("copy lock");
    write(
        &krate.0.join("src/lib.rs"),
        "//! Never built: the build script fails.\n",
    );
    write(
        &krate.0.join("build.rs"),
        "fn main() -> Result<(), trpc_build::Error> {\n    trpc_build::compile_protos(&[\"proto/shop.proto\"], &[\"proto\"])\n}\n",
    );
    write(
        &krate.0.join("proto/shop.proto"),
        "syntax = \"proto3\";\npackage shop;\n\nservice Shop {\n  rpc Buy(Item) returns (Item)\n}\nmessage Item {}\n",
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--offline", "--quiet"])
        .current_dir(&krate.0)
        // Its own target dir (the outer build holds the lock of ours), kept
        // between runs so only the first one compiles the build dependencies.
        .env(
            "CARGO_TARGET_DIR",
            target_dir().join("trpc-build-broken-proto"),
        )
        .env("PROTOC", "/bin/false")
        .output()
        .expect("run cargo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the build should fail:\n{stderr}");
    assert!(
        stderr.contains("proto/shop.proto:6:1: expected ';'"),
        "the build's error should name proto/shop.proto:6:1:\n{stderr}"
    );
}
