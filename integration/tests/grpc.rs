//! gRPC both ways through trpc: a trpc server answers gRPC on its own port
//! (next to native clients), a trpc gRPC channel (`grpc://`) calls it — every
//! call shape, metadata both ways (text and `-bin`), trailers, deadlines as
//! `grpc-timeout`, cancellation, size limits, unknown methods, panics, the
//! protocol seen by handlers, and layers applied unchanged.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tower::ServiceExt;

use trpc::codec::{Json, Proto};
use trpc::server::{bidi_streaming, client_streaming, server_streaming, unary, Router, Server};
use trpc::{
    Body, Channel, Client, Code, Endpoint, Payload, Protocol, Request, Response, Status, Streaming,
};
use trpc_integration::messages::EchoMsg;
use trpc_integration::probe::{Event, Probe};
use trpc_integration::server::{serve, serve_with};
use trpc_integration::{within, SOON};

async fn say(req: Request<EchoMsg>) -> Result<Response<EchoMsg>, Status> {
    let proto = req.protocol();
    let user = req.metadata().get("x-user").unwrap_or("").to_string();
    let blob = req.metadata().get_bin("x-blob-bin").cloned();
    let mut resp = Response::new(EchoMsg::new(format!(
        "{} from {user} over {proto}",
        req.get_ref().message
    )));
    resp.metadata_mut().insert("x-reply", "yes");
    if let Some(b) = blob {
        resp.metadata_mut().insert_bin("x-blob-bin", b);
    }
    Ok(resp)
}

async fn fail(req: Request<EchoMsg>) -> Result<Response<EchoMsg>, Status> {
    let mut md = trpc::MetadataMap::new();
    md.insert("x-why", "because");
    Err(
        Status::not_found(format!("no {} ☃ 100%", req.get_ref().message))
            .with_details(vec![1u8, 2, 3])
            .with_metadata(md),
    )
}

async fn boom(_req: Request<EchoMsg>) -> Result<Response<EchoMsg>, Status> {
    panic!("handler exploded")
}

async fn count(
    req: Request<EchoMsg>,
) -> Result<Response<impl futures_util::Stream<Item = Result<EchoMsg, Status>>>, Status> {
    let n: usize = req.get_ref().message.parse().unwrap_or(3);
    let mut md = trpc::MetadataMap::new();
    md.insert("x-count", "done");
    let items = (0..n)
        .map(|i| Ok(EchoMsg::new(i.to_string())))
        .chain(std::iter::once(Err(Status::ok_with_trailers(md))));
    Ok(Response::new(futures_util::stream::iter(items)))
}

async fn join(req: Request<Streaming<EchoMsg>>) -> Result<Response<EchoMsg>, Status> {
    let mut s = req.into_inner();
    let mut all = Vec::new();
    while let Some(m) = s.message().await? {
        all.push(m.message);
    }
    Ok(Response::new(EchoMsg::new(all.join(","))))
}

async fn shout(
    req: Request<Streaming<EchoMsg>>,
) -> Result<Response<impl futures_util::Stream<Item = Result<EchoMsg, Status>>>, Status> {
    let s = req.into_inner();
    Ok(Response::new(s.map(|m| {
        m.map(|m| EchoMsg::new(m.message.to_uppercase()))
    })))
}

fn router(probe: Probe) -> Router {
    let slow = move |_req: Request<EchoMsg>| {
        let probe = probe.clone();
        async move {
            let guard = probe.enter();
            tokio::time::sleep(Duration::from_secs(60)).await;
            guard.finish();
            Ok::<_, Status>(Response::new(EchoMsg::new("late")))
        }
    };
    Router::new()
        .route("test.Echo/Say", unary(say).codec((Proto, Json)))
        .route("test.Echo/Fail", unary(fail).codec((Proto, Json)))
        .route("test.Echo/Boom", unary(boom).codec(Proto))
        .route("test.Echo/Slow", unary(slow).codec(Proto))
        .route("test.Echo/Count", server_streaming(count).codec(Proto))
        .route("test.Echo/Join", client_streaming(join).codec(Proto))
        .route("test.Echo/Shout", bidi_streaming(shout).codec(Proto))
}

