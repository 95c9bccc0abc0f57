//! Health checking with the semantics of `grpc.health.v1.Health`: a
//! [`HealthReporter`] handle the application sets per-service statuses on, and
//! the `Check` / `Watch` methods served from a [`Router`].
//!
//! * `grpc.health.v1.Health/Check` answers the current status of a service
//!   (`""` is the whole server); a service nobody registered is `NOT_FOUND`.
//! * `grpc.health.v1.Health/Watch` streams the current status at once, then
//!   every change. A service nobody registered streams `SERVICE_UNKNOWN` and
//!   keeps watching: it streams the real status once the service is set.
//!   When the server shuts down the stream sends `NOT_SERVING` and ends, so
//!   open watches do not hold up the drain.
//!
//! Both accept protobuf (`trpc-codec: proto`, the messages of
//! `grpc/health/v1/health.proto`: [`HealthCheckRequest`], [`HealthCheckResponse`])
//! and JSON (`{"service": "echo.Echo"}` → `{"status": "SERVING"}`).
//!
//! Give the reporter to [`Server::health`](crate::Server::health) and every
//! status turns `NOT_SERVING` the moment graceful shutdown starts, before any
//! GOAWAY is sent, so health-checking clients and load balancers move away
//! while the server drains.
//!
//! ```no_run
//! use trpc::health::{HealthReporter, ServingStatus};
//! use trpc::server::{Router, Server};
//!
//! # async fn run(app: Router) -> std::io::Result<()> {
//! let health = HealthReporter::new();               // "" is SERVING
//! health.set_serving("echo.Echo");
//! let router = app.merge(health.router());          // grpc.health.v1.Health/{Check,Watch}
//! Server::builder()
//!     .health(health.clone())                       // NOT_SERVING when shutdown starts
//!     .serve("127.0.0.1:7000".parse().unwrap(), router)
//!     .await
//! # }
//! ```

mod messages;

pub use messages::{HealthCheckRequest, HealthCheckResponse, ServingStatus};

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_core::Stream;
use tokio::sync::watch;

use crate::codec::{Json, Proto};
use crate::request::{Request, Response};
use crate::server::{server_streaming, unary, Router};
use crate::status::Status;

/// The method name of `Check`.
pub const CHECK_METHOD: &str = "grpc.health.v1.Health/Check";
/// The method name of `Watch`.
pub const WATCH_METHOD: &str = "grpc.health.v1.Health/Watch";

/// Most services that may be watched without being registered; more `Watch`
/// calls on unknown names get `RESOURCE_EXHAUSTED` (a client cannot grow the
/// table without bound).
const MAX_UNKNOWN_WATCHED: usize = 1024;

/// The per-service health statuses of a server. Cheap to clone: every clone
/// shares the same table.
#[derive(Clone)]
pub struct HealthReporter {
    shared: Arc<Shared>,
}

struct Shared {
    services: Mutex<HashMap<String, Entry>>,
    /// Set by [`HealthReporter::shutdown`]: every status is `NOT_SERVING` and
    /// stays so.
    shut_down: AtomicBool,
}

struct Entry {
    /// `None`: watched but never registered (`SERVICE_UNKNOWN`).
    status: Option<ServingStatus>,
    tx: watch::Sender<ServingStatus>,
}

impl Entry {
    fn new(status: Option<ServingStatus>) -> Entry {
        Entry {
            status,
            tx: watch::Sender::new(status.unwrap_or(ServingStatus::ServiceUnknown)),
        }
    }

    fn set(&mut self, status: Option<ServingStatus>) {
        self.status = status;
        let seen = status.unwrap_or(ServingStatus::ServiceUnknown);
        self.tx
            .send_if_modified(|s| std::mem::replace(s, seen) != seen);
    }
}

impl Default for HealthReporter {
    fn default() -> Self {
        HealthReporter::new()
    }
}

