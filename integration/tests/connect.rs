//! Connection establishment: the connect timeout covers the protocol handshake,
//! and non-trpc peers are reported clearly.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use trpc::Code;

use trpc_integration::client::endpoint;
use trpc_integration::server::listener;
use trpc_integration::{within, SOON};

#[tokio::test]
async fn connect_timeout_fires_against_a_listener_that_never_accepts() {
    // The kernel completes the TCP handshake for a listening socket even if
    // nobody calls accept(); only the missing SETTINGS can time out.
    let silent = listener().await;
    let addr = silent.local_addr().expect("addr");
    let start = Instant::now();
    let err = within(
        SOON,
        "connect",
        endpoint(addr)
            .connect_timeout(Duration::from_millis(200))
            .connect(),
    )
    .await
    .expect_err("nobody answers the handshake");
    let took = start.elapsed();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("timed out"),
        "the message says it timed out: {err:?}"
    );
    assert!(
        took >= Duration::from_millis(150),
        "gave up early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "gave up late: {took:?}");
    drop(silent);
}

#[tokio::test]
async fn connect_timeout_fires_against_a_peer_that_accepts_and_stays_silent() {
    let l = listener().await;
    let addr = l.local_addr().expect("addr");
    let peer = tokio::spawn(async move {
        let (mut tcp, _) = l.accept().await.expect("accept");
        let mut buf = [0u8; 1024];
        // Read the client's SETTINGS, answer nothing, keep the socket open.
        while tcp.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
    });
    let start = Instant::now();
    let err = within(
        SOON,
        "connect",
        endpoint(addr)
            .connect_timeout(Duration::from_millis(200))
            .connect(),
    )
    .await
    .expect_err("the peer never sends SETTINGS");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("timed out"), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
    peer.abort();
}

#[tokio::test]
async fn connecting_to_a_non_trpc_server_fails_unavailable_with_a_clear_message() {
    let l = listener().await;
    let addr = l.local_addr().expect("addr");
    let peer = tokio::spawn(async move {
        let (mut tcp, _) = l.accept().await.expect("accept");
        let _ = tcp
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await;
        let _ = tcp.shutdown().await;
        let mut buf = [0u8; 1024];
        while tcp.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
    });
    let err = within(SOON, "connect", endpoint(addr).connect())
        .await
        .expect_err("not a trpc server");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("not a trpc server"), "{err:?}");
    peer.abort();
}
