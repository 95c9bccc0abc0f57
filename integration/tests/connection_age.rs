//! Clients behind one address (an L4 load balancer) re-spread over the
//! replicas behind it when servers age their connections out
//! (`Server::max_connection_age`: GOAWAY, then drain): without it a client
//! stays on the replica its first connection landed on.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use trpc::server::Server;

use trpc_integration::cluster::{assert_no_failures, tally, Load};

/// An L4 balancer on one address: each new TCP connection is piped to the
/// next backend in turn.
async fn l4_balancer(backends: Vec<SocketAddr>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for i in 0.. {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let backend = backends[i % backends.len()];
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}

async fn replicas(age: Option<Duration>) -> Vec<SocketAddr> {
    let mut addrs = Vec::new();
    for _ in 0..3 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut server = Server::builder();
        if let Some(age) = age {
            server = server
                .max_connection_age(age)
                .max_connection_age_grace(Duration::from_secs(5));
        }
        let router = trpc_integration::replica::router(addr);
        tokio::spawn(server.serve_with_listener(listener, router, std::future::pending()));
        addrs.push(addr);
    }
    addrs
}

async fn run_behind_balancer(age: Option<Duration>) -> std::collections::BTreeMap<String, usize> {
    let front = l4_balancer(replicas(age).await).await;
    let channel = trpc::Endpoint::new(front.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let load = Load::start(channel, 8, 5);
    // Long enough for several connection ages.
    for _ in 0..6 {
        load.wait_for_more(200).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outcomes = load.finish().await;
    assert_no_failures(&outcomes);
    tally(outcomes.iter().map(|o| &o.result))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_one_address_re_spread_when_connections_age_out() {
    let spread = run_behind_balancer(Some(Duration::from_millis(200))).await;
    assert_eq!(spread.len(), 3, "every replica served calls: {spread:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_connection_age_a_client_stays_on_one_replica() {
    let spread = run_behind_balancer(None).await;
    assert_eq!(spread.len(), 1, "{spread:?}");
}
