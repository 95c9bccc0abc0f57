//! [`Endpoint`]: where to connect and how; builds a [`Channel`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::channel::Channel;
use super::connect;
use super::connection::Conn;
use crate::frame::{self, Settings};
use crate::status::Status;

/// Connection settings shared by every connection of a channel.
#[derive(Clone, Debug)]
pub(crate) struct ClientConfig {
    pub(crate) connect_timeout: Duration,
    pub(crate) timeout: Option<Duration>,
    pub(crate) pool_size: usize,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) keepalive: Option<(Duration, Duration)>,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) max_message: usize,
    pub(crate) max_send_message: usize,
    pub(crate) max_metadata: usize,
    pub(crate) tcp_nodelay: bool,
    pub(crate) stream_window: u32,
    pub(crate) connection_window: u32,
    pub(crate) stats: Option<Arc<crate::stats::TransportStats>>,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::ClientTls>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(5),
            timeout: None,
            pool_size: 1,
            idle_timeout: Some(Duration::from_secs(300)),
            keepalive: Some((Duration::from_secs(30), Duration::from_secs(10))),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_message: frame::DEFAULT_MAX_MESSAGE,
            max_send_message: frame::DEFAULT_MAX_MESSAGE,
            max_metadata: frame::DEFAULT_MAX_METADATA,
            tcp_nodelay: true,
            stream_window: frame::DEFAULT_STREAM_WINDOW,
            connection_window: frame::DEFAULT_CONNECTION_WINDOW,
            stats: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl ClientConfig {
    /// How long to wait before the next connection attempt after `failures`
    /// failed ones: exponential from `backoff_initial`, capped at
    /// `backoff_max`, ±20% jitter.
    pub(crate) fn backoff_delay(&self, failures: u32) -> Duration {
        let exp = self
            .backoff_initial
            .saturating_mul(1u32 << failures.min(20));
        crate::util::jitter(exp.min(self.backoff_max), 0.2)
    }

    pub(crate) fn settings(&self) -> Settings {
        Settings {
            max_message_size: Some(self.max_message.min(u32::MAX as usize) as u32),
            max_metadata_size: Some(self.max_metadata.min(u32::MAX as usize) as u32),
            initial_stream_window: Some(self.stream_window),
            initial_connection_window: Some(self.connection_window),
            ..Settings::default()
        }
    }
}

/// The address of a trpc server plus the settings of connections to it.
///
/// Addresses are `tcp://host:port` or plain `host:port` for the native trpc
/// protocol, and `grpc://host:port`, `http://host:port` (gRPC over cleartext
/// HTTP/2) or `https://host:port` (gRPC over TLS with ALPN `h2`, see
/// [`Endpoint::tls_config`]) for any gRPC server (docs/GRPC.md); host names
/// are resolved at every (re)connect. Every kind yields the same
/// [`Channel`].
///
/// ```no_run
/// # async fn f() -> Result<(), trpc::Status> {
/// use std::time::Duration;
/// let channel = trpc::Endpoint::from_static("tcp://127.0.0.1:7000")
///     .connect_timeout(Duration::from_secs(1))
///     .timeout(Duration::from_millis(500))
///     .pool_size(2)
///     .connect()
///     .await?;
/// # drop(channel); Ok(()) }
/// ```
#[derive(Clone)]
pub struct Endpoint {
    uri: Arc<str>,
    host: Arc<str>,
    port: u16,
    pub(crate) wire: Wire,
    pub(crate) config: ClientConfig,
}

/// The protocol an endpoint speaks, from its scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wire {
    /// The native trpc protocol (`tcp://`, `trpc://`, no scheme).
    Trpc,
    /// gRPC over HTTP/2 (`grpc://`, `http://`, `https://`).
    Grpc { tls: bool },
}

