//! The limit: a raw echo over length-prefixed frames, with request ids
//! multiplexed on one connection, built with the same tricks trpc uses so
//! that nothing an RPC framework adds is left out of the comparison but the
//! framework itself.
//!
//! Frame: `u32 length | u64 request id | u8 kind | payload` (length counts
//! what follows it). Kinds: [`ECHO`] (the server sends the frame back),
//! [`DOWNLOAD`] (payload `u64 total | u32 chunk`: the server streams
//! [`CHUNK`] frames, then [`END`]).
//!
//! * **Server**: one task per connection reads as much as the socket has,
//!   answers every complete frame into one write buffer (an echo is one copy
//!   of the frame), and writes the batch with one syscall. Frames over 64 KiB
//!   are written from the read buffer without a copy.
//! * **Client**: callers encode their frame straight into the connection's
//!   write buffer and wait in a slot of a slab (no channel, no oneshot, no
//!   allocation per call); a writer task writes whatever has accumulated with
//!   one syscall, and — like trpc's client — after a read that completed more
//!   than one call it waits one scheduling round first, so the callers that
//!   read woke can add their next frames to the same write. A reader task
//!   completes every call of a read under one lock and wakes the callers
//!   after releasing it. Replies are slices of the read buffer. Payloads of
//!   16 KiB or more are queued as they are, not copied.

use std::future::poll_fn;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use slab::Slab;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::MAX_MESSAGE;

/// Echo this frame back.
const ECHO: u8 = 0;
/// Stream bytes back.
const DOWNLOAD: u8 = 1;
/// One message of a download.
const CHUNK: u8 = 2;
/// The download is complete.
const END: u8 = 3;
/// Length prefix + request id + kind.
const HEADER: usize = 4 + 8 + 1;
/// Read at least this much at a time.
const READ_CHUNK: usize = 64 << 10;
/// Payloads from this size on are queued, not copied into the write buffer.
const NO_COPY: usize = 16 << 10;

fn bad_frame(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

fn put_header(buf: &mut BytesMut, id: u64, kind: u8, payload_len: usize) {
    buf.put_u32((HEADER - 4 + payload_len) as u32);
    buf.put_u64(id);
    buf.put_u8(kind);
}

/// The next complete frame in `buf` (length prefix included), if any; makes
/// room for the rest of a partial one.
fn next_frame(buf: &mut BytesMut) -> io::Result<Option<BytesMut>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = (&buf[..4]).get_u32() as usize;
    if !(HEADER - 4..=MAX_MESSAGE + HEADER).contains(&len) {
        return Err(bad_frame("bad frame length"));
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    Ok(Some(buf.split_to(4 + len)))
}

/// Reads more into `buf`; `false` at end of stream. Buffers start small (an
/// idle connection holds little) and grow to [`READ_CHUNK`] once busy.
async fn fill(rd: &mut (impl AsyncReadExt + Unpin), buf: &mut BytesMut) -> io::Result<bool> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_CHUNK);
    }
    Ok(rd.read_buf(buf).await? > 0)
}

/// Serves raw echo connections forever.
pub(crate) async fn serve(listener: TcpListener) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                eprintln!("raw: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            if let Err(e) = serve_conn(tcp).await {
                eprintln!("raw: connection closed: {e}");
            }
        });
    }
}

async fn serve_conn(mut tcp: TcpStream) -> io::Result<()> {
    let mut rbuf = BytesMut::with_capacity(4096);
    let mut wbuf = BytesMut::new();
    while fill(&mut tcp, &mut rbuf).await? {
        // Answer every frame already received, then write all replies at once.
        while let Some(frame) = next_frame(&mut rbuf)? {
            match frame[12] {
                ECHO if frame.len() >= READ_CHUNK => {
                    tcp.write_all(&wbuf).await?;
                    wbuf.clear();
                    tcp.write_all(&frame).await?;
                }
                ECHO => wbuf.extend_from_slice(&frame),
                DOWNLOAD => {
                    tcp.write_all(&wbuf).await?;
                    wbuf.clear();
                    download(&mut tcp, &frame, &mut wbuf).await?;
                }
                _ => return Err(bad_frame("unknown frame kind")),
            }
        }
        if !wbuf.is_empty() {
            tcp.write_all(&wbuf).await?;
            wbuf.clear();
        }
    }
    Ok(())
}

