//! Helpers shared by the end-to-end tests: servers on `127.0.0.1:0`, clients,
//! drop probes for handler cancellation, and a raw frame-level client.

// Every test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::{Decoder, Encoder};
use tower::{Layer, Service};
use trpc::frame::{Decoded, Flags, Frame, FrameCodec, FrameType, Settings};
use trpc::server::{Router, Server};
use trpc::{Body, BoxError, Channel, Endpoint, Request, Response};

/// Bound for anything that should happen "soon" on a loaded 2-core machine.
pub(crate) const SOON: Duration = Duration::from_secs(10);

/// A message that both codecs can carry (prost and serde).
#[derive(Clone, PartialEq, Eq, prost::Message, serde::Serialize, serde::Deserialize)]
pub(crate) struct EchoMsg {
    /// The text.
    #[prost(string, tag = "1")]
    #[serde(default)]
    pub(crate) message: String,
}

impl EchoMsg {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        EchoMsg {
            message: message.into(),
        }
    }
}

/// A binary blob (protobuf `bytes`), for size tests.
#[derive(Clone, PartialEq, Eq, prost::Message, serde::Serialize, serde::Deserialize)]
pub(crate) struct Blob {
    /// The bytes.
    #[prost(bytes = "vec", tag = "1")]
    #[serde(default)]
    pub(crate) data: Vec<u8>,
}

/// Asks a handler for a reply of `len` bytes, or to sleep `millis`.
#[derive(Clone, PartialEq, Eq, prost::Message, serde::Serialize, serde::Deserialize)]
pub(crate) struct Ask {
    /// Size of the reply.
    #[prost(uint64, tag = "1")]
    #[serde(default)]
    pub(crate) len: u64,
    /// Time to sleep before answering.
    #[prost(uint64, tag = "2")]
    #[serde(default)]
    pub(crate) millis: u64,
}

/// A deterministic byte pattern of `len` bytes.
pub(crate) fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) % 251) as u8).collect()
}

/// Awaits `fut`, panicking with `what` if it takes longer than `limit`.
pub(crate) async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {limit:?}"),
    }
}

// ---- servers -------------------------------------------------------------------

/// A server running in a background task until [`TestServer::shutdown`].
#[derive(Debug)]
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<io::Result<()>>,
}

/// Binds `127.0.0.1:0`.
pub(crate) async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

/// Serves `router` with a default server on a fresh port.
pub(crate) async fn serve(router: Router) -> TestServer {
    serve_with(Server::builder(), router).await
}

/// Serves `router` with `server` (limits, timeouts, layers) on a fresh port.
pub(crate) async fn serve_with<L>(server: Server<L>, router: Router) -> TestServer
where
    L: Layer<Router> + Send + 'static,
    L::Service: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    <L::Service as Service<Request<Body>>>::Error: Into<BoxError>,
    <L::Service as Service<Request<Body>>>::Future: Send + 'static,
{
    serve_on(listener().await, server, router)
}

/// Serves `router` with `server` on an already bound listener.
pub(crate) fn serve_on<L>(listener: TcpListener, server: Server<L>, router: Router) -> TestServer
where
    L: Layer<Router> + Send + 'static,
    L::Service: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    <L::Service as Service<Request<Body>>>::Error: Into<BoxError>,
    <L::Service as Service<Request<Body>>>::Future: Send + 'static,
{
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let signal = async move {
        let _ = stopped.await;
    };
    let handle = tokio::spawn(server.serve_with_listener(listener, router, signal));
    TestServer {
        addr,
        stop: Some(stop),
        handle,
    }
}

impl TestServer {
    /// Completes the server's shutdown signal (graceful shutdown starts).
    fn signal_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Signals shutdown and waits (bounded by `limit`) for `serve_with_listener`
    /// to return; returns how long that took.
    pub(crate) async fn shutdown_within(mut self, limit: Duration) -> Duration {
        let start = Instant::now();
        self.signal_shutdown();
        let result = within(limit, "server shutdown", &mut self.handle).await;
        result
            .expect("server task panicked")
            .expect("serve_with_listener failed");
        start.elapsed()
    }

    /// Signals shutdown and waits for the server to stop.
    pub(crate) async fn shutdown(self) -> Duration {
        self.shutdown_within(SOON).await
    }
}

// ---- clients -------------------------------------------------------------------

/// An endpoint for `addr` with a bounded connect timeout.
pub(crate) fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::new(format!("tcp://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
}

/// A connected channel to `addr` with default settings.
pub(crate) async fn connect(addr: SocketAddr) -> Channel {
    within(SOON, "connect", endpoint(addr).connect())
        .await
        .expect("connect")
}

// ---- handler probes ------------------------------------------------------------

/// What a probed handler did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// The handler started running.
    Started,
    /// The handler ran to completion.
    Finished,
    /// The handler future was dropped before completion (cancelled).
    Dropped,
}

