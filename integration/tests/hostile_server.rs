//! A real `trpc::Channel` against a hostile *server*: a scripted socket
//! ([`FakeServer`]) that answers with malformed frames, breaks the rules of
//! streams and flow control, goes away, cancels, stalls or pings. Each case
//! gets the client reaction docs/PROTOCOL.md §5–§8 documents: the Status
//! code the call ends with, the CANCEL or GOAWAY the client sends, and that
//! the other calls on the channel carry on or the channel reconnects.
//!
//! The client's side of the SETTINGS rule (§3, one rule for both roles) is
//! here too; the server's side is in `hostile_protocol.rs`.

use std::time::Duration;

use futures_util::stream;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use trpc::frame::{FrameType, Goaway, GoawayCode, Settings};
use trpc::{Channel, Client, Code, Request, Status, Streaming};
use trpc_integration::fake_server::{server_settings, FakeServer};
use trpc_integration::frames::{
    cancel, data, flag, goaway, kind, metadata_block, ping, raw_frame, raw_frame_lens, reply,
    response_headers, settings, status_trailers, trailers, window_update,
};
use trpc_integration::hostile::assert_goaway;
use trpc_integration::messages::{echo_body, EchoMsg};
use trpc_integration::peer::{Peer, Seen};
use trpc_integration::{within, SOON};

const MIB: usize = 1 << 20;

/// Metadata entries for [`metadata_block`].
type Entries<'a> = Vec<(&'a str, &'a [u8])>;

/// A unary echo call of `text`, running in the background.
fn echo(channel: &Channel, text: &str) -> JoinHandle<Result<EchoMsg, Status>> {
    let mut client = Client::new(channel.clone());
    let text = text.to_owned();
    tokio::spawn(async move {
        client
            .unary_message::<_, EchoMsg>("echo.Echo/Say", EchoMsg::new(text))
            .await
    })
}

/// A server-streaming call, running in the background until the response
/// starts.
fn server_stream(channel: &Channel) -> JoinHandle<Result<Streaming<EchoMsg>, Status>> {
    let mut client = Client::new(channel.clone());
    tokio::spawn(async move {
        client
            .server_streaming::<EchoMsg, EchoMsg>("echo.Echo/Many", Request::new(EchoMsg::new("")))
            .await
            .map(|r| r.into_inner())
    })
}

/// A client-streaming call whose request stream never ends, running in the
/// background.
fn client_stream(channel: &Channel) -> JoinHandle<Result<EchoMsg, Status>> {
    let mut client = Client::new(channel.clone());
    tokio::spawn(async move {
        client
            .client_streaming::<EchoMsg, EchoMsg, _>(
                "echo.Echo/Sum",
                Request::new(stream::pending::<EchoMsg>()),
            )
            .await
            .map(|r| r.into_inner())
    })
}

/// The outcome of a background call.
async fn outcome<T>(call: JoinHandle<Result<T, Status>>) -> Result<T, Status> {
    within(SOON, "the call ends", call)
        .await
        .expect("the call task panicked")
}

/// The error a background call ends with; checks its code and that its
/// message mentions `text`.
async fn fails<T: std::fmt::Debug>(
    call: JoinHandle<Result<T, Status>>,
    code: Code,
    text: &str,
) -> Status {
    let err = outcome(call).await.expect_err("the call must fail");
    assert_eq!(err.code(), code, "{err:?}");
    assert!(
        err.message().contains(text),
        "{:?} should mention {text:?}",
        err.message()
    );
    err
}

/// Answers the next call on `conn` with its own request message; checks
/// that `call` (the echo of `text`) gets it.
async fn answer_echo(conn: &mut Peer, call: JoinHandle<Result<EchoMsg, Status>>, text: &str) {
    let req = conn.request().await;
    conn.send(&reply(req.stream_id, Code::Ok, &req.payload))
        .await;
    let got = outcome(call).await.expect("the call succeeds");
    assert_eq!(got.message, text);
}