impl Endpoint {
    /// Parses `tcp://host:port`, `host:port`, `grpc://host:port`,
    /// `http://host:port` or `https://host:port`.
    pub fn new(uri: impl AsRef<str>) -> Result<Endpoint, Status> {
        let uri = uri.as_ref().trim();
        let (wire, rest) = match uri.split_once("://") {
            Some(("tcp" | "trpc", rest)) => (Wire::Trpc, rest),
            Some(("grpc" | "http", rest)) => (Wire::Grpc { tls: false }, rest),
            Some(("https", rest)) => (Wire::Grpc { tls: true }, rest),
            Some((scheme, _)) => {
                return Err(Status::invalid_argument(format!(
                    "unsupported scheme {scheme:?} in {uri:?} (use tcp://, grpc://, http:// or https://)"
                )))
            }
            None => (Wire::Trpc, uri),
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| Status::invalid_argument(format!("{uri:?} has no :port")))?;
        let port: u16 = port
            .parse()
            .map_err(|_| Status::invalid_argument(format!("bad port in {uri:?}")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(Status::invalid_argument(format!("{uri:?} has no host")));
        }
        if wire != Wire::Trpc {
            crate::grpc::client::authority(host, port)?;
        }
        Ok(Endpoint {
            uri: Arc::from(uri),
            host: Arc::from(host),
            port,
            wire,
            config: ClientConfig::default(),
        })
    }

    /// Like [`Endpoint::new`] for literals.
    ///
    /// # Panics
    /// If `uri` is not a valid address.
    pub fn from_static(uri: &'static str) -> Endpoint {
        match Endpoint::new(uri) {
            Ok(e) => e,
            Err(e) => panic!("Endpoint::from_static({uri:?}): {}", e.message()),
        }
    }

    /// The address as given.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Time allowed to establish a connection, including the protocol handshake
    /// (default 5 s). Past it the call fails with `Unavailable`.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.connect_timeout = d;
        self
    }

    /// A default deadline for every call that has none (default: none).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.config.timeout = Some(d);
        self
    }

    /// Connections kept to this endpoint (default 1; each carries many calls).
    pub fn pool_size(mut self, n: usize) -> Self {
        self.config.pool_size = n.max(1);
        self
    }

    /// Closes a connection that has carried no call for `d` (default 5 min);
    /// `None` keeps idle connections forever.
    pub fn idle_timeout(mut self, d: Option<Duration>) -> Self {
        self.config.idle_timeout = d;
        self
    }

    /// Sends a PING after `interval` without reading anything and closes the
    /// connection when no answer comes within `timeout` (default 30 s / 10 s).
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.config.keepalive = Some((interval, timeout));
        self
    }

    /// Turns keepalive pings off.
    pub fn no_keepalive(mut self) -> Self {
        self.config.keepalive = None;
        self
    }

    /// Reconnect backoff after failed connects: starts at `initial`, doubles,
    /// capped at `max`, with ±20% jitter (default 100 ms .. 5 s). While backing
    /// off, calls fail fast with `Unavailable`.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.backoff_initial = initial;
        self.config.backoff_max = max.max(initial);
        self
    }

    /// Largest response message accepted and request message sent (default 4 MiB).
    pub fn max_message_size(mut self, n: usize) -> Self {
        self.config.max_message = n;
        self.config.max_send_message = n;
        self
    }

    /// Largest request message this client sends (default: `max_message_size`).
    pub fn max_send_message_size(mut self, n: usize) -> Self {
        self.config.max_send_message = n;
        self
    }

    /// Largest metadata block accepted (default 16 KiB; at least 1 KiB, so
    /// that a status block always fits: smaller values are raised to 1 KiB).
    pub fn max_metadata_size(mut self, n: usize) -> Self {
        self.config.max_metadata = frame::metadata_limit(n);
        self
    }

    /// Flow control: how many bytes of a response stream may be in flight
    /// before the application reads them (default 1 MiB).
    pub fn stream_window(mut self, bytes: u32) -> Self {
        self.config.stream_window = bytes.clamp(1, frame::MAX_WINDOW as u32);
        self
    }

    /// Flow control: the same for all streams of a connection together
    /// (default 16 MiB).
    pub fn connection_window(mut self, bytes: u32) -> Self {
        self.config.connection_window = bytes.clamp(1, frame::MAX_WINDOW as u32);
        self
    }

    /// TCP_NODELAY on connections (default on).
    pub fn tcp_nodelay(mut self, on: bool) -> Self {
        self.config.tcp_nodelay = on;
        self
    }

    /// Connects with TLS (see [`crate::tls`]).
    #[cfg(feature = "tls")]
    pub fn tls_config(
        mut self,
        tls: crate::tls::ClientTlsConfig,
    ) -> Result<Self, crate::tls::TlsError> {
        self.config.tls = Some(match self.wire {
            Wire::Trpc => tls.connector()?,
            Wire::Grpc { .. } => tls.connector_with_alpn(crate::tls::ALPN_H2)?,
        });
        Ok(self)
    }

    /// Counts connections and bytes into `stats` (see [`crate::stats`]).
    pub fn transport_stats(mut self, stats: Arc<crate::stats::TransportStats>) -> Self {
        self.config.stats = Some(stats);
        self
    }

    /// Connects one connection now, failing if the server cannot be reached,
    /// and returns a channel that keeps (re)connecting as needed.
    pub async fn connect(self) -> Result<Channel, Status> {
        let channel = Channel::new(self);
        channel.wait_connected().await?;
        Ok(channel)
    }

    /// A channel that connects on its first call.
    pub fn connect_lazy(self) -> Channel {
        Channel::new(self)
    }

    /// A channel over one connection that is already open: `io` (an
    /// in-memory pipe, for paused-time tests and fuzzing). The SETTINGS
    /// handshake is bounded by the connect timeout. The channel never
    /// reconnects: once that connection ends, calls fail with `Unavailable`.
    #[doc(hidden)]
    pub async fn connect_with_io<IO>(self, io: IO) -> Result<Channel, Status>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        // For logs and messages: the address if the endpoint names one.
        let peer = format!("{}:{}", self.host, self.port)
            .parse()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], self.port)));
        let timeout = self.config.connect_timeout;
        let handshake = connect::handshake(io, &self.config, peer);
        let (io, settings, rbuf) = match tokio::time::timeout(timeout, handshake).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Status::unavailable(format!(
                    "handshake with {} timed out after {}",
                    self.uri,
                    crate::util::fmt_duration(timeout)
                )))
            }
        };
        let conn = connect::spawn(io, peer, settings, rbuf, &self.config);
        Ok(Channel::with_conn(self, conn))
    }

    /// Opens one connection (resolve, connect, handshake), bounded by the
    /// connect timeout.
    pub(crate) async fn connect_one(&self) -> Result<Arc<Conn>, Status> {
        let timeout = self.config.connect_timeout;
        let attempt = async {
            let addrs = tokio::net::lookup_host((&*self.host, self.port))
                .await
                .map_err(|e| Status::unavailable(format!("cannot resolve {}: {e}", self.host)))?;
            let mut last = Status::unavailable(format!("{} resolved to no address", self.host));
            for addr in addrs {
                match connect::connect(addr, &self.host, &self.config).await {
                    Ok(conn) => return Ok(conn),
                    Err(e) => last = e,
                }
            }
            Err(last)
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(Status::unavailable(format!(
                "connect to {} timed out after {}",
                self.uri,
                crate::util::fmt_duration(timeout)
            ))),
        }
    }
}

