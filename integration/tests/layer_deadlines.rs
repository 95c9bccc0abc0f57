//! A server layer that tightens a call's deadline with
//! `Request::set_deadline` needs no timer of its own: the connection
//! enforces the new deadline (one timer per connection), answers
//! DEADLINE_EXCEEDED and drops the handler.

use std::time::Duration;

use tokio::sync::oneshot;
use tower::{service_fn, Layer, Service, ServiceExt};
use trpc::server::{unary, Router, Server};
use trpc::{Body, Client, Code, Endpoint, Request, Response, Status};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Msg {
    n: u64,
}

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

struct DropSignal(Option<oneshot::Sender<()>>);
impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

#[tokio::test]
async fn a_deadline_a_layer_tightens_is_enforced_by_the_connection() {
    let (dropped_tx, dropped) = oneshot::channel();
    let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(dropped_tx)));
    let router = Router::new().route(
        "d.D/Slow",
        unary(move |req: Request<Msg>| {
            let guard = DropSignal(slot.lock().unwrap().take());
            async move {
                let _guard = guard;
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok::<_, Status>(Response::new(req.into_inner()))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(Server::builder().layer(Tighten).serve_with_listener(
        listener,
        router,
        async move {
            let _ = stopped.await;
        },
    ));
    let channel = Endpoint::new(format!("tcp://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = Client::new(channel);
    let started = tokio::time::Instant::now();
    let err = client
        .unary_message::<_, Msg>("d.D/Slow", Msg { n: 1 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("the server cancelled"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    tokio::time::timeout(Duration::from_secs(10), dropped)
        .await
        .expect("handler not dropped at the deadline")
        .unwrap();
    let _ = stop.send(());
    let _: Result<std::io::Result<()>, _> = server.await;
}
