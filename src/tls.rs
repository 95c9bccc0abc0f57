//! TLS with rustls: server certificates, client verification, mutual TLS.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use trpc::tls::{ClientTlsConfig, ServerTlsConfig};
//! let server = trpc::Server::builder().tls_config(
//!     ServerTlsConfig::from_pem_files("server.crt", "server.key")?
//!         .client_ca_pem(std::fs::read("ca.crt")?)?, // mutual TLS
//! )?;
//! let channel = trpc::Endpoint::from_static("tcp://localhost:7443")
//!     .tls_config(
//!         ClientTlsConfig::new()
//!             .ca_pem(std::fs::read("ca.crt")?)?
//!             .identity_pem(std::fs::read("client.crt")?, std::fs::read("client.key")?)?,
//!     )?
//!     .connect()
//!     .await?;
//! # drop((server, channel)); Ok(()) }
//! ```
//!
//! Connections negotiate an ALPN protocol: native trpc clients offer [`ALPN`]
//! (`trpc/1`), gRPC clients [`ALPN_H2`] (`h2`); a server offers both (and
//! `http/1.1` for the HTTP/JSON gateway) and serves each connection in the
//! protocol it negotiated (docs/GRPC.md). On the server,
//! every request of a TLS connection carries a [`TlsInfo`] in its extensions,
//! with the client certificate's identity under mutual TLS, for handlers and
//! auth layers.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
pub use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
pub use tokio_rustls::rustls;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::status::Status;

/// The ALPN protocol id of trpc over TLS.
pub const ALPN: &[u8] = b"trpc/1";
/// The ALPN protocol id of HTTP/2 (gRPC over TLS).
pub const ALPN_H2: &[u8] = b"h2";
/// The ALPN protocol id of HTTP/1.1 (the HTTP/JSON gateway over TLS).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// An error in a TLS configuration (bad PEM, key mismatch, ...).
#[derive(Debug, Clone)]
pub struct TlsError(String);

impl TlsError {
    fn new(e: impl fmt::Display) -> Self {
        TlsError(e.to_string())
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tls configuration: {}", self.0)
    }
}

impl std::error::Error for TlsError {}

impl From<TlsError> for Status {
    fn from(e: TlsError) -> Status {
        Status::invalid_argument(e.to_string())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs_from_pem(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{what}: no certificate found in PEM")));
    }
    Ok(certs)
}

fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError(format!("private key: {e}")))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError(format!("{}: {e}", path.display())))
}

fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(pem, "CA certificates")? {
        roots.add(cert).map_err(TlsError::new)?;
    }
    Ok(roots)
}

/// Server side TLS: the certificate chain and key, and for mutual TLS the CA
/// that signs client certificates.
#[derive(Clone)]
pub struct ServerTlsConfig {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    client_roots: Option<RootCertStore>,
    client_auth_optional: bool,
}

impl ServerTlsConfig {
    /// From a PEM certificate chain (leaf first) and a PEM private key.
    pub fn from_pem(
        chain_pem: impl AsRef<[u8]>,
        key_pem: impl AsRef<[u8]>,
    ) -> Result<Self, TlsError> {
        Ok(ServerTlsConfig {
            chain: certs_from_pem(chain_pem.as_ref(), "certificate chain")?,
            key: Arc::new(key_from_pem(key_pem.as_ref())?),
            client_roots: None,
            client_auth_optional: false,
        })
    }

    /// From PEM files.
    pub fn from_pem_files(
        chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        Self::from_pem(read(chain.as_ref())?, read(key.as_ref())?)
    }

    /// From DER certificates and key.
    pub fn from_der(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Self {
        ServerTlsConfig {
            chain,
            key: Arc::new(key),
            client_roots: None,
            client_auth_optional: false,
        }
    }

    /// Mutual TLS: clients must present a certificate signed by one of these
    /// CAs (PEM).
    pub fn client_ca_pem(mut self, pem: impl AsRef<[u8]>) -> Result<Self, TlsError> {
        self.client_roots = Some(roots_from_pem(pem.as_ref())?);
        Ok(self)
    }

    /// With [`ServerTlsConfig::client_ca_pem`]: also accept clients without a
    /// certificate (those that present one must still present a valid one).
    pub fn client_auth_optional(mut self, optional: bool) -> Self {
        self.client_auth_optional = optional;
        self
    }

    pub(crate) fn acceptor(&self) -> Result<ServerTls, TlsError> {
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::new)?;
        let builder = match &self.client_roots {
            Some(roots) => {
                let mut verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots.clone()), provider);
                if self.client_auth_optional {
                    verifier = verifier.allow_unauthenticated();
                }
                builder.with_client_cert_verifier(verifier.build().map_err(TlsError::new)?)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(TlsError::new)?;
        config.alpn_protocols = vec![ALPN.to_vec(), ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        Ok(ServerTls(TlsAcceptor::from(Arc::new(config))))
    }
}

/// A ready server acceptor.
#[derive(Clone)]
pub(crate) struct ServerTls(TlsAcceptor);

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerTls")
    }
}

