//! One raw-frame peer for every wire-level test: a trpc connection driven
//! frame by frame. As a client it talks to a real trpc server
//! ([`Peer::connect`], [`Peer::handshake`]); accepted by
//! [`crate::fake_server::FakeServer`] it plays the server to a real
//! `trpc::Channel`. It works over any byte stream (a TCP socket by default,
//! an in-memory pipe in paused-time tests).
//!
//! Writes ignore errors (a peer that already closed shows up as
//! [`Seen::Closed`] on the next read); every read is bounded by [`SOON`].

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;
use trpc::frame::{Decoded, Flags, Frame, FrameCodec, FrameType, Goaway, Settings};

use crate::frames::{client_settings, parse_metadata, ping};
use crate::wait::{within, SOON};

/// A raw trpc connection over `IO`.
#[derive(Debug)]
pub struct Peer<IO = TcpStream> {
    /// The byte stream (for shutdowns, raw reads, socket options).
    pub io: IO,
    codec: FrameCodec,
    rbuf: BytesMut,
}

/// What the other side did, as seen by a [`Peer`].
#[derive(Debug)]
pub enum Seen {
    /// A frame.
    Frame(Frame),
    /// End of the connection (EOF or reset).
    Closed,
}

/// The frame that ended a stream (HEADERS or TRAILERS with END_STREAM),
/// decoded: what a server answered.
#[derive(Debug)]
pub struct RawResponse {
    /// The stream.
    pub stream_id: u32,
    /// The frame's flags.
    pub flags: Flags,
    /// `:status`.
    pub status: u32,
    /// `:message` (empty when absent).
    pub message: String,
    /// True when `:refused` is `1`.
    pub refused: bool,
    /// Every metadata entry, in order.
    pub metadata: Vec<(String, Vec<u8>)>,
    /// The payload (the message of a unary answer).
    pub payload: Bytes,
}

/// A HEADERS frame opening a stream, decoded: what a client asked.
#[derive(Debug)]
pub struct RawRequest {
    /// The stream.
    pub stream_id: u32,
    /// The frame's flags.
    pub flags: Flags,
    /// `:path`.
    pub path: String,
    /// Every metadata entry, in order.
    pub metadata: Vec<(String, Vec<u8>)>,
    /// The payload (the first message, with flag MESSAGE).
    pub payload: Bytes,
}

impl RawRequest {
    /// The first value of metadata `key`, as text.
    pub fn get(&self, key: &str) -> Option<String> {
        get(&self.metadata, key)
    }
}

impl RawResponse {
    /// The first value of metadata `key`, as text.
    pub fn get(&self, key: &str) -> Option<String> {
        get(&self.metadata, key)
    }
}

