//! [`EtcdServer`]: a real etcd (Debian's `etcd-server`, installed by `make
//! deps`) on free loopback ports with a temporary data directory, killed and
//! removed on drop; it can be stopped and started again with the same data.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) etcd server for one test.
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EtcdServer {
    /// Starts etcd and waits until it answers `/health`.
    ///
    /// # Panics
    /// If the `etcd` binary is missing (run `make deps`) or etcd does not
    /// become healthy within 30 s: tests never skip because etcd is absent.
    pub fn start() -> EtcdServer {
        let dir = std::env::temp_dir().join(format!(
            "trpc-etcd-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ rand_suffix()
        ));
        let mut server = EtcdServer {
            child: None,
            dir,
            client_port: free_port().expect("free port"),
            peer_port: free_port().expect("free port"),
        };
        server.resume();
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// `127.0.0.1:PORT` (for `etcd://` targets).
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Kills etcd (SIGKILL); its data stays for [`resume`](Self::resume).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data, waiting until healthy.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .arg("--name=trpc-test")
            .arg(format!("--data-dir={}", self.dir.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=trpc-test={peer}"))
            .arg("--logger=zap")
            .arg("--log-level=error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run `etcd`: install Debian's etcd-server (`make deps`)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.healthy() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("etcd exited at start: {status}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd did not become healthy within 30 s");
    }

    /// Whether `/health` answers `"health":"true"`.
    pub fn healthy(&self) -> bool {
        let get = || -> io::Result<String> {
            let mut s = TcpStream::connect(("127.0.0.1", self.client_port))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        };
        get().is_ok_and(|r| r.contains("\"health\":\"true\""))
    }
}

fn rand_suffix() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish() as u128
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
