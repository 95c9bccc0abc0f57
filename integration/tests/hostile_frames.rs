//! Hostile frames over real sockets: absurd and inconsistent lengths, empty
//! frames, truncation, garbage, unknown types and flags, bad methods,
//! payloads and metadata, stream id abuse and frames for streams that do not
//! exist. Each gets the reaction of docs/PROTOCOL.md §6–§8 and docs/LIMITS.md,
//! the server never panics, and a normal client is served all along.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use trpc::frame::{FrameType, Goaway, GoawayCode};
use trpc::Code;
use trpc_integration::frames::{kind, metadata_block, raw_frame, raw_frame_lens, unary_request};
use trpc_integration::hostile::{assert_goaway, start_default, Bystander};
use trpc_integration::messages::{ask_body, echo_body};
use trpc_integration::peer::{Peer, RawResponse, Seen};
use trpc_integration::probe::{Event, Probe};
use trpc_integration::proc::{vm_rss_kib, MEMORY};
use trpc_integration::SOON;

const OK: u32 = Code::Ok as u32;

/// Sends a normal echo call on `peer` with stream id `id` and checks the answer.
async fn echo_works(peer: &mut Peer, id: u32) {
    peer.send(&unary_request(
        id,
        "echo.Echo/Say",
        &[],
        echo_body("still fine"),
    ))
    .await;
    let RawResponse {
        stream_id: sid,
        status: code,
        message: msg,
        ..
    } = peer.response().await;
    assert_eq!((sid, code), (id, OK), "{msg}");
}

