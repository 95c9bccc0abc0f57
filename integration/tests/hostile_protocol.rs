//! The rules of docs/PROTOCOL.md where a peer could exploit silence or
//! slack: memory held for streamed unary requests, oversized trailers,
//! repeated pseudo-headers, resets a client provokes, stream ids with the
//! high bit set, a first frame of unknown type, HEADERS payloads without
//! the MESSAGE flag, non-minimal varints, windows above 2^31-1. Each gets
//! its documented reaction, the server's memory stays bounded, and a normal
//! client is served all along.

use std::time::Duration;

use trpc::frame::{FrameType, GoawayCode, Settings};
use trpc::stats::TransportStats;
use trpc::Code;
use trpc_integration::frames::{data, kind, metadata_block, open_stream, raw_frame, unary_request};
use trpc_integration::hostile::{assert_goaway, hostile_server, start, start_default, Bystander};
use trpc_integration::messages::echo_body;
use trpc_integration::peer::{Peer, RawResponse, Seen};
use trpc_integration::probe::{Event, Probe};
use trpc_integration::proc::{vm_rss_kib, MEMORY};

const MIB: usize = 1 << 20;

/// A JSON echo request padded to `len` bytes (JSON ignores the spaces).
fn padded_echo(len: usize) -> Vec<u8> {
    let mut body = echo_body("big");
    body.resize(len, b' ');
    body
}

/// The connection-level credit (WINDOW_UPDATE on stream 0) in `frames`.
fn connection_credit(frames: &[trpc::frame::Frame]) -> u64 {
    frames
        .iter()
        .filter(|f| f.frame_type() == Some(FrameType::WindowUpdate) && f.stream_id() == 0)
        .map(|f| {
            u64::from(u32::from_be_bytes([
                f.payload[0],
                f.payload[1],
                f.payload[2],
                f.payload[3],
            ]))
        })
        .sum()
}