/// Reports handler lifecycle events to the test (clone it into handlers).
#[derive(Clone, Debug)]
pub(crate) struct Probe(mpsc::UnboundedSender<Event>);

/// Lives inside a handler future: reports `Dropped` unless finished.
#[derive(Debug)]
pub(crate) struct ProbeGuard {
    tx: mpsc::UnboundedSender<Event>,
    finished: bool,
}

/// The test's side of a [`Probe`].
#[derive(Debug)]
pub(crate) struct Events(mpsc::UnboundedReceiver<Event>);

impl Probe {
    pub(crate) fn new() -> (Probe, Events) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Probe(tx), Events(rx))
    }

    /// Reports `Started`; keep the guard alive for the rest of the handler.
    pub(crate) fn enter(&self) -> ProbeGuard {
        let _ = self.0.send(Event::Started);
        ProbeGuard {
            tx: self.0.clone(),
            finished: false,
        }
    }
}

impl ProbeGuard {
    /// Reports `Finished`.
    pub(crate) fn finish(mut self) {
        self.finished = true;
        let _ = self.tx.send(Event::Finished);
    }
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.tx.send(Event::Dropped);
        }
    }
}

impl Events {
    /// The next event, waiting at most `limit`.
    pub(crate) async fn next_within(&mut self, limit: Duration) -> Event {
        within(limit, "handler event", self.0.recv())
            .await
            .expect("probe senders gone")
    }

    /// An event already reported, if any (does not wait).
    pub(crate) fn try_next(&mut self) -> Option<Event> {
        self.0.try_recv().ok()
    }

    /// Waits for the next event and checks it is `expected`.
    pub(crate) async fn expect(&mut self, expected: Event, limit: Duration) {
        let got = self.next_within(limit).await;
        assert_eq!(got, expected, "handler event");
    }
}

// ---- raw frames ----------------------------------------------------------------

/// Encodes a metadata block (docs/PROTOCOL.md §4) by hand:
/// `key len (u8) | key | value len (LEB128) | value`.
pub(crate) fn metadata_block(entries: &[(&str, &[u8])]) -> Bytes {
    let mut b = BytesMut::new();
    for (k, v) in entries {
        b.put_u8(k.len() as u8);
        b.put_slice(k.as_bytes());
        let mut n = v.len();
        while n >= 0x80 {
            b.put_u8((n as u8) | 0x80);
            n >>= 7;
        }
        b.put_u8(n as u8);
        b.put_slice(v);
    }
    b.freeze()
}

/// Decodes a metadata block; panics if it is malformed.
pub(crate) fn parse_metadata(block: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < block.len() {
        let klen = block[pos] as usize;
        let key = String::from_utf8(block[pos + 1..pos + 1 + klen].to_vec()).expect("key");
        pos += 1 + klen;
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let b = block[pos];
            pos += 1;
            len |= ((b & 0x7f) as usize) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        out.push((key, block[pos..pos + len].to_vec()));
        pos += len;
    }
    out
}

/// The SETTINGS frame a raw client opens with (the limits of §9's example).
pub(crate) fn client_settings() -> Bytes {
    let mut b = BytesMut::new();
    Settings {
        max_message_size: Some(4 << 20),
        max_metadata_size: Some(16 << 10),
        ..Settings::default()
    }
    .encode(&mut b);
    b.freeze()
}

/// Encodes a frame with [`FrameCodec`] (no limits in the way).
pub(crate) fn encode_frame(frame: Frame) -> Bytes {
    let mut codec = FrameCodec::new()
        .max_message(u32::MAX as usize)
        .max_metadata(1 << 24);
    let mut b = BytesMut::new();
    codec.encode(frame, &mut b).expect("encode frame");
    b.freeze()
}

/// A unary request (§5.2 fast path): one HEADERS frame with
/// `MESSAGE | END_STREAM`, `:path` first, then `extra` metadata.
pub(crate) fn unary_request(
    stream_id: u32,
    method: &str,
    extra: &[(&str, &[u8])],
    payload: impl Into<Bytes>,
) -> Bytes {
    let mut entries: Vec<(&str, &[u8])> = vec![(":path", method.as_bytes())];
    entries.extend_from_slice(extra);
    encode_frame(Frame::new(
        FrameType::Headers,
        Flags::MESSAGE.with(Flags::END_STREAM),
        stream_id,
        metadata_block(&entries),
        payload.into(),
    ))
}

/// A server frame that ends a stream, decoded.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) stream_id: u32,
    pub(crate) flags: Flags,
    pub(crate) status: u32,
    pub(crate) message: String,
    pub(crate) metadata: Vec<(String, Vec<u8>)>,
    pub(crate) payload: Bytes,
}

/// A frame-level client over a plain `TcpStream`.
#[derive(Debug)]
pub(crate) struct RawClient {
    pub(crate) stream: TcpStream,
    codec: FrameCodec,
    rbuf: BytesMut,
}

