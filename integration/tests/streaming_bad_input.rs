//! Misbehaving stream peers, driven with raw frames: each case gets the
//! reaction docs/PROTOCOL.md describes, and the connection and other calls
//! carry on.

use std::time::Duration;

use futures_util::stream;
use trpc::frame::{GoawayCode, Settings};
use trpc::server::{server_streaming, unary, Router, Server};
use trpc::{Code, Request, Response, Status};
use trpc_integration::fake_server::FakeServer;
use trpc_integration::frames::{
    data, flag, kind, open_stream, raw_frame, response_headers, unary_request, window_update,
};
use trpc_integration::messages::Num;
use trpc_integration::peer::{Peer, RawResponse};
use trpc_integration::probe::{count_router, Event, Events, Probe};
use trpc_integration::server::{serve_with, TestServer};
use trpc_integration::{within, SOON};

/// `t.S/Count` counts the messages of a request stream (reporting to the
/// probe); `t.S/Forever` streams a message every 5 ms; `t.S/Ping` echoes.
fn router(probe: Probe) -> Router {
    let forever = |_req: Request<Num>| async move {
        let s = stream::unfold(0u64, |n| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Some((Ok(Num { n }), n + 1))
        });
        Ok::<_, Status>(Response::new(s))
    };
    let ping = |req: Request<Num>| async move { Ok::<_, Status>(Response::new(req.into_inner())) };
    count_router(probe, "t.S/Count")
        .route("t.S/Forever", server_streaming(forever))
        .route("t.S/Ping", unary(ping))
}

async fn start(stream_window: u32, idle: Duration) -> (TestServer, Events) {
    let (probe, events) = Probe::new();
    let server = Server::builder()
        .stream_window(stream_window)
        .stream_idle_timeout(idle);
    (serve_with(server, router(probe)).await, events)
}

/// The frame ending stream `id`: its status and everything up to it.
async fn status_of(p: &mut Peer, id: u32) -> (Code, RawResponse) {
    let r = p.response().await;
    assert_eq!(r.stream_id, id, "{}", r.message);
    (Code::from_u32(r.status), r)
}

/// A unary call on stream `id` is answered: the connection serves on.
async fn ping_call(p: &mut Peer, id: u32) {
    p.send(&unary_request(id, "t.S/Ping", &[], &b"{\"n\":7}"[..]))
        .await;
    let (code, r) = status_of(p, id).await;
    assert_eq!(code, Code::Ok);
    assert_eq!(&r.payload[..], b"{\"n\":7}");
}

#[tokio::test]
async fn frames_for_unknown_streams_are_ignored() {
    let (server, _events) = start(1 << 20, Duration::from_secs(60)).await;
    let mut raw = Peer::handshake(server.addr).await;
    raw.send(&data(101, 0, b"{}")).await;
    raw.send(&raw_frame(kind::TRAILERS, flag::END, 103, &[], &[]))
        .await;
    raw.send(&window_update(105, 1000)).await;
    raw.send(&raw_frame(kind::CANCEL, 0, 107, &[], &1u32.to_be_bytes()))
        .await;
    raw.send(&data(0, 0, b"x")).await;
    // Stream ids above are higher than 1, so open the next call above them.
    ping_call(&mut raw, 109).await;
}

#[tokio::test]
async fn data_after_the_end_of_a_stream_is_ignored() {
    let (server, _events) = start(1 << 20, Duration::from_secs(60)).await;
    let mut raw = Peer::handshake(server.addr).await;
    raw.send(&open_stream(1, "t.S/Count")).await;
    raw.send(&data(1, 0, b"{\"n\":1}")).await;
    raw.send(&data(1, flag::END, b"{\"n\":2}")).await;
    raw.send(&data(1, 0, b"{\"n\":3}")).await;
    raw.send(&data(1, flag::END, b"{\"n\":4}")).await;
    let (code, r) = status_of(&mut raw, 1).await;
    assert_eq!(code, Code::Ok);
    assert_eq!(&r.payload[..], b"{\"n\":2}");
    ping_call(&mut raw, 3).await;
}