#[tokio::test]
async fn streamed_unary_requests_hold_their_credit_until_they_end() {
    let _serial = MEMORY.lock().await;
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    let by = Bystander::start(h.addr).await;
    let rss_before = vm_rss_kib();
    let mut p = Peer::handshake(h.addr).await;
    // Unary calls whose 4 MiB message comes in a DATA frame without
    // END_STREAM, sent while the connection window (16 MiB, as the server
    // announced) allows: the server holds each message for its handler
    // until the stream ends, and gives no credit back meanwhile.
    let msg = padded_echo(4 * MIB);
    let mut window = 16 * MIB as i64;
    let mut opened = Vec::new();
    for i in 0..48u32 {
        if window <= 0 {
            break;
        }
        let id = 2 * i + 1;
        p.send(&open_stream(id, "echo.Echo/Say")).await;
        p.send(&data(id, 0, &msg)).await;
        window -= msg.len() as i64;
        opened.push(id);
        window += connection_credit(&p.barrier(i as u8).await) as i64;
    }
    assert!(
        opened.len() <= 5,
        "{} streams of 4 MiB were let in on a 16 MiB window",
        opened.len()
    );
    let grown_mib = vm_rss_kib().saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 64, "the server grew by {grown_mib} MiB");
    // Ending the streams completes the calls; the credit comes back.
    for &id in &opened {
        p.send(&raw_frame(kind::TRAILERS, 0x01, id, &[], &[])).await;
    }
    let mut credit = 0;
    let mut answered = 0;
    while answered < opened.len() {
        match p.next().await {
            Seen::Frame(f)
                if f.frame_type() == Some(FrameType::WindowUpdate) && f.stream_id() == 0 =>
            {
                credit += connection_credit(&[f]);
            }
            Seen::Frame(f) if f.frame_type() == Some(FrameType::Headers) => {
                assert!(opened.contains(&f.stream_id()));
                answered += 1;
            }
            Seen::Frame(_) => {}
            Seen::Closed => panic!("closed"),
        }
    }
    credit += connection_credit(&p.barrier(99).await);
    assert!(
        credit >= 4 * MIB as u64,
        "only {credit} bytes of credit came back"
    );
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_ignores_held_credit_is_disconnected_with_bounded_memory() {
    let _serial = MEMORY.lock().await;
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    let by = Bystander::start(h.addr).await;
    let rss_before = vm_rss_kib();
    let mut p = Peer::handshake(h.addr).await;
    // 48 streams × 4 MiB regardless of flow control.
    let msg = padded_echo(4 * MIB);
    for i in 0..48u32 {
        let id = 2 * i + 1;
        p.send(&open_stream(id, "echo.Echo/Say")).await;
        p.send(&data(id, 0, &msg)).await;
    }
    let g = p.goaway_then_close().await;
    assert_goaway(&g, GoawayCode::FlowControlError, "connection window");
    let grown_mib = vm_rss_kib().saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 64, "the server grew by {grown_mib} MiB");
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn buffered_request_data_counts_in_the_request_byte_budget() {
    let (probe, _events) = Probe::new();
    let stats = TransportStats::new();
    let server = hostile_server(&stats).max_buffered_request_bytes(2 * MIB);
    let h = start(server, stats, probe).await;
    let mut p = Peer::handshake(h.addr).await;
    // 3 MiB of request data held by stream 1 (its stream never ends)...
    p.send(&open_stream(1, "echo.Echo/Say")).await;
    p.send(&data(1, 0, &padded_echo(3 * MIB))).await;
    p.barrier(1).await;
    // ...so a new call over the budget is refused.
    p.send(&unary_request(3, "echo.Echo/Say", &[], echo_body("x")))
        .await;
    let RawResponse {
        stream_id: id,
        status: code,
        message: msg,
        refused,
        ..
    } = p.response().await;
    assert_eq!((id, code), (3, Code::ResourceExhausted as u32), "{msg}");
    assert!(refused, "{msg}");
    assert!(msg.contains("buffered"), "{msg}");
    // Once stream 1 ends, its bytes are released and calls are admitted.
    p.send(&raw_frame(kind::TRAILERS, 0x01, 1, &[], &[])).await;
    let RawResponse {
        stream_id: id,
        status: code,
        ..
    } = p.response().await;
    assert_eq!((id, code), (1, 0));
    p.send(&unary_request(5, "echo.Echo/Say", &[], echo_body("y")))
        .await;
    let RawResponse {
        stream_id: id,
        status: code,
        message: msg,
        ..
    } = p.response().await;
    assert_eq!((id, code), (5, 0), "{msg}");
    h.server.shutdown().await;
}

