//! Load balancing over real loopback servers: how each policy spreads calls,
//! endpoints joining and leaving (removed ones drain), outlier ejection,
//! active health checks, degrading when everything is unhealthy, server load
//! reports, consistent hashing and DNS discovery.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;
use tower::{Layer, ServiceBuilder};
use trpc::health::HealthReporter;
use trpc::server::{unary, Router, Server};
use trpc::{Code, Request, Response, Status};
use trpc_integration::replica::Say;
use trpc_layers::balance::{BalanceLayer, HealthCheck, OutlierDetection};
use trpc_layers::discovery::{Discovery, Instance};
use trpc_layers::load_report::{LoadReportLayer, LoadReporter};

use trpc_integration::cluster::{
    assert_no_failures, in_process, say, spread, tally, wait_endpoints, Load, SOON,
};

/// Three in-process replicas; dropping the senders stops them.
async fn three() -> (Vec<SocketAddr>, Vec<oneshot::Sender<()>>) {
    let mut addrs = Vec::new();
    let mut stops = Vec::new();
    for _ in 0..3 {
        let (a, s) = in_process(None).await;
        addrs.push(a);
        stops.push(s);
    }
    (addrs, stops)
}

fn names(addrs: &[SocketAddr]) -> Vec<String> {
    addrs.iter().map(|a| a.to_string()).collect()
}

/// A replica whose Say waits `delay` and carries `served-by`, served with
/// `layer` around the router.
async fn slow_replica<L>(delay: Duration, layer: L) -> SocketAddr
where
    L: Layer<Router> + Send + 'static,
    L::Service: tower::Service<Request<trpc::Body>, Response = Response<trpc::Body>>
        + Clone
        + Send
        + 'static,
    <L::Service as tower::Service<Request<trpc::Body>>>::Error: Into<trpc::BoxError>,
    <L::Service as tower::Service<Request<trpc::Body>>>::Future: Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let by = addr.to_string();
    let router = Router::new().route(
        "echo.Echo/Say",
        unary(move |req: Request<Say>| {
            let by = by.clone();
            async move {
                tokio::time::sleep(delay).await;
                let mut resp = Response::new(req.into_inner());
                resp.metadata_mut().try_insert("served-by", &by).unwrap();
                Ok::<_, Status>(resp)
            }
        }),
    );
    tokio::spawn(Server::builder().layer(layer).serve_with_listener(
        listener,
        router,
        std::future::pending(),
    ));
    addr
}

/// A replica whose Say always fails with INTERNAL.
async fn broken_replica() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let broken = Router::new().route(
        "echo.Echo/Say",
        unary(|_: Request<Say>| async { Err::<Response<Say>, _>(Status::internal("broken")) }),
    );
    tokio::spawn(Server::builder().serve_with_listener(listener, broken, std::future::pending()));
    addr
}

fn share(t: &BTreeMap<String, usize>, addr: &SocketAddr) -> f64 {
    let total: usize = t.values().sum();
    *t.get(&addr.to_string()).unwrap_or(&0) as f64 / total as f64
}

#[tokio::test]
async fn round_robin_spreads_calls_evenly() {
    let (addrs, _stops) = three().await;
    let svc = BalanceLayer::round_robin().layer(Discovery::fixed(names(&addrs)));
    wait_endpoints(&svc, "3 endpoints", |a| a.len() == 3).await;
    let t = spread(&svc, 300).await;
    assert_eq!(t.len(), 3, "{t:?}");
    for a in &addrs {
        let n = t[&a.to_string()];
        assert!((80..=120).contains(&n), "{t:?}");
    }
}

#[tokio::test]
async fn random_reaches_every_replica() {
    let (addrs, _stops) = three().await;
    let svc = BalanceLayer::random().layer(Discovery::fixed(names(&addrs)));
    let t = spread(&svc, 300).await;
    assert_eq!(t.len(), 3, "{t:?}");
    for a in &addrs {
        assert!(share(&t, a) > 0.15, "{t:?}");
    }
}

#[tokio::test]
async fn weighted_follows_discovery_weights() {
    let (addrs, _stops) = three().await;
    let svc = BalanceLayer::weighted().layer(Discovery::instances([
        Instance::new(addrs[0].to_string()).weight(100),
        Instance::new(addrs[1].to_string()).weight(300),
    ]));
    let t = spread(&svc, 1000).await;
    let heavy = share(&t, &addrs[1]);
    assert!((0.65..=0.85).contains(&heavy), "weights 1:3 gave {t:?}");
}