impl HealthReporter {
    /// A table where the whole server (`""`) is `SERVING` and nothing else is
    /// registered.
    pub fn new() -> HealthReporter {
        let mut services = HashMap::new();
        services.insert(String::new(), Entry::new(Some(ServingStatus::Serving)));
        HealthReporter {
            shared: Arc::new(Shared {
                services: Mutex::new(services),
                shut_down: AtomicBool::new(false),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.shared
            .services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the status of `service` (`""`: the whole server). Ignored after
    /// [`shutdown`](Self::shutdown).
    pub fn set_status(&self, service: &str, status: ServingStatus) {
        let mut services = self.lock();
        if self.shared.shut_down.load(Ordering::Acquire) {
            return;
        }
        match services.get_mut(service) {
            Some(e) => e.set(Some(status)),
            None => {
                services.insert(service.to_string(), Entry::new(Some(status)));
            }
        }
    }

    /// Marks `service` `SERVING`.
    pub fn set_serving(&self, service: &str) {
        self.set_status(service, ServingStatus::Serving);
    }

    /// Marks `service` `NOT_SERVING`.
    pub fn set_not_serving(&self, service: &str) {
        self.set_status(service, ServingStatus::NotServing);
    }

    /// Forgets `service`: `Check` answers `NOT_FOUND`, watchers see
    /// `SERVICE_UNKNOWN`.
    pub fn clear(&self, service: &str) {
        let mut services = self.lock();
        if let Some(e) = services.get_mut(service) {
            e.set(None);
            if e.tx.receiver_count() == 0 {
                services.remove(service);
            }
        }
    }

    /// The status of `service`, `None` if it is not registered.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        self.lock().get(service).and_then(|e| e.status)
    }

    /// Whether the whole server (`""`) is `SERVING`: what `/readyz` reports.
    pub fn is_serving(&self) -> bool {
        self.status("") == Some(ServingStatus::Serving)
    }

    /// Readiness for an admin `/readyz` endpoint: `Ok` while the whole server
    /// (`""`) is `SERVING`, else why not.
    ///
    /// ```
    /// let health = trpc::health::HealthReporter::new();
    /// assert_eq!(health.readiness(), Ok(()));
    /// health.shutdown();
    /// assert_eq!(health.readiness(), Err("shutting down".to_string()));
    /// ```
    pub fn readiness(&self) -> Result<(), String> {
        match self.status("") {
            Some(ServingStatus::Serving) => Ok(()),
            _ if self.is_shut_down() => Err("shutting down".to_string()),
            Some(s) => Err(format!("server is {s}")),
            None => Err("server status cleared".to_string()),
        }
    }

    /// Every registered service and its status, sorted by name.
    pub fn statuses(&self) -> Vec<(String, ServingStatus)> {
        let mut all: Vec<_> = self
            .lock()
            .iter()
            .filter_map(|(k, e)| e.status.map(|s| (k.clone(), s)))
            .collect();
        all.sort();
        all
    }

    /// Marks every service `NOT_SERVING` and ignores later changes: called
    /// by the server when graceful shutdown starts
    /// ([`Server::health`](crate::Server::health)).
    pub fn shutdown(&self) {
        let mut services = self.lock();
        self.shared.shut_down.store(true, Ordering::Release);
        for e in services.values_mut() {
            if e.status.is_some() {
                e.set(Some(ServingStatus::NotServing));
            } else {
                // Wakes the watchers of unknown services so their streams end.
                e.tx.send_modify(|_| ());
            }
        }
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.shared.shut_down.load(Ordering::Acquire)
    }

    /// A watch of `service`'s status (`SERVICE_UNKNOWN` while unregistered).
    pub fn subscribe(&self, service: &str) -> Result<watch::Receiver<ServingStatus>, Status> {
        let mut services = self.lock();
        if let Some(e) = services.get(service) {
            return Ok(e.tx.subscribe());
        }
        let unknown = services.values().filter(|e| e.status.is_none()).count();
        if unknown >= MAX_UNKNOWN_WATCHED {
            return Err(Status::resource_exhausted(
                "too many unknown services watched",
            ));
        }
        let entry = Entry::new(None);
        let rx = entry.tx.subscribe();
        services.insert(service.to_string(), entry);
        Ok(rx)
    }

    /// The `Check` and `Watch` methods as a router (protobuf and JSON):
    /// merge it into the application's router.
    pub fn router(&self) -> Router {
        let check = {
            let this = self.clone();
            move |req: Request<HealthCheckRequest>| {
                let this = this.clone();
                async move { this.check(&req.get_ref().service) }
            }
        };
        let watch = {
            let this = self.clone();
            move |req: Request<HealthCheckRequest>| {
                let this = this.clone();
                async move { this.watch(&req.get_ref().service) }
            }
        };
        Router::new()
            .route(CHECK_METHOD, unary(check).codec((Proto, Json)))
            .route(WATCH_METHOD, server_streaming(watch).codec((Proto, Json)))
    }

    fn check(&self, service: &str) -> Result<Response<HealthCheckResponse>, Status> {
        match self.status(service) {
            Some(status) => Ok(Response::new(HealthCheckResponse::new(status))),
            None => Err(Status::not_found(format!("unknown service {service:?}"))),
        }
    }

    fn watch(&self, service: &str) -> Result<Response<WatchStream>, Status> {
        let rx = self.subscribe(service)?;
        Ok(Response::new(watch_stream(rx, self.shared.clone())))
    }
}

impl fmt::Debug for HealthReporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthReporter")
            .field("statuses", &self.statuses())
            .field("shut_down", &self.is_shut_down())
            .finish()
    }
}

type WatchStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

/// The current status at once, then every change, until the caller hangs up
/// or the server shuts down: then the stream sends its last status
/// (`NOT_SERVING`) and ends, so it does not hold up the drain.
fn watch_stream(rx: watch::Receiver<ServingStatus>, shared: Arc<Shared>) -> WatchStream {
    Box::pin(futures_util::stream::unfold(
        (rx, true, false),
        move |(mut rx, first, last_sent)| {
            let shared = shared.clone();
            async move {
                if last_sent || (!first && rx.changed().await.is_err()) {
                    return None;
                }
                let status = *rx.borrow_and_update();
                let last = shared.shut_down.load(Ordering::Acquire);
                Some((Ok(HealthCheckResponse::new(status)), (rx, false, last)))
            }
        },
    ))
}

#[cfg(test)]
mod tests;
