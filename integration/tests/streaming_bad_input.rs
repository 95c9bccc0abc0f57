//! Misbehaving stream peers, driven with raw frames: each case gets the
//! reaction docs/PROTOCOL.md describes, and the connection and other calls
//! carry on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use tokio::time::timeout;
use tokio_util::codec::Decoder;
use trpc::codec::Json;
use trpc::frame::{put_header, Decoded, Flags, Frame, FrameCodec, FrameType, Goaway, Settings};
use trpc::server::{client_streaming, server_streaming, unary, Router, Server};
use trpc::{Code, Request, Response, Status, Streaming};

const LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Num {
    n: u64,
}

struct Probe {
    dropped: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    started: Notify,
}

struct Guard(Option<oneshot::Sender<()>>);
impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

async fn start(
    stream_window: u32,
    idle: Duration,
) -> (SocketAddr, Arc<Probe>, oneshot::Receiver<()>) {
    let (tx, rx) = oneshot::channel();
    let probe = Arc::new(Probe {
        dropped: std::sync::Mutex::new(Some(tx)),
        started: Notify::new(),
    });
    let p = probe.clone();
    let count = move |req: Request<Streaming<Num>>| {
        let p = p.clone();
        async move {
            let _guard = Guard(p.dropped.lock().unwrap().take());
            p.started.notify_one();
            let mut s = req.into_inner();
            let mut n = 0;
            while s.message().await?.is_some() {
                n += 1;
            }
            Ok::<_, Status>(Response::new(Num { n }))
        }
    };
    let forever = |_req: Request<Num>| async move {
        let s = stream::unfold(0u64, |n| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Some((Ok(Num { n }), n + 1))
        });
        Ok::<_, Status>(Response::new(s))
    };
    let ping = |req: Request<Num>| async move { Ok::<_, Status>(Response::new(req.into_inner())) };
    let router = Router::new()
        .route("t.S/Count", client_streaming(count).codec(Json))
        .route("t.S/Forever", server_streaming(forever))
        .route("t.S/Ping", unary(ping));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::builder()
        .stream_window(stream_window)
        .stream_idle_timeout(idle);
    tokio::spawn(server.serve_with_listener(listener, router, std::future::pending()));
    (addr, probe, rx)
}

/// A raw trpc client: frames in, frames out.
struct Raw {
    io: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
}

