//! What the `hostile_*` tests share: a server with short timeouts, a router
//! with slow and large methods, a raw frame reader that tolerates the server
//! closing, a bystander client that must be served correctly throughout, and
//! memory probes.

// Every hostile test binary uses a different part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use trpc::frame::{Decoded, Frame, FrameCodec, FrameType, Goaway, GoawayCode};
use trpc::server::{server_streaming, unary, Router, Server};
use trpc::stats::TransportStats;
use trpc::{Client, Request, Response, Status};

use crate::common::{
    echo_router, endpoint, parse_metadata, pattern, serve_with, within, Ask, Blob, EchoMsg, Probe,
    TestServer, SOON,
};

/// The handshake timeout of [`hostile_server`].
pub(crate) const HANDSHAKE: Duration = Duration::from_millis(500);
/// The frame (slow-loris) timeout of [`hostile_server`].
pub(crate) const FRAME: Duration = Duration::from_millis(400);
/// The write timeout of [`hostile_server`].
pub(crate) const WRITE: Duration = Duration::from_millis(500);

/// A server builder with short timeouts, so that hostile peers are dealt
/// with quickly, counting into `stats`.
pub(crate) fn hostile_server(stats: &Arc<TransportStats>) -> Server {
    Server::builder()
        .handshake_timeout(HANDSHAKE)
        .frame_timeout(FRAME)
        .write_timeout(WRITE)
        .shutdown_grace(Duration::from_secs(2))
        .transport_stats(stats.clone())
}

/// A running server with its counters.
#[derive(Debug)]
pub(crate) struct Hostile {
    pub(crate) server: TestServer,
    pub(crate) addr: SocketAddr,
    pub(crate) stats: Arc<TransportStats>,
}

/// Starts `router()` on `server` (from [`hostile_server`], possibly adjusted).
pub(crate) async fn start(server: Server, stats: Arc<TransportStats>, probe: Probe) -> Hostile {
    let server = serve_with(server, router(probe)).await;
    Hostile {
        addr: server.addr,
        server,
        stats,
    }
}

/// Starts a default [`hostile_server`].
pub(crate) async fn start_default(probe: Probe) -> Hostile {
    let stats = TransportStats::new();
    start(hostile_server(&stats), stats, probe).await
}

/// `echo.Echo/Say` (JSON and protobuf); `h.H/Wait` holds the call (reporting
/// to the probe) until the client goes away or 30 s pass; `h.H/Big` answers
/// `len` bytes (protobuf); `h.H/Flood` streams `len` messages of 64 KiB.
pub(crate) fn router(probe: Probe) -> Router {
    use trpc::codec::Proto;
    echo_router()
        .route(
            "h.H/Wait",
            unary(move |req: Request<EchoMsg>| {
                let probe = probe.clone();
                async move {
                    let guard = probe.enter();
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    guard.finish();
                    Ok::<_, Status>(Response::new(req.into_inner()))
                }
            }),
        )
        .route(
            "h.H/Big",
            unary(|req: Request<Ask>| async move {
                let len = req.get_ref().len as usize;
                Ok::<_, Status>(Response::new(Blob { data: pattern(len) }))
            })
            .codec(Proto),
        )
        .route(
            "h.H/Flood",
            server_streaming(|req: Request<Ask>| async move {
                let n = req.get_ref().len;
                let chunk = pattern(64 * 1024);
                let items = stream::iter((0..n).map(move |_| {
                    Ok(Blob {
                        data: chunk.clone(),
                    })
                }));
                Ok::<_, Status>(Response::new(items))
            })
            .codec(Proto),
        )
}

/// A JSON echo request body.
pub(crate) fn echo_body(text: &str) -> Vec<u8> {
    serde_json::to_vec(&EchoMsg::new(text)).expect("json")
}

/// A protobuf-encoded [`Ask`].
pub(crate) fn ask_body(len: u64) -> Vec<u8> {
    prost::Message::encode_to_vec(&Ask { len, millis: 0 })
}

// ---- a normal client, served while the hostile one misbehaves -----------------

/// A well-behaved client making echo calls on its own connection for as long
/// as the test runs; every reply must be right.
#[derive(Debug)]
pub(crate) struct Bystander {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<u64, String>>,
    addr: SocketAddr,
}

