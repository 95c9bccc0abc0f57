//! Opening a client connection: TCP, TLS, the SETTINGS handshake, and the
//! task that runs the connection until it ends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Decoder;

use super::connection::{fail, Conn, Resp};
use super::endpoint::ClientConfig;
use super::role::ClientRole;
use crate::frame::{self, Decoded, FrameCodec, FrameType, Goaway, Settings};
use crate::proto::{ConnError, Driver, DriverConfig, Exit, PeerSettings, Shared};
use crate::status::Status;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Establishes a connection: TCP connect, TLS if configured, SETTINGS
/// exchange, task spawn.
pub(crate) async fn connect(
    addr: SocketAddr,
    host: &str,
    config: &ClientConfig,
) -> Result<Arc<Conn>, Status> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| {
        Status::unavailable(format!("connect to {addr} failed: {e}")).with_source(e)
    })?;
    if config.tcp_nodelay {
        let _ = tcp.set_nodelay(true);
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = &config.tls {
        let io = tls.connect(host, addr, tcp).await?;
        let (io, settings, rbuf) = handshake(io, config, addr)
            .await
            .map_err(|e| crate::tls::ClientTls::explain(addr, e))?;
        return Ok(spawn(io, addr, settings, rbuf, config));
    }
    let _ = host;
    let (io, settings, rbuf) = handshake(tcp, config, addr).await?;
    Ok(spawn(io, addr, settings, rbuf, config))
}

/// Sends our SETTINGS and waits for the server's, which must be the first frame.
pub(crate) async fn handshake<IO>(
    mut io: IO,
    config: &ClientConfig,
    addr: SocketAddr,
) -> Result<(IO, Settings, BytesMut), Status>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut out = BytesMut::new();
    config.settings().encode(&mut out);
    io.write_all(&out).await.map_err(|e| {
        Status::unavailable(format!("handshake with {addr} failed: {e}")).with_source(e)
    })?;
    let mut rbuf = BytesMut::with_capacity(1024);
    let mut codec = FrameCodec::new();
    loop {
        match codec.decode(&mut rbuf) {
            Ok(Some(Decoded::Frame(f))) if f.frame_type() == Some(FrameType::Settings) => {
                let settings = Settings::parse(&f.payload).unwrap_or_default();
                return Ok((io, settings, rbuf));
            }
            Ok(Some(Decoded::Frame(f))) if f.frame_type() == Some(FrameType::Goaway) => {
                let why = Goaway::parse(&f.payload)
                    .map(|g| g.message)
                    .unwrap_or_default();
                return Err(Status::unavailable(format!(
                    "{addr} refused the connection: {why}"
                )));
            }
            Ok(Some(other)) => {
                return Err(Status::unavailable(format!(
                    "{addr} is not a trpc server: first frame was {other:?}, not SETTINGS"
                )))
            }
            Ok(None) => {}
            Err(e) => {
                return Err(Status::unavailable(format!(
                    "{addr} is not a trpc server ({e}); received {:?}",
                    String::from_utf8_lossy(&rbuf[..rbuf.len().min(32)])
                )))
            }
        }
        let n = io.read_buf(&mut rbuf).await.map_err(|e| {
            Status::unavailable(format!("handshake with {addr} failed: {e}")).with_source(e)
        })?;
        if n == 0 {
            return Err(Status::unavailable(format!(
                "{addr} closed the connection during the handshake \
                 (is it a trpc server? does it require TLS?)"
            )));
        }
    }
}

/// Spawns the connection task for an established, handshaken connection.
pub(crate) fn spawn<IO>(
    io: IO,
    peer: SocketAddr,
    settings: Settings,
    rbuf: BytesMut,
    config: &ClientConfig,
) -> Arc<Conn>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut peer_settings = PeerSettings::default();
    let settings_error = peer_settings.apply(&settings).err();
    let shared = Arc::new(Shared::new(
        config.stream_window,
        config.connection_window,
        peer_settings,
        config.max_send_message,
        config.stats.clone(),
    ));
    let conn = Arc::new(Conn {
        shared: shared.clone(),
        id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
        peer,
    });
    let role = ClientRole {
        shared: shared.clone(),
        peer,
        conn_id: conn.id,
        idle_timeout: config.idle_timeout,
        idle_since: None,
        idle_exit: false,
        batch: 0,
        closing: false,
    };
    let driver = Driver::new(
        io,
        rbuf,
        shared,
        role,
        DriverConfig {
            max_message: config.max_message,
            max_metadata: config.max_metadata,
            keepalive: config.keepalive,
            frame_timeout: None,
            write_timeout: None,
            settings_received: true,
            stats: config.stats.clone(),
        },
    );
    if let Some(s) = &config.stats {
        s.on_open();
    }
    tracing::debug!(conn = conn.id, %peer, "trpc client connection established");
    tokio::spawn(run(driver, settings_error));
    conn
}

/// Runs a client connection and ends it: every call still open fails with
/// why the connection ended.
async fn run<IO>(driver: Driver<IO, ClientRole>, settings_error: Option<ConnError>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut driver, result) = match settings_error {
        // The server's first SETTINGS broke a rule.
        Some(e) => (driver, Err(e)),
        None => driver.run().await,
    };
    let (conn_id, peer) = (driver.role.conn_id, driver.role.peer);
    let mut goaway = None;
    let status = match result {
        Ok(Exit::Graceful(why)) => {
            tracing::debug!(conn = conn_id, %peer, why, "trpc client connection closed");
            Status::unavailable(format!("connection closed ({why})")).with_refused(true)
        }
        Ok(Exit::Forced) => Status::unavailable("connection closed").with_refused(true),
        Err(e) => {
            if let ConnError::Goaway { code, reason } = &e {
                tracing::warn!(conn = conn_id, %peer, error = %reason, "protocol error from the server");
                goaway = Some((*code, reason.clone()));
            } else {
                tracing::debug!(conn = conn_id, %peer, error = %e, "trpc client connection failed");
            }
            e.into_status(peer)
        }
    };
    let shared = driver.shared().clone();
    shared.set_unusable();
    let mut woken = Vec::new();
    {
        let mut st = shared.lock();
        if st.closed.is_none() {
            st.closed = Some(status);
        }
        let why = st
            .closed
            .clone()
            .unwrap_or_else(|| Status::unavailable("connection closed"));
        st.deadlines = None;
        woken.append(&mut st.woken);
        for s in st.streams.values_mut() {
            s.deadline = None;
            fail(s, why.clone(), &mut woken);
        }
        // A response that arrived before the end is still the caller's.
        st.streams
            .retain(|_, s| matches!(s.ext.response, Resp::Ready(_)));
        woken.append(&mut st.send_blocked);
    }
    crate::proto::shared::wake_all(&mut woken);
    shared.wake_task();
    if let Some(s) = &shared.stats {
        s.on_close();
    }
    // Frames queued at the end (CANCELs of calls dropped with the channel,
    // the GOAWAY of a protocol error) still go out.
    driver
        .close(Duration::from_millis(100), |wb| {
            if let Some((code, reason)) = goaway {
                wb.put(|b| frame::put_goaway(b, 0, code, &reason));
            }
        })
        .await;
}