impl RawClient {
    /// Connects (TCP only, nothing sent).
    pub(crate) async fn connect(addr: SocketAddr) -> RawClient {
        let stream = within(SOON, "tcp connect", TcpStream::connect(addr))
            .await
            .expect("tcp connect");
        stream.set_nodelay(true).expect("nodelay");
        RawClient {
            stream,
            codec: FrameCodec::new().max_message(256 << 20),
            rbuf: BytesMut::new(),
        }
    }

    /// Writes `bytes` in one write.
    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
        self.stream.flush().await.expect("flush");
    }

    /// Writes `bytes` one byte per write, flushing each.
    pub(crate) async fn send_byte_by_byte(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.stream.write_all(&[*b]).await.expect("write");
            self.stream.flush().await.expect("flush");
        }
    }

    /// Reads exactly `n` raw bytes.
    pub(crate) async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut out = vec![0u8; n];
        let have = self.rbuf.len().min(n);
        out[..have].copy_from_slice(&self.rbuf.split_to(have));
        within(
            SOON,
            "read reply bytes",
            self.stream.read_exact(&mut out[have..]),
        )
        .await
        .expect("read");
        out
    }

    /// The exact bytes of the next frame (header, metadata and payload).
    pub(crate) async fn next_frame_bytes(&mut self) -> Vec<u8> {
        let mut frame = self.read_exact(16).await;
        let metadata_len = u32::from_be_bytes([0, frame[5], frame[6], frame[7]]) as usize;
        let payload_len = u32::from_be_bytes([frame[12], frame[13], frame[14], frame[15]]) as usize;
        frame.extend(self.read_exact(metadata_len + payload_len).await);
        frame
    }

    /// The next frame from the server (panics on EOF, errors or timeout).
    pub(crate) async fn next_frame(&mut self) -> Frame {
        within(SOON, "next frame", async {
            loop {
                match self.codec.decode(&mut self.rbuf).expect("decode") {
                    Some(Decoded::Frame(f)) => return f,
                    Some(Decoded::TooLarge(h)) => panic!("unexpected oversized frame {h:?}"),
                    None => {}
                }
                let n = self.stream.read_buf(&mut self.rbuf).await.expect("read");
                assert!(n > 0, "server closed the connection");
            }
        })
        .await
    }

    /// Sends our SETTINGS and returns the server's (the first frame it sends).
    pub(crate) async fn handshake(&mut self) -> Settings {
        self.send(&client_settings()).await;
        self.read_settings().await
    }

    /// Reads the server's SETTINGS frame, which must come first.
    pub(crate) async fn read_settings(&mut self) -> Settings {
        let f = self.next_frame().await;
        assert_eq!(f.frame_type(), Some(FrameType::Settings), "first frame");
        Settings::parse(&f.payload).expect("server SETTINGS")
    }

    /// The next frame that ends a stream (skipping PING/SETTINGS and other
    /// connection-level frames).
    pub(crate) async fn next_response(&mut self) -> RawResponse {
        loop {
            let f = self.next_frame().await;
            match f.frame_type() {
                Some(FrameType::Headers | FrameType::Trailers)
                    if f.flags().contains(Flags::END_STREAM) =>
                {
                    let metadata = parse_metadata(&f.metadata);
                    let status = metadata
                        .iter()
                        .find(|(k, _)| k == ":status")
                        .map(|(_, v)| {
                            std::str::from_utf8(v)
                                .expect("status utf8")
                                .parse()
                                .expect("status number")
                        })
                        .expect("response without :status");
                    let message = metadata
                        .iter()
                        .find(|(k, _)| k == ":message")
                        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default();
                    return RawResponse {
                        stream_id: f.stream_id(),
                        flags: f.flags(),
                        status,
                        message,
                        metadata,
                        payload: f.payload,
                    };
                }
                Some(FrameType::Ping | FrameType::Settings | FrameType::WindowUpdate) => {}
                _ => panic!("unexpected frame {f:?}"),
            }
        }
    }

    /// Collects `n` responses, sorted by stream id.
    pub(crate) async fn responses(&mut self, n: usize) -> Vec<RawResponse> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next_response().await);
        }
        out.sort_by_key(|r| r.stream_id);
        out
    }
}

/// Bytes from a hex string; whitespace is ignored.
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let pairs = digits.chunks_exact(2);
    assert!(
        pairs.remainder().is_empty(),
        "odd number of hex digits in {s:?}"
    );
    pairs
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ascii"), 16).expect("hex digit"))
        .collect()
}

/// A router with `echo.Echo/Say` (JSON and protobuf), the usual test target.
pub(crate) fn echo_router() -> Router {
    use trpc::codec::{Json, Proto};
    Router::new().route(
        "echo.Echo/Say",
        trpc::server::unary(|req: Request<EchoMsg>| async move {
            Ok::<_, trpc::Status>(Response::new(req.into_inner()))
        })
        .codec((Json, Proto)),
    )
}
