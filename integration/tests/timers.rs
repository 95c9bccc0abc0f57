//! Every timer of a connection, on paused time over an in-memory pipe
//! (`tokio::io::duplex`): the runtime jumps to the next timer whenever all
//! tasks wait, so each test checks *when* a timer fires, to the
//! millisecond, in microseconds of real time and without depending on the
//! machine's load. Keepalive (both roles), the server's idle, handshake,
//! frame and stream idle timeouts, deadlines (both roles), the maximum
//! connection age, and the client's idle close.

use std::time::Duration;

use tokio::io::DuplexStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use trpc::frame::{FrameType, Goaway, GoawayCode};
use trpc::server::Server;
use trpc::{Channel, Client, Code, Endpoint, Request, Response, Status};
use trpc_integration::fake_server::server_settings;
use trpc_integration::frames::{
    data, kind, open_stream, pong, raw_frame, raw_frame_lens, reply, unary_request, window_update,
};
use trpc_integration::messages::{echo_body, EchoMsg};
use trpc_integration::peer::{Peer, Seen};
use trpc_integration::pipe::{channel_peer, pipe_endpoint, serve_channel, serve_peer};
use trpc_integration::probe::{count_router, sleep_router, Event, Probe};
use trpc_integration::server::echo_router;
use trpc_integration::{within, SOON};

/// Longer than any timer under test; the timers a test does not look at
/// are set to this (virtual time costs nothing).
const HOUR: Duration = Duration::from_secs(3600);

/// How late a timer may fire: virtual time has millisecond granularity.
const SLACK: Duration = Duration::from_millis(5);

/// A server with every timer off (or an hour away) except those a test sets.
fn quiet_server() -> Server {
    Server::builder()
        .handshake_timeout(HOUR)
        .frame_timeout(HOUR)
        .write_timeout(HOUR)
        .idle_timeout(None)
        .keepalive(None)
        .stream_idle_timeout(HOUR)
}

/// A pipe endpoint with every client timer off except those a test sets.
fn quiet_endpoint() -> Endpoint {
    pipe_endpoint().no_keepalive().idle_timeout(None)
}

/// The next frame or the close, and how long after `since` it came.
async fn next_after(p: &mut Peer<DuplexStream>, since: Instant) -> (Seen, Duration) {
    let seen = within(4 * HOUR, "next frame or close", p.next_unbounded()).await;
    (seen, since.elapsed())
}

/// Asserts that a timer fired at `want`: not before, and not later than
/// the clock's granularity allows.
#[track_caller]
fn assert_at(got: Duration, want: Duration, what: &str) {
    assert!(
        got >= want && got <= want + SLACK,
        "{what}: at {got:?}, expected {want:?}"
    );
}

/// The next thing seen on `p` must be a frame of type `kind`, at `want`
/// after `since`.
async fn expect_frame_at(
    p: &mut Peer<DuplexStream>,
    since: Instant,
    kind: FrameType,
    want: Duration,
) -> trpc::frame::Frame {
    match next_after(p, since).await {
        (Seen::Frame(f), at) if f.frame_type() == Some(kind) => {
            assert_at(at, want, &format!("{kind:?}"));
            f
        }
        (other, at) => panic!("expected {kind:?} at {want:?}, got {other:?} at {at:?}"),
    }
}

/// The next thing seen on `p` must be a GOAWAY with `code` mentioning
/// `text` at `want` after `since`, then the close (at once).
async fn expect_goaway_then_close_at(
    p: &mut Peer<DuplexStream>,
    since: Instant,
    code: GoawayCode,
    text: &str,
    want: Duration,
) {
    let f = expect_frame_at(p, since, FrameType::Goaway, want).await;
    let g = Goaway::parse(&f.payload).expect("well-formed GOAWAY");
    assert_eq!(g.code, code, "{g:?}");
    assert!(g.message.contains(text), "{g:?} should mention {text:?}");
    expect_close_at(p, since, want).await;
}