#[tokio::test]
async fn oversized_trailers_fail_their_stream_and_free_its_slot() {
    let (probe, _events) = Probe::new();
    let stats = TransportStats::new();
    let server = hostile_server(&stats).max_concurrent_streams(1);
    let h = start(server, stats, probe).await;
    let by = Bystander::start(h.addr).await;
    let mut p = Peer::handshake(h.addr).await;
    p.send(&open_stream(1, "echo.Echo/Say")).await;
    // TRAILERS with a metadata block of 4 MiB + 1 (over 16 KiB).
    let big = vec![b'x'; 4 * MIB + 1];
    p.send(&raw_frame(kind::TRAILERS, 0x01, 1, &big, &[])).await;
    let RawResponse {
        stream_id: id,
        status: code,
        message: msg,
        ..
    } = p.response().await;
    assert_eq!((id, code), (1, Code::ResourceExhausted as u32), "{msg}");
    assert!(msg.contains("metadata"), "{msg}");
    // The stream is gone: a late DATA with END_STREAM is not answered, and
    // the one stream slot is free for the next call.
    p.send(&data(1, 0x01, &echo_body("late"))).await;
    p.send(&unary_request(3, "echo.Echo/Say", &[], echo_body("next")))
        .await;
    let RawResponse {
        stream_id: id,
        status: code,
        message: msg,
        ..
    } = p.response().await;
    assert_eq!((id, code), (3, 0), "{msg}");
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn repeated_pseudo_headers_are_malformed() {
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    let mut p = Peer::handshake(h.addr).await;
    for (id, extra) in [
        (1u32, (":path", &b"h.H/Wait"[..])),
        (3, (":timeout", &b"1000000"[..])),
    ] {
        let mut entries: Vec<(&str, &[u8])> = vec![(":path", b"echo.Echo/Say")];
        if extra.0 == ":timeout" {
            entries.push((":timeout", b"5000000"));
        }
        entries.push(extra);
        let md = metadata_block(&entries);
        p.send(&raw_frame(kind::HEADERS, 0x03, id, &md, &echo_body("x")))
            .await;
        let RawResponse {
            stream_id: sid,
            status: code,
            message: msg,
            ..
        } = p.response().await;
        assert_eq!((sid, code), (id, Code::InvalidArgument as u32), "{msg}");
        assert!(msg.contains(&format!("repeated {}", extra.0)), "{msg}");
    }
    h.server.shutdown().await;
}

#[tokio::test]
async fn provoked_resets_count_in_the_rapid_reset_defence() {
    let (probe, _events) = Probe::new();
    let stats = TransportStats::new();
    let server = hostile_server(&stats).max_cancel_rate(Some((20, Duration::from_secs(60))));
    let h = start(server, stats, probe).await;
    let by = Bystander::start(h.addr).await;
    let mut p = Peer::handshake(h.addr).await;
    // Each call is answered RESOURCE_EXHAUSTED because of its WINDOW_UPDATE
    // of 0: no CANCEL is sent, but each counts like one.
    let mut answered = 0;
    let g = 'outer: {
        for i in 0..100u32 {
            let id = 2 * i + 1;
            p.send(&unary_request(id, "h.H/Wait", &[], echo_body("w")))
                .await;
            p.send(&raw_frame(kind::WINDOW_UPDATE, 0, id, &[], &[0, 0, 0, 0]))
                .await;
            loop {
                match p.next().await {
                    Seen::Frame(f) if f.frame_type() == Some(FrameType::Goaway) => {
                        break 'outer trpc::frame::Goaway::parse(&f.payload).expect("goaway");
                    }
                    Seen::Frame(f) if f.frame_type() == Some(FrameType::Headers) => {
                        answered += 1;
                        break;
                    }
                    Seen::Frame(_) => {}
                    Seen::Closed => panic!("closed without GOAWAY"),
                }
            }
        }
        panic!("100 provoked resets and no ENHANCE_YOUR_CALM");
    };
    assert_goaway(&g, GoawayCode::EnhanceYourCalm, "cancelled");
    assert!(
        (19..=21).contains(&answered),
        "{answered} resets before GOAWAY"
    );
    by.finish().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn stream_ids_with_the_high_bit_set_are_protocol_errors() {
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    let mut p = Peer::handshake(h.addr).await;
    p.send(&unary_request(
        0x8000_0001,
        "echo.Echo/Say",
        &[],
        echo_body("x"),
    ))
    .await;
    assert_goaway(
        &p.goaway_then_close().await,
        GoawayCode::ProtocolError,
        "2^31",
    );
    h.server.shutdown().await;
}

#[tokio::test]
async fn an_unknown_frame_type_as_the_first_frame_is_a_protocol_error() {
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    let mut p = Peer::connect(h.addr).await;
    p.send(&raw_frame(0x42, 0, 0, &[], b"??")).await;
    let g = p.goaway_then_close().await;
    assert_goaway(
        &g,
        GoawayCode::ProtocolError,
        "first frame must be SETTINGS",
    );
    // After SETTINGS, the same frame is skipped.
    let mut p = Peer::handshake(h.addr).await;
    p.send(&raw_frame(0x42, 0, 0, &[], b"??")).await;
    p.send(&unary_request(1, "echo.Echo/Say", &[], echo_body("x")))
        .await;
    assert_eq!(p.response().await.status, 0);
    h.server.shutdown().await;
}

#[tokio::test]
async fn a_headers_payload_without_the_message_flag_is_malformed() {
    let (probe, mut events) = Probe::new();
    let h = start_default(probe).await;
    let mut p = Peer::handshake(h.addr).await;
    let md = metadata_block(&[(":path", b"h.H/Wait")]);
    // END_STREAM only: the payload is not a message, so it is malformed.
    p.send(&raw_frame(kind::HEADERS, 0x01, 1, &md, &echo_body("x")))
        .await;
    let RawResponse {
        stream_id: id,
        status: code,
        message: msg,
        ..
    } = p.response().await;
    assert_eq!((id, code), (1, Code::InvalidArgument as u32), "{msg}");
    assert!(msg.contains("MESSAGE"), "{msg}");
    // The handler never ran.
    p.send(&unary_request(3, "echo.Echo/Say", &[], echo_body("x")))
        .await;
    assert_eq!(p.response().await.status, 0);
    assert_eq!(events.try_next(), None::<Event>);
    h.server.shutdown().await;
}

#[tokio::test]
async fn non_minimal_varints_in_metadata_are_malformed() {
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    let mut p = Peer::handshake(h.addr).await;
    // `:path` (5 bytes) then a value length 13 encoded as 0x8d 0x00.
    let mut md = vec![5u8];
    md.extend_from_slice(b":path");
    md.extend_from_slice(&[0x8d, 0x00]);
    md.extend_from_slice(b"echo.Echo/Say");
    p.send(&raw_frame(kind::HEADERS, 0x03, 1, &md, &echo_body("x")))
        .await;
    let RawResponse {
        stream_id: id,
        status: code,
        message: msg,
        ..
    } = p.response().await;
    assert_eq!((id, code), (1, Code::InvalidArgument as u32), "{msg}");
    assert!(msg.contains("malformed metadata"), "{msg}");
    h.server.shutdown().await;
}

#[tokio::test]
async fn windows_above_the_maximum_in_settings_are_flow_control_errors() {
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    for (stream_window, conn_window) in [(Some(1u32 << 31), None), (None, Some(u32::MAX))] {
        let mut p = Peer::connect(h.addr).await;
        let mut b = bytes::BytesMut::new();
        Settings {
            initial_stream_window: stream_window,
            initial_connection_window: conn_window,
            ..Settings::default()
        }
        .encode(&mut b);
        p.send(&b).await;
        let g = p.goaway_then_close().await;
        assert_goaway(&g, GoawayCode::FlowControlError, "2^31-1");
    }
    h.server.shutdown().await;
}

#[tokio::test]
async fn a_later_settings_frame_keeps_the_values_it_does_not_carry() {
    let (probe, _events) = Probe::new();
    let h = start_default(probe).await;
    let mut p = Peer::connect(h.addr).await;
    let mut b = bytes::BytesMut::new();
    Settings {
        max_message_size: Some(100),
        ..Settings::default()
    }
    .encode(&mut b);
    Settings {
        max_metadata_size: Some(8192),
        ..Settings::default()
    }
    .encode(&mut b);
    p.send(&b).await;
    // The server still honours the first frame's MAX_MESSAGE_SIZE of 100.
    p.send(&unary_request(
        1,
        "echo.Echo/Say",
        &[],
        echo_body(&"y".repeat(200)),
    ))
    .await;
    let RawResponse {
        stream_id: id,
        status: code,
        message: msg,
        ..
    } = p.response().await;
    assert_eq!((id, code), (1, Code::ResourceExhausted as u32), "{msg}");
    assert!(msg.contains("limit of 100"), "{msg}");
    h.server.shutdown().await;
}
