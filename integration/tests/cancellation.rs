//! Cancellation: a caller that gives up, a channel that goes away, or a client
//! process that dies mid-call makes the server drop the handler.

use std::time::Duration;

use trpc::server::Router;
use trpc::Client;

use trpc_integration::client::{connect, endpoint};
use trpc_integration::frames::unary_request;
use trpc_integration::messages::EchoMsg;
use trpc_integration::peer::Peer;
use trpc_integration::probe::{sleep_router, Event, Probe};
use trpc_integration::server::serve;
use trpc_integration::{within, SOON};

fn router(probe: Probe) -> Router {
    sleep_router(probe).merge(trpc_integration::server::echo_router())
}

#[tokio::test]
async fn dropping_the_call_future_cancels_the_server_handler() {
    let (probe, mut events) = Probe::new();
    let server = serve(router(probe)).await;
    let channel = connect(server.addr).await;
    let mut client = Client::new(channel.clone());

    {
        let call = client.unary_message::<_, EchoMsg>("slow.Slow/Sleep", EchoMsg::new("x"));
        tokio::pin!(call);
        tokio::select! {
            r = &mut call => panic!("the slow call finished: {r:?}"),
            e = events.next_within(SOON) => assert_eq!(e, Event::Started),
        }
        // `call` is dropped here, mid-flight.
    }
    events.expect(Event::Dropped, SOON).await;

    // The channel and its connection carry on.
    let mut client = Client::new(channel.clone());
    let reply: EchoMsg = within(
        SOON,
        "next call",
        client.unary_message("echo.Echo/Say", EchoMsg::new("on")),
    )
    .await
    .expect("next call");
    assert_eq!(reply.message, "on");
    assert_eq!(channel.connections(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn timing_out_a_call_with_tokio_timeout_cancels_the_server_handler() {
    let (probe, mut events) = Probe::new();
    let server = serve(router(probe)).await;
    let mut client = Client::new(connect(server.addr).await);
    let r = tokio::time::timeout(
        Duration::from_millis(200),
        client.unary_message::<_, EchoMsg>("slow.Slow/Sleep", EchoMsg::new("x")),
    )
    .await;
    assert!(r.is_err(), "the slow call finished: {r:?}");
    events.expect(Event::Started, SOON).await;
    events.expect(Event::Dropped, SOON).await;
    server.shutdown().await;
}

#[tokio::test]
async fn dropping_the_channel_mid_call_cancels_the_server_handler() {
    let (probe, mut events) = Probe::new();
    let server = serve(router(probe)).await;
    // The task owns the only channel: aborting it drops the call and the channel.
    let addr = server.addr;
    let task = tokio::spawn(async move {
        let channel = within(SOON, "connect", endpoint(addr).connect())
            .await
            .expect("connect");
        let mut client = Client::new(channel);
        client
            .unary_message::<_, EchoMsg>("slow.Slow/Sleep", EchoMsg::new("x"))
            .await
    });
    events.expect(Event::Started, SOON).await;
    task.abort();
    assert!(task.await.expect_err("aborted").is_cancelled());
    events.expect(Event::Dropped, SOON).await;
    server.shutdown().await;
}

#[tokio::test]
async fn client_connection_closing_mid_call_cancels_the_server_handler() {
    // A client process that dies: its socket closes, no CANCEL is ever sent.
    let (probe, mut events) = Probe::new();
    let server = serve(router(probe)).await;
    let mut raw = Peer::connect(server.addr).await;
    raw.exchange_settings().await;
    let body = serde_json::to_vec(&EchoMsg::new("x")).expect("json");
    raw.send(&unary_request(1, "slow.Slow/Sleep", &[], body))
        .await;
    events.expect(Event::Started, SOON).await;
    drop(raw);
    events.expect(Event::Dropped, SOON).await;
    server.shutdown().await;
}
