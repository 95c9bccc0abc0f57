//! The `trpc` binary against real servers: discovered targets (static, DNS,
//! etcd with a real etcd, one gRPC server by `grpc://`), `--repeat` tallies per `served-by`, and the exit
//! codes of `trpc health`.

use std::net::SocketAddr;
use std::time::Duration;

use trpc::health::HealthReporter;
use trpc::server::Server;
use trpc_integration::etcd::EtcdServer;
use trpc_layers::discovery::etcd::Etcd;
use trpc_layers::discovery::Instance;

const TRPC: &str = env!("CARGO_BIN_EXE_trpc");

/// An in-process replica (echo with `served-by`, plus health).
async fn replica(health: Option<HealthReporter>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut router = trpc_integration::replica::router(addr);
    let mut server = Server::builder();
    if let Some(h) = health {
        router = router.merge(h.router());
        server = server.health(h);
    }
    tokio::spawn(server.serve_with_listener(listener, router, std::future::pending()));
    addr
}

/// Runs `trpc ARGS`: (exit code, stdout, stderr).
async fn trpc(args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(TRPC)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("trpc finished")
    .expect("run trpc");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `trpc call TARGET echo.Echo/Say {"message":"hi"} --repeat N`.
async fn say_repeat(target: &str, n: u32) -> (i32, String, String) {
    let n = n.to_string();
    trpc(&[
        "call",
        target,
        "echo.Echo/Say",
        r#"{"message":"hi"}"#,
        "--repeat",
        &n,
    ])
    .await
}

/// The count `--repeat` printed for `addr`.
fn count_for(stdout: &str, addr: &SocketAddr) -> usize {
    stdout
        .lines()
        .find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(&addr.to_string()))
                .then(|| words.next().unwrap().parse().unwrap())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn repeat_over_a_static_target_tallies_replies_per_replica() {
    let addrs = [
        replica(None).await,
        replica(None).await,
        replica(None).await,
    ];
    let target = format!("static://{},{},{}", addrs[0], addrs[1], addrs[2]);
    let (code, out, err) = say_repeat(&target, 30).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("30 calls to {target}:")), "{out}");
    for a in &addrs {
        assert_eq!(count_for(&out, a), 10, "{out}");
    }
}

#[tokio::test]
async fn an_etcd_target_calls_the_registered_replicas() {
    let etcd_server = EtcdServer::start();
    let etcd = Etcd::new([etcd_server.endpoint()]);
    let addrs = [replica(None).await, replica(None).await];
    let mut regs = Vec::new();
    for a in &addrs {
        let mut r = etcd.register("echo", Instance::new(a.to_string()));
        tokio::time::timeout(Duration::from_secs(15), r.registered())
            .await
            .unwrap();
        regs.push(r);
    }
    let target = format!("etcd://{}/echo", etcd_server.authority());
    let (code, out, err) = trpc(&["call", &target, "echo.Echo/Say", r#"{"message":"hi"}"#]).await;
    assert_eq!(code, 0, "{err}");
    let reply: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reply["message"], "hi");
    let (code, out, err) = trpc(&[
        "call",
        &target,
        "echo.Echo/Say",
        "{}",
        "--repeat",
        "20",
        "--policy",
        "p2c",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        count_for(&out, &addrs[0]) + count_for(&out, &addrs[1]),
        20,
        "{out}"
    );
    assert!(
        count_for(&out, &addrs[0]) > 0 && count_for(&out, &addrs[1]) > 0,
        "{out}"
    );

    // A service nobody registered: UNAVAILABLE (64 + 14) after the wait.
    let empty = format!("etcd://{}/nobody", etcd_server.authority());
    let (code, _, err) = trpc(&[
        "call",
        &empty,
        "echo.Echo/Say",
        "{}",
        "--connect-timeout",
        "300ms",
    ])
    .await;
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("no endpoints"), "{err}");
}

#[tokio::test]
async fn a_dns_target_resolves_and_calls() {
    let addr = replica(None).await;
    let target = format!("dns://localhost:{}", addr.port());
    let (code, out, err) = trpc(&["call", &target, "echo.Echo/Say", "{}", "--repeat", "5"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(count_for(&out, &addr), 5, "{out}");
}

#[tokio::test]
async fn a_grpc_target_calls_over_grpc() {
    let addr = replica(None).await;
    let target = format!("grpc://{addr}");
    let (code, out, err) = say_repeat(&target, 3).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(count_for(&out, &addr), 3, "{out}");
    let (code, out, err) = trpc(&["call", &target, "echo.Echo/Say", r#"{"message":"hi"}"#]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hi"), "{out}");
}

#[tokio::test]
async fn bad_targets_are_usage_errors() {
    let (code, _, err) = trpc(&["call", "etcd://127.0.0.1:1", "echo.Echo/Say"]).await;
    assert_eq!(code, 67, "{err}"); // INVALID_ARGUMENT
    assert!(err.contains("etcd://host:port/name"), "{err}");
}

#[tokio::test]
async fn health_exit_codes_tell_serving_not_serving_and_unknown_apart() {
    let health = HealthReporter::new();
    health.set_serving("echo.Echo");
    health.set_not_serving("billing.Billing");
    let addr = replica(Some(health.clone())).await;
    let a = addr.to_string();
    let (code, out, _) = trpc(&["health", &a]).await;
    assert_eq!((code, out.trim()), (0, "SERVING"));
    let (code, out, _) = trpc(&["health", &a, "echo.Echo"]).await;
    assert_eq!((code, out.trim()), (0, "SERVING"));
    let (code, out, _) = trpc(&["health", &a, "billing.Billing"]).await;
    assert_eq!((code, out.trim()), (1, "NOT_SERVING"));
    let (code, _, err) = trpc(&["health", &a, "nope"]).await;
    assert_eq!(code, 69, "{err}"); // NOT_FOUND
                                   // No health service: UNIMPLEMENTED.
    let bare = replica(None).await.to_string();
    let (code, _, _) = trpc(&["health", &bare]).await;
    assert_eq!(code, 76);
    // Nobody listening: UNAVAILABLE.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, _, _) = trpc(&[
        "health",
        &format!("127.0.0.1:{port}"),
        "--connect-timeout",
        "1s",
    ])
    .await;
    assert_eq!(code, 78);
    // Usage error.
    let (code, _, _) = trpc(&["health"]).await;
    assert_eq!(code, 2);
}

#[tokio::test]
async fn health_watch_streams_until_the_server_shuts_down() {
    let health = HealthReporter::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .health(health.clone())
            .serve_with_listener(listener, health.router(), async move {
                let _ = stopped.await;
            }),
    );
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(TRPC)
        .args(["health", &addr.to_string(), "--watch"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    macro_rules! next_line {
        () => {
            tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .unwrap()
                .unwrap()
        };
    }
    // The first status arrives, then the server shuts down.
    assert_eq!(next_line!().as_deref(), Some("SERVING"));
    stop.send(()).unwrap();
    assert_eq!(next_line!().as_deref(), Some("NOT_SERVING"));
    assert_eq!(next_line!(), None);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    server.await.unwrap().unwrap();
}