impl Bystander {
    /// Connects and starts calling.
    pub(crate) async fn start(addr: SocketAddr) -> Bystander {
        let channel = within(SOON, "bystander connect", endpoint(addr).connect())
            .await
            .expect("bystander connects");
        let mut client = Client::new(channel);
        let (stop, mut stopped) = oneshot::channel();
        // The first call completes before `start` returns: the bystander is
        // known to work before the hostile part begins.
        call_once(&mut client, 0)
            .await
            .expect("bystander's first call");
        let task = tokio::spawn(async move {
            let mut n = 1u64;
            loop {
                call_once(&mut client, n).await?;
                n += 1;
                // Pacing, so the bystander does not hog a 2-core machine.
                tokio::select! {
                    _ = &mut stopped => return Ok(n),
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
        });
        Bystander {
            stop: Some(stop),
            task,
            addr,
        }
    }

    /// Stops the calls; asserts they all succeeded, and that a new client
    /// is served too. Returns how many calls the bystander made.
    pub(crate) async fn finish(mut self) -> u64 {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let n = within(SOON, "bystander stops", &mut self.task)
            .await
            .expect("bystander task panicked")
            .unwrap_or_else(|e| panic!("the normal client was not served: {e}"));
        assert!(n >= 1, "the bystander made no call");
        let channel = within(SOON, "fresh client connect", endpoint(self.addr).connect())
            .await
            .expect("a fresh client connects after the hostile peer");
        let mut client = Client::new(channel);
        call_once(&mut client, u64::MAX)
            .await
            .expect("a fresh client is served after the hostile peer");
        n
    }
}

async fn call_once(client: &mut Client<trpc::Channel>, n: u64) -> Result<(), String> {
    let text = format!("bystander call {n}");
    let reply: EchoMsg = tokio::time::timeout(
        SOON,
        client.unary_message("echo.Echo/Say", EchoMsg::new(text.clone())),
    )
    .await
    .map_err(|_| format!("call {n} timed out"))?
    .map_err(|e| format!("call {n} failed: {e}"))?;
    if reply.message != text {
        return Err(format!("call {n}: wrong reply {:?}", reply.message));
    }
    Ok(())
}

// ---- raw connections that the server may close -----------------------------------

/// A raw connection whose reads end cleanly when the server closes.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) tcp: TcpStream,
    codec: FrameCodec,
    rbuf: BytesMut,
}

/// What the server did, as seen by a raw peer.
#[derive(Debug)]
pub(crate) enum Seen {
    /// A frame.
    Frame(Frame),
    /// End of the connection (EOF or reset).
    Closed,
}

impl Peer {
    /// Connects without sending anything.
    pub(crate) async fn connect(addr: SocketAddr) -> Peer {
        let tcp = within(SOON, "tcp connect", TcpStream::connect(addr))
            .await
            .expect("tcp connect");
        tcp.set_nodelay(true).expect("nodelay");
        Peer {
            tcp,
            codec: FrameCodec::new().max_message(64 << 20),
            rbuf: BytesMut::new(),
        }
    }

    /// Connects and exchanges SETTINGS.
    pub(crate) async fn handshake(addr: SocketAddr) -> Peer {
        let mut p = Peer::connect(addr).await;
        p.send(&crate::common::client_settings()).await;
        match p.next().await {
            Seen::Frame(f) if f.frame_type() == Some(FrameType::Settings) => {}
            other => panic!("expected the server's SETTINGS, got {other:?}"),
        }
        p
    }

    /// Writes `bytes` (a write error means the server already closed; the
    /// next read reports it).
    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        let _ = self.tcp.write_all(bytes).await;
    }

    /// The next frame, or `Closed`; panics after [`SOON`].
    pub(crate) async fn next(&mut self) -> Seen {
        within(SOON, "next frame or close", self.next_inner()).await
    }

    async fn next_inner(&mut self) -> Seen {
        loop {
            match self.codec.decode(&mut self.rbuf) {
                Ok(Some(Decoded::Frame(f))) => return Seen::Frame(f),
                Ok(Some(Decoded::TooLarge(h))) => panic!("server sent an oversized frame {h:?}"),
                Ok(None) => {}
                Err(e) => panic!("server sent undecodable bytes: {e}"),
            }
            match self.tcp.read_buf(&mut self.rbuf).await {
                Ok(0) | Err(_) => return Seen::Closed,
                Ok(_) => {}
            }
        }
    }

