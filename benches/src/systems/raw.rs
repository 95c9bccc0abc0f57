//! The upper bound: a raw tokio echo over `LengthDelimitedCodec`, with request
//! ids multiplexed on one connection.
//!
//! Frame body (inside the 4-byte length prefix): `u64 request id | u8 kind |
//! payload`. Kinds: [`ECHO`] (the server sends the frame back), [`DOWNLOAD`]
//! (payload `u64 total | u32 chunk`: the server streams [`CHUNK`] frames, then
//! [`END`]).
//!
//! The server answers in the connection's task, writing every reply to frames
//! already received before it flushes. The client is what a careful hand-written
//! multiplexing client looks like: callers register a oneshot in a pending map
//! and hand their frame to a writer task (which coalesces writes); a reader task
//! completes the pending calls.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Framed, FramedRead, FramedWrite, LengthDelimitedCodec};

use super::MAX_MESSAGE;

/// Echo this frame back.
const ECHO: u8 = 0;
/// Stream bytes back.
const DOWNLOAD: u8 = 1;
/// One message of a download.
const CHUNK: u8 = 2;
/// The download is complete.
const END: u8 = 3;
/// Request id + kind.
const HEADER: usize = 9;

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_MESSAGE + HEADER)
        .new_codec()
}

fn frame(id: u64, kind: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(HEADER + payload.len());
    b.put_u64(id);
    b.put_u8(kind);
    b.put_slice(payload);
    b.freeze()
}

fn bad_frame(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
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

async fn serve_conn(tcp: TcpStream) -> io::Result<()> {
    let mut framed = Framed::new(tcp, codec());
    while let Some(first) = framed.next().await {
        handle(first?, &mut framed).await?;
        // Answer every frame already received, then write all replies at once.
        while let Some(next) = framed.next().now_or_never() {
            match next {
                Some(f) => handle(f?, &mut framed).await?,
                None => break,
            }
        }
        SinkExt::<Bytes>::flush(&mut framed).await?;
    }
    Ok(())
}

async fn handle(
    frame: BytesMut,
    framed: &mut Framed<TcpStream, LengthDelimitedCodec>,
) -> io::Result<()> {
    if frame.len() < HEADER {
        return Err(bad_frame("frame shorter than its header"));
    }
    match frame[8] {
        ECHO => framed.feed(frame.freeze()).await,
        DOWNLOAD => {
            let mut args = &frame[HEADER..];
            if args.len() < 12 {
                return Err(bad_frame("short DOWNLOAD request"));
            }
            let id = (&frame[..8]).get_u64();
            let total = args.get_u64();
            let chunk = (args.get_u32() as usize).clamp(1, MAX_MESSAGE);
            let data = crate::messages::payload(chunk);
            let full = self::frame(id, CHUNK, &data);
            let mut left = total as usize;
            while left > 0 {
                let n = left.min(chunk);
                let f = if n == chunk {
                    full.clone()
                } else {
                    full.slice(..HEADER + n)
                };
                framed.feed(f).await?;
                left -= n;
            }
            framed.feed(self::frame(id, END, &[])).await
        }
        _ => Err(bad_frame("unknown frame kind")),
    }
}

enum Pending {
    Unary(oneshot::Sender<Bytes>),
    Stream(mpsc::Sender<Bytes>),
}

type PendingMap = Arc<Mutex<HashMap<u64, Pending>>>;

fn lock(m: &Mutex<HashMap<u64, Pending>>) -> MutexGuard<'_, HashMap<u64, Pending>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A multiplexing client on one connection; clones share it.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    tx: mpsc::UnboundedSender<Bytes>,
    pending: PendingMap,
    next_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pending::Unary(_) => "Unary",
            Pending::Stream(_) => "Stream",
        })
    }
}

impl Client {
    /// Connects and starts the writer and reader tasks.
    pub(crate) async fn connect(addr: SocketAddr) -> io::Result<Client> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (r, w) = tcp.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = PendingMap::default();
        tokio::spawn(writer(rx, FramedWrite::new(w, codec())));
        tokio::spawn(reader(FramedRead::new(r, codec()), pending.clone()));
        Ok(Client {
            tx,
            pending,
            next_id: Arc::new(AtomicU64::new(1)),
        })
    }

    fn start(&self, kind: u8, body: &[u8], pending: Pending) -> Result<(), String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.pending).insert(id, pending);
        self.tx
            .send(frame(id, kind, body))
            .map_err(|_| "raw: connection closed".to_string())
    }

    /// One echo call; returns the reply payload.
    pub(crate) async fn echo(&self, payload: &Bytes) -> Result<Bytes, String> {
        let (tx, rx) = oneshot::channel();
        self.start(ECHO, payload, Pending::Unary(tx))?;
        rx.await.map_err(|_| "raw: connection closed".to_string())
    }

    /// Downloads `total` bytes in `chunk`-byte messages; returns the bytes received.
    pub(crate) async fn download(&self, total: u64, chunk: u32) -> Result<u64, String> {
        let (tx, mut rx) = mpsc::channel(16);
        let mut args = Vec::with_capacity(12);
        args.put_u64(total);
        args.put_u32(chunk);
        self.start(DOWNLOAD, &args, Pending::Stream(tx))?;
        let mut got = 0u64;
        while let Some(chunk) = rx.recv().await {
            got += chunk.len() as u64;
        }
        Ok(got)
    }
}

async fn writer(
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    mut sink: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
) {
    while let Some(frame) = rx.recv().await {
        if sink.feed(frame).await.is_err() {
            return;
        }
        while let Ok(frame) = rx.try_recv() {
            if sink.feed(frame).await.is_err() {
                return;
            }
        }
        if SinkExt::<Bytes>::flush(&mut sink).await.is_err() {
            return;
        }
    }
}

async fn reader(
    mut frames: FramedRead<tokio::net::tcp::OwnedReadHalf, LengthDelimitedCodec>,
    pending: PendingMap,
) {
    while let Some(Ok(mut frame)) = frames.next().await {
        if frame.len() < HEADER {
            break;
        }
        let id = (&frame[..8]).get_u64();
        let kind = frame[8];
        frame.advance(HEADER);
        match kind {
            ECHO => {
                if let Some(Pending::Unary(tx)) = lock(&pending).remove(&id) {
                    let _ = tx.send(frame.freeze());
                }
            }
            CHUNK => {
                let tx = match lock(&pending).get(&id) {
                    Some(Pending::Stream(tx)) => tx.clone(),
                    _ => continue,
                };
                // Backpressure: a slow consumer stops the reader.
                let _ = tx.send(frame.freeze()).await;
            }
            END => {
                lock(&pending).remove(&id);
            }
            _ => break,
        }
    }
    // Fail whatever is left: dropping the senders wakes the callers.
    lock(&pending).clear();
}
