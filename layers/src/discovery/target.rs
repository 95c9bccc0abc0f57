//! [`Target`]: a service named by URI, in the spirit of gRPC's target URIs.

use std::fmt;

use trpc::Status;

use super::{Discovery, Dns};

/// Where a client finds a service:
///
/// | URI | meaning |
/// |---|---|
/// | `static://a:1,b:2,c:3` | a fixed list |
/// | `dns://host:port`, `dns:///host:port` | the host's A and AAAA records ([`Dns`]) |
/// | `etcd://host:port/name` | instances of `name` registered in etcd at `http://host:port` (feature `etcd`) |
/// | `host:port`, `tcp://host:port` | one address |
/// | `grpc://host:port`, `http://host:port`, `https://host:port` | one gRPC server (kept whole: [`trpc::Endpoint`] picks the gRPC transport from the scheme) |
///
/// ```
/// use trpc_layers::discovery::Target;
/// assert_eq!(
///     Target::parse("etcd://127.0.0.1:2379/echo").unwrap(),
///     Target::Etcd { endpoint: "http://127.0.0.1:2379".into(), name: "echo".into() },
/// );
/// assert_eq!(Target::parse("static://a:1,b:2").unwrap(), Target::Static(vec!["a:1".into(), "b:2".into()]));
/// assert_eq!(Target::parse("grpc://a:1").unwrap(), Target::Static(vec!["grpc://a:1".into()]));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A fixed list of `host:port`.
    Static(Vec<String>),
    /// `host:port` resolved through DNS.
    Dns(String),
    /// A service registered in etcd.
    Etcd {
        /// The etcd endpoint, `http://host:port`.
        endpoint: String,
        /// The service name.
        name: String,
    },
}

impl Target {
    /// Parses a target URI (see the table above).
    pub fn parse(uri: &str) -> Result<Target, Status> {
        let uri = uri.trim();
        let bad = |why: &str| Status::invalid_argument(format!("bad target {uri:?}: {why}"));
        let Some((scheme, rest)) = uri.split_once("://") else {
            return Ok(Target::Static(vec![uri.to_string()]));
        };
        match scheme {
            "static" => {
                let addrs: Vec<String> = rest
                    .split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(String::from)
                    .collect();
                if addrs.is_empty() {
                    return Err(bad("no address"));
                }
                if let Some(a) = addrs.iter().find(|a| !a.contains(':')) {
                    return Err(bad(&format!("{a:?} has no :port")));
                }
                Ok(Target::Static(addrs))
            }
            "dns" => {
                // gRPC writes dns:///host:port (empty authority) or dns://resolver/host:port;
                // the system resolver is always used here.
                let host_port = rest.rsplit('/').next().unwrap_or(rest);
                Dns::new(host_port)?;
                Ok(Target::Dns(host_port.to_string()))
            }
            "etcd" => {
                let (authority, name) = rest
                    .split_once('/')
                    .ok_or_else(|| bad("expected etcd://host:port/name"))?;
                let name = name.trim_matches('/');
                if authority.is_empty() || name.is_empty() {
                    return Err(bad("expected etcd://host:port/name"));
                }
                Ok(Target::Etcd {
                    endpoint: format!("http://{authority}"),
                    name: name.to_string(),
                })
            }
            "tcp" | "trpc" => Ok(Target::Static(vec![rest.trim_end_matches('/').to_string()])),
            "grpc" | "http" | "https" => {
                if rest.trim_matches('/').is_empty() {
                    return Err(bad("no address"));
                }
                Ok(Target::Static(vec![uri.trim_end_matches('/').to_string()]))
            }
            other => Err(bad(&format!(
                "unknown scheme {other:?} (use static://, dns://, etcd://, grpc://, http://, https:// or host:port)"
            ))),
        }
    }

    /// Starts discovering this target.
    pub async fn discover(&self) -> Result<Discovery, Status> {
        match self {
            Target::Static(addrs) => Ok(Discovery::fixed(addrs.iter().cloned())),
            Target::Dns(host_port) => Discovery::dns(host_port),
            #[cfg(feature = "etcd")]
            Target::Etcd { endpoint, name } => Discovery::etcd(endpoint, name)
                .await
                .map_err(|e| Status::unavailable(e.to_string())),
            #[cfg(not(feature = "etcd"))]
            Target::Etcd { .. } => Err(Status::unimplemented(
                "etcd targets need trpc-layers' `etcd` feature",
            )),
        }
    }

    /// Whether this names exactly one address (no balancing needed).
    pub fn single(&self) -> Option<&str> {
        match self {
            Target::Static(addrs) if addrs.len() == 1 => Some(&addrs[0]),
            _ => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Static(addrs) if addrs.len() == 1 && addrs[0].contains("://") => {
                f.write_str(&addrs[0])
            }
            Target::Static(addrs) => write!(f, "static://{}", addrs.join(",")),
            Target::Dns(hp) => write!(f, "dns://{hp}"),
            Target::Etcd { endpoint, name } => {
                let authority = endpoint.trim_start_matches("http://");
                write!(f, "etcd://{authority}/{name}")
            }
        }
    }
}
