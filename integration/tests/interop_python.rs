//! Interoperability with a client written in another language from
//! docs/PROTOCOL.md alone: `integration/interop/trpc_wire.py` (Python, standard
//! library only, written without reading the Rust sources) drives a real trpc
//! server through `check_echo.py`, which asserts the documented behaviour —
//! unary calls, deadlines, statuses, panics, unknown methods, bad payloads,
//! interleaved streams, PING, CANCEL and connection errors. `make test`
//! installs python3 when it is missing.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use trpc::server::{unary, Router};
use trpc::{Code, Request, Response, Status};

use trpc_integration::messages::EchoMsg;
use trpc_integration::server::serve;
use trpc_integration::within;

#[derive(Serialize, Deserialize)]
struct Sleep {
    millis: u64,
}

#[derive(Serialize, Deserialize)]
struct Fail {
    code: u32,
    message: String,
}

#[derive(Serialize, Deserialize)]
struct Empty {}

fn router() -> Router {
    Router::new()
        .route(
            "echo.Echo/Say",
            unary(|req: Request<EchoMsg>| async move {
                Ok::<_, Status>(Response::new(req.into_inner()))
            }),
        )
        .route(
            "echo.Echo/Sleep",
            unary(|req: Request<Sleep>| async move {
                tokio::time::sleep(Duration::from_millis(req.get_ref().millis)).await;
                Ok::<_, Status>(Response::new(Empty {}))
            }),
        )
        .route(
            "echo.Echo/Fail",
            unary(|req: Request<Fail>| async move {
                let f = req.into_inner();
                Err::<Response<Empty>, _>(Status::new(Code::from_u32(f.code), f.message))
            }),
        )
        .route(
            "echo.Echo/Panic",
            unary(|_: Request<Empty>| async move {
                if true {
                    panic!("the Panic method was called");
                }
                Ok::<_, Status>(Response::new(Empty {}))
            }),
        )
}

#[tokio::test]
async fn a_python_client_written_from_the_spec_interoperates() {
    let server = serve(router()).await;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop");
    let child = tokio::process::Command::new("python3")
        .arg(dir.join("check_echo.py"))
        .arg(server.addr.to_string())
        .current_dir(&dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 must be installed (make test installs it)");
    let out = within(
        Duration::from_secs(60),
        "the python checks",
        child.wait_with_output(),
    )
    .await
    .expect("python3 ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "check_echo.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    server.shutdown().await;
}
