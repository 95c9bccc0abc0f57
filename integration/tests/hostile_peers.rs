//! Abusive and broken peers over real sockets: rapid open/cancel floods,
//! too many connections, a thousand idle ones, slow-loris trickles, clients
//! that never read, half-close, resets mid-response, and request bytes piled
//! up on one connection. Each gets the reaction docs/LIMITS.md documents,
//! memory stays bounded, and a normal client is served all along.

use std::time::Duration;

use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tower::limit::ConcurrencyLimitLayer;
use trpc::frame::{FrameType, GoawayCode, Settings};
use trpc::server::{unary, Router};
use trpc::stats::TransportStats;
use trpc::{Client, Code, Request, Response, Status};

use trpc_integration::client::endpoint;
use trpc_integration::frames::{cancel, kind, raw_frame_lens, unary_request};
use trpc_integration::hostile::{
    assert_goaway, hostile_server, start, start_default, Bystander, FRAME, HANDSHAKE, WRITE,
};
use trpc_integration::messages::{ask_body, echo_body, EchoMsg};
use trpc_integration::peer::{Peer, RawResponse, Seen};
use trpc_integration::probe::{Event, Probe};
use trpc_integration::proc::{thread_cpu_ticks, vm_rss_kib, MEMORY};
use trpc_integration::server::serve_with;
use trpc_integration::{until, within, SOON};

const MIB: usize = 1 << 20;

