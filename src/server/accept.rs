//! Accepting connections: binding the listener, refusing connections over
//! the limit, and telling protocols apart by their first bytes before a
//! connection is handed to the engine that speaks its protocol: the trpc
//! magic to the native engine, the HTTP/2 preface to the gRPC server, an
//! HTTP/1 request line to the HTTP/JSON gateway (docs/PROTOCOL.md §7).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use super::{conn, ServerConfig};
use crate::body::Body;
use crate::frame::{self, GoawayCode, MAGIC};
use crate::grpc::server::Http;
use crate::request::{Request, Response};
use crate::status::BoxError;

/// What the first bytes of a connection say it is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Detected {
    Trpc,
    Http2,
    Http1,
    Tls,
    Unknown,
}

/// Classifies a connection by its first bytes; `None` until enough arrived.
pub(crate) fn detect(prefix: &[u8]) -> Option<Detected> {
    // The whole client preface: hyper waits for it without a timeout, so it
    // is read here, under the handshake timeout.
    const H2: &[u8] = H2_PREFACE;
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"HEAD ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
    ];
    if prefix.len() < 2 {
        return None;
    }
    if prefix[..2] == MAGIC {
        return Some(Detected::Trpc);
    }
    if prefix[0] == 0x16 && prefix[1] == 0x03 {
        return Some(Detected::Tls);
    }
    let n = prefix.len().min(H2.len());
    if prefix[..n] == H2[..n] {
        return if n == H2.len() {
            Some(Detected::Http2)
        } else {
            None
        };
    }
    let mut maybe_http1 = false;
    for m in METHODS {
        let n = prefix.len().min(m.len());
        if prefix[..n] == m[..n] {
            if n == m.len() {
                return Some(Detected::Http1);
            }
            maybe_http1 = true;
        }
    }
    if maybe_http1 {
        None
    } else {
        Some(Detected::Unknown)
    }
}

/// The HTTP/2 client preface (RFC 9113 §3.4).
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads the HTTP/2 client preface of a connection that negotiated `h2`
/// (TLS ALPN) within `limit`, and gives back the bytes read for the HTTP/2
/// server to replay: hyper waits for the preface without a timeout, so a
/// peer that sends nothing, or part of it, would hold the connection.
#[cfg(feature = "tls")]
pub(crate) async fn read_h2_preface<IO: AsyncRead + Unpin>(
    io: &mut IO,
    limit: Duration,
) -> Result<bytes::Bytes, String> {
    use tokio::io::AsyncReadExt;
    let mut buf = BytesMut::with_capacity(64);
    let read = tokio::time::timeout(limit, async {
        while buf.len() < H2_PREFACE.len() {
            if io.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("closed before the HTTP/2 preface".to_string());
            }
        }
        Ok(())
    })
    .await;
    match read {
        Ok(Ok(())) if buf.starts_with(H2_PREFACE) => Ok(buf.freeze()),
        Ok(Ok(())) => Err("not the HTTP/2 client preface".to_string()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("handshake timeout: no complete HTTP/2 preface".to_string()),
    }
}

/// The listen backlog of servers that trpc binds: a burst of connections (a
/// fleet reconnecting at once) waits in the kernel's queue instead of having
/// its handshakes dropped and retried a second later (the usual default of
/// 128 overflows easily).
const LISTEN_BACKLOG: u32 = 1024;

/// Binds a listening socket for `addr` with [`LISTEN_BACKLOG`].
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(not(windows))]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Most refused connections (over the connection limit) being answered at once;
/// beyond that, connections over the limit are closed without a GOAWAY.
const MAX_REFUSING: usize = 64;
/// How long a refused connection may take to receive its GOAWAY and close.
const REFUSE_LINGER: Duration = Duration::from_secs(1);

/// Answers connections over the server's connection limit with a GOAWAY that
/// says so (in place of SETTINGS), then closes them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Refuser {
    in_flight: Arc<AtomicUsize>,
}

