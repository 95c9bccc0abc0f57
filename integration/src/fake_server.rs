//! A hostile-*server* harness (h2-support's `mock` idea): a raw server
//! socket on `127.0.0.1:0` that a test scripts frame by frame, to drive a
//! real [`trpc::Channel`] against malformed and adversarial server
//! behaviour.
//!
//! Each accepted connection is a [`Peer`]: the test reads what the client
//! sent ([`Peer::request`], [`Peer::frame_of`], [`Peer::until_closed`]) and
//! sends whatever it likes, well-formed ([`crate::frames::reply`]) or not
//! ([`crate::frames::raw_frame`]).
//!
//! ```no_run
//! # #[tokio::main] async fn main() {
//! use trpc::Code;
//! use trpc_integration::fake_server::FakeServer;
//! use trpc_integration::frames::reply;
//! use trpc_integration::messages::{echo_body, EchoMsg};
//!
//! let fake = FakeServer::bind().await;
//! let (channel, mut conn) = fake.connect().await;
//! let call = tokio::spawn(async move {
//!     trpc::Client::new(channel)
//!         .unary_message::<_, EchoMsg>("echo.Echo/Say", EchoMsg::new("hi"))
//!         .await
//! });
//! let req = conn.request().await;
//! conn.send(&reply(req.stream_id, Code::Ok, &echo_body("hello"))).await;
//! assert_eq!(call.await.unwrap().unwrap().message, "hello");
//! # }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use trpc::frame::Settings;
use trpc::{Channel, Endpoint};

use crate::client::endpoint;
use crate::peer::Peer;
use crate::server::listener;
use crate::wait::{within, SOON};

/// A listening socket whose connections the test serves by hand.
#[derive(Debug)]
pub struct FakeServer {
    listener: TcpListener,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// The SETTINGS a fake server announces by default: what a real trpc
/// server announces (docs/PROTOCOL.md §9).
pub fn server_settings() -> Settings {
    Settings {
        max_concurrent_streams: Some(1024),
        initial_stream_window: Some(1 << 20),
        initial_connection_window: Some(16 << 20),
        max_message_size: Some(4 << 20),
        max_metadata_size: Some(16 << 10),
    }
}

impl FakeServer {
    /// Binds `127.0.0.1:0`.
    pub async fn bind() -> FakeServer {
        let listener = listener().await;
        let addr = listener.local_addr().expect("local addr");
        FakeServer { listener, addr }
    }

    /// An endpoint for this server: a bounded connect timeout, keepalive
    /// off (a script answers no PING unless it means to) and a short
    /// reconnect backoff.
    pub fn endpoint(&self) -> Endpoint {
        endpoint(self.addr)
            .no_keepalive()
            .backoff(Duration::from_millis(10), Duration::from_millis(100))
    }

    /// Accepts the next connection (nothing read or sent).
    pub async fn accept(&self) -> Peer<TcpStream> {
        let (tcp, _) = within(SOON, "accept", self.listener.accept())
            .await
            .expect("accept");
        tcp.set_nodelay(true).expect("nodelay");
        Peer::new(tcp)
    }

    /// Accepts the next connection and answers its SETTINGS with `ours`.
    pub async fn accept_with(&self, ours: Settings) -> Peer<TcpStream> {
        let mut conn = self.accept().await;
        conn.accept_settings(ours).await;
        conn
    }

    /// Accepts the next connection and answers its SETTINGS with
    /// [`server_settings`].
    pub async fn accept_handshake(&self) -> Peer<TcpStream> {
        self.accept_with(server_settings()).await
    }

    /// Connects [`FakeServer::endpoint`] and accepts the connection with
    /// [`server_settings`]: a channel and the server's side of its
    /// connection.
    pub async fn connect(&self) -> (Channel, Peer<TcpStream>) {
        self.connect_with(self.endpoint(), server_settings()).await
    }

    /// Connects `endpoint` and accepts the connection with `settings`.
    pub async fn connect_with(
        &self,
        endpoint: Endpoint,
        settings: Settings,
    ) -> (Channel, Peer<TcpStream>) {
        let (channel, conn) = tokio::join!(
            within(SOON, "connect to the fake server", endpoint.connect()),
            self.accept_with(settings)
        );
        (channel.expect("connect to the fake server"), conn)
    }
}
