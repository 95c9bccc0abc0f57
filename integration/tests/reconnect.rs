//! Reconnect with backoff: a channel outlives a server restart on the same port.

use std::time::Duration;

use tokio::time::Instant;
use trpc::server::Server;
use trpc::{Client, Code};

use trpc_integration::client::endpoint;
use trpc_integration::messages::EchoMsg;
use trpc_integration::server::{echo_router, listener, rebind, serve_on};
use trpc_integration::{within, SOON};

async fn say(client: &mut Client<trpc::Channel>, text: &str) -> Result<EchoMsg, trpc::Status> {
    within(
        SOON,
        "call",
        client.unary_message("echo.Echo/Say", EchoMsg::new(text)),
    )
    .await
}

#[tokio::test]
async fn channel_reconnects_after_the_server_restarts_on_the_same_port() {
    let first = listener().await;
    let addr = first.local_addr().expect("addr");
    let server = serve_on(first, Server::builder(), echo_router());
    let channel = within(
        SOON,
        "connect",
        endpoint(addr)
            .backoff(Duration::from_millis(10), Duration::from_millis(50))
            .connect(),
    )
    .await
    .expect("connect");
    let mut client = Client::new(channel.clone());
    assert_eq!(
        say(&mut client, "before")
            .await
            .expect("first call")
            .message,
        "before"
    );

    server.shutdown().await;

    // Server gone: calls fail fast with UNAVAILABLE.
    for _ in 0..3 {
        let start = Instant::now();
        let err = say(&mut client, "while down")
            .await
            .expect_err("no server is listening");
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "failing took {:?}",
            start.elapsed()
        );
    }

    // A new server on the same port: a bounded retry loop sees calls succeed.
    let server = serve_on(rebind(addr).await, Server::builder(), echo_router());
    let reply = within(SOON, "calls succeed again", async {
        loop {
            match say(&mut client, "after").await {
                Ok(reply) => return reply,
                Err(e) if e.code() == Code::Unavailable => {
                    // Backoff is at most 50 ms; poll a little slower than that.
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("unexpected error while reconnecting: {e:?}"),
            }
        }
    })
    .await;
    assert_eq!(reply.message, "after");
    assert_eq!(channel.connections(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn connect_fails_unavailable_when_nothing_listens() {
    let l = listener().await;
    let addr = l.local_addr().expect("addr");
    drop(l);
    let start = Instant::now();
    let err = within(SOON, "connect", endpoint(addr).connect())
        .await
        .expect_err("nothing listens on the port");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
}
