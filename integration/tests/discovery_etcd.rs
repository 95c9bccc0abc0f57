//! etcd discovery against a real etcd server (started by the test on free
//! loopback ports): the documented key layout, lease expiry of a killed
//! replica, deregistration before draining, and changes reaching the
//! balancer quickly.

use std::time::Duration;

use etcd_client::GetOptions;
use tokio::time::Instant;
use tower::ServiceBuilder;
use trpc_integration::etcd::EtcdServer;
use trpc_integration::replica::Replica;
use trpc_layers::balance::BalanceLayer;
use trpc_layers::discovery::etcd::Etcd;
use trpc_layers::discovery::{Discovery, Instance};

use trpc_integration::cluster::{say, wait_endpoints, SOON};

const REPLICA: &str = env!("CARGO_BIN_EXE_trpc-replica");

async fn keys(etcd: &EtcdServer, prefix: &str) -> Vec<(String, String)> {
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    let resp = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    resp.kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_string(),
                kv.value_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn registration_writes_the_documented_key_with_a_lease_and_deregister_deletes_it() {
    let etcd_server = EtcdServer::start();
    let etcd = Etcd::new([etcd_server.endpoint()]).lease_ttl(Duration::from_secs(2));
    let instance = Instance::new("127.0.0.1:7001")
        .weight(50)
        .zone("eu-1")
        .version("1.2.3")
        .tag("canary");
    let mut reg = etcd.register("echo", instance.clone());
    tokio::time::timeout(SOON, reg.registered())
        .await
        .expect("registered");
    assert_eq!(reg.key(), "/trpc/services/echo/127.0.0.1:7001");
    let found = keys(&etcd_server, "/trpc/services/echo/").await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, "/trpc/services/echo/127.0.0.1:7001");
    assert_eq!(
        Instance::from_json(found[0].1.as_bytes()).unwrap(),
        instance
    );

    // Kept alive well past the TTL.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(keys(&etcd_server, "/trpc/services/echo/").await.len(), 1);

    reg.deregister().await;
    assert!(keys(&etcd_server, "/trpc/services/echo/").await.is_empty());
}

#[tokio::test]
async fn watch_applies_changes_to_the_balancer_within_500ms() {
    let etcd_server = EtcdServer::start();
    let etcd = Etcd::new([etcd_server.endpoint()]).lease_ttl(Duration::from_secs(5));
    let balance = ServiceBuilder::new()
        .layer(BalanceLayer::round_robin())
        .service(etcd.discover("svc").await.unwrap());
    assert!(balance.addrs().is_empty());
    let mut lags = Vec::new();
    for i in 0..5 {
        let addr = format!("127.0.0.1:{}", 7100 + i);
        let start = Instant::now();
        let mut reg = etcd.register("svc", Instance::new(addr.clone()));
        tokio::time::timeout(SOON, reg.registered())
            .await
            .expect("registered");
        let seen = wait_endpoints(&balance, "insert", |a| a.contains(&addr)).await;
        lags.push(seen - start);
        let start = Instant::now();
        reg.deregister().await;
        let seen = wait_endpoints(&balance, "removal", |a| !a.contains(&addr)).await;
        lags.push(seen - start);
    }
    lags.sort();
    let median = lags[lags.len() / 2];
    assert!(
        median <= Duration::from_millis(500),
        "median time from an etcd change to the balancer: {median:?} (all: {lags:?})"
    );
}

#[tokio::test]
async fn a_killed_replicas_key_expires_with_its_lease() {
    let etcd_server = EtcdServer::start();
    let target = format!("etcd://{}/echo", etcd_server.authority());
    let mut replica = Replica::spawn(REPLICA, &["--register", &target, "--lease-ttl", "2"]).await;
    replica
        .wait_line("registered", SOON)
        .await
        .expect("registered");
    let balance = ServiceBuilder::new()
        .layer(BalanceLayer::round_robin())
        .service(
            Discovery::etcd(&etcd_server.endpoint(), "echo")
                .await
                .unwrap(),
        );
    let addr = replica.addr.to_string();
    wait_endpoints(&balance, "replica discovered", |a| a.contains(&addr)).await;
    assert_eq!(say(balance.clone(), 0).await.unwrap(), addr);

    let killed = Instant::now();
    replica.sigkill().await;
    wait_endpoints(&balance, "killed replica's key expired", |a| a.is_empty()).await;
    // Not before the lease could expire (TTL 2 s, minus keep-alive slack).
    assert!(
        killed.elapsed() >= Duration::from_millis(500),
        "{:?}",
        killed.elapsed()
    );
    assert!(keys(&etcd_server, "/trpc/services/echo/").await.is_empty());
}

#[tokio::test]
async fn sigterm_deregisters_before_draining() {
    let etcd_server = EtcdServer::start();
    let target = format!("etcd://{}/echo", etcd_server.authority());
    let mut replica =
        Replica::spawn(REPLICA, &["--register", &target, "--propagation", "200"]).await;
    replica
        .wait_line("registered", SOON)
        .await
        .expect("registered");
    assert_eq!(keys(&etcd_server, "/trpc/services/echo/").await.len(), 1);
    replica.sigterm();
    replica
        .wait_line("deregistered", SOON)
        .await
        .expect("deregistered");
    // The key is gone before the server starts draining.
    assert!(keys(&etcd_server, "/trpc/services/echo/").await.is_empty());
    replica.wait_line("draining", SOON).await.expect("draining");
    replica.wait_line("stopped", SOON).await.expect("stopped");
    assert_eq!(replica.wait_exit(SOON).await, Some(0));
}

#[tokio::test]
async fn discovery_fails_fast_when_etcd_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let etcd = Etcd::new([format!("http://127.0.0.1:{port}")]).timeout(Duration::from_secs(1));
    let err = tokio::time::timeout(SOON, etcd.discover("echo"))
        .await
        .expect("bounded")
        .unwrap_err();
    assert!(err.to_string().contains("etcd"), "{err}");
}
