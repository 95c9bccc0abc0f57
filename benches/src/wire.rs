//! One load generator for every server that it can speak to: a wire-level
//! client that writes pre-encoded request frames and reads reply frames on
//! one blocking socket, in one thread, with no framework on the client side.
//!
//! The other cells pair each server with its own framework's client, so a
//! ratio there prices both ends (on one machine the client's CPU is taken
//! from the server's). Here every server meets the same client: the ratio
//! prices the servers alone — what an independent load generator measures.
//!
//! Closed loop, batching like the raw echo's client: `concurrency` calls are
//! written at the start; after each read, every call that read completed is
//! replaced by a new one, and all of them go out in one write. Each reply is
//! checked (trpc: `:status` 0 and the echoed message; raw: the echoed frame).
//!
//! Speaks [`System::Raw`] (its length-prefixed frames) and the trpc protocol
//! of docs/PROTOCOL.md (unary fast path: one HEADERS frame each way) to
//! [`System::Trpc`], [`System::TrpcInline`] and [`System::TrpcStd`] (with its
//! bearer token).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::procfs;
use crate::systems::{trpc, trpc_std, System};

/// The systems the wire generator speaks to.
pub(crate) const SYSTEMS: &[System] = &[
    System::Raw,
    System::Trpc,
    System::TrpcInline,
    System::TrpcStd,
];

/// What one run measured.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WireSample {
    /// Calls completed per second in the window.
    pub(crate) rps: f64,
    /// Server CPU time (user + system) per call, µs.
    pub(crate) server_cpu_us: f64,
    /// Generator CPU time (this thread) per call, µs.
    pub(crate) client_cpu_us: f64,
}

/// The request of one call and how to recognise its reply.
enum Proto {
    Raw,
    Trpc,
}

/// trpc frame header length.
const TRPC_HEADER: usize = 16;
/// Raw frame header: length, request id, kind.
const RAW_HEADER: usize = 4 + 8 + 1;
/// Reads take up to this much.
const READ_CHUNK: usize = 256 << 10;

/// A connection to one server with the frames of its protocol.
struct Wire {
    tcp: TcpStream,
    proto: Proto,
    /// One request without its id (filled in per call).
    template: Vec<u8>,
    /// Where the id goes in `template`.
    id_at: usize,
    /// The message the reply must carry.
    expect: Vec<u8>,
    next_id: u64,
    rbuf: Vec<u8>,
    /// Bytes of `rbuf` read but not yet parsed start here.
    start: usize,
    wbuf: Vec<u8>,
}

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// A metadata entry (PROTOCOL.md §4): key length, key, varint value length,
/// value.
fn put_entry(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    out.push(key.len() as u8);
    out.extend_from_slice(key.as_bytes());
    put_len(out, value);
}

/// `bytes` after its length as a LEB128 varint (metadata values and
/// protobuf length-delimited fields alike).
fn put_len(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut n = bytes.len();
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(bytes);
}

