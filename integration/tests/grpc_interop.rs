//! The gRPC interop suite both ways: a Python grpcio client (written from
//! the suite's case descriptions, `integration/interop/`) runs every case
//! against trpc's `grpc.testing.TestService`; trpc's gRPC client runs the
//! same cases against a Python grpcio server. Python stubs are generated
//! from trpc's own .proto files; the venv is made by
//! `integration/interop/venv.sh` (grpcio from PyPI) when missing.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use trpc_integration::interop::client::{run, CASES};
use trpc_integration::python::{interop_dir, run_script, venv_python};
use trpc_integration::within;

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
    let py = venv_python().await;
    let (addr, stop) = trpc_server().await;
    let port = addr.port().to_string();
    let args = [
        "--server_host",
        "127.0.0.1",
        "--server_port",
        &port,
        "--test_case",
        "all",
    ];
    let success = format!("all {} cases passed", CASES.len());
    let stdout = run_script(
        py,
        "grpc_interop_client.py",
        &args,
        Duration::from_secs(120),
        &success,
    )
    .await;
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
    let py = venv_python().await;
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
