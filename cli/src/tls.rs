//! TLS options shared by the commands that connect to a server.

use trpc::{Endpoint, Status};

/// TLS options: `--ca` turns TLS on.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct TlsArgs {
    /// Use TLS, trusting the CA certificates in this PEM file.
    #[arg(long, value_name = "PEM")]
    ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, value_name = "PEM", requires = "key", requires = "ca")]
    cert: Option<std::path::PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, value_name = "PEM", requires = "cert")]
    key: Option<std::path::PathBuf>,
    /// Server name to verify (default: the host of ADDR).
    #[arg(long, requires = "ca")]
    domain: Option<String>,
}

impl TlsArgs {
    pub(crate) fn apply(&self, endpoint: Endpoint) -> Result<Endpoint, Status> {
        match self.config()? {
            Some(tls) => Ok(endpoint.tls_config(tls)?),
            None => Ok(endpoint),
        }
    }

    /// The client TLS configuration, `None` without `--ca`.
    pub(crate) fn config(&self) -> Result<Option<trpc::tls::ClientTlsConfig>, Status> {
        let Some(ca) = &self.ca else {
            return Ok(None);
        };
        let mut tls = trpc::tls::ClientTlsConfig::new().ca_pem_file(ca)?;
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let read = |p: &std::path::Path| {
                std::fs::read(p)
                    .map_err(|e| Status::invalid_argument(format!("{}: {e}", p.display())))
            };
            tls = tls.identity_pem(read(cert)?, read(key)?)?;
        }
        if let Some(d) = &self.domain {
            tls = tls.domain_name(d.clone());
        }
        Ok(Some(tls))
    }
}