/// The next thing seen on `p` must be the close, at `want` after `since`.
async fn expect_close_at(p: &mut Peer<DuplexStream>, since: Instant, want: Duration) {
    match next_after(p, since).await {
        (Seen::Closed, at) => assert_at(at, want, "close"),
        (Seen::Frame(f), at) => panic!("expected the close at {want:?}, got {f:?} at {at:?}"),
    }
}

/// The server's connection task ends (soon after its connection closed).
async fn server_ends(task: JoinHandle<()>) {
    within(SOON, "the server connection ends", task)
        .await
        .expect("the server connection task panicked");
}

/// A unary echo call, running in the background.
fn echo(channel: &Channel, timeout: Option<Duration>) -> JoinHandle<Result<EchoMsg, Status>> {
    let mut client = Client::new(channel.clone());
    tokio::spawn(async move {
        let mut req = Request::new(EchoMsg::new("tick"));
        if let Some(t) = timeout {
            req.set_timeout(t);
        }
        client
            .unary::<EchoMsg, EchoMsg>("echo.Echo/Say", req)
            .await
            .map(Response::into_inner)
    })
}

// ---- keepalive ----------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_client_pings_after_the_keepalive_interval_and_closes_after_the_timeout() {
    let endpoint = quiet_endpoint().keepalive(Duration::from_secs(10), Duration::from_secs(5));
    let (channel, mut server) = channel_peer(endpoint, server_settings()).await;
    let start = Instant::now();
    let call = echo(&channel, None);
    server.request().await;
    // Nothing read for 10 s: a PING.
    let ping = expect_frame_at(&mut server, start, FrameType::Ping, Duration::from_secs(10)).await;
    assert_eq!(ping.payload.len(), 8);
    // No answer within 5 s: closed without a GOAWAY, the call fails.
    expect_close_at(&mut server, start, Duration::from_secs(15)).await;
    let err = within(SOON, "the call ends", call)
        .await
        .expect("call task")
        .expect_err("the connection died");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("keepalive"), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn any_frame_from_the_server_answers_a_keepalive_ping() {
    let endpoint = quiet_endpoint().keepalive(Duration::from_secs(10), Duration::from_secs(5));
    let (channel, mut server) = channel_peer(endpoint, server_settings()).await;
    let start = Instant::now();
    expect_frame_at(&mut server, start, FrameType::Ping, Duration::from_secs(10)).await;
    // Two seconds later, a frame that is not the PONG.
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.send(&window_update(0, 1)).await;
    // The connection lives on: the next PING comes 10 s after that frame,
    // instead of the close at 15 s.
    expect_frame_at(&mut server, start, FrameType::Ping, Duration::from_secs(22)).await;
    // A PONG is an answer too.
    server.send(&pong(*b"trpcping")).await;
    expect_frame_at(&mut server, start, FrameType::Ping, Duration::from_secs(32)).await;
    assert_eq!(channel.connections(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_server_pings_a_silent_client_and_closes_after_the_timeout() {
    let server = quiet_server().keepalive(Some((Duration::from_secs(60), Duration::from_secs(20))));
    let (mut client, task) = serve_peer(server, echo_router());
    let start = Instant::now();
    client.exchange_settings().await;
    let ping = expect_frame_at(&mut client, start, FrameType::Ping, Duration::from_secs(60)).await;
    // Answered a second later: the next PING comes 60 s after the answer.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let data: [u8; 8] = ping.payload[..].try_into().expect("8 bytes");
    client.send(&pong(data)).await;
    expect_frame_at(
        &mut client,
        start,
        FrameType::Ping,
        Duration::from_secs(121),
    )
    .await;
    // Not answered: closed 20 s later, without a GOAWAY.
    expect_close_at(&mut client, start, Duration::from_secs(141)).await;
    server_ends(task).await;
}

// ---- the server's connection timers -----------------------------------------------------

#[tokio::test(start_paused = true)]
async fn an_idle_server_connection_gets_goaway_then_close() {
    let server = quiet_server().idle_timeout(Some(Duration::from_secs(120)));
    let (mut client, task) = serve_peer(server, echo_router());
    let start = Instant::now();
    client.exchange_settings().await;
    // A call at 30 s: the idle time counts from there.
    tokio::time::sleep(Duration::from_secs(30)).await;
    client
        .send(&unary_request(1, "echo.Echo/Say", &[], echo_body("hi")))
        .await;
    assert_eq!(client.response().await.status, 0);
    expect_goaway_then_close_at(
        &mut client,
        start,
        GoawayCode::NoError,
        "idle",
        Duration::from_secs(150),
    )
    .await;
    server_ends(task).await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_identifies_itself_is_cut_at_the_handshake_timeout() {
    // Nothing at all: closed without a word.
    let server = quiet_server().handshake_timeout(Duration::from_secs(5));
    let (mut client, task) = serve_peer(server, echo_router());
    let start = Instant::now();
    expect_close_at(&mut client, start, Duration::from_secs(5)).await;
    server_ends(task).await;

    // The magic and half a SETTINGS frame: a trpc connection whose
    // handshake times out (GOAWAY TIMEOUT).
    let server = quiet_server().handshake_timeout(Duration::from_secs(5));
    let (mut client, task) = serve_peer(server, echo_router());
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    client.send(&[0x74, 0x52, 1, 0, 0, 0]).await;
    // The server's SETTINGS come at once; the GOAWAY when the time is up.
    expect_frame_at(
        &mut client,
        start,
        FrameType::Settings,
        Duration::from_secs(1),
    )
    .await;
    expect_goaway_then_close_at(
        &mut client,
        start,
        GoawayCode::Timeout,
        "handshake timeout",
        Duration::from_secs(5),
    )
    .await;
    server_ends(task).await;
}

/// Sends `pieces` (each after its pause, in seconds) to a server with a
/// 10 s frame timeout; checks its GOAWAY(TIMEOUT) mentioning `text`, then
/// the close, at `at` seconds.
async fn cut_by_the_frame_timeout(pieces: &[(u64, &[u8])], text: &str, at: u64) {
    let server = quiet_server().frame_timeout(Duration::from_secs(10));
    let (mut client, task) = serve_peer(server, echo_router());
    let start = Instant::now();
    client.exchange_settings().await;
    for (pause, bytes) in pieces {
        tokio::time::sleep(Duration::from_secs(*pause)).await;
        client.send(bytes).await;
    }
    expect_goaway_then_close_at(
        &mut client,
        start,
        GoawayCode::Timeout,
        text,
        Duration::from_secs(at),
    )
    .await;
    server_ends(task).await;
}

#[tokio::test(start_paused = true)]
async fn a_frame_header_not_complete_within_the_frame_timeout_is_cut_however_it_trickles() {
    // Five bytes of a header at 1 s, then nothing.
    let five = [0x74, 0x52, 1, kind::PING, 0];
    cut_by_the_frame_timeout(&[(1, &five)], "frame header incomplete", 11).await;
    // A byte every 3 s: progress does not extend a header's deadline.
    let trickle: [(u64, &[u8]); 4] = [(1, &[0x74]), (3, &[0x52]), (3, &[1]), (3, &[kind::PING])];
    cut_by_the_frame_timeout(&trickle, "frame header incomplete", 11).await;
}

#[tokio::test(start_paused = true)]
async fn a_frame_body_that_stalls_for_the_frame_timeout_is_cut() {
    // A DATA frame claiming 100 bytes: 50 at 1 s, 10 more at 6 s, then
    // nothing. The body's deadline moves with each arrival.
    let head = raw_frame_lens(kind::DATA, 0, 99, 0, 100, &[b'x'; 50]);
    cut_by_the_frame_timeout(&[(1, &head), (5, &[b'x'; 10])], "incomplete frame", 16).await;
}

#[tokio::test(start_paused = true)]
async fn a_request_stream_silent_for_the_stream_idle_timeout_is_ended_and_its_handler_dropped() {
    let (probe, mut events) = Probe::new();
    let server = quiet_server().stream_idle_timeout(Duration::from_secs(30));
    let (mut client, task) = serve_peer(server, count_router(probe, "t.S/Count"));
    let start = Instant::now();
    client.exchange_settings().await;
    client.send(&open_stream(1, "t.S/Count")).await;
    client.send(&data(1, 0, b"{\"n\":1}")).await;
    events.expect(Event::Started, SOON).await;
    // A message at 20 s: the stream's idle time counts from there.
    tokio::time::sleep(Duration::from_secs(20)).await;
    client.send(&data(1, 0, b"{\"n\":2}")).await;
    let f = expect_frame_at(
        &mut client,
        start,
        FrameType::Headers,
        Duration::from_secs(50),
    )
    .await;
    assert_eq!(f.stream_id(), 1);
    let md = trpc_integration::frames::parse_metadata(&f.metadata);
    let status = md.iter().find(|(k, _)| k == ":status").expect(":status");
    assert_eq!(status.1, b"4", "DEADLINE_EXCEEDED");
    events.expect(Event::Dropped, SOON).await;
    // The connection serves on.
    client
        .send(&raw_frame(kind::PING, 0, 0, &[], b"stillok!"))
        .await;
    expect_frame_at(&mut client, start, FrameType::Pong, Duration::from_secs(50)).await;
    drop(client);
    server_ends(task).await;
}

#[tokio::test(start_paused = true)]
async fn the_maximum_connection_age_sends_goaway_then_closes_after_the_grace() {
    let (probe, mut events) = Probe::new();
    let server = quiet_server()
        .max_connection_age(Duration::from_secs(20))
        .max_connection_age_grace(Duration::from_secs(5));
    let (mut client, task) = serve_peer(server, sleep_router(probe));
    let start = Instant::now();
    client.exchange_settings().await;
    // A call that would take 30 s.
    client
        .send(&unary_request(1, "slow.Slow/Sleep", &[], echo_body("z")))
        .await;
    events.expect(Event::Started, SOON).await;
    // The age has ±10% jitter: GOAWAY between 18 and 22 s.
    let (seen, goaway_at) = next_after(&mut client, start).await;
    let Seen::Frame(f) = seen else {
        panic!("closed instead of GOAWAY at {goaway_at:?}")
    };
    assert_eq!(f.frame_type(), Some(FrameType::Goaway), "{f:?}");
    let g = Goaway::parse(&f.payload).expect("GOAWAY");
    assert_eq!(g.code, GoawayCode::NoError, "{g:?}");
    assert!(g.message.contains("maximum connection age"), "{g:?}");
    assert_eq!(g.last_stream_id, 1, "the call in flight may finish");
    assert!(
        (Duration::from_secs(18)..=Duration::from_secs(22)).contains(&goaway_at),
        "GOAWAY at {goaway_at:?}"
    );
    // The call would need 30 s: after the 5 s grace the connection is
    // closed and the handler dropped.
    expect_close_at(&mut client, start, goaway_at + Duration::from_secs(5)).await;
    events.expect(Event::Dropped, SOON).await;
    server_ends(task).await;
}

// ---- deadlines ------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_server_answers_deadline_exceeded_at_the_deadline_and_drops_the_handler() {
    let (probe, mut events) = Probe::new();
    let (mut client, task) = serve_peer(quiet_server(), sleep_router(probe));
    let start = Instant::now();
    client.exchange_settings().await;
    client
        .send(&unary_request(
            1,
            "slow.Slow/Sleep",
            &[(":timeout", b"2000000")],
            echo_body("z"),
        ))
        .await;
    let f = expect_frame_at(
        &mut client,
        start,
        FrameType::Headers,
        Duration::from_secs(2),
    )
    .await;
    let md = trpc_integration::frames::parse_metadata(&f.metadata);
    let status = md.iter().find(|(k, _)| k == ":status").expect(":status");
    assert_eq!(status.1, b"4", "DEADLINE_EXCEEDED");
    events.expect(Event::Started, SOON).await;
    events.expect(Event::Dropped, SOON).await;
    drop(client);
    server_ends(task).await;
}

#[tokio::test(start_paused = true)]
async fn the_client_fails_the_call_at_its_deadline_and_sends_cancel() {
    let (channel, mut server) = channel_peer(quiet_endpoint(), server_settings()).await;
    let start = Instant::now();
    let call = echo(&channel, Some(Duration::from_secs(2)));
    let req = server.request().await;
    let cancel = expect_frame_at(
        &mut server,
        start,
        FrameType::Cancel,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(cancel.stream_id(), req.stream_id);
    assert_eq!(
        cancel.payload[..],
        (Code::DeadlineExceeded as u32).to_be_bytes()
    );
    let err = within(SOON, "the call ends", call)
        .await
        .expect("call task")
        .expect_err("deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert_at(start.elapsed(), Duration::from_secs(2), "the call's end");
    // A late answer is ignored; the connection serves on.
    server
        .send(&reply(req.stream_id, Code::Ok, &echo_body("late")))
        .await;
    let call = echo(&channel, None);
    let req = server.request().await;
    server
        .send(&reply(req.stream_id, Code::Ok, &req.payload))
        .await;
    let got = within(SOON, "the next call", call).await.expect("task");
    assert_eq!(got.expect("answered").message, "tick");
}

#[tokio::test(start_paused = true)]
async fn a_channel_and_a_server_over_a_pipe_agree_on_the_earlier_deadline() {
    let (probe, mut events) = Probe::new();
    let server = quiet_server().timeout(Duration::from_secs(3));
    let (channel, task) = serve_channel(server, sleep_router(probe), quiet_endpoint()).await;
    let start = Instant::now();
    let mut client = Client::new(channel.clone());
    let mut req = Request::new(EchoMsg::new("z"));
    req.set_timeout(Duration::from_secs(5));
    let err = client
        .unary::<EchoMsg, EchoMsg>("slow.Slow/Sleep", req)
        .await
        .expect_err("the server's 3 s come first");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert_at(start.elapsed(), Duration::from_secs(3), "DEADLINE_EXCEEDED");
    events.expect(Event::Started, SOON).await;
    events.expect(Event::Dropped, SOON).await;
    drop((client, channel));
    server_ends(task).await;
}

// ---- the client's idle close ----------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn an_idle_client_connection_closes_after_the_idle_timeout() {
    let endpoint = quiet_endpoint().idle_timeout(Some(Duration::from_secs(60)));
    let (channel, mut server) = channel_peer(endpoint, server_settings()).await;
    let start = Instant::now();
    // A call answered at 5 s: the idle time counts from its end.
    let call = echo(&channel, None);
    let req = server.request().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    server
        .send(&reply(req.stream_id, Code::Ok, &req.payload))
        .await;
    let got = within(SOON, "the call", call).await.expect("task");
    assert_eq!(got.expect("answered").message, "tick");
    // Closed (gracefully, without a GOAWAY) 60 s later.
    expect_close_at(&mut server, start, Duration::from_secs(65)).await;
    assert_eq!(channel.connections(), 0);
    // A pipe channel has nothing to reconnect to: calls fail at once.
    let err = within(SOON, "a call after the close", echo(&channel, None))
        .await
        .expect("task")
        .expect_err("no connection");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn a_client_connection_with_a_call_in_flight_is_not_idle() {
    let endpoint = quiet_endpoint().idle_timeout(Some(Duration::from_secs(60)));
    let (channel, mut server) = channel_peer(endpoint, server_settings()).await;
    let start = Instant::now();
    let call = echo(&channel, None);
    let req = server.request().await;
    // The answer comes after 100 s: the connection stayed open meanwhile.
    tokio::time::sleep(Duration::from_secs(100)).await;
    server
        .send(&reply(req.stream_id, Code::Ok, &req.payload))
        .await;
    let got = within(SOON, "the call", call).await.expect("task");
    assert_eq!(got.expect("answered").message, "tick");
    expect_close_at(&mut server, start, Duration::from_secs(160)).await;
}
