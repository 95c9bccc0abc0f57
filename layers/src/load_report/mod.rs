//! Server load reports (in the spirit of gRPC's ORCA): [`LoadReportLayer`]
//! adds a `trpc-load` entry to every successful reply's metadata with the
//! calls the server has in flight and a utilization the application sets
//! through a [`LoadReporter`]; client balancers
//! ([`BalanceLayer::weighted`](crate::balance::BalanceLayer::weighted),
//! [`BalanceLayer::p2c_peak_ewma`](crate::balance::BalanceLayer::p2c_peak_ewma))
//! read it and send less to busy replicas.
//!
//! The value is `util=U,inflight=N`: `U` in `[0, 1]` with three decimals,
//! `N` an integer, e.g. `trpc-load: util=0.375,inflight=12`.
//!
//! ```
//! use trpc_layers::load_report::{LoadReportLayer, LoadReporter};
//! let reporter = LoadReporter::new();
//! let layer = LoadReportLayer::new(reporter.clone()); // Server::builder().layer(layer)
//! reporter.set_utilization(0.75);                     // e.g. from a CPU sampler
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;
use trpc::metadata::MetadataValue;
use trpc::{Body, Request, Response};

/// The response metadata key of load reports.
pub const LOAD_REPORT_KEY: &str = "trpc-load";

/// One load report.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadReport {
    /// Application-set utilization in `[0, 1]`.
    pub utilization: f64,
    /// Calls in flight on the server.
    pub in_flight: u64,
}

impl LoadReport {
    /// Parses `util=U,inflight=N` (unknown fields are ignored; values are
    /// clamped). `None` when no field could be read.
    pub fn parse(s: &str) -> Option<LoadReport> {
        let mut report = LoadReport {
            utilization: 0.0,
            in_flight: 0,
        };
        let mut any = false;
        for field in s.split(',') {
            match field.trim().split_once('=') {
                Some(("util", v)) => {
                    if let Ok(u) = v.parse::<f64>() {
                        if u.is_finite() {
                            report.utilization = u.clamp(0.0, 1.0);
                            any = true;
                        }
                    }
                }
                Some(("inflight", v)) => {
                    if let Ok(n) = v.parse() {
                        report.in_flight = n;
                        any = true;
                    }
                }
                _ => {}
            }
        }
        any.then_some(report)
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "util={:.3},inflight={}",
            self.utilization, self.in_flight
        )
    }
}

/// The handle the application sets its utilization on; also counts the calls
/// in flight. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct LoadReporter {
    shared: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    utilization: AtomicU64,
    in_flight: AtomicU64,
}

impl LoadReporter {
    /// A reporter with utilization 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the utilization (clamped to `[0, 1]`).
    pub fn set_utilization(&self, u: f64) {
        let u = if u.is_finite() {
            u.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.shared
            .utilization
            .store(u.to_bits(), Ordering::Relaxed);
    }

    /// The current report.
    pub fn report(&self) -> LoadReport {
        LoadReport {
            utilization: f64::from_bits(self.shared.utilization.load(Ordering::Relaxed)),
            in_flight: self.shared.in_flight.load(Ordering::Relaxed),
        }
    }
}

/// Adds load reports to replies; see the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct LoadReportLayer {
    reporter: LoadReporter,
}

impl LoadReportLayer {
    /// Reports through `reporter`.
    pub fn new(reporter: LoadReporter) -> Self {
        LoadReportLayer { reporter }
    }
}

impl<S> Layer<S> for LoadReportLayer {
    type Service = Reporting<S>;

    fn layer(&self, inner: S) -> Reporting<S> {
        Reporting::new(inner, self.reporter.clone())
    }
}

/// The service of [`LoadReportLayer`].
#[derive(Clone, Debug)]
pub struct Reporting<S> {
    inner: S,
    reporter: LoadReporter,
}

impl<S> Reporting<S> {
    /// Wraps `inner`, reporting through `reporter`.
    pub fn new(inner: S, reporter: LoadReporter) -> Self {
        Reporting { inner, reporter }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<Request<Body>> for Reporting<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        self.reporter
            .shared
            .in_flight
            .fetch_add(1, Ordering::Relaxed);
        ResponseFuture {
            inner: self.inner.call(req),
            guard: Some(InFlight(self.reporter.clone())),
        }
    }
}

struct InFlight(LoadReporter);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project! {
    /// The future of a [`Reporting`] call.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        guard: Option<InFlight>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = match this.inner.poll(cx) {
            Poll::Ready(Ok(r)) => r,
            Poll::Ready(Err(e)) => {
                this.guard.take();
                return Poll::Ready(Err(e));
            }
            Poll::Pending => return Poll::Pending,
        };
        if let Some(guard) = this.guard.take() {
            // Reported before this call leaves the count: the load the reply
            // was served under.
            let report = guard.0.report();
            if let Ok(v) = MetadataValue::try_from(report.to_string()) {
                resp.metadata_mut().insert_value(LOAD_REPORT_KEY, v);
            }
        }
        Poll::Ready(Ok(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_and_bad_values_are_ignored() {
        let r = LoadReport {
            utilization: 0.375,
            in_flight: 12,
        };
        assert_eq!(r.to_string(), "util=0.375,inflight=12");
        assert_eq!(LoadReport::parse(&r.to_string()), Some(r));
        assert_eq!(LoadReport::parse("util=7,x=1").unwrap().utilization, 1.0);
        assert_eq!(LoadReport::parse("util=NaN"), None);
        assert_eq!(LoadReport::parse("garbage"), None);
    }

    #[tokio::test]
    async fn replies_carry_the_load_the_call_was_served_under() {
        use tower::ServiceExt;
        let reporter = LoadReporter::new();
        reporter.set_utilization(0.5);
        let svc = LoadReportLayer::new(reporter.clone()).layer(tower::service_fn(
            |_req: Request<Body>| async { Ok::<_, trpc::Status>(Response::new(Body::default())) },
        ));
        let resp = svc.oneshot(Request::new(Body::default())).await.unwrap();
        let report = LoadReport::parse(resp.metadata().get(LOAD_REPORT_KEY).unwrap()).unwrap();
        assert_eq!(
            report,
            LoadReport {
                utilization: 0.5,
                in_flight: 1
            }
        );
        assert_eq!(reporter.report().in_flight, 0);
    }
}