async fn grpc_channel(addr: std::net::SocketAddr) -> Channel {
    within(
        SOON,
        "gRPC connect",
        Endpoint::new(format!("grpc://{addr}")).unwrap().connect(),
    )
    .await
    .expect("gRPC connect")
}

#[tokio::test]
async fn unary_calls_carry_metadata_both_ways_and_see_the_grpc_protocol() {
    let (probe, _events) = Probe::new();
    let server = serve(router(probe)).await;
    let channel = grpc_channel(server.addr).await;
    for json in [false, true] {
        let mut req = Request::new(EchoMsg::new("hi"));
        req.metadata_mut().insert("x-user", "alice");
        req.metadata_mut()
            .insert_bin("x-blob-bin", vec![0u8, 255, 7]);
        let resp = if json {
            Client::new(channel.clone())
                .unary::<_, EchoMsg>("test.Echo/Say", req)
                .await
        } else {
            Client::with_codec(channel.clone(), Proto)
                .unary::<_, EchoMsg>("test.Echo/Say", req)
                .await
        }
        .expect("call");
        assert_eq!(resp.get_ref().message, "hi from alice over grpc");
        assert_eq!(resp.metadata().get("x-reply"), Some("yes"));
        assert_eq!(
            resp.metadata().get_bin("x-blob-bin").map(|b| &b[..]),
            Some(&[0u8, 255, 7][..])
        );
    }
    // The native protocol on the same port, at the same time.
    let native = trpc_integration::client::connect(server.addr).await;
    let reply: EchoMsg = Client::with_codec(native, Proto)
        .unary_message("test.Echo/Say", EchoMsg::new("hi"))
        .await
        .unwrap();
    assert_eq!(reply.message, "hi from  over trpc");
    server.shutdown().await;
}

