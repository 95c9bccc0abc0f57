//! `route_guide_server` and `route_guide_client`, the real binaries, talking
//! over a loopback port: every call shape through the generated code.

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

/// Starts the server on a free port; its address from its first line.
fn server() -> (Running, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_route_guide_server"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start route_guide_server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the listening line");
    let addr = line
        .trim()
        .strip_prefix("route guide listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (Running(child), addr)
}

#[test]
fn the_client_binary_runs_all_four_shapes_against_the_server_binary() {
    let (_server, addr) = server();
    let out = Command::new(env!("CARGO_BIN_EXE_route_guide_client"))
        .args(["--connect", &addr])
        .output()
        .expect("run route_guide_client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "GetFeature: Old Harbour Lighthouse, 1 Quay Road, Saltmere",
        "GetFeature: nothing known at Point { latitude: 0, longitude: 0 }",
        "ListFeatures: 18 features in the rectangle",
        "RecordRoute: 10 points, 10 features, 653099 m",
        "RouteChat: earlier note \"first at A\" at Some(Point { latitude: 0, longitude: 0 })",
        "RouteChat: earlier note \"first at B\" at Some(Point { latitude: 0, longitude: 1 })",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in\n{stdout}"
        );
    }
}
