//! [`AdminBuilder`]: what the admin server serves.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderValue, Method, Response, StatusCode};

use super::health::{report, Named};
use super::page::{text, Page};
use super::{AdminServer, HealthCheck};

/// Builds an [`AdminServer`]: which pages it serves and which health checks
/// answer `/healthz` and `/readyz`. Start with [`Admin::builder`](super::Admin::builder).
///
/// | path | answers |
/// |---|---|
/// | `/` | the list of pages |
/// | `/metrics` | the registry, Prometheus text format ([`metrics`](Self::metrics)) |
/// | `/healthz` | liveness: `200 ok` while every [`liveness`](Self::liveness) check passes, else `503` |
/// | `/readyz` | readiness: `200 ok` while every liveness and [`readiness`](Self::readiness) check passes, else `503` |
/// | any other | a [`page`](Self::page) |
///
/// `?verbose` on `/healthz` or `/readyz` lists each check (`[+]name ok`,
/// `[-]name failed: reason`), as Kubernetes' own endpoints do.
#[derive(Default)]
pub struct AdminBuilder {
    #[cfg(feature = "metrics")]
    registry: Option<prometheus::Registry>,
    liveness: Vec<Named>,
    readiness: Vec<Named>,
    pages: BTreeMap<String, Arc<dyn Page>>,
}

impl AdminBuilder {
    /// Serves every metric of `registry` on `GET /metrics`.
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, registry: prometheus::Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Adds a liveness check: `/healthz` (and `/readyz`) fail while it fails.
    /// Without any, `/healthz` answers `ok` while the process serves.
    pub fn liveness(mut self, name: &str, check: impl HealthCheck) -> Self {
        self.liveness.push(Named {
            name: name.into(),
            check: Arc::new(check),
        });
        self
    }

    /// Adds a readiness check: `/readyz` fails while it fails (a server that
    /// is draining, a cache still warming up).
    pub fn readiness(mut self, name: &str, check: impl HealthCheck) -> Self {
        self.readiness.push(Named {
            name: name.into(),
            check: Arc::new(check),
        });
        self
    }

    /// Serves `page` on `path` (which starts with `/`; a built-in path is
    /// replaced). The page answers every method.
    pub fn page(mut self, path: &str, page: impl Page) -> Self {
        self.pages.insert(path.to_owned(), Arc::new(page));
        self
    }

    /// Binds `addr` (port 0 picks a free port) and serves in a background task
    /// until [`AdminServer::shutdown`] or drop.
    pub async fn bind(self, addr: SocketAddr) -> io::Result<AdminServer> {
        AdminServer::start(addr, self.into_routes()).await
    }

    /// The routing table: built-in pages, then the added ones.
    fn into_routes(self) -> Routes {
        let mut pages: BTreeMap<String, Arc<dyn Page>> = BTreeMap::new();
        #[cfg(feature = "metrics")]
        if let Some(registry) = self.registry {
            pages.insert(
                "/metrics".into(),
                Arc::new(get_only(metrics_page(registry))),
            );
        }
        let live = self.liveness;
        let ready: Vec<Named> = live.iter().cloned().chain(self.readiness).collect();
        pages.insert(
            "/healthz".into(),
            Arc::new(get_only(move |req: &Parts| {
                health_page(req, &live, "liveness")
            })),
        );
        pages.insert(
            "/readyz".into(),
            Arc::new(get_only(move |req: &Parts| {
                health_page(req, &ready, "readiness")
            })),
        );
        pages.extend(self.pages);
        let index = pages.keys().fold(String::from("trpc admin\n"), |mut s, p| {
            s.push_str(p);
            s.push('\n');
            s
        });
        pages.entry("/".into()).or_insert_with(|| {
            Arc::new(get_only(move |_: &Parts| {
                text(StatusCode::OK, index.clone())
            }))
        });
        Routes { pages }
    }
}

impl fmt::Debug for AdminBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("AdminBuilder");
        #[cfg(feature = "metrics")]
        d.field("metrics", &self.registry.is_some());
        d.field("liveness", &self.liveness)
            .field("readiness", &self.readiness)
            .field("pages", &self.pages.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The pages of a running admin server, by path.
pub(crate) struct Routes {
    pages: BTreeMap<String, Arc<dyn Page>>,
}

impl Routes {
    /// The response to a request.
    pub(crate) fn respond(&self, req: &Parts) -> Response<Bytes> {
        match self.pages.get(req.uri.path()) {
            Some(page) => page.render(req),
            None => {
                let mut known = String::new();
                for p in self.pages.keys() {
                    known.push(' ');
                    known.push_str(p);
                }
                text(StatusCode::NOT_FOUND, format!("not found; pages:{known}\n"))
            }
        }
    }

    /// The paths served.
    pub(crate) fn paths(&self) -> impl Iterator<Item = &str> + '_ {
        self.pages.keys().map(String::as_str)
    }
}

/// A page that answers only `GET` and `HEAD` (`405` otherwise).
fn get_only(page: impl Page) -> impl Page {
    move |req: &Parts| {
        if req.method == Method::GET || req.method == Method::HEAD {
            return page.render(req);
        }
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        resp
    }
}

fn health_page(req: &Parts, checks: &[Named], what: &str) -> Response<Bytes> {
    let verbose = req.uri.query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == "verbose" || kv.starts_with("verbose="))
    });
    let (healthy, body) = report(checks, what, verbose);
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    text(status, body)
}

#[cfg(feature = "metrics")]
fn metrics_page(registry: prometheus::Registry) -> impl Page {
    use prometheus::{Encoder, TextEncoder};
    move |_: &Parts| {
        let encoder = TextEncoder::new();
        let mut buf = Vec::new();
        match encoder.encode(&registry.gather(), &mut buf) {
            Ok(()) => {
                let mut resp = text(StatusCode::OK, buf);
                if let Ok(v) = HeaderValue::from_str(encoder.format_type()) {
                    resp.headers_mut().insert(header::CONTENT_TYPE, v);
                }
                resp
            }
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode metrics: {e}\n"),
            ),
        }
    }
}