/// A call on `channel` works (on whatever connection the channel uses now,
/// whose server side is `conn`).
async fn channel_works(channel: &Channel, conn: &mut Peer) {
    answer_echo(conn, echo(channel, "still works"), "still works").await;
}

/// The next CANCEL the client sends; returns its stream and code.
async fn next_cancel(conn: &mut Peer) -> (u32, u32) {
    let f = conn.frame_of(FrameType::Cancel).await;
    let code = u32::from_be_bytes(f.payload[..4].try_into().expect("4-byte CANCEL payload"));
    (f.stream_id(), code)
}

/// Reads what the client sends until it closes the connection; returns the
/// GOAWAY it sent before.
async fn client_goaway_then_close(conn: &mut Peer) -> Goaway {
    conn.goaway_then_close().await
}

/// A barrier on `conn`; asserts the client sent nothing but connection
/// frames meanwhile (no CANCEL, HEADERS or GOAWAY).
async fn quiet_barrier(conn: &mut Peer, tag: u8) {
    let frames = conn.barrier(tag).await;
    let noisy: Vec<_> = frames
        .iter()
        .filter(|f| {
            !matches!(
                f.frame_type(),
                Some(FrameType::WindowUpdate | FrameType::Ping | FrameType::Pong)
            )
        })
        .collect();
    assert!(
        noisy.is_empty(),
        "unexpected frames from the client: {noisy:?}"
    );
}

// ---- the handshake ------------------------------------------------------------

/// Connects the fake's endpoint while the fake answers the client's
/// SETTINGS with `answer`; returns the connect result.
async fn connect_answered_with(fake: &FakeServer, answer: &[u8]) -> Result<Channel, Status> {
    let (result, _conn) = tokio::join!(within(SOON, "connect", fake.endpoint().connect()), async {
        let mut conn = fake.accept().await;
        conn.read_settings().await;
        conn.send(answer).await;
        conn
    });
    result
}

#[tokio::test]
async fn a_bad_magic_or_version_in_the_handshake_fails_the_connect_unavailable() {
    let fake = FakeServer::bind().await;
    let http = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
    let err = connect_answered_with(&fake, http)
        .await
        .expect_err("an HTTP server is not a trpc server");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("not a trpc server"), "{err:?}");
    assert!(err.message().contains("magic"), "{err:?}");

    let mut version_2 = settings(server_settings()).to_vec();
    version_2[2] = 2;
    let err = connect_answered_with(&fake, &version_2)
        .await
        .expect_err("version 2 is not spoken");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("version 2"), "{err:?}");
}

#[tokio::test]
async fn a_first_frame_other_than_settings_fails_the_connect_unavailable() {
    let fake = FakeServer::bind().await;
    let err = connect_answered_with(&fake, &reply(1, Code::Ok, b"{}"))
        .await
        .expect_err("HEADERS first");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("not SETTINGS"), "{err:?}");

    // GOAWAY instead of SETTINGS: refused, with the server's explanation.
    let refusal = goaway(0, GoawayCode::EnhanceYourCalm, "connection limit reached");
    let err = connect_answered_with(&fake, &refusal)
        .await
        .expect_err("GOAWAY first");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("connection limit reached"),
        "{err:?}"
    );
}

// ---- connection errors ------------------------------------------------------------