impl FromStr for Endpoint {
    type Err = Status;
    fn from_str(s: &str) -> Result<Self, Status> {
        Endpoint::new(s)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("uri", &self.uri)
            .field("config", &self.config)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        let e = Endpoint::new("tcp://127.0.0.1:7000").unwrap();
        assert_eq!((&*e.host, e.port), ("127.0.0.1", 7000));
        let e = Endpoint::new("localhost:1").unwrap();
        assert_eq!((&*e.host, e.port), ("localhost", 1));
        let e = Endpoint::new("tcp://[::1]:9").unwrap();
        assert_eq!((&*e.host, e.port), ("::1", 9));
        assert!(Endpoint::new("ftp://x:1").is_err());
        assert_eq!(Endpoint::new("tcp://x:1").unwrap().wire, Wire::Trpc);
        assert_eq!(
            Endpoint::new("grpc://x:1").unwrap().wire,
            Wire::Grpc { tls: false }
        );
        assert_eq!(
            Endpoint::new("http://x:1/").unwrap().wire,
            Wire::Grpc { tls: false }
        );
        let e = Endpoint::new("https://[::1]:443").unwrap();
        assert_eq!(
            (e.wire, &*e.host, e.port),
            (Wire::Grpc { tls: true }, "::1", 443)
        );
        assert!(Endpoint::new("x").is_err());
        assert!(Endpoint::new("x:99999").is_err());
        assert!(Endpoint::new(":80").is_err());
    }
}