impl Refuser {
    /// Refuses `tcp` in a short task of its own, so the accept loop never waits.
    pub(crate) fn refuse(
        &self,
        mut tcp: TcpStream,
        peer: SocketAddr,
        limit: usize,
        tracker: &TaskTracker,
    ) {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return; // dropping `tcp` closes it
        }
        let in_flight = self.in_flight.clone();
        tracker.spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut out = BytesMut::new();
            frame::put_goaway(
                &mut out,
                0,
                GoawayCode::EnhanceYourCalm,
                &format!("connection limit reached: the server serves at most {limit} connections; try again later"),
            );
            let _ = tokio::time::timeout(REFUSE_LINGER, async {
                tcp.write_all(&out).await?;
                tcp.shutdown().await?;
                // Read what the client sent (its SETTINGS) until it closes:
                // closing with unread bytes would reset the connection and
                // could destroy the GOAWAY before the client reads it.
                let mut sink = [0u8; 1024];
                while tcp.read(&mut sink).await? > 0 {}
                Ok::<_, std::io::Error>(())
            })
            .await;
            tracing::debug!(%peer, "refused connection closed");
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// The service a server connection calls: the router behind its layers.
pub(crate) trait ConnService:
    Service<Request<Body>, Response = Response<Body>, Error: Into<BoxError>, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S> ConnService for S
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
}

/// What a connection is served with, besides its byte stream.
#[derive(Debug)]
pub(crate) struct ConnCtx<S> {
    /// The peer's address, as handlers see it.
    pub(crate) peer: SocketAddr,
    /// The router behind the server's layers.
    pub(crate) svc: S,
    /// The server's settings.
    pub(crate) cfg: Arc<ServerConfig>,
    /// Cancelled when graceful shutdown starts.
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when the shutdown grace period is over.
    pub(crate) force: CancellationToken,
    /// Added to every request's extensions (the TLS peer's identity).
    pub(crate) extensions: Option<http::Extensions>,
}