#[tokio::test]
async fn connection_errors_from_the_server_get_a_goaway_and_the_channel_reconnects() {
    let mut version_2 = ping(*b"abcdefgh").to_vec();
    version_2[2] = 2;
    let too_big = MIB as u32;
    let cases: Vec<(&str, Vec<u8>, GoawayCode, &str)> = vec![
        (
            "bad version mid-connection",
            version_2,
            GoawayCode::ProtocolError,
            "version 2",
        ),
        (
            "bad magic mid-connection",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            GoawayCode::ProtocolError,
            "bad magic",
        ),
        (
            "oversized control frame",
            raw_frame_lens(kind::PING, 0, 0, 0, too_big, &[0; 8]).to_vec(),
            GoawayCode::ProtocolError,
            "Ping",
        ),
        (
            "control frame with metadata",
            raw_frame(kind::PING, 0, 0, b"md", &[0; 8]).to_vec(),
            GoawayCode::ProtocolError,
            "Ping",
        ),
        (
            "PING of the wrong size",
            raw_frame(kind::PING, 0, 0, &[], &[0; 7]).to_vec(),
            GoawayCode::FrameSizeError,
            "7-byte",
        ),
        (
            "connection WINDOW_UPDATE of 0",
            window_update(0, 0).to_vec(),
            GoawayCode::FlowControlError,
            "increment 0",
        ),
        (
            "overflowing connection WINDOW_UPDATE",
            window_update(0, 0x7fff_ffff).to_vec(),
            GoawayCode::FlowControlError,
            "WINDOW_UPDATE",
        ),
    ];
    let fake = FakeServer::bind().await;
    let (channel, first) = fake.connect().await;
    let mut conn = Some(first);
    for (case, bytes, code, text) in cases {
        let call = echo(&channel, case);
        // The first case uses the first connection; each later one the
        // connection the channel reopened for the call.
        let mut c = match conn.take() {
            Some(c) => c,
            None => fake.accept_handshake().await,
        };
        c.request().await;
        c.send(&bytes).await;
        let g = client_goaway_then_close(&mut c).await;
        assert_goaway(&g, code, text);
        let err = fails(call, Code::Internal, "protocol error").await;
        assert!(err.message().contains(text), "{case}: {err:?}");
    }
    // And once more: the channel reconnects and serves.
    let call = echo(&channel, "after all that");
    let mut c = fake.accept_handshake().await;
    answer_echo(&mut c, call, "after all that").await;
}

#[tokio::test]
async fn the_server_closing_mid_call_fails_it_unavailable_and_the_channel_reconnects() {
    let fake = FakeServer::bind().await;
    let (channel, mut conn) = fake.connect().await;
    let call = echo(&channel, "lost");
    conn.request().await;
    drop(conn);
    fails(call, Code::Unavailable, "closed").await;
    let call = echo(&channel, "again");
    let mut conn = fake.accept_handshake().await;
    answer_echo(&mut conn, call, "again").await;
}

#[tokio::test]
async fn a_server_that_stops_reading_and_answering_is_dropped_by_keepalive() {
    let fake = FakeServer::bind().await;
    let endpoint = fake
        .endpoint()
        .keepalive(Duration::from_millis(200), Duration::from_millis(300));
    let (channel, mut conn) = fake.connect_with(endpoint, server_settings()).await;
    let call = echo(&channel, "into the void");
    conn.request().await;
    // The fake reads on (the client's PING arrives) but answers nothing.
    let pinged = conn.frame_of(FrameType::Ping).await;
    assert_eq!(pinged.payload.len(), 8);
    let err = fails(call, Code::Unavailable, "keepalive").await;
    assert!(!err.is_refused(), "the call was sent: {err:?}");
    // Closed without a GOAWAY (the server is presumed unable to read it).
    let rest = conn.until_closed().await;
    assert!(
        rest.iter()
            .all(|f| f.frame_type() != Some(FrameType::Goaway)),
        "{rest:?}"
    );
}

// ---- stream errors ------------------------------------------------------------------

#[tokio::test]
async fn frames_for_unknown_streams_are_ignored_and_the_call_carries_on() {
    let fake = FakeServer::bind().await;
    let (channel, mut conn) = fake.connect().await;
    let call = echo(&channel, "patient");
    let id = conn.request().await.stream_id;
    assert_eq!(id, 1);
    conn.send(&reply(99, Code::Ok, b"{}")).await;
    conn.send(&response_headers(97, &[])).await;
    conn.send(&data(95, 0, b"{}")).await;
    conn.send(&data(93, flag::END, &[7; 1000])).await;
    conn.send(&status_trailers(91, Code::Ok)).await;
    conn.send(&window_update(89, 100)).await;
    conn.send(&cancel(87, Code::Internal)).await;
    conn.send(&data(0, 0, b"stream zero")).await;
    quiet_barrier(&mut conn, 1).await;
    conn.send(&reply(id, Code::Ok, &echo_body("patient"))).await;
    assert_eq!(outcome(call).await.expect("answered").message, "patient");
    channel_works(&channel, &mut conn).await;
}

