//! A raw HTTP/2 peer for tests (gRPC) that must send what no well-behaved client
//! would: frames are built by hand (RFC 9113 §4.1: u24 length, type, flags,
//! u32 stream id) and header blocks with HPACK literals (RFC 7541 §6.2.2,
//! no Huffman), so floods and oversized blocks are exactly what they say.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame type DATA.
pub const DATA: u8 = 0;
/// Frame type HEADERS.
pub const HEADERS: u8 = 1;
/// Frame type RST_STREAM.
pub const RST_STREAM: u8 = 3;
/// Frame type SETTINGS.
pub const SETTINGS: u8 = 4;
/// Frame type PING.
pub const PING: u8 = 6;
/// Frame type GOAWAY.
pub const GOAWAY: u8 = 7;
/// Frame type WINDOW_UPDATE.
pub const WINDOW_UPDATE: u8 = 8;
/// Frame type CONTINUATION.
pub const CONTINUATION: u8 = 9;

/// Flag END_STREAM.
pub const END_STREAM: u8 = 0x1;
/// Flag ACK (SETTINGS, PING).
pub const ACK: u8 = 0x1;
/// Flag END_HEADERS.
pub const END_HEADERS: u8 = 0x4;

// HTTP/2 error codes used in assertions.

/// Error code CANCEL.
pub const CANCEL: u32 = 0x8;
/// Error code REFUSED_STREAM.
pub const REFUSED_STREAM: u32 = 0x7;
/// Error code ENHANCE_YOUR_CALM.
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// A frame as read from the server.
#[derive(Debug, Clone)]
pub struct RawFrame {
    /// The frame type.
    pub kind: u8,
    /// The flags.
    pub flags: u8,
    /// The stream id.
    pub stream: u32,
    /// The payload.
    pub payload: Bytes,
}

/// A GOAWAY frame's fields.
#[derive(Debug, Clone)]
pub struct GoAway {
    /// The last stream id.
    pub last_stream: u32,
    /// The error code.
    pub error_code: u32,
    /// The debug data.
    pub debug: Bytes,
}

/// Appends a frame.
pub fn frame(out: &mut BytesMut, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.put_slice(&len.to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream & 0x7fff_ffff);
    out.put_slice(payload);
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header field as a literal without indexing, new name (RFC 7541 §6.2.2).
pub fn hpack_literal(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.push(0x00);
    hpack_int(out, 0, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

/// The header block of a gRPC call to `path`.
pub fn grpc_request(path: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for (k, v) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "test"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        hpack_literal(&mut b, k, v.as_bytes());
    }
    b
}

/// A length-prefixed gRPC message.
pub fn grpc_message(payload: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8];
    m.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// A raw connection to an HTTP/2 server.
#[derive(Debug)]
pub struct H2Peer {
    /// The socket.
    pub tcp: TcpStream,
    rbuf: BytesMut,
}

impl H2Peer {
    /// Connects to `addr` (nothing sent).
    pub async fn connect(addr: SocketAddr) -> H2Peer {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        H2Peer {
            tcp,
            rbuf: BytesMut::new(),
        }
    }

    /// Sends raw bytes; false when the server has closed the connection.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.tcp.write_all(bytes).await.is_ok()
    }

    /// Sends the preface and an empty SETTINGS.
    pub async fn handshake(&mut self) {
        let mut out = BytesMut::from(PREFACE);
        frame(&mut out, SETTINGS, 0, 0, &[]);
        assert!(self.send(&out).await, "send the preface");
    }

    /// Opens stream `id` with a gRPC call to `path` and one message, ending
    /// the request stream.
    pub async fn call(&mut self, id: u32, path: &str, msg: &[u8]) -> bool {
        let mut out = BytesMut::new();
        frame(&mut out, HEADERS, END_HEADERS, id, &grpc_request(path));
        frame(&mut out, DATA, END_STREAM, id, &grpc_message(msg));
        self.send(&out).await
    }

    /// The next frame, `None` at EOF or when `deadline` passes.
    pub async fn read_frame(&mut self, deadline: Instant) -> Option<RawFrame> {
        loop {
            if self.rbuf.len() >= 9 {
                let len =
                    u32::from_be_bytes([0, self.rbuf[0], self.rbuf[1], self.rbuf[2]]) as usize;
                if self.rbuf.len() >= 9 + len {
                    let kind = self.rbuf[3];
                    let flags = self.rbuf[4];
                    let stream = u32::from_be_bytes([
                        self.rbuf[5],
                        self.rbuf[6],
                        self.rbuf[7],
                        self.rbuf[8],
                    ]) & 0x7fff_ffff;
                    self.rbuf.advance(9);
                    let payload = self.rbuf.split_to(len).freeze();
                    return Some(RawFrame {
                        kind,
                        flags,
                        stream,
                        payload,
                    });
                }
            }
            let n = tokio::time::timeout_at(deadline, self.tcp.read_buf(&mut self.rbuf)).await;
            match n {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    /// Reads frames until a GOAWAY (panics at EOF or after 10 s without one).
    pub async fn next_goaway(&mut self) -> GoAway {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.read_frame(deadline).await {
                Some(f) if f.kind == GOAWAY => return goaway(&f),
                Some(_) => {}
                None => panic!("connection ended without a GOAWAY"),
            }
        }
    }

    /// Reads until EOF or `limit`; returns the frames seen and whether the
    /// connection ended.
    pub async fn drain(&mut self, limit: Duration) -> (Vec<RawFrame>, bool) {
        let deadline = Instant::now() + limit;
        let mut frames = Vec::new();
        loop {
            match self.read_frame(deadline).await {
                Some(f) => frames.push(f),
                None => return (frames, Instant::now() < deadline),
            }
        }
    }
}

/// The fields of a GOAWAY frame.
pub fn goaway(f: &RawFrame) -> GoAway {
    let p = &f.payload;
    GoAway {
        last_stream: u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff,
        error_code: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        debug: p.slice(8..),
    }
}

/// The error code of an RST_STREAM frame.
pub fn rst_code(f: &RawFrame) -> u32 {
    let p = &f.payload;
    u32::from_be_bytes([p[0], p[1], p[2], p[3]])
}