    /// Reads until the connection closes; returns every frame seen.
    pub(crate) async fn until_closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            match self.next().await {
                Seen::Frame(f) => frames.push(f),
                Seen::Closed => return frames,
            }
        }
    }

    /// Reads until the connection closes and returns the GOAWAY seen before
    /// (panics if there was none).
    pub(crate) async fn goaway_then_close(&mut self) -> Goaway {
        let frames = self.until_closed().await;
        let goaway = frames
            .iter()
            .rev()
            .find(|f| f.frame_type() == Some(FrameType::Goaway))
            .unwrap_or_else(|| panic!("no GOAWAY before the close; frames: {frames:?}"));
        Goaway::parse(&goaway.payload).expect("well-formed GOAWAY")
    }

    /// The next frame that ends a stream, as `(stream id, status code,
    /// message, :refused)`; panics if the connection closes first.
    pub(crate) async fn response(&mut self) -> (u32, u32, String, bool) {
        loop {
            let f = match self.next().await {
                Seen::Frame(f) => f,
                Seen::Closed => panic!("server closed the connection instead of answering"),
            };
            if !matches!(
                f.frame_type(),
                Some(FrameType::Headers | FrameType::Trailers)
            ) || !f.flags().contains(trpc::frame::Flags::END_STREAM)
            {
                continue;
            }
            let md = parse_metadata(&f.metadata);
            let get = |k: &str| {
                md.iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            };
            let status = get(":status")
                .expect(":status")
                .parse()
                .expect("numeric :status");
            let refused = get(":refused").as_deref() == Some("1");
            return (
                f.stream_id(),
                status,
                get(":message").unwrap_or_default(),
                refused,
            );
        }
    }
}

/// Asserts a GOAWAY's code and that its text contains `text`.
pub(crate) fn assert_goaway(g: &Goaway, code: GoawayCode, text: &str) {
    assert_eq!(g.code, code, "GOAWAY {g:?}");
    assert!(
        g.message.contains(text),
        "GOAWAY text {:?} should mention {text:?}",
        g.message
    );
}

/// A frame with raw header fields (any type byte, any lengths) and a body.
pub(crate) fn raw_frame(
    kind: u8,
    flags: u8,
    stream: u32,
    metadata: &[u8],
    payload: &[u8],
) -> Bytes {
    raw_frame_lens(
        kind,
        flags,
        stream,
        metadata.len() as u32,
        payload.len() as u32,
        &[metadata, payload].concat(),
    )
}

/// A frame header claiming `metadata_len` / `payload_len`, followed by `body`
/// whatever its real length.
pub(crate) fn raw_frame_lens(
    kind: u8,
    flags: u8,
    stream: u32,
    metadata_len: u32,
    payload_len: u32,
    body: &[u8],
) -> Bytes {
    let mut b = Vec::with_capacity(16 + body.len());
    b.extend_from_slice(&[0x74, 0x52, 1, kind, flags]);
    b.extend_from_slice(&metadata_len.to_be_bytes()[1..]);
    b.extend_from_slice(&stream.to_be_bytes());
    b.extend_from_slice(&payload_len.to_be_bytes());
    b.extend_from_slice(body);
    Bytes::from(b)
}

/// Frame type bytes.
pub(crate) mod kind {
    pub(crate) const SETTINGS: u8 = 0;
    pub(crate) const HEADERS: u8 = 1;
    pub(crate) const DATA: u8 = 2;
    pub(crate) const TRAILERS: u8 = 3;
    pub(crate) const CANCEL: u8 = 4;
    pub(crate) const PING: u8 = 5;
    pub(crate) const PONG: u8 = 6;
    pub(crate) const GOAWAY: u8 = 7;
    pub(crate) const WINDOW_UPDATE: u8 = 8;
}

// ---- waiting and measuring ---------------------------------------------------------

/// Waits until `cond` holds, checking every 10 ms, for at most `limit`: for
/// server-side state that has no event the test could await.
pub(crate) async fn until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not true within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// This process's resident memory, KiB (Linux).
pub(crate) fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// CPU time (user + system) of the calling thread, in clock ticks (Linux).
pub(crate) fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("/proc/thread-self/stat");
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Serialises the tests of one binary that measure process-wide memory.
pub(crate) static MEMORY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