/// Streams the chunks a DOWNLOAD frame asks for, then END.
async fn download(tcp: &mut TcpStream, frame: &[u8], head: &mut BytesMut) -> io::Result<()> {
    let mut f = &frame[4..];
    let id = f.get_u64();
    f.advance(1);
    if f.len() < 12 {
        return Err(bad_frame("short DOWNLOAD request"));
    }
    let total = f.get_u64() as usize;
    let chunk = (f.get_u32() as usize).clamp(1, MAX_MESSAGE);
    let data = crate::messages::payload(chunk);
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk);
        put_header(head, id, CHUNK, n);
        tcp.write_all(head).await?;
        head.clear();
        tcp.write_all(&data[..n]).await?;
        left -= n;
    }
    put_header(head, id, END, 0);
    tcp.write_all(head).await?;
    head.clear();
    Ok(())
}

/// A call waiting for its reply.
#[derive(Debug)]
enum Slot {
    /// No reply yet; the caller's waker once it has polled.
    Waiting(Option<Waker>),
    /// The reply's payload.
    Done(Bytes),
    /// The caller went away; the reply frees the slot.
    Abandoned,
    /// A download: where its chunks go (dropped at END).
    Stream(mpsc::Sender<Bytes>),
}

/// What callers, the reader and the writer share.
#[derive(Debug)]
struct State {
    calls: Slab<Slot>,
    /// Frames not yet handed to the writer.
    wbuf: BytesMut,
    /// Big payloads (and the small frames before them), in order.
    queued: Vec<Bytes>,
    writer: Option<Waker>,
    /// Calls the last read completed: the writer waits a round after a batch.
    woken_by_last_read: usize,
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A multiplexing client on one connection; clones share it.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    shared: Arc<Shared>,
}

/// Frees a caller's slot if it is dropped before its reply.
struct SlotGuard<'a> {
    shared: &'a Shared,
    key: Option<usize>,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let mut st = self.shared.lock();
            if let Some(slot) = st.calls.get_mut(key) {
                *slot = Slot::Abandoned;
            }
        }
    }
}

impl Client {
    /// Connects and starts the writer and reader tasks.
    pub(crate) async fn connect(addr: SocketAddr) -> io::Result<Client> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (r, w) = tcp.into_split();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                calls: Slab::with_capacity(1024),
                wbuf: BytesMut::with_capacity(READ_CHUNK),
                queued: Vec::new(),
                writer: None,
                woken_by_last_read: 0,
                closed: false,
            }),
        });
        tokio::spawn(writer(shared.clone(), w));
        tokio::spawn(reader(shared.clone(), r));
        Ok(Client { shared })
    }

    /// Registers a call and queues its frame; returns its slot.
    fn start(
        &self,
        kind: u8,
        payload: &[u8],
        big: Option<&Bytes>,
        slot: Slot,
    ) -> Result<usize, String> {
        let mut st = self.shared.lock();
        if st.closed {
            return Err("raw: connection closed".into());
        }
        let key = st.calls.insert(slot);
        let len = big.map_or(payload.len(), Bytes::len);
        put_header(&mut st.wbuf, key as u64, kind, len);
        match big {
            Some(b) => {
                let small = st.wbuf.split().freeze();
                st.queued.push(small);
                st.queued.push(b.clone());
            }
            None => st.wbuf.extend_from_slice(payload),
        }
        let writer = st.writer.take();
        drop(st);
        if let Some(w) = writer {
            w.wake();
        }
        Ok(key)
    }

    /// One echo call; returns the reply payload.
    pub(crate) async fn echo(&self, payload: &Bytes) -> Result<Bytes, String> {
        let key = if payload.len() >= NO_COPY {
            self.start(ECHO, &[], Some(payload), Slot::Waiting(None))?
        } else {
            self.start(ECHO, payload, None, Slot::Waiting(None))?
        };
        let mut guard = SlotGuard {
            shared: &self.shared,
            key: Some(key),
        };
        let reply = poll_fn(|cx| {
            let mut st = self.shared.lock();
            let closed = st.closed;
            match st.calls.get_mut(key) {
                Some(Slot::Waiting(w)) if !closed => {
                    match w {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        _ => *w = Some(cx.waker().clone()),
                    }
                    Poll::Pending
                }
                Some(Slot::Done(_)) => match st.calls.remove(key) {
                    Slot::Done(b) => Poll::Ready(Ok(b)),
                    _ => Poll::Ready(Err("raw: lost reply".to_string())),
                },
                _ => {
                    st.calls.try_remove(key);
                    Poll::Ready(Err("raw: connection closed".to_string()))
                }
            }
        })
        .await;
        guard.key = None;
        reply
    }

    /// Downloads `total` bytes in `chunk`-byte messages; returns the bytes received.
    pub(crate) async fn download(&self, total: u64, chunk: u32) -> Result<u64, String> {
        let (tx, mut rx) = mpsc::channel(16);
        let mut args = [0u8; 12];
        (&mut args[..]).put_u64(total);
        (&mut args[8..]).put_u32(chunk);
        self.start(DOWNLOAD, &args, None, Slot::Stream(tx))?;
        let mut got = 0u64;
        while let Some(chunk) = rx.recv().await {
            got += chunk.len() as u64;
        }
        Ok(got)
    }
}