fn block(entries: &[(&str, &str)]) -> Bytes {
    let mut b = BytesMut::new();
    for (k, v) in entries {
        b.put_u8(k.len() as u8);
        b.put_slice(k.as_bytes());
        b.put_u8(v.len() as u8); // short values: one-byte varint
        b.put_slice(v.as_bytes());
    }
    b.freeze()
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let mut io = TcpStream::connect(addr).await.unwrap();
        let mut out = BytesMut::new();
        Settings::default().encode(&mut out);
        io.write_all(&out).await.unwrap();
        let mut raw = Raw {
            io,
            buf: BytesMut::new(),
            codec: FrameCodec::new(),
        };
        let first = raw.next().await.expect("server SETTINGS");
        assert_eq!(first.frame_type(), Some(FrameType::Settings));
        raw
    }

    async fn send(
        &mut self,
        kind: FrameType,
        flags: Flags,
        id: u32,
        metadata: Bytes,
        payload: &[u8],
    ) {
        let mut out = BytesMut::new();
        put_header(&mut out, kind, flags, id, metadata.len(), payload.len());
        out.put_slice(&metadata);
        out.put_slice(payload);
        self.io.write_all(&out).await.unwrap();
    }

    async fn open(&mut self, id: u32, method: &str, end: bool, first: Option<&[u8]>) {
        let flags = Flags::NONE
            .with_if(Flags::END_STREAM, end)
            .with_if(Flags::MESSAGE, first.is_some());
        self.send(
            FrameType::Headers,
            flags,
            id,
            block(&[(":path", method)]),
            first.unwrap_or(&[]),
        )
        .await;
    }

    async fn data(&mut self, id: u32, payload: &[u8], end: bool) {
        let flags = Flags::NONE.with_if(Flags::END_STREAM, end);
        self.send(FrameType::Data, flags, id, Bytes::new(), payload)
            .await;
    }

    async fn window_update(&mut self, id: u32, inc: u32) {
        self.send(
            FrameType::WindowUpdate,
            Flags::NONE,
            id,
            Bytes::new(),
            &inc.to_be_bytes(),
        )
        .await;
    }

    /// The next frame, or None at EOF.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(Decoded::Frame(f))) => return Some(f),
                Ok(Some(Decoded::TooLarge(h))) => panic!("unexpected oversized frame {h:?}"),
                Ok(None) => {}
                Err(e) => panic!("bad frame from server: {e}"),
            }
            let n = timeout(LIMIT, self.io.read_buf(&mut self.buf))
                .await
                .expect("server went silent")
                .unwrap();
            if n == 0 {
                return None;
            }
        }
    }

    /// Frames until one on `id` ends the stream; returns its `:status`.
    async fn status_of(&mut self, id: u32) -> (Code, Vec<Frame>) {
        let mut seen = Vec::new();
        loop {
            let f = self
                .next()
                .await
                .expect("connection closed before the status");
            if f.stream_id() != id {
                continue;
            }
            let kind = f.frame_type();
            let end = f.flags().contains(Flags::END_STREAM);
            if kind == Some(FrameType::Cancel) {
                let code = u32::from_be_bytes(f.payload[..4].try_into().unwrap());
                return (Code::from_u32(code), seen);
            }
            if end && matches!(kind, Some(FrameType::Headers | FrameType::Trailers)) {
                let text = String::from_utf8_lossy(&f.metadata).into_owned();
                let code = text
                    .split(":status")
                    .nth(1)
                    .and_then(|rest| {
                        rest.get(1..).map(|r| {
                            r.chars()
                                .take_while(char::is_ascii_digit)
                                .collect::<String>()
                        })
                    })
                    .and_then(|d| d.parse().ok())
                    .map(Code::from_u32)
                    .expect("end frame without :status");
                seen.push(f);
                return (code, seen);
            }
            seen.push(f);
        }
    }

    async fn ping_call(&mut self, id: u32) {
        self.open(id, "t.S/Ping", true, Some(b"{\"n\":7}")).await;
        let (code, frames) = self.status_of(id).await;
        assert_eq!(code, Code::Ok);
        assert_eq!(&frames.last().unwrap().payload[..], b"{\"n\":7}");
    }
}

#[tokio::test]
async fn frames_for_unknown_streams_are_ignored() {
    let (addr, _, _) = start(1 << 20, Duration::from_secs(60)).await;
    let mut raw = Raw::connect(addr).await;
    raw.data(101, b"{}", false).await;
    raw.send(
        FrameType::Trailers,
        Flags::END_STREAM,
        103,
        Bytes::new(),
        &[],
    )
    .await;
    raw.window_update(105, 1000).await;
    raw.send(
        FrameType::Cancel,
        Flags::NONE,
        107,
        Bytes::new(),
        &1u32.to_be_bytes(),
    )
    .await;
    raw.send(FrameType::Data, Flags::NONE, 0, Bytes::new(), b"x")
        .await;
    // Stream ids above are higher than 1, so open the next call above them.
    raw.ping_call(109).await;
}

#[tokio::test]
async fn data_after_the_end_of_a_stream_is_ignored() {
    let (addr, _, _) = start(1 << 20, Duration::from_secs(60)).await;
    let mut raw = Raw::connect(addr).await;
    raw.open(1, "t.S/Count", false, None).await;
    raw.data(1, b"{\"n\":1}", false).await;
    raw.data(1, b"{\"n\":2}", true).await;
    raw.data(1, b"{\"n\":3}", false).await;
    raw.data(1, b"{\"n\":4}", true).await;
    let (code, frames) = raw.status_of(1).await;
    assert_eq!(code, Code::Ok);
    assert_eq!(&frames.last().unwrap().payload[..], b"{\"n\":2}");
    raw.ping_call(3).await;
}

#[tokio::test]
async fn a_stream_window_update_that_overflows_cancels_only_that_stream() {
    let (addr, _, _) = start(1 << 20, Duration::from_secs(60)).await;
    let mut raw = Raw::connect(addr).await;
    raw.open(1, "t.S/Forever", true, Some(b"{\"n\":0}")).await;
    raw.window_update(1, 0x7fff_ffff).await;
    let (code, _) = raw.status_of(1).await;
    assert_eq!(code, Code::ResourceExhausted);
    raw.ping_call(3).await;
}