impl fmt::Debug for ServerTlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTlsConfig")
            .field("chain_len", &self.chain.len())
            .field("mutual", &self.client_roots.is_some())
            .field("client_auth_optional", &self.client_auth_optional)
            .finish()
    }
}

/// Client side TLS: the CAs to trust, the server name to verify, and for
/// mutual TLS the client's own certificate and key.
#[derive(Clone)]
pub struct ClientTlsConfig {
    roots: RootCertStore,
    domain: Option<String>,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
}

impl Default for ClientTlsConfig {
    fn default() -> Self {
        ClientTlsConfig::new()
    }
}

impl ClientTlsConfig {
    /// No trusted CA yet: add some with [`ClientTlsConfig::ca_pem`].
    pub fn new() -> Self {
        ClientTlsConfig {
            roots: RootCertStore::empty(),
            domain: None,
            identity: None,
        }
    }

    /// Trusts the CA certificates in `pem`.
    pub fn ca_pem(mut self, pem: impl AsRef<[u8]>) -> Result<Self, TlsError> {
        for cert in certs_from_pem(pem.as_ref(), "CA certificates")? {
            self.roots.add(cert).map_err(TlsError::new)?;
        }
        Ok(self)
    }

    /// Trusts the CA certificates in a PEM file.
    pub fn ca_pem_file(self, path: impl AsRef<Path>) -> Result<Self, TlsError> {
        let pem = read(path.as_ref())?;
        self.ca_pem(pem)
    }

    /// The name to verify the server certificate against (and send as SNI);
    /// default: the endpoint's host.
    pub fn domain_name(mut self, name: impl Into<String>) -> Self {
        self.domain = Some(name.into());
        self
    }

    /// Mutual TLS: the client's certificate chain and key (PEM).
    pub fn identity_pem(
        mut self,
        chain_pem: impl AsRef<[u8]>,
        key_pem: impl AsRef<[u8]>,
    ) -> Result<Self, TlsError> {
        self.identity = Some((
            certs_from_pem(chain_pem.as_ref(), "client certificate chain")?,
            Arc::new(key_from_pem(key_pem.as_ref())?),
        ));
        Ok(self)
    }

    pub(crate) fn connector(&self) -> Result<ClientTls, TlsError> {
        self.connector_with_alpn(ALPN)
    }

    /// A connector offering ALPN protocol `alpn` (`trpc/1`, or `h2` for gRPC).
    pub(crate) fn connector_with_alpn(&self, alpn: &[u8]) -> Result<ClientTls, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::new)?
            .with_root_certificates(self.roots.clone());
        let mut config = match &self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(TlsError::new)?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![alpn.to_vec()];
        let domain = match &self.domain {
            Some(d) => Some(
                ServerName::try_from(d.clone())
                    .map_err(|e| TlsError(format!("domain name {d:?}: {e}")))?,
            ),
            None => None,
        };
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            domain,
        })
    }
}

impl fmt::Debug for ClientTlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTlsConfig")
            .field("roots", &self.roots.len())
            .field("domain", &self.domain)
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

/// A ready client connector.
#[derive(Clone)]
pub(crate) struct ClientTls {
    connector: TlsConnector,
    domain: Option<ServerName<'static>>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("domain", &self.domain)
            .finish()
    }
}

/// Explains a failed client handshake.
fn handshake_error(addr: SocketAddr, e: &io::Error) -> Status {
    let text = e.to_string();
    let hint = if text.contains("InvalidContentType")
        || text.contains("corrupt message")
        || text.contains("ProtocolVersion")
        || e.kind() == io::ErrorKind::UnexpectedEof
    {
        " (is the server using TLS?)"
    } else if text.contains("UnknownIssuer") {
        " (the server certificate is not signed by a trusted CA)"
    } else if text.contains("NotValidForName") || text.contains("not valid for name") {
        " (the server certificate does not match the host name; see ClientTlsConfig::domain_name)"
    } else if text.contains("CertificateRequired") || text.contains("HandshakeFailure") {
        " (the server requires a client certificate: ClientTlsConfig::identity_pem)"
    } else {
        ""
    };
    Status::unavailable(format!("TLS handshake with {addr} failed: {text}{hint}"))
}

