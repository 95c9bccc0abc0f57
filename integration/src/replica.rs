//! [`Replica`]: a `trpc-replica` process (this crate's binary) for failure
//! tests, so SIGKILL and SIGTERM are real; and [`router`], the echo service
//! it serves (also usable in process).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use trpc::server::{unary, Router};
use trpc::{Request, Response, Status};

/// `echo.Echo/Say` and `echo.Echo/Sleep` messages.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Say {
    /// The text (Say) — echoed.
    #[serde(default)]
    pub message: String,
    /// How long to wait before replying, in milliseconds.
    #[serde(default)]
    pub millis: u64,
}

/// The echo service of a replica at `addr`: `echo.Echo/Say` echoes the
/// message after `millis`; every reply carries `served-by: ADDR`.
pub fn router(addr: SocketAddr) -> Router {
    let served_by = addr.to_string();
    Router::new().route(
        "echo.Echo/Say",
        unary(move |req: Request<Say>| {
            let served_by = served_by.clone();
            async move {
                let msg = req.into_inner();
                if msg.millis > 0 {
                    tokio::time::sleep(Duration::from_millis(msg.millis)).await;
                }
                let mut resp = Response::new(msg);
                resp.metadata_mut()
                    .try_insert("served-by", &served_by)
                    .map_err(|e| Status::internal(e.to_string()))?;
                Ok::<_, Status>(resp)
            }
        }),
    )
}

/// A running `trpc-replica` process, killed on drop.
#[derive(Debug)]
pub struct Replica {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Replica {
    /// Starts `exe` (pass `env!("CARGO_BIN_EXE_trpc-replica")`) with `args`
    /// and waits for its `listening on ADDR` line.
    ///
    /// # Panics
    /// If it cannot start or does not listen within 30 s.
    pub async fn spawn(exe: &str, args: &[&str]) -> Replica {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn trpc-replica");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, mut lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let first = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.recv().await {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return addr.parse().ok();
                }
            }
            None
        })
        .await;
        let addr = match first {
            Ok(Some(addr)) => addr,
            _ => panic!("trpc-replica did not report its address"),
        };
        Replica { child, addr, lines }
    }

    /// Waits (at most `limit`) for an output line starting with `prefix`.
    pub async fn wait_line(&mut self, prefix: &str, limit: Duration) -> Option<String> {
        tokio::time::timeout(limit, async {
            while let Some(line) = self.lines.recv().await {
                if line.starts_with(prefix) {
                    return Some(line);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("replica still running");
        let status = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {pid} failed");
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn sigterm(&self) {
        self.signal("-TERM");
    }

    /// Sends SIGKILL and reaps the process.
    pub async fn sigkill(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait().await;
    }

    /// Waits (at most `limit`) for the process to exit; its exit code.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => None,
        }
    }
}
