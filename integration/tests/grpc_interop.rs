//! The gRPC interop suite both ways: a Python grpcio client (written from
//! the suite's case descriptions, `integration/interop/`) runs every case
//! against trpc's `grpc.testing.TestService`; trpc's gRPC client runs the
//! same cases against a Python grpcio server. Python stubs are generated
//! from trpc's own .proto files; the venv is made by
//! `integration/interop/venv.sh` (grpcio from PyPI) when missing.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use trpc_integration::interop::client::{run, CASES};
use trpc_integration::within;

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// The venv's python (made on first use).
async fn python() -> PathBuf {
    let out = within(
        Duration::from_secs(600),
        "making the interop venv",
        Command::new("bash")
            .arg(interop_dir().join("venv.sh"))
            .stderr(Stdio::inherit())
            .output(),
    )
    .await
    .expect("bash runs venv.sh");
    assert!(out.status.success(), "venv.sh failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A trpc interop server on a free port.
async fn trpc_server() -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = trpc_integration::server::listener().await;
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(trpc_integration::interop::server::serve(
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

#[tokio::test]
async fn a_python_grpcio_client_passes_every_case_against_the_trpc_server() {
    let py = python().await;
    let (addr, stop) = trpc_server().await;
    let child = Command::new(py)
        .arg(interop_dir().join("grpc_interop_client.py"))
        .args(["--server_host", "127.0.0.1", "--server_port"])
        .arg(addr.port().to_string())
        .args(["--test_case", "all"])
        .current_dir(interop_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the python client");
    let out = within(
        Duration::from_secs(120),
        "the python client",
        child.wait_with_output(),
    )
    .await
    .expect("python client ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(&format!("all {} cases passed", CASES.len())),
        "grpc_interop_client.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for case in CASES {
        assert!(
            stdout.contains(&format!("ok    {case}\n")),
            "{case} did not pass:\n{stdout}"
        );
    }
    let _ = stop.send(());
}

/// The Python interop server, killed when dropped.
struct PythonServer {
    _child: Child,
    port: u16,
}

async fn python_server() -> PythonServer {
    let py = python().await;
    let mut child = Command::new(py)
        .arg(interop_dir().join("grpc_interop_server.py"))
        .args(["--port", "0"])
        .current_dir(interop_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the python server");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = within(
        Duration::from_secs(60),
        "python server start",
        lines.next_line(),
    )
    .await
    .expect("read stdout")
    .expect("the server printed its port");
    let port = line
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    PythonServer {
        _child: child,
        port,
    }
}

#[tokio::test]
async fn the_trpc_grpc_client_passes_every_case_against_a_python_grpcio_server() {
    let server = python_server().await;
    let channel = trpc::Endpoint::new(format!("grpc://127.0.0.1:{}", server.port))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    for case in CASES {
        let result = within(Duration::from_secs(60), case, run(case, channel.clone())).await;
        assert_eq!(result, Ok(()), "case {case}");
    }
}

#[tokio::test]
async fn the_trpc_grpc_client_passes_every_case_against_the_trpc_server() {
    let (addr, stop) = trpc_server().await;
    let channel = trpc::Endpoint::new(format!("grpc://{addr}"))
        .unwrap()
        .connect_lazy();
    within(Duration::from_secs(60), "all cases", run("all", channel))
        .await
        .expect("every case passes");
    let _ = stop.send(());
}