/// Writes whatever callers queued, one syscall per batch.
async fn writer(shared: Arc<Shared>, mut w: OwnedWriteHalf) {
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    let mut queued = Vec::new();
    let mut waited = false;
    loop {
        let ready = poll_fn(|cx| {
            let mut st = shared.lock();
            if st.closed {
                return Poll::Ready(false);
            }
            if st.wbuf.is_empty() && st.queued.is_empty() {
                st.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            // A read just woke several callers: let them queue their next
            // frames first, so they go out in one write.
            if !waited && st.woken_by_last_read > 1 && st.wbuf.len() < READ_CHUNK {
                st.woken_by_last_read = 0;
                waited = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            waited = false;
            mem::swap(&mut out, &mut st.wbuf);
            mem::swap(&mut queued, &mut st.queued);
            Poll::Ready(true)
        })
        .await;
        if !ready {
            return;
        }
        let mut result = Ok(());
        for b in queued.drain(..) {
            if result.is_ok() {
                result = w.write_all(&b).await;
            }
        }
        if result.is_ok() && !out.is_empty() {
            result = w.write_all(&out).await;
        }
        out.clear();
        if result.is_err() {
            shared.lock().closed = true;
            return;
        }
    }
}

/// Completes calls as their replies arrive.
async fn reader(shared: Arc<Shared>, mut r: OwnedReadHalf) {
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut wake: Vec<Waker> = Vec::with_capacity(256);
    let mut chunks: Vec<(mpsc::Sender<Bytes>, Bytes)> = Vec::new();
    loop {
        match fill(&mut r, &mut rbuf).await {
            Ok(true) => {}
            _ => break,
        }
        {
            let mut st = shared.lock();
            loop {
                let mut frame = match next_frame(&mut rbuf) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(_) => {
                        st.closed = true;
                        break;
                    }
                };
                frame.advance(4);
                let id = frame.get_u64() as usize;
                let kind = frame.get_u8();
                match (kind, st.calls.get_mut(id)) {
                    (ECHO, Some(slot @ Slot::Waiting(_))) => {
                        if let Slot::Waiting(Some(w)) =
                            mem::replace(slot, Slot::Done(frame.freeze()))
                        {
                            wake.push(w);
                        }
                    }
                    (ECHO, Some(Slot::Abandoned)) => {
                        st.calls.remove(id);
                    }
                    (CHUNK, Some(Slot::Stream(tx))) => chunks.push((tx.clone(), frame.freeze())),
                    (END, Some(Slot::Stream(_))) => {
                        st.calls.remove(id);
                    }
                    _ => {}
                }
            }
            st.woken_by_last_read = wake.len();
            if st.closed {
                break;
            }
        }
        for w in wake.drain(..) {
            w.wake();
        }
        // Backpressure: a slow consumer of a download stops the reader.
        for (tx, chunk) in chunks.drain(..) {
            let _ = tx.send(chunk).await;
        }
    }
    // Fail whatever is left: waiting callers see `closed`; streams end.
    let mut st = shared.lock();
    st.closed = true;
    for (_, slot) in st.calls.iter_mut() {
        if let Slot::Waiting(w) = slot {
            wake.extend(w.take());
        }
        if matches!(slot, Slot::Stream(_)) {
            *slot = Slot::Abandoned;
        }
    }
    let writer = st.writer.take();
    drop(st);
    wake.into_iter().chain(writer).for_each(Waker::wake);
}