#[tokio::test]
async fn weighted_sends_less_to_a_replica_reporting_high_utilization() {
    let busy = LoadReporter::new();
    busy.set_utilization(0.9);
    let a = slow_replica(Duration::ZERO, LoadReportLayer::new(busy)).await;
    let b = slow_replica(Duration::ZERO, LoadReportLayer::new(LoadReporter::new())).await;
    let svc = BalanceLayer::weighted().layer(Discovery::fixed([a.to_string(), b.to_string()]));
    // The first replies teach the balancer the reported loads.
    spread(&svc, 50).await;
    let utils: Vec<f64> = svc.endpoints().iter().map(|e| e.utilization).collect();
    assert!(utils.contains(&0.9), "{utils:?}");
    let t = spread(&svc, 1000).await;
    assert!(
        share(&t, &a) < 0.25,
        "a replica at 90% utilization got {t:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_outstanding_and_p2c_avoid_a_slow_replica() {
    let slow = slow_replica(
        Duration::from_millis(100),
        tower::layer::util::Identity::new(),
    )
    .await;
    let fast = slow_replica(Duration::ZERO, tower::layer::util::Identity::new()).await;
    for layer in [
        BalanceLayer::least_outstanding(),
        BalanceLayer::p2c_peak_ewma(),
    ] {
        let name = layer.policy_name();
        let svc = layer.layer(Discovery::fixed([slow.to_string(), fast.to_string()]));
        wait_endpoints(&svc, "2 endpoints", |a| a.len() == 2).await;
        let load = Load::start(svc.clone(), 8, 0);
        load.wait_for_more(1000).await;
        let outcomes = load.finish().await;
        assert_no_failures(&outcomes);
        let t = tally(outcomes.iter().map(|o| &o.result));
        assert!(share(&t, &fast) > 0.8, "{name}: {t:?}");
    }
}

#[tokio::test]
async fn consistent_hashing_keeps_keys_on_their_replica_and_moves_only_a_leavers_keys() {
    let (addrs, _stops) = three().await;
    let (registry, discovery) = Discovery::manual();
    for a in &addrs {
        registry.insert(Instance::new(a.to_string()));
    }
    let svc = BalanceLayer::consistent_hash_by_metadata("x-user").layer(discovery);
    wait_endpoints(&svc, "3 endpoints", |a| a.len() == 3).await;
    async fn owner(svc: &trpc_layers::balance::Balance, user: usize) -> String {
        let mut client = trpc::Client::new(svc.clone());
        let mut req = Request::new(Say {
            message: String::new(),
            millis: 0,
        });
        req.metadata_mut()
            .try_insert("x-user", &format!("user-{user}"))
            .unwrap();
        let resp = client
            .unary::<Say, Say>("echo.Echo/Say", req)
            .await
            .unwrap();
        resp.metadata().get("served-by").unwrap().to_string()
    }
    let mut before = Vec::new();
    for u in 0..90 {
        let first = owner(&svc, u).await;
        assert_eq!(
            owner(&svc, u).await,
            first,
            "user {u} moved without a change"
        );
        before.push(first);
    }
    let per = tally(
        before
            .iter()
            .map(|o| Ok::<_, Status>(o.clone()))
            .collect::<Vec<_>>()
            .iter(),
    );
    assert_eq!(per.len(), 3, "every replica owns keys: {per:?}");
    let leaver = addrs[0].to_string();
    registry.remove(&leaver);
    wait_endpoints(&svc, "leaver removed", |a| a.len() == 2).await;
    for (u, old) in before.iter().enumerate() {
        let now = owner(&svc, u).await;
        if *old != leaver {
            assert_eq!(&now, old, "user {u} moved although its replica stayed");
        } else {
            assert_ne!(now, leaver);
        }
    }
}

#[tokio::test]
async fn new_endpoints_connect_in_the_background_and_removed_ones_drain_their_calls() {
    let (addrs, _stops) = three().await;
    let (registry, discovery) = Discovery::manual();
    registry.insert(Instance::new(addrs[0].to_string()));
    let svc = BalanceLayer::round_robin().layer(discovery);
    // Connected before any call.
    let deadline = tokio::time::Instant::now() + SOON;
    while !svc.endpoints().first().is_some_and(|e| e.connected) {
        assert!(tokio::time::Instant::now() < deadline, "never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A slow call in flight on the first endpoint...
    let slow = tokio::spawn(say(svc.clone(), 500));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(svc.endpoints()[0].in_flight, 1);
    // ...which is replaced meanwhile.
    registry.insert(Instance::new(addrs[1].to_string()));
    registry.remove(&addrs[0].to_string());
    wait_endpoints(&svc, "swap", |a| a == [addrs[1].to_string()]).await;
    assert_eq!(say(svc.clone(), 0).await.unwrap(), addrs[1].to_string());
    // The removed endpoint's call finishes on its channel.
    assert_eq!(slow.await.unwrap().unwrap(), addrs[0].to_string());
}

#[tokio::test]
async fn no_endpoint_fails_with_unavailable_after_the_discovery_wait() {
    let (_registry, discovery) = Discovery::manual();
    let svc = BalanceLayer::round_robin()
        .discovery_wait(Duration::from_millis(200))
        .layer(discovery);
    let err = say(svc, 0).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("no endpoints"), "{err:?}");
}

#[tokio::test]
async fn a_call_waits_for_the_first_endpoint() {
    let (addrs, _stops) = three().await;
    let (registry, discovery) = Discovery::manual();
    let svc = BalanceLayer::round_robin().layer(discovery);
    let call = tokio::spawn(say(svc.clone(), 0));
    tokio::time::sleep(Duration::from_millis(50)).await;
    registry.insert(Instance::new(addrs[2].to_string()));
    assert_eq!(call.await.unwrap().unwrap(), addrs[2].to_string());
}

#[tokio::test]
async fn outlier_detection_ejects_a_failing_replica_then_lets_it_back() {
    let (good, _stop) = in_process(None).await;
    let bad = broken_replica().await;
    let svc = BalanceLayer::round_robin()
        .outlier_detection(OutlierDetection {
            consecutive_failures: 3,
            base_ejection: Duration::from_millis(500),
            ..OutlierDetection::default()
        })
        .layer(Discovery::fixed([good.to_string(), bad.to_string()]));
    let mut failures = 0;
    for _ in 0..20 {
        if say(svc.clone(), 0).await.is_err() {
            failures += 1;
        }
    }
    assert_eq!(failures, 3, "three failures eject the broken replica");
    assert!(svc
        .endpoints()
        .iter()
        .any(|e| e.ejected && e.instance.addr == bad.to_string()));
    // Back after the ejection period.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(svc.endpoints().iter().all(|e| !e.ejected));
    let t = tally(
        futures_util::future::join_all((0..4).map(|_| say(svc.clone(), 0)))
            .await
            .iter(),
    );
    assert_eq!(t.get("error INTERNAL"), Some(&2), "{t:?}");
}

#[tokio::test]
async fn outlier_detection_never_ejects_the_last_replica() {
    let bad = broken_replica().await;
    let svc = BalanceLayer::round_robin().layer(Discovery::fixed([bad.to_string()]));
    for _ in 0..20 {
        assert_eq!(
            say(svc.clone(), 0).await.unwrap_err().code(),
            Code::Internal
        );
    }
    assert!(!svc.endpoints()[0].ejected);
}

#[tokio::test]
async fn health_checks_take_a_not_serving_replica_out_and_all_unhealthy_degrades() {
    let health_a = HealthReporter::new();
    let health_b = HealthReporter::new();
    let (a, _sa) = in_process(Some(health_a.router())).await;
    let (b, _sb) = in_process(Some(health_b.router())).await;
    let svc = BalanceLayer::round_robin()
        .health_check(HealthCheck::new(Duration::from_millis(50)))
        .layer(Discovery::fixed([a.to_string(), b.to_string()]));
    wait_endpoints(&svc, "2 endpoints", |x| x.len() == 2).await;
    let wait_health = |want: [bool; 2]| {
        let svc = svc.clone();
        async move {
            let deadline = tokio::time::Instant::now() + SOON;
            loop {
                let got: Vec<bool> = svc.endpoints().iter().map(|e| e.healthy).collect();
                let want_sorted: Vec<bool> = {
                    let mut pairs = [(a.to_string(), want[0]), (b.to_string(), want[1])];
                    pairs.sort();
                    pairs.iter().map(|p| p.1).collect()
                };
                if got == want_sorted {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "health {got:?} never became {want:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    health_a.set_not_serving("");
    wait_health([false, true]).await;
    let t = spread(&svc, 50).await;
    assert_eq!(t.get(&b.to_string()), Some(&50), "{t:?}");

    // Every endpoint unhealthy: calls still go somewhere rather than failing.
    health_b.set_not_serving("");
    wait_health([false, false]).await;
    let t = spread(&svc, 50).await;
    assert_eq!(t.values().sum::<usize>(), 50);
    assert!(!t.keys().any(|k| k.starts_with("error")), "{t:?}");

    health_a.set_serving("");
    wait_health([true, false]).await;
    let t = spread(&svc, 50).await;
    assert_eq!(t.get(&a.to_string()), Some(&50), "{t:?}");
}

#[tokio::test]
async fn dns_discovery_balances_over_the_resolved_addresses() {
    let (addr, _stop) = in_process(None).await;
    let svc = ServiceBuilder::new()
        .layer(trpc_layers::RetryLayer::exponential(3))
        .layer(BalanceLayer::round_robin())
        .service(Discovery::dns(&format!("localhost:{}", addr.port())).unwrap());
    // localhost may also resolve to ::1 where nothing listens: a refused
    // connection is retried on the other address (and that endpoint marked
    // down, DNS re-resolved), so every call succeeds.
    for _ in 0..20 {
        let by = tokio::time::timeout(SOON, say(svc.clone(), 0))
            .await
            .unwrap();
        assert_eq!(by.unwrap(), addr.to_string());
    }
}

#[tokio::test]
async fn tower_p2c_balances_channels_by_their_load() {
    // `Channel: tower::load::Load` (calls in flight), so tower's own p2c
    // balancer works over plain channels too.
    let (addrs, _stops) = three().await;
    let channels: Vec<trpc::Channel> = addrs
        .iter()
        .map(|a| trpc::Endpoint::new(a.to_string()).unwrap().connect_lazy())
        .collect();
    let p2c = tower::balance::p2c::Balance::new(tower::discover::ServiceList::new(channels));
    let svc = tower::buffer::Buffer::new(p2c, 64);
    let t = spread(&svc, 90).await;
    assert_eq!(t.values().sum::<usize>(), 90, "{t:?}");
    assert!(!t.keys().any(|k| k.starts_with("error")), "{t:?}");
}
