//! Multiplexing: many concurrent calls on one connection.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Barrier;
use trpc::server::{unary, Router};
use trpc::{Client, Request, Response, Status};

use trpc_integration::client::endpoint;
use trpc_integration::messages::EchoMsg;
use trpc_integration::server::serve;
use trpc_integration::{within, SOON};

const CALLS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_calls_share_one_connection() {
    // Every handler waits until all 1000 are running at once: the test only
    // passes if the calls really are in flight together on the connection.
    let barrier = Arc::new(Barrier::new(CALLS));
    let peers: Arc<Mutex<HashSet<SocketAddr>>> = Arc::default();
    let router = {
        let (barrier, peers) = (barrier.clone(), peers.clone());
        Router::new().route(
            "echo.Echo/Gather",
            unary(move |req: Request<EchoMsg>| {
                let (barrier, peers) = (barrier.clone(), peers.clone());
                async move {
                    if let Some(peer) = req.remote_addr() {
                        peers.lock().unwrap_or_else(|e| e.into_inner()).insert(peer);
                    }
                    barrier.wait().await;
                    let msg = req.into_inner().message;
                    Ok::<_, Status>(Response::new(EchoMsg::new(format!("re: {msg}"))))
                }
            }),
        )
    };
    let server = serve(router).await;
    let channel = within(
        SOON,
        "connect",
        endpoint(server.addr).pool_size(1).connect(),
    )
    .await
    .expect("connect");

    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let mut client = Client::new(channel.clone());
            tokio::spawn(async move {
                let reply: EchoMsg = client
                    .unary_message("echo.Echo/Gather", EchoMsg::new(format!("call {i}")))
                    .await?;
                Ok::<_, Status>((i, reply))
            })
        })
        .collect();
    within(Duration::from_secs(30), "1000 concurrent calls", async {
        for call in calls {
            let (i, reply) = call.await.expect("task").expect("call");
            assert_eq!(reply.message, format!("re: call {i}"));
        }
    })
    .await;

    assert_eq!(channel.connections(), 1, "pool size 1 means one connection");
    let peers = peers.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(
        peers.len(),
        1,
        "all calls came over one connection: {peers:?}"
    );
    server.shutdown().await;
}