#[tokio::test]
async fn oversized_response_frames_fail_only_their_call_with_resource_exhausted() {
    let fake = FakeServer::bind().await;
    let (channel, mut conn) = fake.connect().await;
    // A message over the client's 4 MiB limit, sent whole.
    let call = echo(&channel, "big");
    let id = conn.request().await.stream_id;
    conn.send(&reply(id, Code::Ok, &vec![b' '; 4 * MIB + 1]))
        .await;
    fails(call, Code::ResourceExhausted, "exceeds the limit").await;
    assert_eq!(
        next_cancel(&mut conn).await,
        (id, Code::ResourceExhausted as u32)
    );
    // A metadata block over the client's 16 KiB limit.
    let call = echo(&channel, "wide");
    let id = conn.request().await.stream_id;
    let wide = vec![b'v'; 20 << 10];
    let md = metadata_block(&[(":status", b"0"), ("x-wide", &wide)]);
    conn.send(&raw_frame(kind::HEADERS, flag::END, id, &md, &[]))
        .await;
    fails(call, Code::ResourceExhausted, "metadata").await;
    assert_eq!(
        next_cancel(&mut conn).await,
        (id, Code::ResourceExhausted as u32)
    );
    channel_works(&channel, &mut conn).await;
    assert_eq!(channel.connections(), 1);
}

#[tokio::test]
async fn a_second_headers_frame_fails_the_stream_with_internal_and_a_cancel() {
    let fake = FakeServer::bind().await;
    let (channel, mut conn) = fake.connect().await;
    let call = server_stream(&channel);
    let id = conn.request().await.stream_id;
    conn.send(&response_headers(id, &[])).await;
    let mut s = outcome(call).await.expect("the response starts");
    conn.send(&response_headers(id, &[])).await;
    let err = within(SOON, "the stream fails", s.message())
        .await
        .expect_err("a second HEADERS");
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("second HEADERS"), "{err:?}");
    assert_eq!(next_cancel(&mut conn).await, (id, Code::Internal as u32));
    channel_works(&channel, &mut conn).await;
}

#[tokio::test]
async fn data_before_headers_fails_the_call_with_internal_and_a_cancel() {
    let fake = FakeServer::bind().await;
    let (channel, mut conn) = fake.connect().await;
    let call = echo(&channel, "early");
    let id = conn.request().await.stream_id;
    conn.send(&data(id, 0, &echo_body("early"))).await;
    fails(call, Code::Internal, "DATA before HEADERS").await;
    assert_eq!(next_cancel(&mut conn).await, (id, Code::Internal as u32));
    channel_works(&channel, &mut conn).await;
}

#[tokio::test]
async fn data_with_end_stream_and_no_status_fails_the_stream_with_internal() {
    let fake = FakeServer::bind().await;
    let (channel, mut conn) = fake.connect().await;
    let call = server_stream(&channel);
    let id = conn.request().await.stream_id;
    conn.send(&response_headers(id, &[])).await;
    conn.send(&data(id, flag::END, &echo_body("last"))).await;
    let mut s = outcome(call).await.expect("the response starts");
    let first = within(SOON, "the message", s.message()).await;
    assert_eq!(first.expect("a message").expect("one").message, "last");
    let err = within(SOON, "the end", s.message())
        .await
        .expect_err("no status");
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("without a status"), "{err:?}");
    // The server ended the stream: nothing to cancel.
    quiet_barrier(&mut conn, 1).await;
    channel_works(&channel, &mut conn).await;
}

