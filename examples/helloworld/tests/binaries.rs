//! `helloworld_server` and `helloworld_client`, the real binaries, over a
//! loopback port.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A child process killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_client_binary_is_greeted_by_the_server_binary() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_helloworld_server"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start helloworld_server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the listening line");
    let _server = Running(child);
    let addr = line
        .trim()
        .strip_prefix("greeter listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();

    let out = Command::new(env!("CARGO_BIN_EXE_helloworld_client"))
        .args(["--connect", &addr, "--name", "you"])
        .output()
        .expect("run helloworld_client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello you!\n");

    // A handler error reaches the client binary as its exit status.
    let out = Command::new(env!("CARGO_BIN_EXE_helloworld_client"))
        .args(["--connect", &addr, "--name", ""])
        .output()
        .expect("run helloworld_client");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("name is empty"));
}
