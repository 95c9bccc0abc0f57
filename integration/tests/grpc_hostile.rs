//! HTTP/2 floods against the gRPC side of a trpc port, sent by a raw peer
//! (frames written by hand): rapid reset, CONTINUATION flood, SETTINGS and
//! PING floods, more streams than allowed, oversized header blocks. Each
//! test checks what the server did to the attacker, that a normal gRPC
//! client on another connection is still served, and that memory stays
//! bounded (docs/LIMITS.md, "gRPC / HTTP/2").

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use trpc::codec::Proto;
use trpc::server::{unary, Router, Server};
use trpc::{Client, Endpoint, Request, Response, Status};
use trpc_integration::h2::*;
use trpc_integration::messages::EchoMsg;
use trpc_integration::proc::vm_rss_kib;
use trpc_integration::server::{serve_with, TestServer};
use trpc_integration::{within, SOON};

/// Handlers that started and have not ended (finished or dropped).
#[derive(Clone, Default)]
struct Live(Arc<AtomicUsize>);

struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Live {
    fn enter(&self) -> LiveGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        LiveGuard(self.0.clone())
    }

    fn now(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

fn router(live: Live) -> Router {
    Router::new()
        .route(
            "h.H/Say",
            unary(|req: Request<EchoMsg>| async move {
                Ok::<_, Status>(Response::new(req.into_inner()))
            })
            .codec(Proto),
        )
        .route(
            "h.H/Wait",
            unary(move |_req: Request<EchoMsg>| {
                let live = live.clone();
                async move {
                    let _guard = live.enter();
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok::<_, Status>(Response::new(EchoMsg::new("late")))
                }
            })
            .codec(Proto),
        )
}

async fn start(server: Server, live: &Live) -> TestServer {
    serve_with(server, router(live.clone())).await
}

/// A normal gRPC client on its own connection gets an answer.
async fn bystander_served(addr: std::net::SocketAddr) {
    let channel = Endpoint::new(format!("grpc://{addr}"))
        .unwrap()
        .connect_timeout(SOON)
        .connect_lazy();
    let reply: EchoMsg = within(
        SOON,
        "bystander call",
        Client::with_codec(channel, Proto).unary_message("h.H/Say", EchoMsg::new("still here")),
    )
    .await
    .expect("the bystander is served");
    assert_eq!(reply.message, "still here");
}

/// RSS may grow by at most this much during one flood.
const MEMORY_BOUND: usize = 256 << 20;

#[tokio::test]
async fn rapid_reset_is_cut_off_and_leaves_no_handlers_behind() {
    let live = Live::default();
    let server = start(Server::builder(), &live).await;
    let before = vm_rss_kib() as usize * 1024;
    let mut peer = H2Peer::connect(server.addr).await;
    peer.handshake().await;
    // Open a stream and reset it at once, thousands of times, in batches.
    let mut id = 1u32;
    'flood: for _ in 0..100 {
        let mut out = BytesMut::new();
        for _ in 0..100 {
            frame(
                &mut out,
                HEADERS,
                END_HEADERS,
                id,
                &grpc_request("/h.H/Wait"),
            );
            frame(&mut out, RST_STREAM, 0, id, &CANCEL.to_be_bytes());
            id += 2;
        }
        if !peer.send(&out).await {
            break 'flood;
        }
    }
    let (frames, closed) = peer.drain(Duration::from_secs(3)).await;
    let goaway = frames.iter().find(|f| f.kind == GOAWAY).map(goaway);
    // h2 cuts the connection after 100 streams reset before they were
    // accepted (max_pending_accept_reset_streams): GOAWAY(ENHANCE_YOUR_CALM).
    let g = goaway.expect("a GOAWAY for the resetting peer");
    assert_eq!(g.error_code, ENHANCE_YOUR_CALM, "{g:?}");
    assert!(closed, "the connection is closed after the GOAWAY");
    assert!(g.last_stream < id, "{g:?}");
    within(SOON, "reset handlers dropped", async {
        while live.now() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    bystander_served(server.addr).await;
    assert!((vm_rss_kib() as usize * 1024).saturating_sub(before) < MEMORY_BOUND);
    server.shutdown().await;
}

#[tokio::test]
async fn a_continuation_flood_is_cut_at_the_header_list_limit() {
    let live = Live::default();
    let server = start(Server::builder(), &live).await;
    let before = vm_rss_kib() as usize * 1024;
    let mut peer = H2Peer::connect(server.addr).await;
    peer.handshake().await;
    let mut out = BytesMut::new();
    frame(&mut out, HEADERS, 0, 1, &grpc_request("/h.H/Say"));
    assert!(peer.send(&out).await);
    // Up to 64 MiB of CONTINUATION frames that never end the block.
    let mut block = Vec::new();
    for i in 0..150 {
        hpack_literal(&mut block, &format!("x-junk-{i}"), &[b'a'; 90]);
    }
    let mut sent = 0usize;
    let mut cut = false;
    while sent < 64 << 20 {
        let mut out = BytesMut::new();
        for _ in 0..16 {
            frame(&mut out, CONTINUATION, 0, 1, &block);
        }
        let ok = tokio::time::timeout(Duration::from_secs(5), peer.send(&out)).await;
        if !matches!(ok, Ok(true)) {
            cut = true;
            break;
        }
        sent += out.len();
    }
    let (frames, closed) = peer.drain(Duration::from_secs(5)).await;
    let goaway = frames.iter().find(|f| f.kind == GOAWAY).map(goaway);
    assert!(
        cut || closed,
        "the server took {sent} bytes of CONTINUATION frames without closing"
    );
    let g = goaway.expect("a GOAWAY for the flooding peer");
    assert_eq!(g.error_code, ENHANCE_YOUR_CALM, "{g:?}");
    assert!(sent < 16 << 20, "{sent} bytes accepted before the cut");
    assert_eq!(live.now(), 0);
    bystander_served(server.addr).await;
    assert!((vm_rss_kib() as usize * 1024).saturating_sub(before) < MEMORY_BOUND);
    server.shutdown().await;
}

/// Floods one control frame kind without reading the answers.
async fn control_flood(kind: u8, payload: &[u8]) {
    let live = Live::default();
    let server = start(Server::builder(), &live).await;
    let before = vm_rss_kib() as usize * 1024;
    let mut peer = H2Peer::connect(server.addr).await;
    peer.handshake().await;
    let mut batch = BytesMut::new();
    for _ in 0..1000 {
        frame(&mut batch, kind, 0, 0, payload);
    }
    // 200,000 frames, or until the server stops reading (the peer never
    // reads, so the server's answers back up) or closes.
    for _ in 0..200 {
        match tokio::time::timeout(Duration::from_secs(2), peer.send(&batch)).await {
            Ok(true) => {}
            _ => break,
        }
    }
    bystander_served(server.addr).await;
    assert!(
        (vm_rss_kib() as usize * 1024).saturating_sub(before) < MEMORY_BOUND,
        "memory grew by {} bytes",
        (vm_rss_kib() as usize * 1024).saturating_sub(before)
    );
    drop(peer);
    server.shutdown().await;
}

#[tokio::test]
async fn a_settings_flood_keeps_memory_bounded_and_others_served() {
    // SETTINGS_MAX_CONCURRENT_STREAMS (3) = 100.
    control_flood(SETTINGS, &[0, 3, 0, 0, 0, 100]).await;
}

#[tokio::test]
async fn a_ping_flood_keeps_memory_bounded_and_others_served() {
    control_flood(PING, &[1, 2, 3, 4, 5, 6, 7, 8]).await;
}

#[tokio::test]
async fn streams_over_the_limit_are_refused_and_never_reach_a_handler() {
    let live = Live::default();
    let server = start(Server::builder().max_concurrent_streams(8), &live).await;
    let mut peer = H2Peer::connect(server.addr).await;
    peer.handshake().await;
    // Read the server's SETTINGS and acknowledge it: the limit is in force
    // from then on.
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let f = peer.read_frame(deadline).await.expect("server SETTINGS");
        if f.kind == SETTINGS && f.flags & ACK == 0 {
            break;
        }
    }
    let mut ack = BytesMut::new();
    frame(&mut ack, SETTINGS, ACK, 0, &[]);
    assert!(peer.send(&ack).await);
    let mut out = BytesMut::new();
    for i in 0..32u32 {
        let id = 1 + 2 * i;
        frame(
            &mut out,
            HEADERS,
            END_HEADERS,
            id,
            &grpc_request("/h.H/Wait"),
        );
        frame(&mut out, DATA, END_STREAM, id, &grpc_message(&[]));
    }
    assert!(peer.send(&out).await);
    let (frames, _closed) = peer.drain(Duration::from_secs(2)).await;
    let refused = frames
        .iter()
        .filter(|f| f.kind == RST_STREAM && rst_code(f) == REFUSED_STREAM)
        .count();
    let goaway = frames.iter().find(|f| f.kind == GOAWAY).map(goaway);
    assert!(
        refused >= 24 || goaway.is_some(),
        "{refused} streams refused; frames: {:?}",
        frames
            .iter()
            .map(|f| (f.kind, f.stream))
            .collect::<Vec<_>>()
    );
    assert!(live.now() <= 8, "{} handlers running", live.now());
    bystander_served(server.addr).await;
    drop(peer);
    within(SOON, "handlers dropped with the connection", async {
        while live.now() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_oversized_header_block_never_reaches_a_handler() {
    let live = Live::default();
    let server = start(Server::builder().max_metadata_size(4096), &live).await;
    let mut peer = H2Peer::connect(server.addr).await;
    peer.handshake().await;
    // One 64 KiB header value, in frames of at most 16 KiB.
    let mut block = grpc_request("/h.H/Wait");
    hpack_literal(&mut block, "x-huge", &vec![b'h'; 64 << 10]);
    let chunks: Vec<&[u8]> = block.chunks(16 << 10).collect();
    let mut out = BytesMut::new();
    for (i, c) in chunks.iter().enumerate() {
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        let flags = if i + 1 == chunks.len() {
            END_HEADERS
        } else {
            0
        };
        frame(&mut out, kind, flags, 1, c);
    }
    frame(&mut out, DATA, END_STREAM, 1, &grpc_message(&[]));
    let _ = peer.send(&out).await;
    let (frames, closed) = peer.drain(Duration::from_secs(2)).await;
    let answered = frames
        .iter()
        .any(|f| (f.kind == RST_STREAM || f.kind == HEADERS) && f.stream == 1);
    let goaway = frames.iter().any(|f| f.kind == GOAWAY);
    assert!(
        answered || goaway || closed,
        "no answer to an oversized header block"
    );
    assert_eq!(live.now(), 0, "the oversized call reached its handler");
    bystander_served(server.addr).await;
    server.shutdown().await;
}