#[tokio::test]
async fn a_missing_or_malformed_status_fails_the_call() {
    let fake = FakeServer::bind().await;
    let (channel, mut conn) = fake.connect().await;
    // (metadata entries, the call's code, what its message mentions)
    let cases: Vec<(Entries<'_>, Code, &str)> = vec![
        (vec![], Code::Internal, "without a :status"),
        (vec![("x-a", b"b")], Code::Internal, "without a :status"),
        (vec![(":status", b"abc")], Code::Internal, "not a number"),
        (vec![(":status", b"")], Code::Internal, "not a number"),
        (vec![(":status", b"-1")], Code::Internal, "not a number"),
        (
            vec![(":status", b"99999999999")],
            Code::Internal,
            "not a number",
        ),
        // §4.3: a number above 16 is UNKNOWN.
        (vec![(":status", b"99")], Code::Unknown, ""),
    ];
    for (entries, code, text) in cases {
        let call = echo(&channel, "status?");
        let id = conn.request().await.stream_id;
        let md = metadata_block(&entries);
        conn.send(&raw_frame(kind::HEADERS, flag::END, id, &md, &[]))
            .await;
        fails(call, code, text).await;
    }
    // TRAILERS without a status end a stream the same way.
    let call = server_stream(&channel);
    let id = conn.request().await.stream_id;
    conn.send(&response_headers(id, &[])).await;
    let mut s = outcome(call).await.expect("the response starts");
    conn.send(&trailers(id, &[("x-a", b"b")])).await;
    let err = within(SOON, "the end", s.message())
        .await
        .expect_err("no status");
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains(":status"), "{err:?}");
    channel_works(&channel, &mut conn).await;
}

#[tokio::test]
async fn repeated_pseudo_headers_in_a_response_fail_the_call_with_internal() {
    let fake = FakeServer::bind().await;
    let (channel, mut conn) = fake.connect().await;
    for (k, v) in [
        (":status", &b"0"[..]),
        (":message", b"again"),
        (":refused", b"1"),
    ] {
        let call = echo(&channel, "twice");
        let id = conn.request().await.stream_id;
        let mut entries: Vec<(&str, &[u8])> = vec![(":status", b"0")];
        if k != ":status" {
            entries.push((k, v));
        }
        entries.push((k, v));
        let md = metadata_block(&entries);
        conn.send(&raw_frame(
            kind::HEADERS,
            flag::END | flag::MESSAGE,
            id,
            &md,
            &echo_body("twice"),
        ))
        .await;
        fails(call, Code::Internal, &format!("repeated {k}")).await;
        assert_eq!(next_cancel(&mut conn).await, (id, Code::Internal as u32));
    }
    channel_works(&channel, &mut conn).await;
}

#[tokio::test]
async fn a_headers_payload_without_the_message_flag_fails_the_call_with_internal() {
    let fake = FakeServer::bind().await;
    let (channel, mut conn) = fake.connect().await;
    let call = echo(&channel, "flagless");
    let id = conn.request().await.stream_id;
    let md = metadata_block(&[(":status", b"0")]);
    conn.send(&raw_frame(
        kind::HEADERS,
        flag::END,
        id,
        &md,
        &echo_body("flagless"),
    ))
    .await;
    fails(call, Code::Internal, "MESSAGE flag").await;
    channel_works(&channel, &mut conn).await;
}

#[tokio::test]
async fn malformed_response_metadata_fails_the_call_with_internal() {
    let fake = FakeServer::bind().await;
    let (channel, mut conn) = fake.connect().await;
    let bad_blocks: Vec<Vec<u8>> = vec![
        // A value length running past the block.
        vec![7, b':', b's', b't', b'a', b't', b'u', b's', 5, b'0'],
        // A non-minimal varint (`80 00` for 0).
        vec![3, b'x', b'-', b'a', 0x80, 0x00],
        // An upper-case user key.
        [
            &metadata_block(&[(":status", b"0")])[..],
            &[3, b'X', b'-', b'A', 0],
        ]
        .concat(),
    ];
    for md in bad_blocks {
        let call = echo(&channel, "garbled");
        let id = conn.request().await.stream_id;
        conn.send(&raw_frame(kind::HEADERS, flag::END, id, &md, &[]))
            .await;
        fails(call, Code::Internal, "malformed response metadata").await;
    }
    channel_works(&channel, &mut conn).await;
}

