//! Heartbeat: a peer that stops answering (a black-holed connection) is
//! detected by keepalive PINGs, in-flight calls fail UNAVAILABLE, and the pool
//! reconnects.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use trpc::{Client, Code};

use trpc_integration::client::endpoint;
use trpc_integration::messages::EchoMsg;
use trpc_integration::probe::{sleep_router, Event, Probe};
use trpc_integration::server::{echo_router, listener, serve};
use trpc_integration::{within, SOON};

/// A TCP proxy that forwards both ways and can black-hole the connections it
/// has: sockets stay open, bytes are read and dropped. Connections opened
/// after [`Proxy::freeze_existing`] are forwarded normally.
struct Proxy {
    addr: SocketAddr,
    frozen: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, frozen: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if frozen.load(Ordering::Acquire) {
            continue; // black hole: keep reading, send nothing
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    // Half-close the other side only if still forwarding; a frozen link
    // keeps its sockets open.
    if !frozen.load(Ordering::Acquire) {
        let _ = to.shutdown().await;
    } else {
        std::future::pending::<()>().await;
    }
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let l = listener().await;
        let addr = l.local_addr().expect("addr");
        let frozen: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let list = frozen.clone();
        let task = tokio::spawn(async move {
            let mut links = tokio::task::JoinSet::new();
            loop {
                let Ok((down, _)) = l.accept().await else {
                    break;
                };
                let Ok(up) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let _ = (down.set_nodelay(true), up.set_nodelay(true));
                let flag = Arc::new(AtomicBool::new(false));
                list.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(flag.clone());
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                links.spawn(pump(dr, uw, flag.clone()));
                links.spawn(pump(ur, dw, flag));
            }
        });
        Proxy { addr, frozen, task }
    }

    /// Stops forwarding on every connection opened so far.
    fn freeze_existing(&self) {
        for f in self.frozen.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            f.store(true, Ordering::Release);
        }
    }

    fn connections(&self) -> usize {
        self.frozen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const INTERVAL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(600);

#[tokio::test]
async fn dead_peer_is_detected_by_keepalive_and_the_pool_reconnects() {
    let (probe, mut events) = Probe::new();
    let router = sleep_router(probe).merge(echo_router());
    let server = serve(router).await;
    let proxy = Proxy::start(server.addr).await;
    let channel = within(
        SOON,
        "connect through the proxy",
        endpoint(proxy.addr).keepalive(INTERVAL, TIMEOUT).connect(),
    )
    .await
    .expect("connect");
    let mut client = Client::new(channel.clone());

    // A healthy path: calls go through the proxy.
    let reply: EchoMsg = within(
        SOON,
        "call",
        client.unary_message("echo.Echo/Say", EchoMsg::new("a")),
    )
    .await
    .expect("call through the proxy");
    assert_eq!(reply.message, "a");

    // A call in flight when the path goes dead.
    let mut slow_client = client.clone();
    let slow = tokio::spawn(async move {
        slow_client
            .unary_message::<_, EchoMsg>("slow.Slow/Sleep", EchoMsg::new("x"))
            .await
    });
    events.expect(Event::Started, SOON).await;
    proxy.freeze_existing();
    let frozen_at = Instant::now();

    let err = within(SOON, "in-flight call on a dead connection", slow)
        .await
        .expect("task")
        .expect_err("the connection is dead");
    let took = frozen_at.elapsed();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    // Detection takes about interval + timeout (0.8 s); allow generous slack.
    assert!(
        took < INTERVAL + TIMEOUT + Duration::from_secs(3),
        "dead peer detected after {took:?}"
    );

    // A later call goes over a fresh connection (the proxy forwards new ones).
    let reply: EchoMsg = within(
        SOON,
        "call after detection",
        client.unary_message("echo.Echo/Say", EchoMsg::new("b")),
    )
    .await
    .expect("call on a fresh connection");
    assert_eq!(reply.message, "b");
    assert!(
        proxy.connections() >= 2,
        "the pool opened a new connection: {}",
        proxy.connections()
    );
    assert_eq!(channel.connections(), 1);
    drop(proxy);
}

#[tokio::test]
async fn keepalive_keeps_a_quiet_healthy_connection_open() {
    let server = serve(echo_router()).await;
    let proxy = Proxy::start(server.addr).await;
    let channel = within(
        SOON,
        "connect",
        endpoint(proxy.addr).keepalive(INTERVAL, TIMEOUT).connect(),
    )
    .await
    .expect("connect");
    let mut client = Client::new(channel.clone());
    // Several keepalive rounds with no calls (sleeping here *is* the scenario:
    // a quiet connection).
    tokio::time::sleep(INTERVAL * 5).await;
    let reply: EchoMsg = within(
        SOON,
        "call",
        client.unary_message("echo.Echo/Say", EchoMsg::new("c")),
    )
    .await
    .expect("call after quiet period");
    assert_eq!(reply.message, "c");
    assert_eq!(
        proxy.connections(),
        1,
        "PONGs kept the first connection alive"
    );
    server.shutdown().await;
}