/// Serves one accepted connection until it closes.
pub(crate) async fn serve_connection<IO, S>(mut io: IO, ctx: ConnCtx<S>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ConnService,
{
    let (peer, cfg) = (ctx.peer, ctx.cfg.clone());
    use tokio::io::AsyncReadExt;
    // The handshake timeout covers detection and the client's SETTINGS together.
    let started = Instant::now();
    // Protocol detection, bounded by the handshake timeout.
    let mut rbuf = BytesMut::with_capacity(64);
    let detected = tokio::time::timeout(cfg.handshake_timeout, async {
        loop {
            if let Some(d) = detect(&rbuf) {
                return Ok(d);
            }
            match io.read_buf(&mut rbuf).await {
                Ok(0) => return Err("closed before sending anything".to_string()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await;
    let detected = match detected {
        Ok(Ok(d)) => d,
        Ok(Err(why)) => {
            tracing::debug!(%peer, why, "connection closed during detection");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "handshake timeout: no bytes received");
            return;
        }
    };
    let http = match detected {
        Detected::Http2 if cfg.grpc => Some(Http::H2),
        Detected::Http1 if cfg.http1 => Some(Http::H1),
        _ => None,
    };
    if let Some(http) = http {
        let io = crate::grpc::server::Rewind::new(rbuf.freeze(), io);
        crate::grpc::server::serve_http(http, io, ctx).await;
        return;
    }
    if detected == Detected::Trpc {
        conn::serve_trpc(io, rbuf, started, ctx).await;
        return;
    }
    // Not ours: answer in the peer's own protocol so it reports something
    // sensible, then close.
    let answer: &[u8] = match detected {
        Detected::Http1 => {
            tracing::warn!(%peer, "HTTP/1 request on a port without the HTTP gateway; answering 400");
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nconnection: close\r\n\
              content-length: 46\r\n\r\nthis port speaks the trpc protocol, not HTTP\r\n"
        }
        Detected::Http2 => {
            tracing::warn!(%peer, "HTTP/2 preface on the trpc port (gRPC is not enabled here); closing");
            // The HTTP/2 server preface (an empty SETTINGS frame), then
            // GOAWAY(last stream 0, PROTOCOL_ERROR). Frame header: u24
            // length, type, flags, u32 stream.
            &[
                0, 0, 0, 4, 0, 0, 0, 0, 0, // SETTINGS, empty
                0, 0, 8, 7, 0, 0, 0, 0, 0, // GOAWAY, 8 bytes
                0, 0, 0, 0, 0, 0, 0, 1, // last stream 0, PROTOCOL_ERROR
            ]
        }
        Detected::Tls => {
            tracing::warn!(%peer, "TLS ClientHello on a plaintext trpc port; closing");
            // A TLS alert record: fatal, protocol_version(70).
            &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 70]
        }
        Detected::Trpc | Detected::Unknown => {
            tracing::warn!(%peer, prefix = ?String::from_utf8_lossy(&rbuf[..rbuf.len().min(16)]), "not a trpc client (bad magic); closing");
            &BAD_MAGIC_GOAWAY
        }
    };
    let _ = io.write_all(answer).await;
    let _ = io.shutdown().await;
}

/// GOAWAY(last stream 0, PROTOCOL_ERROR, "bad magic: not a trpc frame").
const BAD_MAGIC_GOAWAY: [u8; frame::HEADER_LEN + 8 + 27] = {
    let mut b = [0u8; frame::HEADER_LEN + 8 + 27];
    let text = b"bad magic: not a trpc frame";
    b[0] = MAGIC[0];
    b[1] = MAGIC[1];
    b[2] = frame::VERSION;
    b[3] = frame::FrameType::Goaway as u8;
    b[15] = 8 + 27;
    b[frame::HEADER_LEN + 7] = GoawayCode::ProtocolError as u8;
    let mut i = 0;
    while i < text.len() {
        b[frame::HEADER_LEN + 8 + i] = text[i];
        i += 1;
    }
    b
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_magic_goaway_is_a_well_formed_frame() {
        let mut expected = BytesMut::new();
        frame::put_goaway(
            &mut expected,
            0,
            GoawayCode::ProtocolError,
            "bad magic: not a trpc frame",
        );
        assert_eq!(&expected[..], &BAD_MAGIC_GOAWAY[..]);
    }

    #[test]
    fn detects_protocols_from_prefixes() {
        assert_eq!(detect(b"t"), None);
        assert_eq!(detect(b"tR\x01"), Some(Detected::Trpc));
        assert_eq!(detect(b"GE"), None);
        assert_eq!(detect(b"GET /"), Some(Detected::Http1));
        assert_eq!(
            detect(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Some(Detected::Http2)
        );
        assert_eq!(detect(b"PRI * HTTP/2.0\r\n"), None);
        assert_eq!(detect(b"PRI * HT"), None);
        assert_eq!(detect(b"PRI * HTTP/2.0\r\n\r\nXX"), Some(Detected::Unknown));
        assert_eq!(detect(&[0x16, 0x03, 0x01]), Some(Detected::Tls));
        assert_eq!(detect(b"\xff\xff"), Some(Detected::Unknown));
        assert_eq!(detect(b"Gx"), Some(Detected::Unknown));
    }

    /// What the TLS path does after ALPN `h2`: the whole preface within the
    /// limit, or the connection is given up.
    #[cfg(feature = "tls")]
    #[tokio::test(start_paused = true)]
    async fn the_h2_preface_is_read_in_full_within_the_limit() {
        use tokio::io::AsyncWriteExt;
        let limit = Duration::from_secs(1);
        // In two pieces, then a frame: all of it is handed on.
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(&H2_PREFACE[..10]).await.unwrap();
        let read = tokio::spawn(async move { read_h2_preface(&mut server, limit).await });
        tokio::task::yield_now().await;
        client.write_all(&H2_PREFACE[10..]).await.unwrap();
        client
            .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
            .await
            .unwrap();
        let pre = read.await.unwrap().unwrap();
        assert!(pre.starts_with(H2_PREFACE), "{pre:?}");
        // Part of it, then silence: given up at the limit.
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"PRI * HTTP/2.0").await.unwrap();
        let t0 = Instant::now();
        let e = read_h2_preface(&mut server, limit).await.unwrap_err();
        assert!(e.contains("handshake timeout"), "{e}");
        assert_eq!(t0.elapsed(), limit);
        // Something else, or a close: refused at once.
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(&[b'x'; 24]).await.unwrap();
        assert!(read_h2_preface(&mut server, limit).await.is_err());
        drop(client);
        let (client, mut server) = tokio::io::duplex(1024);
        drop(client);
        let e = read_h2_preface(&mut server, limit).await.unwrap_err();
        assert!(e.contains("closed"), "{e}");
    }
}