// ---- flow control ------------------------------------------------------------------

#[tokio::test]
async fn stream_window_updates_of_zero_or_overflowing_end_the_stream_with_resource_exhausted() {
    let fake = FakeServer::bind().await;
    let (channel, mut conn) = fake.connect().await;
    for increment in [0, 0x7fff_ffff] {
        let call = client_stream(&channel);
        let id = conn.request().await.stream_id;
        conn.send(&window_update(id, increment)).await;
        fails(call, Code::ResourceExhausted, "WINDOW_UPDATE").await;
        assert_eq!(
            next_cancel(&mut conn).await,
            (id, Code::ResourceExhausted as u32)
        );
    }
    channel_works(&channel, &mut conn).await;
}

/// Connects `endpoint` (small windows) and starts a server-streaming call
/// whose answer sends a 2000-byte message, then another without waiting
/// for credit: the first may overshoot a 1 KiB window, the next may not
/// (nobody read the first, so no credit came back). Returns the channel,
/// the server's side, the stream id and the response stream.
async fn overrun_window(
    fake: &FakeServer,
    endpoint: trpc::Endpoint,
) -> (Channel, Peer, u32, Streaming<EchoMsg>) {
    let (channel, mut conn) = fake.connect_with(endpoint, server_settings()).await;
    let call = server_stream(&channel);
    let id = conn.request().await.stream_id;
    conn.send(&response_headers(id, &[])).await;
    let s = outcome(call).await.expect("the response starts");
    conn.send(&data(id, 0, &echo_body(&"x".repeat(2000)))).await;
    conn.send(&data(id, 0, &echo_body("one too many"))).await;
    (channel, conn, id, s)
}

#[tokio::test]
async fn a_server_exceeding_the_stream_window_fails_that_stream_with_resource_exhausted() {
    let fake = FakeServer::bind().await;
    let (channel, mut conn, id, mut s) =
        overrun_window(&fake, fake.endpoint().stream_window(1024)).await;
    assert_eq!(
        next_cancel(&mut conn).await,
        (id, Code::ResourceExhausted as u32)
    );
    let first = within(SOON, "the first message", s.message()).await;
    assert_eq!(first.expect("delivered").expect("one").message.len(), 2000);
    let err = within(SOON, "the stream fails", s.message())
        .await
        .expect_err("over the window");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("stream window"), "{err:?}");
    channel_works(&channel, &mut conn).await;
}

#[tokio::test]
async fn a_server_exceeding_the_connection_window_is_a_flow_control_error() {
    let fake = FakeServer::bind().await;
    let (channel, mut conn, _, mut s) =
        overrun_window(&fake, fake.endpoint().connection_window(1024)).await;
    let g = client_goaway_then_close(&mut conn).await;
    assert_goaway(&g, GoawayCode::FlowControlError, "connection window");
    // The message that arrived within the window is still delivered.
    let first = within(SOON, "the first message", s.message()).await;
    assert_eq!(first.expect("delivered").expect("one").message.len(), 2000);
    let err = within(SOON, "the stream fails", s.message())
        .await
        .expect_err("the connection failed");
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("connection window"), "{err:?}");
    let call = echo(&channel, "reconnected");
    let mut conn = fake.accept_handshake().await;
    answer_echo(&mut conn, call, "reconnected").await;
}

// ---- GOAWAY, CANCEL, deadlines, PING ------------------------------------------------