fn get(metadata: &[(String, Vec<u8>)], key: &str) -> Option<String> {
    metadata
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

impl Peer<TcpStream> {
    /// Connects to `addr` (TCP only, nothing sent).
    pub async fn connect(addr: SocketAddr) -> Peer {
        let tcp = within(SOON, "tcp connect", TcpStream::connect(addr))
            .await
            .expect("tcp connect");
        tcp.set_nodelay(true).expect("nodelay");
        Peer::new(tcp)
    }

    /// Connects to `addr` and exchanges SETTINGS ([`Peer::exchange_settings`]).
    pub async fn handshake(addr: SocketAddr) -> Peer {
        let mut p = Peer::connect(addr).await;
        p.exchange_settings().await;
        p
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Peer<IO> {
    /// A peer over `io`, nothing sent yet. Its decoder accepts frames far
    /// over the protocol's default limits (256 MiB messages, the largest
    /// metadata blocks), so that it sees whatever the other side sends.
    pub fn new(io: IO) -> Peer<IO> {
        Peer {
            io,
            codec: FrameCodec::new()
                .max_message(256 << 20)
                .max_metadata(trpc::frame::MAX_METADATA_FIELD),
            rbuf: BytesMut::new(),
        }
    }

    /// As a client: sends [`client_settings`] and returns the server's
    /// SETTINGS, which must be the first frame it sends.
    pub async fn exchange_settings(&mut self) -> Settings {
        self.send(&client_settings()).await;
        self.read_settings().await
    }

    /// As a server: reads the client's SETTINGS (its first frame) and
    /// answers with `ours`; returns the client's.
    pub async fn accept_settings(&mut self, ours: Settings) -> Settings {
        let theirs = self.read_settings().await;
        self.send(&crate::frames::settings(ours)).await;
        theirs
    }

    /// Writes `bytes` in one write and flushes. A write error means the
    /// other side already closed: the next read reports it.
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.io.write_all(bytes).await;
        let _ = self.io.flush().await;
    }

    /// Writes `bytes` one byte per write, flushing each.
    pub async fn send_byte_by_byte(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.io.write_all(&[*b]).await.expect("write");
            self.io.flush().await.expect("flush");
        }
    }

    /// Reads exactly `n` raw bytes (after any already buffered).
    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        within(SOON, "read raw bytes", async {
            while self.rbuf.len() < n {
                let read = self.io.read_buf(&mut self.rbuf).await.expect("read");
                assert!(read > 0, "the connection closed");
            }
        })
        .await;
        self.rbuf.split_to(n).to_vec()
    }

    /// The exact bytes of the next frame (header, metadata and payload).
    pub async fn next_frame_bytes(&mut self) -> Vec<u8> {
        let mut frame = self.read_exact(16).await;
        let metadata_len = u32::from_be_bytes([0, frame[5], frame[6], frame[7]]) as usize;
        let payload_len = u32::from_be_bytes([frame[12], frame[13], frame[14], frame[15]]) as usize;
        frame.extend(self.read_exact(metadata_len + payload_len).await);
        frame
    }

    /// The next frame, or `Closed`; panics after [`SOON`], or if the bytes
    /// are not trpc frames.
    pub async fn next(&mut self) -> Seen {
        within(SOON, "next frame or close", self.next_unbounded()).await
    }

    /// [`Peer::next`] without the time limit (for paused-time tests, where
    /// the test bounds the wait itself).
    pub async fn next_unbounded(&mut self) -> Seen {
        loop {
            match self.codec.decode(&mut self.rbuf) {
                Ok(Some(Decoded::Frame(f))) => return Seen::Frame(f),
                Ok(Some(Decoded::TooLarge(h))) => panic!("unexpected oversized frame {h:?}"),
                Ok(None) => {}
                Err(e) => panic!("undecodable bytes: {e}"),
            }
            match self.io.read_buf(&mut self.rbuf).await {
                Ok(0) | Err(_) => return Seen::Closed,
                Ok(_) => {}
            }
        }
    }

    /// The next frame; panics if the connection closes first.
    pub async fn next_frame(&mut self) -> Frame {
        match self.next().await {
            Seen::Frame(f) => f,
            Seen::Closed => panic!("the connection closed"),
        }
    }

    /// The next frame of type `kind`, skipping others; panics if the
    /// connection closes first.
    pub async fn frame_of(&mut self, kind: FrameType) -> Frame {
        let mut skipped = Vec::new();
        loop {
            match self.next().await {
                Seen::Frame(f) if f.frame_type() == Some(kind) => return f,
                Seen::Frame(f) => skipped.push(f),
                Seen::Closed => panic!("closed before a {kind:?} frame; frames: {skipped:?}"),
            }
        }
    }

    /// Reads the other side's SETTINGS frame, which must come first.
    pub async fn read_settings(&mut self) -> Settings {
        let f = self.next_frame().await;
        assert_eq!(f.frame_type(), Some(FrameType::Settings), "first frame");
        Settings::parse(&f.payload).expect("well-formed SETTINGS")
    }

    /// Reads until the connection closes; returns every frame seen.
    pub async fn until_closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            match self.next().await {
                Seen::Frame(f) => frames.push(f),
                Seen::Closed => return frames,
            }
        }
    }

    /// Reads until the connection closes and returns the last GOAWAY seen
    /// before (panics if there was none).
    pub async fn goaway_then_close(&mut self) -> Goaway {
        let frames = self.until_closed().await;
        let goaway = frames
            .iter()
            .rev()
            .find(|f| f.frame_type() == Some(FrameType::Goaway))
            .unwrap_or_else(|| panic!("no GOAWAY before the close; frames: {frames:?}"));
        Goaway::parse(&goaway.payload).expect("well-formed GOAWAY")
    }

    /// As a client: the next frame that ends a stream (HEADERS or TRAILERS
    /// with END_STREAM and a `:status`), skipping connection frames and the
    /// rest of streamed answers. Panics if the connection closes, or if a
    /// GOAWAY or CANCEL comes instead.
    pub async fn response(&mut self) -> RawResponse {
        loop {
            let f = match self.next().await {
                Seen::Frame(f) => f,
                Seen::Closed => panic!("the server closed the connection instead of answering"),
            };
            match f.frame_type() {
                Some(FrameType::Headers | FrameType::Trailers)
                    if f.flags().contains(Flags::END_STREAM) =>
                {
                    let metadata = parse_metadata(&f.metadata);
                    let status = get(&metadata, ":status")
                        .expect("response without :status")
                        .parse()
                        .expect("numeric :status");
                    return RawResponse {
                        stream_id: f.stream_id(),
                        flags: f.flags(),
                        status,
                        message: get(&metadata, ":message").unwrap_or_default(),
                        refused: get(&metadata, ":refused").as_deref() == Some("1"),
                        metadata,
                        payload: f.payload,
                    };
                }
                Some(FrameType::Goaway | FrameType::Cancel) => {
                    panic!("expected a response, got {f:?}")
                }
                _ => {}
            }
        }
    }

    /// Collects `n` responses ([`Peer::response`]), sorted by stream id.
    pub async fn responses(&mut self, n: usize) -> Vec<RawResponse> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.response().await);
        }
        out.sort_by_key(|r| r.stream_id);
        out
    }

    /// As a server: the next HEADERS frame (a call), skipping connection
    /// frames and anything else; panics if the connection closes first.
    pub async fn request(&mut self) -> RawRequest {
        let f = self.frame_of(FrameType::Headers).await;
        let metadata = parse_metadata(&f.metadata);
        RawRequest {
            stream_id: f.stream_id(),
            flags: f.flags(),
            path: get(&metadata, ":path").unwrap_or_default(),
            metadata,
            payload: f.payload,
        }
    }

    /// A barrier: sends a PING carrying `[tag; 8]` and reads up to its PONG.
    /// The other side handles frames in order, so everything sent before
    /// has been processed. Returns the frames seen before the PONG.
    pub async fn barrier(&mut self, tag: u8) -> Vec<Frame> {
        self.send(&ping([tag; 8])).await;
        let mut seen = Vec::new();
        loop {
            match self.next().await {
                Seen::Frame(f)
                    if f.frame_type() == Some(FrameType::Pong) && f.payload[..] == [tag; 8] =>
                {
                    return seen
                }
                Seen::Frame(f) => seen.push(f),
                Seen::Closed => panic!("closed before the PONG; frames: {seen:?}"),
            }
        }
    }
}