/// A frame header (PROTOCOL.md §1).
fn put_trpc_header(out: &mut Vec<u8>, kind: u8, flags: u8, meta: usize, stream: u32, len: usize) {
    out.extend_from_slice(&[0x74, 0x52, 1, kind, flags]);
    out.extend_from_slice(&(meta as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(&(len as u32).to_be_bytes());
}

/// `EchoMsg { payload }` encoded as protobuf: field 1, bytes.
fn echo_msg(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x0a];
    put_len(&mut out, payload);
    out
}

impl Wire {
    fn connect(system: System, addr: SocketAddr, payload: &[u8]) -> io::Result<Wire> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut wire = Wire {
            tcp,
            proto: Proto::Raw,
            template: Vec::new(),
            id_at: 4,
            expect: Vec::new(),
            next_id: 1,
            rbuf: vec![0; READ_CHUNK * 2],
            start: 0,
            wbuf: Vec::new(),
        };
        match system {
            System::Raw => {
                // u32 length | u64 id | u8 kind (ECHO = 0) | payload.
                let t = &mut wire.template;
                t.extend_from_slice(&((RAW_HEADER - 4 + payload.len()) as u32).to_be_bytes());
                t.extend_from_slice(&[0; 8]);
                t.push(0);
                t.extend_from_slice(payload);
                wire.expect = payload.to_vec();
            }
            System::Trpc | System::TrpcInline | System::TrpcStd => {
                wire.proto = Proto::Trpc;
                let mut meta = Vec::new();
                put_entry(&mut meta, ":path", trpc::ECHO.as_bytes());
                put_entry(&mut meta, "trpc-codec", b"proto");
                if system == System::TrpcStd {
                    let token = format!("Bearer {}", trpc_std::TOKEN);
                    put_entry(&mut meta, "authorization", token.as_bytes());
                }
                let msg = echo_msg(payload);
                // HEADERS, MESSAGE | END_STREAM: the unary fast path.
                put_trpc_header(&mut wire.template, 1, 0x03, meta.len(), 0, msg.len());
                wire.template.extend_from_slice(&meta);
                wire.template.extend_from_slice(&msg);
                wire.id_at = 8;
                wire.expect = msg;
                // The client's SETTINGS (no pairs: the defaults) opens the
                // connection.
                let mut settings = Vec::new();
                put_trpc_header(&mut settings, 0, 0, 0, 0, 0);
                wire.tcp.write_all(&settings)?;
            }
            other => return Err(bad(format!("the wire generator does not speak {other}"))),
        }
        Ok(wire)
    }

    /// Adds one call to the write buffer.
    fn push_call(&mut self) -> io::Result<()> {
        let at = self.wbuf.len() + self.id_at;
        self.wbuf.extend_from_slice(&self.template);
        let id = self.next_id;
        match self.proto {
            Proto::Raw => {
                self.wbuf[at..at + 8].copy_from_slice(&id.to_be_bytes());
                self.next_id += 1;
            }
            Proto::Trpc => {
                // Odd, increasing, below 2^31 (PROTOCOL.md §5.1).
                let id = u32::try_from(id)
                    .ok()
                    .filter(|&id| id < 1 << 31)
                    .ok_or_else(|| bad("out of stream ids"))?;
                self.wbuf[at..at + 4].copy_from_slice(&id.to_be_bytes());
                self.next_id += 2;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.write_all(&self.wbuf)?;
        self.wbuf.clear();
        Ok(())
    }

    /// Reads once; returns the calls the complete frames read so far ended.
    fn read_replies(&mut self) -> io::Result<u64> {
        if self.rbuf.len() - self.start < READ_CHUNK {
            // Move the partial frame to the front.
            let end = self.start;
            self.rbuf.copy_within(end.., 0);
            self.rbuf.truncate(self.rbuf.len() - end);
            self.start = 0;
        }
        let filled = self.start;
        let room = self.rbuf.len() - filled;
        if room < READ_CHUNK {
            self.rbuf.resize(filled + READ_CHUNK, 0);
        }
        let n = self.tcp.read(&mut self.rbuf[filled..])?;
        if n == 0 {
            return Err(bad("the server closed the connection"));
        }
        let end = filled + n;
        let (done, used) = match self.proto {
            Proto::Raw => self.parse_raw(end)?,
            Proto::Trpc => self.parse_trpc(end)?,
        };
        // Keep the unparsed tail at the front of the buffer.
        self.rbuf.copy_within(used..end, 0);
        self.start = end - used;
        Ok(done)
    }

    fn parse_raw(&self, end: usize) -> io::Result<(u64, usize)> {
        let (mut at, mut done) = (0, 0);
        while end - at >= 4 {
            let len = u32::from_be_bytes([
                self.rbuf[at],
                self.rbuf[at + 1],
                self.rbuf[at + 2],
                self.rbuf[at + 3],
            ]) as usize;
            if end - at < 4 + len {
                break;
            }
            let frame = &self.rbuf[at..at + 4 + len];
            if len < RAW_HEADER - 4 || frame[RAW_HEADER..] != self.expect[..] {
                return Err(bad("raw: the echo differs from the request"));
            }
            done += 1;
            at += 4 + len;
        }
        Ok((done, at))
    }

    fn parse_trpc(&self, end: usize) -> io::Result<(u64, usize)> {
        let (mut at, mut done) = (0, 0);
        while end - at >= TRPC_HEADER {
            let h = &self.rbuf[at..at + TRPC_HEADER];
            if h[0] != 0x74 || h[1] != 0x52 {
                return Err(bad("trpc: not a frame"));
            }
            let meta = u32::from_be_bytes([0, h[5], h[6], h[7]]) as usize;
            let len = u32::from_be_bytes([h[12], h[13], h[14], h[15]]) as usize;
            let total = TRPC_HEADER + meta + len;
            if end - at < total {
                break;
            }
            let (kind, flags) = (h[3], h[4]);
            let block = &self.rbuf[at + TRPC_HEADER..at + TRPC_HEADER + meta];
            let body = &self.rbuf[at + TRPC_HEADER + meta..at + total];
            match kind {
                // SETTINGS, PONG, WINDOW_UPDATE: nothing to do.
                0 | 6 | 8 => {}
                // HEADERS ending the call: the fast path's only frame.
                1 if flags & 0x01 != 0 => {
                    let status = status_of(block);
                    if status != Some(&b"0"[..]) || body != &self.expect[..] {
                        return Err(bad(format!(
                            "trpc: the call failed or the reply differs (status {:?})",
                            status.map(String::from_utf8_lossy)
                        )));
                    }
                    done += 1;
                }
                7 => return Err(bad("trpc: GOAWAY")),
                other => return Err(bad(format!("trpc: unexpected frame type {other}"))),
            }
            at += total;
        }
        Ok((done, at))
    }
}

/// The value of `:status` in a metadata block.
fn status_of(mut block: &[u8]) -> Option<&[u8]> {
    while let Some((&klen, rest)) = block.split_first() {
        let (key, rest) = rest.split_at_checked(klen as usize)?;
        let (mut vlen, mut shift, mut i) = (0usize, 0, 0);
        loop {
            let b = *rest.get(i)?;
            vlen |= ((b & 0x7f) as usize) << shift;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let (value, rest) = rest[i..].split_at_checked(vlen)?;
        if key == b":status" {
            return Some(value);
        }
        block = rest;
    }
    None
}

/// Drives `system`'s server at `addr` with `concurrency` calls of `payload`
/// in flight: `warmup`, then a measured `window`. `server` is the server's
/// process id, for its CPU time.
pub(crate) fn run(
    system: System,
    addr: SocketAddr,
    server: Option<u32>,
    payload: &[u8],
    concurrency: usize,
    warmup: Duration,
    window: Duration,
) -> Result<WireSample, String> {
    let fail = |e: io::Error| format!("{system} (wire): {e}");
    let mut wire = Wire::connect(system, addr, payload).map_err(fail)?;
    for _ in 0..concurrency {
        wire.push_call().map_err(fail)?;
    }
    wire.flush().map_err(fail)?;
    let began = Instant::now();
    let mut measuring: Option<(Instant, u64, u64)> = None;
    let mut calls = 0u64;
    loop {
        let done = wire.read_replies().map_err(fail)?;
        calls += done;
        let now = Instant::now();
        match measuring {
            None if now - began >= warmup => {
                let ticks = server.map(procfs::cpu_ticks).transpose()?.unwrap_or(0);
                measuring = Some((now, ticks, procfs::thread_cpu_ticks()?));
                calls = 0;
            }
            Some((from, ticks, cpu)) if now - from >= window => {
                let secs = (now - from).as_secs_f64();
                let server_ticks = server.map(procfs::cpu_ticks).transpose()?.unwrap_or(0);
                let own_ticks = procfs::thread_cpu_ticks()?;
                let tick = 1.0 / procfs::clock_ticks() as f64;
                let per_call = |from: u64, to: u64| {
                    to.saturating_sub(from) as f64 * tick * 1e6 / calls.max(1) as f64
                };
                return Ok(WireSample {
                    rps: calls as f64 / secs,
                    server_cpu_us: per_call(ticks, server_ticks),
                    client_cpu_us: per_call(cpu, own_ticks),
                });
            }
            _ => {}
        }
        for _ in 0..done {
            wire.push_call().map_err(fail)?;
        }
        if done > 0 {
            wire.flush().map_err(fail)?;
        }
    }
}
