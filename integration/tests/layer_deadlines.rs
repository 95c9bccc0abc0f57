//! A server layer that tightens a call's deadline with
//! `Request::set_deadline` needs no timer of its own: the connection
//! enforces the new deadline (one timer per connection), answers
//! DEADLINE_EXCEEDED and drops the handler.

use std::time::Duration;

use tower::{service_fn, Layer, Service, ServiceExt};
use trpc::server::{unary, Router, Server};
use trpc::{Body, Client, Code, Request, Response, Status};
use trpc_integration::client::connect;
use trpc_integration::messages::Num;
use trpc_integration::probe::{Event, Probe};
use trpc_integration::server::serve_with;
use trpc_integration::SOON;

/// Sets a 50 ms deadline on every request and records whether the
/// transport enforces it.
#[derive(Clone)]
struct Tighten;

impl<S> Layer<S> for Tighten
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Status> + Clone + Send + 'static,
    S::Future: Send,
{
    type Service = tower::util::BoxCloneService<Request<Body>, Response<Body>, Status>;

    fn layer(&self, inner: S) -> Self::Service {
        tower::util::BoxCloneService::new(service_fn(move |mut req: Request<Body>| {
            let inner = inner.clone();
            async move {
                if !req.deadline_enforced() {
                    return Err(Status::internal("the transport does not enforce deadlines"));
                }
                req.set_timeout(Duration::from_millis(50));
                inner.oneshot(req).await
            }
        }))
    }
}

#[tokio::test]
async fn a_deadline_a_layer_tightens_is_enforced_by_the_connection() {
    let (probe, mut events) = Probe::new();
    let router = Router::new().route(
        "d.D/Slow",
        unary(move |req: Request<Num>| {
            let probe = probe.clone();
            async move {
                probe.sleep(Duration::from_secs(30)).await;
                Ok::<_, Status>(Response::new(req.into_inner()))
            }
        }),
    );
    let server = serve_with(Server::builder().layer(Tighten), router).await;
    let mut client = Client::new(connect(server.addr).await);
    let started = tokio::time::Instant::now();
    let err = client
        .unary_message::<_, Num>("d.D/Slow", Num { n: 1 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("the server cancelled"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    events.expect(Event::Started, SOON).await;
    // Panics if the handler is not dropped at the deadline.
    events.expect(Event::Dropped, SOON).await;
    server.shutdown().await;
}