#[tokio::test]
async fn goaway_mid_call_lets_earlier_calls_finish_and_resends_refused_ones() {
    let fake = FakeServer::bind().await;
    let (channel, mut old) = fake.connect().await;
    let first = echo(&channel, "first");
    let a = old.request().await.stream_id;
    let second = echo(&channel, "second");
    let b = old.request().await.stream_id;
    assert!(a < b);
    // The server will process stream `a`, not `b`.
    old.send(&goaway(a, GoawayCode::NoError, "restarting"))
        .await;
    // `b` was refused: the channel sends it again on a new connection.
    let mut new = fake.accept_handshake().await;
    let again = new.request().await;
    assert_eq!(again.path, "echo.Echo/Say");
    new.send(&reply(again.stream_id, Code::Ok, &again.payload))
        .await;
    assert_eq!(outcome(second).await.expect("re-sent").message, "second");
    // `a` is still answered on the old connection.
    old.send(&reply(a, Code::Ok, &echo_body("first"))).await;
    assert_eq!(outcome(first).await.expect("answered").message, "first");
    // Drained, the old connection is closed by the client; no new call went
    // there.
    let rest = old.until_closed().await;
    assert!(
        rest.iter()
            .all(|f| f.frame_type() != Some(FrameType::Headers)),
        "{rest:?}"
    );
    channel_works(&channel, &mut new).await;
}

#[tokio::test]
async fn a_goaway_refusing_a_call_that_cannot_be_resent_fails_it_unavailable_refused() {
    let fake = FakeServer::bind().await;
    let (channel, mut conn) = fake.connect().await;
    // A streaming request cannot be replayed: the refusal reaches the caller.
    let call = client_stream(&channel);
    conn.request().await;
    conn.send(&goaway(0, GoawayCode::NoError, "restarting"))
        .await;
    let err = fails(call, Code::Unavailable, "restarting").await;
    assert!(err.is_refused(), "{err:?}");
}

#[tokio::test]
async fn a_cancel_from_the_server_fails_the_call_with_its_code() {
    let fake = FakeServer::bind().await;
    let (channel, mut conn) = fake.connect().await;
    let call = echo(&channel, "cancelled");
    let id = conn.request().await.stream_id;
    conn.send(&cancel(id, Code::ResourceExhausted)).await;
    fails(call, Code::ResourceExhausted, "reset by the server").await;
    // An empty payload means CANCELLED.
    let call = echo(&channel, "cancelled");
    let id = conn.request().await.stream_id;
    conn.send(&raw_frame(kind::CANCEL, 0, id, &[], &[])).await;
    fails(call, Code::Cancelled, "reset by the server").await;
    // A streaming response is cut the same way.
    let call = server_stream(&channel);
    let id = conn.request().await.stream_id;
    conn.send(&response_headers(id, &[])).await;
    let mut s = outcome(call).await.expect("the response starts");
    conn.send(&cancel(id, Code::Aborted)).await;
    let err = within(SOON, "the stream fails", s.message())
        .await
        .expect_err("cancelled");
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    // The server ended those streams: the client cancels nothing.
    quiet_barrier(&mut conn, 1).await;
    channel_works(&channel, &mut conn).await;
}

#[tokio::test]
async fn a_server_that_never_answers_hits_the_deadline_and_gets_a_cancel() {
    let fake = FakeServer::bind().await;
    let (channel, mut conn) = fake.connect().await;
    let mut client = Client::new(channel.clone());
    let call = tokio::spawn(async move {
        let mut req = Request::new(EchoMsg::new("hurry"));
        req.set_timeout(Duration::from_millis(200));
        client
            .unary::<EchoMsg, EchoMsg>("echo.Echo/Say", req)
            .await
            .map(|r| r.into_inner())
    });
    let req = conn.request().await;
    let timeout: u64 = req
        .get(":timeout")
        .expect(":timeout sent")
        .parse()
        .expect("microseconds");
    assert!(timeout <= 200_000, "{timeout}");
    fails(call, Code::DeadlineExceeded, "deadline").await;
    assert_eq!(
        next_cancel(&mut conn).await,
        (req.stream_id, Code::DeadlineExceeded as u32)
    );
    // A late answer is ignored.
    conn.send(&reply(req.stream_id, Code::Ok, &echo_body("late")))
        .await;
    channel_works(&channel, &mut conn).await;
}

