//! Python peers of the interop tests (`integration/interop/`): where the
//! scripts are, the grpcio venv, and running a script to completion.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::wait::within;

/// `integration/interop/`: the Python scripts and their .proto files.
pub fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// The python of the grpcio venv, made by `interop/venv.sh` on first use
/// (grpcio from PyPI; allowed up to 10 minutes).
pub async fn venv_python() -> PathBuf {
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

/// Runs `python interop/<script> <args>` (killed if the test ends first,
/// bounded by `limit`) and checks that it succeeds and prints `success`;
/// returns its stdout. On failure the panic shows stdout and stderr.
pub async fn run_script<A: AsRef<OsStr>>(
    python: impl AsRef<OsStr>,
    script: &str,
    args: &[A],
    limit: Duration,
    success: &str,
) -> String {
    let child = Command::new(python)
        .arg(interop_dir().join(script))
        .args(args)
        .current_dir(interop_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {script} (make test installs python3): {e}"));
    let out = within(limit, script, child.wait_with_output())
        .await
        .unwrap_or_else(|e| panic!("{script} ran: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(success),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}
