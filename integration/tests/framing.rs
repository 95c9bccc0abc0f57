//! Framing over real sockets: frames split byte by byte or coalesced into one
//! write are all decoded and answered, and the example of docs/PROTOCOL.md §9 is
//! byte for byte what the server accepts and answers.

use bytes::BytesMut;
use trpc::frame::Flags;
use trpc_integration::frames::{client_settings, hex, unary_request};
use trpc_integration::messages::EchoMsg;
use trpc_integration::peer::{Peer, RawResponse};
use trpc_integration::server::{echo_router, serve};

const CALLS: u32 = 8;

/// SETTINGS followed by `CALLS` unary calls on streams 1, 3, 5...
fn calls_bytes() -> Vec<u8> {
    let mut wire = BytesMut::new();
    wire.extend_from_slice(&client_settings());
    for i in 0..CALLS {
        let id = 2 * i + 1;
        let body =
            serde_json::to_vec(&EchoMsg::new(format!("call {i} on stream {id}"))).expect("json");
        wire.extend_from_slice(&unary_request(id, "echo.Echo/Say", &[], body));
    }
    wire.to_vec()
}

fn check_answers(responses: &[RawResponse]) {
    assert_eq!(responses.len(), CALLS as usize);
    for (i, r) in responses.iter().enumerate() {
        let id = 2 * i as u32 + 1;
        assert_eq!(r.stream_id, id);
        assert_eq!(r.status, 0, "stream {id}: {}", r.message);
        assert!(
            r.flags.contains(Flags::MESSAGE.with(Flags::END_STREAM)),
            "unary fast path answer, got {:?}",
            r.flags
        );
        let reply: EchoMsg = serde_json::from_slice(&r.payload).expect("json reply");
        assert_eq!(reply.message, format!("call {i} on stream {id}"));
    }
}

#[tokio::test]
async fn frames_written_one_byte_at_a_time_are_all_answered() {
    let server = serve(echo_router()).await;
    let mut raw = Peer::connect(server.addr).await;
    raw.send_byte_by_byte(&calls_bytes()).await;
    let settings = raw.read_settings().await;
    assert_eq!(settings.max_message_size, Some(4 << 20));
    let responses = raw.responses(CALLS as usize).await;
    check_answers(&responses);
    server.shutdown().await;
}

#[tokio::test]
async fn frames_coalesced_into_one_write_are_all_answered() {
    let server = serve(echo_router()).await;
    let mut raw = Peer::connect(server.addr).await;
    raw.send(&calls_bytes()).await;
    raw.read_settings().await;
    let responses = raw.responses(CALLS as usize).await;
    check_answers(&responses);
    server.shutdown().await;
}

#[tokio::test]
async fn frames_coalesced_with_a_split_across_writes_are_all_answered() {
    // Two writes that cut a frame header in the middle: the tail of one frame
    // and the head of the next arrive together.
    let server = serve(echo_router()).await;
    let mut raw = Peer::connect(server.addr).await;
    let wire = calls_bytes();
    let cut = client_settings().len() + 7;
    raw.send(&wire[..cut]).await;
    raw.send(&wire[cut..]).await;
    raw.read_settings().await;
    check_answers(&raw.responses(CALLS as usize).await);
    server.shutdown().await;
}

/// The client bytes of docs/PROTOCOL.md §9, transcribed from the document.
fn doc_example_request() -> Vec<u8> {
    let mut b = Vec::new();
    // SETTINGS (2 pairs): max message 4 MiB, max metadata 16 KiB.
    b.extend(hex("74 52 01 00 00 000000 00000000 0000000c"));
    b.extend(hex("0004 00400000  0005 00004000"));
    // HEADERS MESSAGE|END_STREAM, stream 1, metadata 36 bytes, payload 16 bytes.
    b.extend(hex("74 52 01 01 03 000024 00000001 00000010"));
    b.extend(hex("05"));
    b.extend(b":path");
    b.extend(hex("0d"));
    b.extend(b"echo.Echo/Say");
    b.extend(hex("08"));
    b.extend(b":timeout");
    b.extend(hex("06"));
    b.extend(b"200000");
    b.extend(br#"{"message":"hi"}"#);
    b
}

/// The server's SETTINGS frame in docs/PROTOCOL.md §9, transcribed.
fn doc_example_server_settings() -> Vec<u8> {
    // SETTINGS (5 pairs): max streams 1024, windows 1 MiB / 16 MiB, max
    // message 4 MiB, max metadata 16 KiB.
    let mut b = hex("74 52 01 00 00 000000 00000000 0000001e");
    b.extend(hex("0001 00000400  0002 00100000  0003 01000000"));
    b.extend(hex("0004 00400000  0005 00004000"));
    b
}

/// The server's answer in docs/PROTOCOL.md §9, transcribed.
fn doc_example_answer() -> Vec<u8> {
    // HEADERS MESSAGE|END_STREAM, stream 1, metadata 10 bytes, payload 16 bytes.
    let mut b = hex("74 52 01 01 03 00000a 00000001 00000010");
    b.extend(hex("07"));
    b.extend(b":status");
    b.extend(hex("01"));
    b.extend(b"0");
    b.extend(br#"{"message":"hi"}"#);
    b
}

async fn check_doc_exchange(raw: &mut Peer) {
    let settings = raw.next_frame_bytes().await;
    let answer = raw.next_frame_bytes().await;
    assert_eq!(
        answer,
        doc_example_answer(),
        "the server's answer differs from docs/PROTOCOL.md §9"
    );
    assert_eq!(
        settings,
        doc_example_server_settings(),
        "the server's SETTINGS differ from docs/PROTOCOL.md §9"
    );
}

#[tokio::test]
async fn protocol_doc_example_bytes_are_exactly_what_the_server_answers() {
    let request = doc_example_request();
    // The transcription matches the lengths the document gives.
    assert_eq!(request.len(), 16 + 12 + 16 + 36 + 16);
    assert_eq!(doc_example_server_settings().len(), 16 + 30);
    assert_eq!(doc_example_answer().len(), 16 + 10 + 16);

    let server = serve(echo_router()).await;
    let mut raw = Peer::connect(server.addr).await;
    raw.send(&request).await;
    check_doc_exchange(&mut raw).await;

    // Sent one byte at a time: the same exchange on a new connection.
    let mut raw = Peer::connect(server.addr).await;
    raw.send_byte_by_byte(&request).await;
    check_doc_exchange(&mut raw).await;
    server.shutdown().await;
}