#[tokio::test]
async fn a_flood_of_open_cancel_pairs_ends_with_enhance_your_calm() {
    let (probe, _events) = Probe::new();
    let stats = TransportStats::new();
    let server = hostile_server(&stats).max_cancel_rate(Some((100, Duration::from_secs(10))));
    let h = start(server, stats, probe).await;
    let by = Bystander::start(h.addr).await;

    let mut p = Peer::handshake(h.addr).await;
    let mut id = 1u32;
    // Up to 10,000 pairs, 100 per write (a rapid-reset attack).
    for _ in 0..100 {
        let mut batch = Vec::new();
        for _ in 0..100 {
            batch.extend_from_slice(&unary_request(id, "h.H/Wait", &[], echo_body("r")));
            batch.extend_from_slice(&cancel(id, Code::Cancelled));
            id += 2;
        }
        p.send(&batch).await;
    }
    let g = p.goaway_then_close().await;
    assert_goaway(&g, GoawayCode::EnhanceYourCalm, "too many cancelled calls");
    // The server stopped after about 100 cancels, not after 10,000.
    assert!(
        g.last_stream_id < 2 * 300,
        "the server went on until stream {}",
        g.last_stream_id
    );
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn a_client_cancelling_a_thousand_calls_at_once_keeps_its_connection() {
    // Default limits: a legitimate client that gives up on everything it
    // has in flight is not mistaken for an attacker.
    let (probe, mut events) = Probe::new();
    let h = start_default(probe).await;
    let channel = within(SOON, "connect", endpoint(h.addr).connect())
        .await
        .expect("connect");
    let client = Client::new(channel.clone());
    let calls: Vec<_> = (0..1000)
        .map(|i| {
            let mut c = client.clone();
            tokio::spawn(async move {
                c.unary_message::<_, EchoMsg>("h.H/Wait", EchoMsg::new(format!("{i}")))
                    .await
            })
        })
        .collect();
    for _ in 0..1000 {
        events.expect(Event::Started, SOON).await;
    }
    let opened = h.stats.opened_total();
    for call in &calls {
        call.abort(); // drops the call future: the client sends CANCEL
    }
    for _ in 0..1000 {
        events.expect(Event::Dropped, SOON).await;
    }
    let mut c = client.clone();
    let reply: EchoMsg = within(
        SOON,
        "call after the cancels",
        c.unary_message("echo.Echo/Say", EchoMsg::new("still here")),
    )
    .await
    .expect("the connection still serves");
    assert_eq!(reply.message, "still here");
    assert_eq!(
        h.stats.opened_total(),
        opened,
        "the connection was replaced"
    );
    assert_eq!(channel.connections(), 1);
    h.server.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_limit_get_a_goaway_that_says_so() {
    let (probe, _events) = Probe::new();
    let stats = TransportStats::new();
    let h = start(hostile_server(&stats).max_connections(3), stats, probe).await;
    let by = Bystander::start(h.addr).await;
    let a = Peer::handshake(h.addr).await;
    let b = Peer::handshake(h.addr).await;
    until(SOON, "three connections open", || h.stats.open() == 3).await;

    // A raw fourth connection: GOAWAY(ENHANCE_YOUR_CALM) instead of SETTINGS.
    let mut p = Peer::connect(h.addr).await;
    p.send(&trpc_integration::frames::client_settings()).await;
    let frames = p.until_closed().await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].frame_type(), Some(FrameType::Goaway));
    let g = trpc::frame::Goaway::parse(&frames[0].payload).expect("goaway");
    assert_goaway(&g, GoawayCode::EnhanceYourCalm, "connection limit reached");
    assert!(g.message.contains('3'), "{g:?}");

    // A trpc client gets UNAVAILABLE with the server's explanation.
    let err = within(SOON, "refused connect", endpoint(h.addr).connect())
        .await
        .expect_err("over the connection limit");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("connection limit"), "{err:?}");

    // A slot frees up: the next connection is served.
    drop(a);
    until(SOON, "a slot frees up", || h.stats.open() == 2).await;
    let mut c = Peer::handshake(h.addr).await;
    c.send(&unary_request(1, "echo.Echo/Say", &[], echo_body("in")))
        .await;
    let RawResponse {
        stream_id: id,
        status: code,
        message: msg,
        ..
    } = c.response().await;
    assert_eq!((id, code), (1, 0), "{msg}");
    drop((b, c));
    until(SOON, "only the bystander is left", || h.stats.open() == 1).await;
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn a_thousand_idle_connections_are_closed_and_cost_little() {
    let _serial = MEMORY.lock().await;
    let (probe, _events) = Probe::new();
    let stats = TransportStats::new();
    // Long enough to open all 1000 before the first ones are closed.
    let timeout = Duration::from_secs(2);
    let server = hostile_server(&stats)
        .handshake_timeout(timeout)
        .idle_timeout(Some(timeout));
    let h = start(server, stats, probe).await;
    let by = Bystander::start(h.addr).await;
    let rss_before = vm_rss_kib();

    // 500 connections that send nothing and 500 that handshake and go idle,
    // opened 100 at a time.
    let mut silent = Vec::new();
    let mut idlers = Vec::new();
    for round in 1..=10u64 {
        silent.extend(join_all((0..50).map(|_| Peer::connect(h.addr))).await);
        // Let the accept loop catch up (the listen backlog is 128).
        until(SOON, "silent connections accepted", || {
            h.stats.opened_total() >= 1 + round * 100 - 50
        })
        .await;
        idlers.extend(join_all((0..50).map(|_| Peer::handshake(h.addr))).await);
    }
    until(SOON, "all 1001 connections open", || h.stats.open() >= 1001).await;
    let grown_mib = vm_rss_kib().saturating_sub(rss_before) / 1024;
    assert!(
        grown_mib < 64,
        "1000 idle connections (both ends in this process) cost {grown_mib} MiB"
    );

    // Silent ones are closed at the handshake timeout, without a word.
    let silent_closed = join_all(silent.iter_mut().map(|p| p.until_closed())).await;
    assert!(silent_closed.iter().all(|frames| frames.is_empty()));
    // Idle ones get GOAWAY(NO_ERROR, "idle timeout"), then the close.
    let goaways = join_all(idlers.iter_mut().map(|p| p.goaway_then_close())).await;
    for g in &goaways {
        assert_goaway(g, GoawayCode::NoError, "idle timeout");
    }
    until(SOON, "only the bystander is left", || h.stats.open() == 1).await;
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn a_slowloris_trickle_is_cut_at_the_frame_timeout() {
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    let by = Bystander::start(h.addr).await;

    // A frame header trickled one byte per 100 ms (it would take 1.6 s): the
    // header must be complete within FRAME of its first byte, however steady
    // the trickle.
    let mut p = Peer::handshake(h.addr).await;
    let frame = unary_request(1, "echo.Echo/Say", &[], echo_body("slow"));
    let start = Instant::now();
    let mut seen = None;
    for b in &frame[..16] {
        p.send(&[*b]).await;
        if let Ok(s) = tokio::time::timeout(Duration::from_millis(100), p.next()).await {
            seen = Some(s);
            break;
        }
    }
    let took = start.elapsed();
    let frames = match seen {
        Some(Seen::Frame(f)) => {
            let mut rest = p.until_closed().await;
            rest.insert(0, f);
            rest
        }
        other => panic!("expected a GOAWAY while trickling, got {other:?}"),
    };
    let g = trpc::frame::Goaway::parse(&frames[0].payload).expect("goaway first");
    assert_goaway(&g, GoawayCode::Timeout, "frame header incomplete");
    assert!(
        took >= FRAME && took < Duration::from_millis(1400),
        "cut after {took:?}"
    );

    // A body trickled with gaps shorter than FRAME is a slow upload, not an
    // attack: it goes on past FRAME. A gap of FRAME ends it.
    let mut p = Peer::handshake(h.addr).await;
    p.send(&raw_frame_lens(kind::DATA, 0, 99, 0, 100, &[]))
        .await;
    let start = Instant::now();
    while start.elapsed() < FRAME * 3 {
        p.send(&[0]).await;
        let quiet = tokio::time::timeout(FRAME / 4, p.next()).await;
        assert!(quiet.is_err(), "cut while the body progressed: {quiet:?}");
    }
    let g = p.goaway_then_close().await;
    assert_goaway(&g, GoawayCode::Timeout, "no bytes");
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_dropped_with_bounded_buffers() {
    let _serial = MEMORY.lock().await;
    let (probe, _events) = Probe::new();
    // Handlers run concurrently: what they produce for a client that never
    // reads is bounded by the calls a connection may run at once.
    let stats = TransportStats::new();
    let h = start(
        hostile_server(&stats).max_concurrent_streams(16),
        stats,
        probe,
    )
    .await;
    let by = Bystander::start(h.addr).await;
    let rss_before = vm_rss_kib();
    let mut p = Peer::handshake(h.addr).await;
    // 256 calls for 1 MiB each in one write, and never a read.
    let mut wire = Vec::new();
    for i in 0..256u32 {
        wire.extend_from_slice(&unary_request(
            2 * i + 1,
            "h.H/Big",
            &[("trpc-codec", b"proto")],
            ask_body(MIB as u64),
        ));
    }
    p.send(&wire).await;
    // 16 calls run (the others are refused); the server stops writing
    // replies and starting calls while 1 MiB waits for the peer, and drops
    // the peer once it accepts nothing for the write timeout.
    let t0 = Instant::now();
    until(SOON, "the non-reader is dropped", || h.stats.open() == 1).await;
    assert!(
        t0.elapsed() >= WRITE / 2,
        "dropped too early: {:?}",
        t0.elapsed()
    );
    let peak = h.stats.write_buffered_peak() as usize;
    assert!(peak <= 3 * MIB, "write buffer peaked at {peak} bytes");
    let grown_mib = vm_rss_kib().saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 64, "the process grew by {grown_mib} MiB");
    // What the peer gets is a prefix of the answers, then the end.
    let mut sink = Vec::new();
    let _ = within(SOON, "read the rest", p.io.read_to_end(&mut sink)).await;
    assert!(sink.len() < 256 * MIB / 4, "{} bytes were sent", sink.len());
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_half_closes_is_gone_and_its_calls_are_dropped() {
    let (probe, mut events) = Probe::new();
    let h = start_default(probe).await;
    let by = Bystander::start(h.addr).await;
    let mut p = Peer::handshake(h.addr).await;
    p.send(&unary_request(1, "h.H/Wait", &[], echo_body("w")))
        .await;
    events.expect(Event::Started, SOON).await;
    // TCP half-close: the protocol has none (PROTOCOL.md §5.3); EOF means
    // the client is gone.
    p.io.shutdown().await.expect("shutdown");
    events.expect(Event::Dropped, SOON).await;
    let frames = p.until_closed().await;
    assert!(
        frames.iter().all(|f| f.stream_id() != 1),
        "nothing is sent for the dropped call: {frames:?}"
    );
    until(SOON, "the connection is closed", || h.stats.open() == 1).await;
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn a_peer_reset_mid_response_leaves_the_server_serving() {
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    let by = Bystander::start(h.addr).await;
    // A 4 MiB unary answer and an endless stream, each reset after the
    // first bytes arrive.
    for (method, ask) in [("h.H/Big", 3 * MIB as u64), ("h.H/Flood", 100_000)] {
        let mut p = Peer::handshake(h.addr).await;
        p.send(&unary_request(
            1,
            method,
            &[("trpc-codec", b"proto")],
            ask_body(ask),
        ))
        .await;
        let mut first = [0u8; 4096];
        within(
            SOON,
            "first bytes of the answer",
            p.io.read_exact(&mut first),
        )
        .await
        .expect("read");
        p.io.set_zero_linger().expect("SO_LINGER 0");
        drop(p); // RST
        until(SOON, "the reset connection is gone", || h.stats.open() == 1).await;
    }
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn request_bytes_held_on_one_connection_are_bounded() {
    let (probe, mut events) = Probe::new();
    let stats = TransportStats::new();
    let h = start(
        hostile_server(&stats).max_buffered_request_bytes(MIB),
        stats,
        probe,
    )
    .await;
    let by = Bystander::start(h.addr).await;
    let mut p = Peer::handshake(h.addr).await;
    let body = echo_body(&"x".repeat(300 * 1024));
    // Three calls of ~300 KiB fit in 1 MiB; the fourth does not.
    for id in [1u32, 3, 5] {
        p.send(&unary_request(id, "h.H/Wait", &[], body.clone()))
            .await;
        events.expect(Event::Started, SOON).await;
    }
    p.send(&unary_request(7, "h.H/Wait", &[], body.clone()))
        .await;
    let RawResponse {
        stream_id: id,
        status: code,
        message: msg,
        refused,
        ..
    } = p.response().await;
    assert_eq!((id, code), (7, Code::ResourceExhausted as u32), "{msg}");
    assert!(msg.contains("buffered"), "{msg}");
    assert!(refused, "the call was not processed: safe to retry");
    // Cancelling one call frees its bytes: the next call fits.
    p.send(&cancel(1, Code::Cancelled)).await;
    events.expect(Event::Dropped, SOON).await;
    p.send(&unary_request(9, "h.H/Wait", &[], body)).await;
    events.expect(Event::Started, SOON).await;

    // One call larger than the limit alone is always admitted.
    let mut q = Peer::handshake(h.addr).await;
    let huge = echo_body(&"y".repeat(3 * MIB / 2));
    q.send(&unary_request(1, "h.H/Wait", &[], huge)).await;
    events.expect(Event::Started, SOON).await;
    drop((p, q));
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn pipelined_calls_behind_a_service_that_is_not_ready_are_all_answered() {
    // Regression: frames already buffered behind a call that waited for
    // `poll_ready` stayed unprocessed until the client sent more bytes.
    let router = Router::new().route(
        "s.S/Slow",
        unary(|req: Request<EchoMsg>| async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok::<_, Status>(Response::new(req.into_inner()))
        }),
    );
    let stats = TransportStats::new();
    let server = serve_with(
        hostile_server(&stats).layer(ConcurrencyLimitLayer::new(1)),
        router,
    )
    .await;
    let mut p = Peer::handshake(server.addr).await;
    let mut wire = Vec::new();
    for id in [1u32, 3, 5, 7] {
        wire.extend_from_slice(&unary_request(id, "s.S/Slow", &[], echo_body("p")));
    }
    p.send(&wire).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let RawResponse {
            stream_id: id,
            status: code,
            message: msg,
            ..
        } = p.response().await;
        assert_eq!(code, 0, "{msg}");
        ids.push(id);
    }
    ids.sort_unstable();
    assert_eq!(ids, [1, 3, 5, 7]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_call_outliving_the_idle_timeout_does_not_busy_loop() {
    // Regression: the idle deadline stayed armed while a call ran, so the
    // connection woke up every millisecond until the call ended. The server
    // runs on this test's (single) thread: its CPU time is this thread's.
    let router = Router::new().route(
        "s.S/Long",
        unary(|req: Request<EchoMsg>| async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok::<_, Status>(Response::new(req.into_inner()))
        }),
    );
    let stats = TransportStats::new();
    let server = serve_with(
        hostile_server(&stats).idle_timeout(Some(Duration::from_millis(50))),
        router,
    )
    .await;
    let mut client = Client::new(
        within(SOON, "connect", endpoint(server.addr).connect())
            .await
            .expect("connect"),
    );
    let before = thread_cpu_ticks();
    let reply: EchoMsg = within(
        SOON,
        "long call",
        client.unary_message("s.S/Long", EchoMsg::new("long")),
    )
    .await
    .expect("a call longer than the idle timeout completes");
    let ticks = thread_cpu_ticks() - before;
    assert_eq!(reply.message, "long");
    assert!(ticks <= 5, "{ticks} ticks of CPU while waiting 2 s");
    server.shutdown().await;
}

#[tokio::test]
async fn an_idle_connection_gets_goaway_then_close() {
    let (probe, _events) = Probe::new();
    let stats = TransportStats::new();
    let idle = Duration::from_millis(300);
    let h = start(
        hostile_server(&stats).idle_timeout(Some(idle)),
        stats,
        probe,
    )
    .await;
    let mut p = Peer::handshake(h.addr).await;
    p.send(&unary_request(1, "echo.Echo/Say", &[], echo_body("once")))
        .await;
    let RawResponse { status: code, .. } = p.response().await;
    assert_eq!(code, 0);
    let t0 = Instant::now();
    let g = p.goaway_then_close().await;
    assert_goaway(&g, GoawayCode::NoError, "idle timeout");
    assert_eq!(g.last_stream_id, 1);
    assert!(t0.elapsed() < idle + Duration::from_secs(2));
    h.server.shutdown().await;
}

#[tokio::test]
async fn per_call_limits_fail_only_that_call() {
    let (probe, mut events) = Probe::new();
    let stats = TransportStats::new();
    let server = hostile_server(&stats)
        .max_concurrent_streams(2)
        .max_send_message_size(1024);
    let h = start(server, stats, probe).await;
    let by = Bystander::start(h.addr).await;
    let mut p = Peer::handshake(h.addr).await;

    // Concurrency: two calls in flight; a third is refused.
    for id in [1u32, 3] {
        p.send(&unary_request(id, "h.H/Wait", &[], echo_body("w")))
            .await;
        events.expect(Event::Started, SOON).await;
    }
    p.send(&unary_request(5, "h.H/Wait", &[], echo_body("w")))
        .await;
    let RawResponse {
        stream_id: id,
        status: code,
        message: msg,
        refused,
        ..
    } = p.response().await;
    assert_eq!((id, code), (5, Code::ResourceExhausted as u32), "{msg}");
    assert!(
        msg.contains("too many concurrent calls") && refused,
        "{msg}"
    );
    p.send(&cancel(1, Code::Cancelled)).await;
    p.send(&cancel(3, Code::Cancelled)).await;
    events.expect(Event::Dropped, SOON).await;
    events.expect(Event::Dropped, SOON).await;

    // Send limit: a 2000-byte answer is over the server's 1 KiB; 100 is not.
    let proto: (&str, &[u8]) = ("trpc-codec", b"proto");
    p.send(&unary_request(7, "h.H/Big", &[proto], ask_body(2000)))
        .await;
    let RawResponse {
        stream_id: id,
        status: code,
        message: msg,
        ..
    } = p.response().await;
    assert_eq!((id, code), (7, Code::ResourceExhausted as u32), "{msg}");
    assert!(msg.contains("response message"), "{msg}");
    p.send(&unary_request(9, "h.H/Big", &[proto], ask_body(100)))
        .await;
    let RawResponse {
        stream_id: id,
        status: code,
        message: msg,
        ..
    } = p.response().await;
    assert_eq!((id, code), (9, 0), "{msg}");

    // The client's own announced limit applies too.
    let mut q = Peer::connect(h.addr).await;
    let mut settings = bytes::BytesMut::new();
    Settings {
        max_message_size: Some(50),
        ..Settings::default()
    }
    .encode(&mut settings);
    q.send(&settings).await;
    q.send(&unary_request(1, "h.H/Big", &[proto], ask_body(100)))
        .await;
    let RawResponse {
        stream_id: id,
        status: code,
        message: msg,
        ..
    } = q.response().await;
    assert_eq!((id, code), (1, Code::ResourceExhausted as u32), "{msg}");
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn bytes_read_while_detecting_the_protocol_are_processed_at_once() {
    // Regression: frames that arrived together with the magic (read while
    // detecting the protocol) waited for more bytes. A handshake in one small
    // write was then cut at the handshake timeout, and a call sent with it
    // was not answered.
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    let mut p = Peer::connect(h.addr).await;
    let mut first = bytes::BytesMut::new();
    Settings::default().encode(&mut first);
    first.extend_from_slice(&unary_request(1, "echo.Echo/Say", &[], &b"{}"[..]));
    assert!(first.len() <= 64, "fits in the detection read");
    p.send(&first).await;
    let RawResponse {
        stream_id: id,
        status: code,
        message: msg,
        ..
    } = p.response().await;
    assert_eq!((id, code), (1, 0), "{msg}");

    let mut q = Peer::connect(h.addr).await;
    q.send(&trpc_integration::frames::client_settings()).await;
    let quiet = tokio::time::timeout(HANDSHAKE * 2, async {
        loop {
            match q.next().await {
                Seen::Frame(f) if f.frame_type() == Some(FrameType::Settings) => {}
                other => return other,
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "a handshaken client was cut: {quiet:?}");
    h.server.shutdown().await;
}
