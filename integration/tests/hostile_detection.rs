//! What the plaintext port does with bytes that are not trpc (docs/PROTOCOL.md
//! §7): HTTP/1 and HTTP/2 are served (the JSON gateway and gRPC) unless
//! turned off, when they get an answer their own protocol understands; TLS
//! clients on a plaintext port get an alert, garbage gets
//! GOAWAY(PROTOCOL_ERROR), a peer that never finishes identifying itself is
//! cut at the handshake timeout — and a normal client is served all along.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use trpc::frame::GoawayCode;
use trpc::stats::TransportStats;
use trpc_integration::hostile::{
    assert_goaway, hostile_server, start, start_default, Bystander, Hostile, HANDSHAKE,
};
use trpc_integration::peer::Peer;
use trpc_integration::probe::Probe;
use trpc_integration::{within, SOON};

/// Sends `bytes` as the first thing on a new connection; returns everything
/// the server sends before closing.
async fn first_bytes(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut p = Peer::connect(addr).await;
    p.send(bytes).await;
    let mut out = Vec::new();
    let _ = within(SOON, "server closes", p.io.read_to_end(&mut out)).await;
    out
}

/// A server with gRPC and the HTTP/1 gateway turned off.
async fn native_only(probe: Probe) -> Hostile {
    let stats = TransportStats::new();
    start(
        hostile_server(&stats).grpc(false).http1(false),
        stats,
        probe,
    )
    .await
}

#[tokio::test]
async fn http1_request_is_served_by_the_json_gateway() {
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    let by = Bystander::start(h.addr).await;
    let answer = first_bytes(
        h.addr,
        b"POST /echo.Echo/Say HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 18\r\nConnection: close\r\n\r\n{\"message\": \"hey\"}",
    )
    .await;
    let answer = String::from_utf8(answer).expect("text answer");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("\"message\":\"hey\""), "{answer}");
    let answer = first_bytes(
        h.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let answer = String::from_utf8(answer).expect("text answer");
    assert!(
        answer.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{answer}"
    );
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn http1_request_gets_400_and_close_without_the_gateway() {
    let (probe, _events) = Probe::new();
    let h = native_only(probe).await;
    let by = Bystander::start(h.addr).await;
    for req in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"POST /echo.Echo/Say HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
        b"OPTIONS * HTTP/1.1\r\n\r\n",
    ] {
        let answer = String::from_utf8(first_bytes(h.addr, req).await).expect("text answer");
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert!(answer.contains("trpc protocol"), "{answer}");
    }
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn http2_preface_gets_an_http2_goaway_and_close_without_grpc() {
    let (probe, _events) = Probe::new();
    let h = native_only(probe).await;
    let by = Bystander::start(h.addr).await;
    let answer = first_bytes(h.addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    // HTTP/2 frames (u24 length, type, flags, u32 stream): the server
    // preface (an empty SETTINGS), then GOAWAY(last stream 0, PROTOCOL_ERROR).
    assert_eq!(
        answer,
        [
            0, 0, 0, 4, 0, 0, 0, 0, 0, // SETTINGS
            0, 0, 8, 7, 0, 0, 0, 0, 0, // GOAWAY
            0, 0, 0, 0, 0, 0, 0, 1,
        ],
        "an HTTP/2 SETTINGS + GOAWAY(PROTOCOL_ERROR)"
    );
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn tls_client_hello_gets_a_protocol_version_alert_and_close() {
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    let by = Bystander::start(h.addr).await;
    // The start of a TLS 1.2/1.3 ClientHello record.
    let hello = [
        0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03,
    ];
    let answer = first_bytes(h.addr, &hello).await;
    // A fatal (2) protocol_version (70) alert record.
    assert_eq!(answer, [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 70]);
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn garbage_first_bytes_get_goaway_bad_magic_and_close() {
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    let by = Bystander::start(h.addr).await;
    for garbage in [
        &[0xff_u8, 0xff, 0xff, 0xff][..],
        b"\0\0\0\0\0\0",
        b"SSH-2.0-OpenSSH\r\n",
        b"Gx",
    ] {
        let mut p = Peer::connect(h.addr).await;
        p.send(garbage).await;
        let g = p.goaway_then_close().await;
        assert_goaway(&g, GoawayCode::ProtocolError, "bad magic");
        assert_eq!(g.last_stream_id, 0);
    }
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_never_finishes_identifying_itself_is_cut_at_the_handshake_timeout() {
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    let by = Bystander::start(h.addr).await;

    // Silent: closed without a word (the server does not know what it talks to).
    let began = Instant::now();
    let silent = first_bytes(h.addr, b"").await;
    assert!(silent.is_empty(), "{silent:?}");
    // An HTTP method prefix that never completes: the same.
    let partial = first_bytes(h.addr, b"GE").await;
    assert!(partial.is_empty(), "{partial:?}");
    // Part of the HTTP/2 preface (gRPC is on): the same; the HTTP/2 server
    // would have waited for the rest for ever (found by fuzzing).
    let t0 = Instant::now();
    let partial = first_bytes(h.addr, b"PRI * HTTP/2.0").await;
    assert!(partial.is_empty(), "{partial:?}");
    assert!(t0.elapsed() < HANDSHAKE + Duration::from_secs(1));
    by.finish().await;
    h.server.shutdown().await;

    // The magic, then no SETTINGS: GOAWAY(TIMEOUT). The handshake timeout
    // covers detection and SETTINGS together. (A frame timeout longer than
    // the handshake timeout, so that the partial header is not what ends it.)
    let stats = TransportStats::new();
    let server = hostile_server(&stats).frame_timeout(Duration::from_secs(5));
    let h = start(server, stats, Probe::new().0).await;
    let by = Bystander::start(h.addr).await;
    let mut p = Peer::connect(h.addr).await;
    let t0 = Instant::now();
    p.send(&[0x74, 0x52, 1]).await;
    tokio::time::sleep(HANDSHAKE / 2).await; // the trickle continues...
    p.send(&[0]).await;
    let g = p.goaway_then_close().await;
    assert_goaway(&g, GoawayCode::Timeout, "handshake timeout");
    let took = t0.elapsed();
    assert!(
        took < HANDSHAKE + Duration::from_secs(1),
        "handshake timeout took {took:?}"
    );
    assert!(began.elapsed() < SOON);
    by.finish().await;
    h.server.shutdown().await;
}