#[tokio::test]
async fn pings_from_the_server_are_answered_with_the_same_bytes() {
    let fake = FakeServer::bind().await;
    let (channel, mut conn) = fake.connect().await;
    for data in [*b"12345678", [0; 8], [0xff; 8]] {
        conn.send(&ping(data)).await;
        let pong = conn.frame_of(FrameType::Pong).await;
        assert_eq!(pong.payload[..], data);
    }
    channel_works(&channel, &mut conn).await;
}

// ---- SETTINGS: one rule for both roles (§3), the client's side ------------------------

#[tokio::test]
async fn a_later_settings_frame_keeps_the_values_it_does_not_carry() {
    let fake = FakeServer::bind().await;
    let first = Settings {
        max_concurrent_streams: Some(1),
        ..Settings::default()
    };
    let (channel, mut conn) = fake.connect_with(fake.endpoint(), first).await;
    // A second SETTINGS without MAX_CONCURRENT_STREAMS.
    conn.send(&settings(Settings {
        max_metadata_size: Some(8192),
        ..Settings::default()
    }))
    .await;
    quiet_barrier(&mut conn, 1).await;
    // The first frame's limit of one stream still holds.
    let held = echo(&channel, "held");
    let id = conn.request().await.stream_id;
    let over = echo(&channel, "over");
    let err = fails(over, Code::ResourceExhausted, "server limit 1").await;
    assert!(err.is_refused(), "nothing was sent: {err:?}");
    quiet_barrier(&mut conn, 2).await;
    conn.send(&reply(id, Code::Ok, &echo_body("held"))).await;
    assert_eq!(outcome(held).await.expect("answered").message, "held");
    channel_works(&channel, &mut conn).await;
}

#[tokio::test]
async fn a_settings_window_above_the_maximum_is_a_connection_error() {
    // In a later SETTINGS frame: GOAWAY, and the open calls fail.
    let fake = FakeServer::bind().await;
    let (channel, mut conn) = fake.connect().await;
    let call = echo(&channel, "window");
    conn.request().await;
    conn.send(&settings(Settings {
        initial_stream_window: Some(1 << 31),
        ..Settings::default()
    }))
    .await;
    assert_goaway(
        &client_goaway_then_close(&mut conn).await,
        GoawayCode::FlowControlError,
        "2^31-1",
    );
    fails(call, Code::Internal, "2^31-1").await;

    // In the first SETTINGS frame: the same.
    let fake = FakeServer::bind().await;
    let connecting = tokio::spawn(fake.endpoint().connect());
    let mut conn: Peer<TcpStream> = fake
        .accept_with(Settings {
            initial_connection_window: Some(u32::MAX),
            ..Settings::default()
        })
        .await;
    assert_goaway(
        &client_goaway_then_close(&mut conn).await,
        GoawayCode::FlowControlError,
        "2^31-1",
    );
    connecting.abort();
}

#[tokio::test]
async fn settings_from_the_server_bound_what_the_client_sends() {
    let fake = FakeServer::bind().await;
    let limits = Settings {
        max_message_size: Some(100),
        ..server_settings()
    };
    let (channel, mut conn) = fake.connect_with(fake.endpoint(), limits).await;
    // A request over the server's MAX_MESSAGE_SIZE fails locally.
    let call = echo(&channel, &"y".repeat(200));
    fails(call, Code::ResourceExhausted, "limit of 100").await;
    quiet_barrier(&mut conn, 1).await;
    channel_works(&channel, &mut conn).await;
    // Nothing else arrived (the closed connection shows no stray frames).
    drop(channel);
    match within(SOON, "close", conn.next()).await {
        Seen::Closed => {}
        Seen::Frame(f) => panic!("unexpected {f:?}"),
    }
}