#[tokio::test]
async fn length_claims_of_0xffffffff_get_their_documented_reaction() {
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    let by = Bystander::start(h.addr).await;
    let path = metadata_block(&[(":path", b"echo.Echo/Say")]);

    // HEADERS claiming a 4 GiB payload: a stream error, the bytes are skipped.
    let mut p = Peer::handshake(h.addr).await;
    p.send(&raw_frame_lens(
        kind::HEADERS,
        0x03,
        1,
        path.len() as u32,
        u32::MAX,
        &path,
    ))
    .await;
    let RawResponse {
        stream_id: id,
        status: code,
        message: msg,
        ..
    } = p.response().await;
    assert_eq!((id, code), (1, Code::ResourceExhausted as u32), "{msg}");
    assert!(msg.contains("exceeds the limit"), "{msg}");

    // HEADERS claiming the largest metadata block (16 MiB - 1): same.
    let mut p = Peer::handshake(h.addr).await;
    p.send(&raw_frame_lens(
        kind::HEADERS,
        0x03,
        1,
        0xFF_FFFF,
        0,
        b"junk",
    ))
    .await;
    let RawResponse {
        stream_id: id,
        status: code,
        message: msg,
        ..
    } = p.response().await;
    assert_eq!((id, code), (1, Code::ResourceExhausted as u32), "{msg}");
    assert!(msg.contains("metadata"), "{msg}");

    // A control frame (PING) claiming 4 GiB: a connection error.
    let mut p = Peer::handshake(h.addr).await;
    p.send(&raw_frame_lens(kind::PING, 0, 0, 0, u32::MAX, &[0; 8]))
        .await;
    assert_goaway(
        &p.goaway_then_close().await,
        GoawayCode::ProtocolError,
        "Ping",
    );

    // An unknown frame type claiming 4 GiB: skipped without a word; the
    // connection is alive (it answers a PING only after the 4 GiB, so check
    // that it is still open instead).
    let mut p = Peer::handshake(h.addr).await;
    p.send(&raw_frame_lens(0x77, 0, 1, 0, u32::MAX, &[1; 1024]))
        .await;
    let silent = tokio::time::timeout(Duration::from_millis(200), p.next()).await;
    assert!(silent.is_err(), "expected silence, got {silent:?}");

    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn skipping_an_oversized_frame_buffers_nothing() {
    let _serial = MEMORY.lock().await;
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    let by = Bystander::start(h.addr).await;
    let mut p = Peer::handshake(h.addr).await;
    let path = metadata_block(&[(":path", b"echo.Echo/Say")]);
    p.send(&raw_frame_lens(
        kind::HEADERS,
        0x03,
        1,
        path.len() as u32,
        u32::MAX,
        &path,
    ))
    .await;
    let RawResponse { status: code, .. } = p.response().await;
    assert_eq!(code, Code::ResourceExhausted as u32);

    // 128 MiB of the claimed 4 GiB: the server reads and drops them.
    let rss_before = vm_rss_kib();
    let read_before = h.stats.bytes_read();
    let chunk = vec![0x5a_u8; 1 << 20];
    for _ in 0..128 {
        p.send(&chunk).await;
    }
    trpc_integration::until(SOON, "the server read the junk", || {
        h.stats.bytes_read() - read_before >= 128 << 20
    })
    .await;
    let grown_mib = vm_rss_kib().saturating_sub(rss_before) / 1024;
    assert!(
        grown_mib < 48,
        "skipping 128 MiB grew the process by {grown_mib} MiB"
    );
    assert!(h.stats.recv_buffered_peak() < 1 << 20);
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn lengths_that_disagree_with_the_bytes_are_caught() {
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    let by = Bystander::start(h.addr).await;

    // A HEADERS frame that claims fewer payload bytes than follow it: the
    // surplus is read as the next frame header and fails the magic check.
    let mut p = Peer::handshake(h.addr).await;
    let md = metadata_block(&[(":path", b"echo.Echo/Say")]);
    let body = echo_body("0123456789");
    let mut bytes = raw_frame_lens(kind::HEADERS, 0x03, 1, md.len() as u32, 4, &md).to_vec();
    bytes.extend_from_slice(&body);
    p.send(&bytes).await;
    let frames = p.until_closed().await;
    let goaway = frames
        .iter()
        .find(|f| f.frame_type() == Some(FrameType::Goaway))
        .expect("GOAWAY");
    let g = Goaway::parse(&goaway.payload).expect("goaway");
    assert_goaway(&g, GoawayCode::ProtocolError, "bad magic");
    assert_eq!(g.last_stream_id, 1);

    // Control frames whose payload does not have their fixed size
    // (PROTOCOL.md §2): each a FRAME_SIZE_ERROR connection error.
    for (k, stream, payload, name) in [
        (kind::SETTINGS, 0, &[0, 1, 0, 0, 0][..], "Settings"),
        (kind::WINDOW_UPDATE, 0, &[0, 1], "WindowUpdate"),
        (kind::WINDOW_UPDATE, 9, &[0, 0, 0, 0, 1], "WindowUpdate"),
        (kind::PING, 0, &[1, 2, 3], "Ping"),
        (kind::PONG, 0, &[0; 9], "Pong"),
        (kind::CANCEL, 9, &[1], "Cancel"),
        (kind::GOAWAY, 0, &[0, 0, 0], "Goaway"),
    ] {
        let mut p = Peer::handshake(h.addr).await;
        echo_works(&mut p, 1).await;
        p.send(&raw_frame(k, 0, stream, &[], payload)).await;
        let g = p.goaway_then_close().await;
        assert_goaway(&g, GoawayCode::FrameSizeError, name);
        assert_eq!(g.last_stream_id, 1);
    }
    // The sizes that are right: a CANCEL with or without its code, a PING
    // of 8 bytes (answered with the same bytes).
    let mut p = Peer::handshake(h.addr).await;
    p.send(&raw_frame(kind::CANCEL, 0, 9, &[], &[])).await;
    p.send(&raw_frame(kind::CANCEL, 0, 11, &[], &[0, 0, 0, 1]))
        .await;
    p.send(&raw_frame(kind::PING, 0, 0, &[], b"12345678")).await;
    match p.next().await {
        Seen::Frame(f) if f.frame_type() == Some(FrameType::Pong) => {
            assert_eq!(&f.payload[..], b"12345678");
        }
        other => panic!("expected PONG, got {other:?}"),
    }
    echo_works(&mut p, 13).await;

    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn zero_length_frames_of_every_type_get_their_documented_reaction() {
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    let by = Bystander::start(h.addr).await;
    let mut p = Peer::handshake(h.addr).await;

    // Harmless when empty: SETTINGS, DATA/TRAILERS/CANCEL for a stream that
    // does not exist, an unknown type.
    for (k, stream) in [
        (kind::SETTINGS, 0),
        (kind::DATA, 7),
        (kind::TRAILERS, 7),
        (kind::CANCEL, 7),
        (0x42, 0),
    ] {
        p.send(&raw_frame(k, 0, stream, &[], &[])).await;
    }
    // An empty HEADERS has no :path: INVALID_ARGUMENT for that stream.
    p.send(&raw_frame(kind::HEADERS, 0x01, 1, &[], &[])).await;
    let RawResponse {
        stream_id: id,
        status: code,
        message: msg,
        ..
    } = p.response().await;
    assert_eq!((id, code), (1, Code::InvalidArgument as u32), "{msg}");
    assert!(msg.contains(":path"), "{msg}");
    // A call with an empty message (HEADERS with MESSAGE, no payload): the
    // JSON codec cannot decode nothing, so INVALID_ARGUMENT.
    p.send(&unary_request(3, "echo.Echo/Say", &[], Vec::new()))
        .await;
    let RawResponse {
        stream_id: id,
        status: code,
        message: msg,
        ..
    } = p.response().await;
    assert_eq!((id, code), (3, Code::InvalidArgument as u32), "{msg}");
    echo_works(&mut p, 5).await;
    // An increment of 0 for the connection: a FLOW_CONTROL connection error.
    p.send(&raw_frame(kind::WINDOW_UPDATE, 0, 0, &[], &[0; 4]))
        .await;
    let g = p.goaway_then_close().await;
    assert_goaway(&g, GoawayCode::FlowControlError, "WINDOW_UPDATE");
    assert_eq!(g.last_stream_id, 5);
    // Empty PING, PONG, GOAWAY and WINDOW_UPDATE frames have the wrong size
    // (PROTOCOL.md §2): a FRAME_SIZE_ERROR connection error each.
    for (k, stream, name) in [
        (kind::PING, 0, "Ping"),
        (kind::PONG, 0, "Pong"),
        (kind::GOAWAY, 0, "Goaway"),
        (kind::WINDOW_UPDATE, 7, "WindowUpdate"),
    ] {
        let mut p = Peer::handshake(h.addr).await;
        p.send(&raw_frame(k, 0, stream, &[], &[])).await;
        assert_goaway(
            &p.goaway_then_close().await,
            GoawayCode::FrameSizeError,
            name,
        );
    }

    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn truncated_frame_then_eof_drops_the_calls_and_closes() {
    let (probe, mut events) = Probe::new();
    let h = start_default(probe).await;
    let by = Bystander::start(h.addr).await;
    let mut p = Peer::handshake(h.addr).await;
    // A call in flight, then half of the next frame, then EOF.
    p.send(&unary_request(1, "h.H/Wait", &[], echo_body("w")))
        .await;
    events.expect(Event::Started, SOON).await;
    let next = unary_request(3, "echo.Echo/Say", &[], echo_body("cut"));
    p.send(&next[..next.len() / 2]).await;
    p.io.shutdown().await.expect("shutdown");
    // The server treats EOF as the client being gone: the handler is
    // dropped, nothing is answered, the connection closes.
    events.expect(Event::Dropped, SOON).await;
    let frames = p.until_closed().await;
    assert!(
        frames
            .iter()
            .all(|f| f.frame_type() != Some(FrameType::Headers)),
        "nothing should be answered: {frames:?}"
    );
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn garbage_or_a_bad_version_mid_connection_is_a_protocol_error() {
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    let by = Bystander::start(h.addr).await;

    let mut p = Peer::handshake(h.addr).await;
    echo_works(&mut p, 1).await;
    let garbage: Vec<u8> = (0..64u32).map(|i| (i * 97 + 13) as u8).collect();
    p.send(&garbage).await;
    let g = p.goaway_then_close().await;
    assert_goaway(&g, GoawayCode::ProtocolError, "bad magic");
    assert_eq!(g.last_stream_id, 1);

    let mut p = Peer::handshake(h.addr).await;
    let mut frame = raw_frame(kind::PING, 0, 0, &[], &[0; 8]).to_vec();
    frame[2] = 2; // version 2
    p.send(&frame).await;
    assert_goaway(
        &p.goaway_then_close().await,
        GoawayCode::ProtocolError,
        "version 2",
    );

    // The first frame must be SETTINGS.
    let mut p = Peer::connect(h.addr).await;
    p.send(&raw_frame(kind::PING, 0, 0, &[], &[0; 8])).await;
    assert_goaway(
        &p.goaway_then_close().await,
        GoawayCode::ProtocolError,
        "SETTINGS",
    );

    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn unknown_frame_types_and_flags_are_ignored() {
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    let by = Bystander::start(h.addr).await;
    let mut p = Peer::handshake(h.addr).await;
    // Unknown types with metadata and payloads, on stream 0 and on streams.
    for k in [9u8, 0x42, 0xff] {
        p.send(&raw_frame(k, 0xff, 0, b"meta", b"payload")).await;
        p.send(&raw_frame(k, 0x01, 1, &[], &[0; 100])).await;
    }
    // A call whose HEADERS carry every unknown flag bit.
    let md = metadata_block(&[(":path", b"echo.Echo/Say")]);
    p.send(&raw_frame(
        kind::HEADERS,
        0x03 | 0xf8,
        1,
        &md,
        &echo_body("flags"),
    ))
    .await;
    let RawResponse {
        stream_id: id,
        status: code,
        message: msg,
        ..
    } = p.response().await;
    assert_eq!((id, code), (1, OK), "{msg}");
    // Unknown SETTINGS ids are ignored too.
    p.send(&raw_frame(
        kind::SETTINGS,
        0,
        0,
        &[],
        &[0x77, 0x77, 0, 0, 0, 1],
    ))
    .await;
    echo_works(&mut p, 3).await;
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn bad_methods_payloads_and_codecs_fail_only_their_call() {
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    let by = Bystander::start(h.addr).await;
    let mut p = Peer::handshake(h.addr).await;
    let cases: Vec<(Vec<u8>, Code, &str)> = vec![
        (
            unary_request(1, "no.Such/Method", &[], echo_body("x")).to_vec(),
            Code::Unimplemented,
            "no.Such/Method",
        ),
        (
            unary_request(3, "echo.Echo/Say", &[], &b"{not json"[..]).to_vec(),
            Code::InvalidArgument,
            "json",
        ),
        (
            unary_request(
                5,
                "echo.Echo/Say",
                &[("trpc-codec", b"proto")],
                &[0xff, 0xff, 0xff][..],
            )
            .to_vec(),
            Code::InvalidArgument,
            "protobuf",
        ),
        (
            unary_request(
                7,
                "echo.Echo/Say",
                &[("trpc-codec", b"yaml")],
                echo_body("x"),
            )
            .to_vec(),
            Code::InvalidArgument,
            "codec",
        ),
        (
            raw_frame(
                kind::HEADERS,
                0x03 | 0x04,
                9,
                &metadata_block(&[(":path", b"echo.Echo/Say"), ("trpc-encoding", b"gzip")]),
                b"\x1f\x8b not really gzip",
            )
            .to_vec(),
            Code::Unimplemented,
            "compressed",
        ),
        (
            unary_request(11, "h.H/Big", &[("trpc-codec", b"proto")], &b"\x08"[..]).to_vec(),
            Code::InvalidArgument,
            "protobuf",
        ),
        // A deadline that has already passed: the handler is not run.
        (
            unary_request(13, "echo.Echo/Say", &[(":timeout", b"0")], echo_body("x")).to_vec(),
            Code::DeadlineExceeded,
            "deadline",
        ),
        (
            unary_request(15, "echo.Echo/Say", &[(":timeout", b"1.5")], echo_body("x")).to_vec(),
            Code::InvalidArgument,
            ":timeout",
        ),
    ];
    for (bytes, want, text) in cases {
        p.send(&bytes).await;
        let RawResponse {
            stream_id: id,
            status: code,
            message: msg,
            ..
        } = p.response().await;
        assert_eq!(code, want as u32, "stream {id}: {msg}");
        assert!(
            msg.contains(text),
            "stream {id}: {msg:?} should mention {text:?}"
        );
    }
    // A valid protobuf call on the same connection.
    p.send(&unary_request(
        17,
        "h.H/Big",
        &[("trpc-codec", b"proto"), (":timeout", b"005000000")],
        ask_body(10),
    ))
    .await;
    let RawResponse {
        stream_id: id,
        status: code,
        message: msg,
        ..
    } = p.response().await;
    assert_eq!((id, code), (17, OK), "{msg}");
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn huge_malformed_or_non_utf8_metadata_fails_only_its_call() {
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    let by = Bystander::start(h.addr).await;
    let mut p = Peer::handshake(h.addr).await;
    let body = echo_body("m");
    let path: (&str, &[u8]) = (":path", b"echo.Echo/Say");
    let big = vec![b'v'; 17 << 10];
    let mut bad_varint = metadata_block(&[path]).to_vec();
    bad_varint.extend_from_slice(&[3, b'a', b'b', b'c', 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    let mut overrun = metadata_block(&[path]).to_vec();
    overrun.extend_from_slice(&[3, b'a', b'b', b'c', 100, b'x']);
    let blocks: Vec<(Vec<u8>, Code, &str)> = vec![
        (
            metadata_block(&[path, ("x-big", &big)]).to_vec(),
            Code::ResourceExhausted,
            "metadata",
        ),
        (
            metadata_block(&[path, ("x-text", &[0xff, 0xfe, 0x80])]).to_vec(),
            Code::InvalidArgument,
            "malformed metadata",
        ),
        (
            metadata_block(&[(":path", &[0xc3, 0x28, b'/', b'x'])]).to_vec(),
            Code::InvalidArgument,
            "UTF-8",
        ),
        (
            metadata_block(&[path, ("X-Upper", b"v")]).to_vec(),
            Code::InvalidArgument,
            "malformed metadata",
        ),
        (bad_varint, Code::InvalidArgument, "malformed metadata"),
        (overrun, Code::InvalidArgument, "malformed metadata"),
        (
            metadata_block(&[path, (":timeout", b"soon")]).to_vec(),
            Code::InvalidArgument,
            ":timeout",
        ),
        (
            metadata_block(&[path, ("", b"empty key")]).to_vec(),
            Code::InvalidArgument,
            "malformed metadata",
        ),
        (
            metadata_block(&[("x-no-path", b"1")]).to_vec(),
            Code::InvalidArgument,
            ":path",
        ),
    ];
    let mut id = 1;
    for (block, want, text) in blocks {
        p.send(&raw_frame(kind::HEADERS, 0x03, id, &block, &body))
            .await;
        let RawResponse {
            stream_id: sid,
            status: code,
            message: msg,
            ..
        } = p.response().await;
        assert_eq!((sid, code), (id, want as u32), "{msg}");
        assert!(
            msg.contains(text),
            "stream {id}: {msg:?} should mention {text:?}"
        );
        id += 2;
    }
    // Binary (-bin) values may be anything; unknown pseudo-headers are ignored.
    let ok = metadata_block(&[path, ("x-raw-bin", &[0xff, 0, 0x80]), (":future", b"?")]);
    p.send(&raw_frame(kind::HEADERS, 0x03, id, &ok, &body))
        .await;
    let RawResponse {
        stream_id: sid,
        status: code,
        message: msg,
        ..
    } = p.response().await;
    assert_eq!((sid, code), (id, OK), "{msg}");
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn duplicate_or_decreasing_stream_ids_are_protocol_errors() {
    let (probe, mut events) = Probe::new();
    let h = start_default(probe).await;
    let by = Bystander::start(h.addr).await;

    // Stream 1 is in flight; a second HEADERS on stream 1 is a connection
    // error, and the call in flight is dropped with the connection.
    let mut p = Peer::handshake(h.addr).await;
    p.send(&unary_request(1, "h.H/Wait", &[], echo_body("a")))
        .await;
    events.expect(Event::Started, SOON).await;
    p.send(&unary_request(1, "echo.Echo/Say", &[], echo_body("b")))
        .await;
    let g = p.goaway_then_close().await;
    assert_goaway(&g, GoawayCode::ProtocolError, "stream id 1");
    assert_eq!(g.last_stream_id, 1);
    events.expect(Event::Dropped, SOON).await;

    // Going back (5 then 3), an even id, stream 0.
    for ids in [&[5u32, 3][..], &[2], &[0]] {
        let mut p = Peer::handshake(h.addr).await;
        for id in ids {
            p.send(&unary_request(*id, "echo.Echo/Say", &[], echo_body("c")))
                .await;
        }
        assert_goaway(
            &p.goaway_then_close().await,
            GoawayCode::ProtocolError,
            "stream id",
        );
    }
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn frames_for_unknown_or_finished_streams_are_ignored() {
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    let by = Bystander::start(h.addr).await;
    let mut p = Peer::handshake(h.addr).await;
    echo_works(&mut p, 1).await;
    // Stream 1 is finished; streams 99 and 1001 were never opened.
    for stream in [1u32, 99, 1001] {
        p.send(&raw_frame(kind::DATA, 0x01, stream, &[], b"late data"))
            .await;
        p.send(&raw_frame(kind::TRAILERS, 0x01, stream, &[], &[]))
            .await;
        p.send(&raw_frame(kind::CANCEL, 0, stream, &[], &[0, 0, 0, 1]))
            .await;
        p.send(&raw_frame(
            kind::WINDOW_UPDATE,
            0,
            stream,
            &[],
            &[0, 0, 1, 0],
        ))
        .await;
    }
    // None of that is answered: up to the PONG of a PING sent after it, the
    // server sends nothing at all.
    p.send(&raw_frame(kind::PING, 0, 0, &[], b"barrier!")).await;
    match p.next().await {
        Seen::Frame(f) if f.frame_type() == Some(FrameType::Pong) => {
            assert_eq!(&f.payload[..], b"barrier!");
        }
        other => panic!("the server answered frames of unknown streams: {other:?}"),
    }
    // And the connection serves the next call (stream 3: ids of
    // never-opened streams do not count as opened).
    echo_works(&mut p, 3).await;
    by.finish().await;
    h.server.shutdown().await;
}