#[tokio::test]
async fn a_connection_window_update_that_overflows_is_a_connection_error() {
    let (addr, _, _) = start(1 << 20, Duration::from_secs(60)).await;
    let mut raw = Raw::connect(addr).await;
    raw.window_update(0, 0x7fff_ffff).await;
    let mut goaway = None;
    while let Some(f) = raw.next().await {
        if f.frame_type() == Some(FrameType::Goaway) {
            goaway = Goaway::parse(&f.payload);
        }
    }
    let goaway = goaway.expect("GOAWAY before close");
    assert_eq!(goaway.code, trpc::frame::GoawayCode::FlowControlError);
    // Other connections are unaffected.
    Raw::connect(addr).await.ping_call(1).await;
}

#[tokio::test]
async fn sending_past_the_stream_window_cancels_that_stream() {
    let (addr, _, _) = start(64, Duration::from_secs(60)).await;
    let mut raw = Raw::connect(addr).await;
    raw.open(1, "t.S/Count", false, None).await;
    let msg = format!("{{\"n\":{}}}", "1".repeat(100));
    // The first message drives the 64-byte window negative (allowed); the
    // next one, sent without waiting for credit, violates it.
    raw.data(1, msg.as_bytes(), false).await;
    raw.data(1, msg.as_bytes(), false).await;
    let (code, _) = raw.status_of(1).await;
    assert_eq!(code, Code::ResourceExhausted);
    raw.ping_call(3).await;
}

#[tokio::test]
async fn a_stream_the_client_never_ends_times_out() {
    let (addr, probe, dropped) = start(1 << 20, Duration::from_millis(300)).await;
    let mut raw = Raw::connect(addr).await;
    raw.open(1, "t.S/Count", false, None).await;
    raw.data(1, b"{\"n\":1}", false).await;
    timeout(LIMIT, probe.started.notified()).await.unwrap();
    let started = tokio::time::Instant::now();
    let (code, _) = raw.status_of(1).await;
    assert_eq!(code, Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(5));
    timeout(LIMIT, dropped).await.unwrap().unwrap();
    raw.ping_call(3).await;
}

#[tokio::test]
async fn a_client_that_disappears_mid_stream_drops_the_handler() {
    let (addr, probe, dropped) = start(1 << 20, Duration::from_secs(60)).await;
    let mut raw = Raw::connect(addr).await;
    raw.open(1, "t.S/Count", false, None).await;
    raw.data(1, b"{\"n\":1}", false).await;
    timeout(LIMIT, probe.started.notified()).await.unwrap();
    drop(raw);
    timeout(LIMIT, dropped)
        .await
        .expect("handler kept running after its client vanished")
        .unwrap();
    Raw::connect(addr).await.ping_call(1).await;
}

#[tokio::test]
async fn a_server_that_vanishes_mid_stream_fails_the_client_stream() {
    // A fake server: handshake, answer the call with HEADERS and one DATA,
    // then drop the connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut io, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        let mut codec = FrameCodec::new();
        let mut out = BytesMut::new();
        Settings::default().encode(&mut out);
        io.write_all(&out).await.unwrap();
        loop {
            io.read_buf(&mut buf).await.unwrap();
            let mut opened = None;
            while let Ok(Some(Decoded::Frame(f))) = codec.decode(&mut buf) {
                if f.frame_type() == Some(FrameType::Headers) {
                    opened = Some(f.stream_id());
                }
            }
            if let Some(id) = opened {
                let mut out = BytesMut::new();
                put_header(&mut out, FrameType::Headers, Flags::NONE, id, 0, 0);
                put_header(&mut out, FrameType::Data, Flags::NONE, id, 0, 7);
                out.put_slice(b"{\"n\":1}");
                io.write_all(&out).await.unwrap();
                return; // drops the socket
            }
        }
    });
    let channel = trpc::Endpoint::new(format!("tcp://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = trpc::Client::new(channel);
    let mut s = client
        .server_streaming::<Num, Num>("t.S/Forever", Request::new(Num { n: 0 }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        timeout(LIMIT, s.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .n,
        1
    );
    let err = timeout(LIMIT, s.message()).await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
}
