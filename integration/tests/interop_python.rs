//! Interoperability with a client written in another language from
//! docs/PROTOCOL.md alone: `integration/interop/trpc_wire.py` (Python, standard
//! library only, written without reading the Rust sources) drives a real trpc
//! server through `check_echo.py`, which asserts the documented behaviour —
//! unary calls, deadlines, statuses, panics, unknown methods, bad payloads,
//! interleaved streams, PING, CANCEL and connection errors. `make test`
//! installs python3 when it is missing.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use trpc::server::{unary, Router};
use trpc::{Code, Request, Response, Status};

use trpc_integration::messages::EchoMsg;
use trpc_integration::python::run_script;
use trpc_integration::server::serve;

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
    run_script(
        "python3",
        "check_echo.py",
        &[server.addr.to_string()],
        Duration::from_secs(60),
        "all checks passed",
    )
    .await;
    server.shutdown().await;
}