#[tokio::test]
async fn errors_arrive_with_code_message_details_and_trailers() {
    let (probe, _events) = Probe::new();
    let server = serve(router(probe)).await;
    let mut client = Client::with_codec(grpc_channel(server.addr).await, Proto);
    let err = client
        .unary_message::<_, EchoMsg>("test.Echo/Fail", EchoMsg::new("cake"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "no cake ☃ 100%");
    assert_eq!(&err.details()[..], &[1, 2, 3]);
    assert_eq!(err.metadata().get("x-why"), Some("because"));

    let err = client
        .unary_message::<_, EchoMsg>("test.Echo/Nope", EchoMsg::new("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err}");
    let err = client
        .unary_message::<_, EchoMsg>("nope.Service/Say", EchoMsg::new("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err}");

    let err = client
        .unary_message::<_, EchoMsg>("test.Echo/Boom", EchoMsg::new("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err}");
    assert!(err.message().contains("handler exploded"), "{err}");
    // The server lives on.
    let ok: EchoMsg = client
        .unary_message("test.Echo/Say", EchoMsg::new("still"))
        .await
        .unwrap();
    assert!(ok.message.starts_with("still"));
    server.shutdown().await;
}

#[tokio::test]
async fn every_streaming_shape_works_with_trailers() {
    let (probe, _events) = Probe::new();
    let server = serve(router(probe)).await;
    let mut client = Client::with_codec(grpc_channel(server.addr).await, Proto);

    let mut s = client
        .server_streaming::<_, EchoMsg>("test.Echo/Count", Request::new(EchoMsg::new("5")))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        got.push(m.message);
    }
    assert_eq!(got, ["0", "1", "2", "3", "4"]);
    assert_eq!(s.trailers().and_then(|t| t.get("x-count")), Some("done"));

    let msgs = futures_util::stream::iter((0..100).map(|i| EchoMsg::new(i.to_string())));
    let joined: EchoMsg = client
        .client_streaming("test.Echo/Join", Request::new(msgs))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(joined.message.split(',').count(), 100);

    let (tx, rx) = tokio::sync::mpsc::channel::<EchoMsg>(4);
    let rx =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut replies = client
        .bidi_streaming::<_, EchoMsg, _>("test.Echo/Shout", Request::new(rx))
        .await
        .unwrap()
        .into_inner();
    for word in ["ping", "pong", "done"] {
        tx.send(EchoMsg::new(word)).await.unwrap();
        let r = within(SOON, "bidi reply", replies.message())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.message, word.to_uppercase());
    }
    drop(tx);
    assert!(within(SOON, "bidi end", replies.message())
        .await
        .unwrap()
        .is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn the_deadline_travels_as_grpc_timeout_and_cancels_the_handler() {
    let (probe, mut events) = Probe::new();
    let server = serve(router(probe)).await;
    let mut client = Client::with_codec(grpc_channel(server.addr).await, Proto);
    let mut req = Request::new(EchoMsg::new("x"));
    req.set_timeout(Duration::from_millis(300));
    let err = client
        .unary::<_, EchoMsg>("test.Echo/Slow", req)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    events.expect(Event::Started, SOON).await;
    events.expect(Event::Dropped, SOON).await;

    // Dropping a call resets its stream: the handler is dropped.
    let call = tokio::spawn({
        let mut client = client.clone();
        async move {
            client
                .unary_message::<_, EchoMsg>("test.Echo/Slow", EchoMsg::new("x"))
                .await
        }
    });
    events.expect(Event::Started, SOON).await;
    call.abort();
    events.expect(Event::Dropped, SOON).await;
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_messages_are_resource_exhausted_both_ways() {
    let (probe, _events) = Probe::new();
    let server = serve_with(Server::builder().max_message_size(1024), router(probe)).await;
    let mut client = Client::with_codec(grpc_channel(server.addr).await, Proto);
    let err = client
        .unary_message::<_, EchoMsg>("test.Echo/Say", EchoMsg::new("x".repeat(4096)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    // The reply is larger than the server sends.
    let err = client
        .unary_message::<_, EchoMsg>("test.Echo/Say", EchoMsg::new("y".repeat(1010)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    // A client limit on replies.
    let small = Endpoint::new(format!("grpc://{}", server.addr))
        .unwrap()
        .max_message_size(16)
        .connect()
        .await
        .unwrap();
    let req = Request::new(Body::once(Payload::new(bytes::Bytes::from_static(
        b"\x0a\x01a",
    ))))
    .with_method("test.Echo/Say");
    let mut req = req;
    trpc::codec::set_codec_name(req.metadata_mut(), "proto");
    let err = small.oneshot(req).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    server.shutdown().await;
}

#[tokio::test]
async fn server_layers_apply_to_grpc_calls_unchanged() {
    #[derive(Clone)]
    struct Count<S>(S, Arc<AtomicUsize>);
    impl<S: tower::Service<Request<Body>>> tower::Service<Request<Body>> for Count<S> {
        type Response = S::Response;
        type Error = S::Error;
        type Future = S::Future;
        fn poll_ready(
            &mut self,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), S::Error>> {
            self.0.poll_ready(cx)
        }
        fn call(&mut self, req: Request<Body>) -> S::Future {
            if req.protocol() == Protocol::Grpc {
                self.1.fetch_add(1, Ordering::SeqCst);
            }
            self.0.call(req)
        }
    }
    let seen = Arc::new(AtomicUsize::new(0));
    let layer = tower::layer::layer_fn({
        let seen = seen.clone();
        move |s| Count(s, seen.clone())
    });
    let (probe, _events) = Probe::new();
    let server = serve_with(
        Server::builder()
            .layer(layer)
            .layer(trpc_layers::RequireAuthLayer::new(
                trpc_layers::auth::StaticKeys::new()
                    .bearer("s3cret", trpc_layers::auth::Identity::new("tester")),
            )),
        router(probe),
    )
    .await;
    let channel = grpc_channel(server.addr).await;
    let mut bare = Client::with_codec(channel.clone(), Proto);
    let err = bare
        .unary_message::<_, EchoMsg>("test.Echo/Say", EchoMsg::new("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    let authed = tower::ServiceBuilder::new()
        .layer(trpc_layers::AuthLayer::bearer("s3cret"))
        .service(channel);
    let ok: EchoMsg = Client::with_codec(authed, Proto)
        .unary_message("test.Echo/Say", EchoMsg::new("x"))
        .await
        .unwrap();
    assert!(ok.message.ends_with("over grpc"));
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    server.shutdown().await;
}