impl ClientTls {
    /// Runs the client handshake over `tcp`.
    pub(crate) async fn connect(
        &self,
        host: &str,
        addr: SocketAddr,
        tcp: tokio::net::TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Status> {
        let name = match &self.domain {
            Some(d) => d.clone(),
            None => ServerName::try_from(host.to_string()).map_err(|e| {
                Status::invalid_argument(format!("{host:?} is not a valid TLS server name: {e}"))
            })?,
        };
        self.connector
            .connect(name, tcp)
            .await
            .map_err(|e| handshake_error(addr, &e))
    }

    /// Names a failure seen right after the handshake (e.g. the server
    /// rejecting a missing client certificate shows up on the first read).
    pub(crate) fn explain(addr: SocketAddr, e: Status) -> Status {
        if e.message().contains("alert") {
            let prefix = format!("handshake with {addr} failed: ");
            let text = e.message().strip_prefix(&prefix).unwrap_or(e.message());
            return handshake_error(addr, &io::Error::other(text.to_string()));
        }
        e
    }
}

/// Who the peer of a TLS connection is, from its certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's common name.
    pub common_name: Option<String>,
    /// DNS names of the subject alternative name extension.
    pub dns_names: Vec<String>,
}

impl PeerIdentity {
    /// The first DNS name, else the common name.
    pub fn name(&self) -> Option<&str> {
        self.dns_names
            .first()
            .map(String::as_str)
            .or(self.common_name.as_deref())
    }

    /// Parses the leaf certificate (DER).
    pub fn from_der(der: &[u8]) -> Option<PeerIdentity> {
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(String::from);
        let dns_names = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::DNSName(d) => Some(d.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(PeerIdentity {
            common_name,
            dns_names,
        })
    }
}

/// TLS details of the connection a request came in on (server side), found in
/// the request's extensions.
///
/// ```
/// # fn f(req: &trpc::Request<()>) {
/// if let Some(tls) = req.extensions().get::<trpc::tls::TlsInfo>() {
///     let who = tls.peer_identity().and_then(|id| id.name());
///     println!("mTLS client: {who:?}");
/// }
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct TlsInfo {
    inner: Arc<TlsInfoInner>,
}

#[derive(Debug)]
struct TlsInfoInner {
    peer_certificates: Vec<CertificateDer<'static>>,
    identity: Option<PeerIdentity>,
    alpn: Option<Vec<u8>>,
    server_name: Option<String>,
}

impl TlsInfo {
    /// The client's certificate chain (empty without mutual TLS).
    pub fn peer_certificates(&self) -> &[CertificateDer<'static>] {
        &self.inner.peer_certificates
    }

    /// The client's identity from its leaf certificate.
    pub fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.inner.identity.as_ref()
    }

    /// The negotiated ALPN protocol.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.inner.alpn.as_deref()
    }

    /// The server name the client asked for (SNI).
    pub fn server_name(&self) -> Option<&str> {
        self.inner.server_name.as_deref()
    }

    fn from_conn(conn: &rustls::ServerConnection) -> TlsInfo {
        let peer_certificates: Vec<CertificateDer<'static>> = conn
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        let identity = peer_certificates
            .first()
            .and_then(|c| PeerIdentity::from_der(c));
        TlsInfo {
            inner: Arc::new(TlsInfoInner {
                peer_certificates,
                identity,
                alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                server_name: conn.server_name().map(String::from),
            }),
        }
    }
}

/// Accepts a TLS connection. A plaintext trpc client is told, in plaintext,
/// that this port requires TLS.
pub(crate) async fn accept(
    acceptor: &ServerTls,
    mut tcp: tokio::net::TcpStream,
    peer: SocketAddr,
) -> Option<(
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    TlsInfo,
)> {
    use tokio::io::AsyncWriteExt;
    let mut first = [0u8; 2];
    loop {
        match tcp.peek(&mut first).await {
            Ok(0) | Err(_) => return None,
            Ok(1) => tokio::task::yield_now().await,
            Ok(_) => break,
        }
    }
    if first == crate::frame::MAGIC {
        tracing::warn!(%peer, "plaintext trpc client on a TLS port; telling it so");
        let mut out = bytes::BytesMut::new();
        crate::frame::put_goaway(
            &mut out,
            0,
            crate::frame::GoawayCode::ProtocolError,
            "this server requires TLS",
        );
        let _ = tcp.write_all(&out).await;
        let _ = tcp.shutdown().await;
        return None;
    }
    match acceptor.0.accept(tcp).await {
        Ok(stream) => {
            let info = TlsInfo::from_conn(stream.get_ref().1);
            Some((stream, info))
        }
        Err(e) => {
            tracing::warn!(%peer, error = %e, "TLS handshake failed");
            None
        }
    }
}