#[tokio::test]
async fn a_stream_window_update_that_overflows_cancels_only_that_stream() {
    let (server, _events) = start(1 << 20, Duration::from_secs(60)).await;
    let mut raw = Peer::handshake(server.addr).await;
    raw.send(&unary_request(1, "t.S/Forever", &[], &b"{\"n\":0}"[..]))
        .await;
    raw.send(&window_update(1, 0x7fff_ffff)).await;
    let (code, _) = status_of(&mut raw, 1).await;
    assert_eq!(code, Code::ResourceExhausted);
    ping_call(&mut raw, 3).await;
}

#[tokio::test]
async fn a_connection_window_update_that_overflows_is_a_connection_error() {
    let (server, _events) = start(1 << 20, Duration::from_secs(60)).await;
    let mut raw = Peer::handshake(server.addr).await;
    raw.send(&window_update(0, 0x7fff_ffff)).await;
    let goaway = raw.goaway_then_close().await;
    assert_eq!(goaway.code, GoawayCode::FlowControlError);
    // Other connections are unaffected.
    ping_call(&mut Peer::handshake(server.addr).await, 1).await;
}

#[tokio::test]
async fn sending_past_the_stream_window_cancels_that_stream() {
    let (server, _events) = start(64, Duration::from_secs(60)).await;
    let mut raw = Peer::handshake(server.addr).await;
    raw.send(&open_stream(1, "t.S/Count")).await;
    let msg = format!("{{\"n\":{}}}", "1".repeat(100));
    // The first message drives the 64-byte window negative (allowed); the
    // next one, sent without waiting for credit, violates it.
    raw.send(&data(1, 0, msg.as_bytes())).await;
    raw.send(&data(1, 0, msg.as_bytes())).await;
    let (code, _) = status_of(&mut raw, 1).await;
    assert_eq!(code, Code::ResourceExhausted);
    ping_call(&mut raw, 3).await;
}

#[tokio::test]
async fn a_stream_the_client_never_ends_times_out() {
    let (server, mut events) = start(1 << 20, Duration::from_millis(300)).await;
    let mut raw = Peer::handshake(server.addr).await;
    raw.send(&open_stream(1, "t.S/Count")).await;
    raw.send(&data(1, 0, b"{\"n\":1}")).await;
    events.expect(Event::Started, SOON).await;
    let started = tokio::time::Instant::now();
    let (code, _) = status_of(&mut raw, 1).await;
    assert_eq!(code, Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(5));
    events.expect(Event::Dropped, SOON).await;
    ping_call(&mut raw, 3).await;
}

#[tokio::test]
async fn a_client_that_disappears_mid_stream_drops_the_handler() {
    let (server, mut events) = start(1 << 20, Duration::from_secs(60)).await;
    let mut raw = Peer::handshake(server.addr).await;
    raw.send(&open_stream(1, "t.S/Count")).await;
    raw.send(&data(1, 0, b"{\"n\":1}")).await;
    events.expect(Event::Started, SOON).await;
    drop(raw);
    events.expect(Event::Dropped, SOON).await;
    ping_call(&mut Peer::handshake(server.addr).await, 1).await;
}

#[tokio::test]
async fn a_server_that_vanishes_mid_stream_fails_the_client_stream() {
    // A fake server: handshake, answer the call with HEADERS and one DATA,
    // then drop the connection.
    let fake = FakeServer::bind().await;
    let (channel, mut conn) = fake
        .connect_with(fake.endpoint(), Settings::default())
        .await;
    let call = tokio::spawn(async move {
        trpc::Client::new(channel)
            .server_streaming::<Num, Num>("t.S/Forever", Request::new(Num { n: 0 }))
            .await
    });
    let id = conn.request().await.stream_id;
    conn.send(&response_headers(id, &[])).await;
    conn.send(&data(id, 0, b"{\"n\":1}")).await;
    drop(conn); // closes the socket
    let mut s = within(SOON, "the response starts", call)
        .await
        .expect("call task")
        .expect("response headers")
        .into_inner();
    assert_eq!(
        within(SOON, "first message", s.message())
            .await
            .unwrap()
            .unwrap()
            .n,
        1
    );
    let err = within(SOON, "the stream fails", s.message())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
}
