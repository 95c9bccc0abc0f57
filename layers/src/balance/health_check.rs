//! [`HealthCheck`]: active health checks of every endpoint of a balancer,
//! through `grpc.health.v1.Health/Check` (see [`trpc::health`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use trpc::codec::Proto;
use trpc::health::{HealthCheckRequest, HealthCheckResponse, ServingStatus, CHECK_METHOD};
use trpc::{Client, Code, Request};

use super::node::Node;

/// Checks every endpoint on an interval: an endpoint is healthy while its
/// `Check` answers `SERVING` for [`service`](HealthCheck::service)
/// (default `""`, the whole server). `NOT_SERVING`, `NOT_FOUND`, a failure
/// or no answer within the timeout makes it unhealthy until a check passes
/// again. A server without the health service (`UNIMPLEMENTED`) counts as
/// healthy.
///
/// ```
/// use std::time::Duration;
/// use trpc_layers::balance::{BalanceLayer, HealthCheck};
/// let layer = BalanceLayer::round_robin()
///     .health_check(HealthCheck::new(Duration::from_secs(5)).service("echo.Echo"));
/// ```
#[derive(Clone, Debug)]
pub struct HealthCheck {
    interval: Duration,
    timeout: Duration,
    service: String,
}

impl HealthCheck {
    /// A check every `interval` with a timeout of the interval (at most 1 s).
    pub fn new(interval: Duration) -> Self {
        HealthCheck {
            interval: interval.max(Duration::from_millis(10)),
            timeout: interval.min(Duration::from_secs(1)),
            service: String::new(),
        }
    }

    /// The service name to check (default `""`).
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = service.into();
        self
    }

    /// Time allowed for each check.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Starts checking `node` unless a check task already runs for it.
    pub(crate) fn spawn(&self, node: &Arc<Node>) {
        if node.checking.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Node> = Arc::downgrade(node);
        let check = self.clone();
        tokio::spawn(async move {
            loop {
                let Some(node) = weak.upgrade() else { return };
                if node.removed.load(Ordering::Relaxed) {
                    return;
                }
                let mut client = Client::with_codec(node.channel.clone(), Proto);
                let addr = node.addr().to_string();
                drop(node);
                let mut req = Request::new(HealthCheckRequest {
                    service: check.service.clone(),
                });
                req.set_timeout(check.timeout);
                let result = client
                    .unary::<_, HealthCheckResponse>(CHECK_METHOD, req)
                    .await;
                let healthy = match &result {
                    Ok(r) => r.get_ref().serving_status() == ServingStatus::Serving,
                    Err(s) => s.code() == Code::Unimplemented,
                };
                let Some(node) = weak.upgrade() else { return };
                let was = node.healthy.swap(healthy, Ordering::AcqRel);
                if was != healthy {
                    match &result {
                        Ok(r) => {
                            tracing::info!(%addr, status = %r.get_ref().serving_status(), healthy, "health check changed")
                        }
                        Err(e) => {
                            tracing::info!(%addr, error = %e, healthy, "health check changed")
                        }
                    }
                }
                drop(node);
                tokio::time::sleep(check.interval).await;
            }
        });
    }
}
