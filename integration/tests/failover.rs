//! Failures a balanced client must survive, with real replica processes
//! (`trpc-replica`: real SIGKILL and SIGTERM), real sockets and a real etcd:
//! zero calls fail in each.

use std::time::Duration;

use tower::ServiceBuilder;
use trpc_integration::etcd::EtcdServer;
use trpc_integration::replica::Replica;
use trpc_layers::balance::BalanceLayer;
use trpc_layers::discovery::etcd::Etcd;
use trpc_layers::RetryLayer;

use trpc_integration::cluster::{assert_no_failures, tally, wait_endpoints, Load, SOON};

const REPLICA: &str = env!("CARGO_BIN_EXE_trpc-replica");

async fn replicas(etcd: &EtcdServer, n: usize, extra: &[&str]) -> Vec<Replica> {
    let target = format!("etcd://{}/echo", etcd.authority());
    let mut out = Vec::new();
    for _ in 0..n {
        let mut args = vec!["--register", target.as_str()];
        args.extend_from_slice(extra);
        let mut r = Replica::spawn(REPLICA, &args).await;
        r.wait_line("registered", SOON).await.expect("registered");
        out.push(r);
    }
    out
}

fn retry() -> RetryLayer {
    RetryLayer::exponential(5)
        .backoff(Duration::from_millis(10), Duration::from_millis(200))
        .idempotent("echo.Echo/*")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_idempotent_calls_on_another_replica_when_one_is_killed() {
    let etcd_server = EtcdServer::start();
    let mut reps = replicas(&etcd_server, 3, &["--lease-ttl", "2"]).await;
    let etcd = Etcd::new([etcd_server.endpoint()]);
    let svc = ServiceBuilder::new()
        .layer(retry())
        .layer(BalanceLayer::p2c_peak_ewma())
        .service(etcd.discover("echo").await.unwrap());
    let balance = svc.get_ref().clone();
    wait_endpoints(&balance, "3 replicas", |a| a.len() == 3).await;

    // Calls that take a little while, so some are in flight at the kill.
    let load = Load::start(svc, 16, 2);
    load.wait_for_more(300).await;
    let victim = reps.remove(1);
    let victim_addr = victim.addr.to_string();
    let mut victim = victim;
    victim.sigkill().await;
    load.wait_for_more(500).await;
    // Its key expires with its lease; the balancer drops it.
    wait_endpoints(&balance, "killed replica removed", |a| {
        !a.contains(&victim_addr)
    })
    .await;
    load.wait_for_more(300).await;
    let outcomes = load.finish().await;
    assert_no_failures(&outcomes);
    let t = tally(outcomes.iter().map(|o| &o.result));
    assert!(t.len() >= 3, "the three replicas served calls: {t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_drained_with_sigterm_loses_no_call_and_gets_none_after_its_key_is_gone() {
    let etcd_server = EtcdServer::start();
    let mut reps = replicas(&etcd_server, 3, &["--propagation", "300"]).await;
    let etcd = Etcd::new([etcd_server.endpoint()]);
    let svc = ServiceBuilder::new()
        .layer(retry())
        .layer(BalanceLayer::round_robin())
        .service(etcd.discover("echo").await.unwrap());
    let balance = svc.get_ref().clone();
    wait_endpoints(&balance, "3 replicas", |a| a.len() == 3).await;

    let load = Load::start(svc, 16, 2);
    load.wait_for_more(300).await;
    let mut victim = reps.remove(0);
    let victim_addr = victim.addr.to_string();
    victim.sigterm();
    let gone = wait_endpoints(&balance, "drained replica removed", |a| {
        !a.contains(&victim_addr)
    })
    .await;
    victim
        .wait_line("stopped", SOON)
        .await
        .expect("replica stopped");
    assert_eq!(victim.wait_exit(SOON).await, Some(0));
    load.wait_for_more(300).await;
    let outcomes = load.finish().await;
    assert_no_failures(&outcomes);
    let late: Vec<_> = outcomes
        .iter()
        .filter(|o| o.started > gone && o.result.as_ref().is_ok_and(|by| *by == victim_addr))
        .collect();
    assert!(
        late.is_empty(),
        "{} calls started after the key was gone reached the drained replica",
        late.len()
    );
    let before = outcomes
        .iter()
        .filter(|o| o.result.as_ref().is_ok_and(|by| *by == victim_addr))
        .count();
    assert!(before > 0, "the drained replica served calls before");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_on_while_etcd_is_down_and_a_replica_added_meanwhile_is_found() {
    let mut etcd_server = EtcdServer::start();
    let _reps = replicas(&etcd_server, 2, &["--lease-ttl", "5"]).await;
    let etcd = Etcd::new([etcd_server.endpoint()]).backoff_max(Duration::from_millis(200));
    let svc = ServiceBuilder::new()
        .layer(retry())
        .layer(BalanceLayer::round_robin())
        .service(etcd.discover("echo").await.unwrap());
    let balance = svc.get_ref().clone();
    wait_endpoints(&balance, "2 replicas", |a| a.len() == 2).await;

    let load = Load::start(svc, 8, 1);
    load.wait_for_more(200).await;
    etcd_server.stop();
    // The known replicas keep serving while etcd is down.
    load.wait_for_more(500).await;
    assert_eq!(balance.addrs().len(), 2);
    let target = format!("etcd://{}/echo", etcd_server.authority());
    let newcomer = Replica::spawn(REPLICA, &["--register", &target, "--lease-ttl", "5"]).await;
    load.wait_for_more(200).await;
    etcd_server.resume();
    let addr = newcomer.addr.to_string();
    let mut newcomer = newcomer;
    newcomer
        .wait_line("registered", SOON)
        .await
        .expect("newcomer registered once etcd is back");
    wait_endpoints(&balance, "newcomer found after resync", |a| {
        a.contains(&addr)
    })
    .await;
    load.wait_for_more(300).await;
    let outcomes = load.finish().await;
    assert_no_failures(&outcomes);
    let t = tally(outcomes.iter().map(|o| &o.result));
    assert!(
        t.get(&addr).copied().unwrap_or(0) > 0,
        "the newcomer served calls: {t:?}"
    );
    assert_eq!(balance.addrs().len(), 3);
}
