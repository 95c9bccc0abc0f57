//! The golden generated code (`tests/golden/`, from `tests/proto/`) compiled and
//! run: a generated client against a generated server over real loopback
//! sockets with the native protocol — all four shapes, both codecs, metadata,
//! errors, deadlines, and retries driven by the `.proto`'s idempotency levels.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use trpc::codec::{Codec, Json, Proto};
use trpc::codegen::BoxStream;
use trpc::server::Server;
use trpc::{Channel, Code, Endpoint, Request, Response, Status, Streaming};

// The generated code is a library's public API; this test binary uses part of it.
#[allow(dead_code, unreachable_pub)]
#[path = "golden/protos.rs"]
mod protos;

use protos::kitchen::common::v1::{Color, Money};
use protos::kitchen::v1::{
    kitchen_methods, order, Kitchen, KitchenClient, KitchenServer, Order, OrderRef, OrderReply,
    OrderState, Self_, FILE_DESCRIPTOR_SET,
};

/// Bound for anything that should happen "soon" on a loaded 2-core machine.
const SOON: Duration = Duration::from_secs(10);

/// The kitchen, with knobs for failure tests.
#[derive(Default)]
struct TestKitchen {
    /// `get_order` fails with UNAVAILABLE this many more times.
    get_failures: AtomicU32,
    /// `place_order` fails with UNAVAILABLE this many more times.
    place_failures: AtomicU32,
    gets: AtomicU32,
    places: AtomicU32,
}

fn take_failure(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

impl Kitchen for TestKitchen {
    async fn place_order(&self, request: Request<Order>) -> Result<Response<OrderReply>, Status> {
        self.places.fetch_add(1, Ordering::SeqCst);
        if take_failure(&self.place_failures) {
            return Err(Status::unavailable("kitchen busy"));
        }
        let tenant = request.metadata().get("x-tenant").map(str::to_owned);
        let order = request.into_inner();
        if order.id == "fail" {
            return Err(Status::failed_precondition("the kitchen is closed"));
        }
        let mut reply = Response::new(OrderReply {
            id: order.id.clone(),
            items: order.items.len() as u32,
            order: Some(order),
        });
        if let Some(t) = tenant {
            reply
                .metadata_mut()
                .try_insert("x-tenant-seen", &t)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(reply)
    }

    async fn get_order(&self, request: Request<OrderRef>) -> Result<Response<Order>, Status> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        if take_failure(&self.get_failures) {
            return Err(Status::unavailable("replica down"));
        }
        let id = request.into_inner().id;
        if id == "slow" {
            // Never answers: the caller's deadline ends the call.
            std::future::pending::<()>().await;
        }
        Ok(Response::new(Order {
            id,
            state: OrderState::Open as i32,
            ..Order::default()
        }))
    }

    async fn cancel_order(&self, _request: Request<OrderRef>) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }

    type WatchOrdersStream = BoxStream<Order>;

    async fn watch_orders(
        &self,
        request: Request<OrderRef>,
    ) -> Result<Response<Self::WatchOrdersStream>, Status> {
        // The id is "<count>" or "<count>!" (fail after the orders).
        let id = request.into_inner().id;
        let fail = id.ends_with('!');
        let count: u32 = id
            .trim_end_matches('!')
            .parse()
            .map_err(|_| Status::invalid_argument("id should be a count"))?;
        let orders = (0..count).map(|i| {
            Ok(Order {
                id: i.to_string(),
                ..Order::default()
            })
        });
        let end = fail.then(|| Err(Status::data_loss("the feed broke")));
        Ok(Response::new(Box::pin(futures_util::stream::iter(
            orders.chain(end),
        ))))
    }

    async fn upload_items(
        &self,
        request: Request<Streaming<order::Item>>,
    ) -> Result<Response<OrderReply>, Status> {
        let mut items = request.into_inner();
        let (mut n, mut total) = (0, 0);
        while let Some(item) = items.message().await? {
            n += 1;
            total += item.count;
        }
        Ok(Response::new(OrderReply {
            id: format!("total {total}"),
            items: n,
            order: None,
        }))
    }

    type ChatStream = BoxStream<Order>;

    async fn chat(
        &self,
        request: Request<Streaming<Order>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        Ok(Response::new(Box::pin(request.into_inner().map(|o| {
            o.map(|mut o| {
                o.id = format!("re: {}", o.id);
                o
            })
        }))))
    }

    async fn new(&self, request: Request<OrderRef>) -> Result<Response<OrderRef>, Status> {
        Ok(Response::new(OrderRef {
            id: format!("new {}", request.into_inner().id),
        }))
    }

    async fn r#type(&self, request: Request<Self_>) -> Result<Response<Self_>, Status> {
        Ok(Response::new(Self_ {
            self_: format!("{}!", request.into_inner().self_),
        }))
    }
}

/// A generated server on a fresh loopback port, stopped on drop.
struct TestServer {
    addr: SocketAddr,
    kitchen: Arc<TestKitchen>,
    _stop: oneshot::Sender<()>,
}

async fn serve() -> TestServer {
    let kitchen = Arc::new(TestKitchen::default());
    let router = KitchenServer::from_arc(kitchen.clone()).into_router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        Server::builder().serve_with_listener(listener, router, async move {
            let _ = stopped.await;
        }),
    );
    TestServer {
        addr,
        kitchen,
        _stop: stop,
    }
}

async fn channel(addr: SocketAddr) -> Channel {
    channel_to(format!("tcp://{addr}")).await
}

/// A channel to `uri`: `tcp://` (native trpc) or `grpc://` (gRPC over
/// HTTP/2); the same `Channel` type either way.
async fn channel_to(uri: String) -> Channel {
    Endpoint::new(uri)
        .expect("endpoint")
        .connect_timeout(SOON)
        .connect()
        .await
        .expect("connect")
}

/// An order using every kind of field.
fn full_order(id: &str) -> Order {
    Order {
        id: id.into(),
        items: vec![
            order::Item {
                name: "egg".into(),
                count: 2,
            },
            order::Item {
                name: "toast".into(),
                count: 1,
            },
        ],
        extras: [("salt".to_string(), 3), ("pepper".to_string(), -1)].into(),
        payment: Some(order::Payment::Cash(Money {
            currency: "EUR".into(),
            units: 12,
        })),
        note: Some("no butter".into()),
        placed_at: Some(pbjson_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        }),
        budget: Some(pbjson_types::Duration {
            seconds: 90,
            nanos: 0,
        }),
        extension: Some(pbjson_types::Any {
            type_url: "type.googleapis.com/kitchen.common.v1.Money".into(),
            value: Money {
                currency: "USD".into(),
                units: 1,
            }
            .encode_to_vec()
            .into(),
        }),
        attributes: Some(pbjson_types::Struct {
            fields: [(
                "table".to_string(),
                pbjson_types::Value {
                    kind: Some(pbjson_types::value::Kind::NumberValue(7.0)),
                },
            )]
            .into(),
        }),
        state: OrderState::Open as i32,
        r#type: "breakfast".into(),
        r#ref: Color::Green as i32,
        sequence: u64::MAX,
        token: vec![0, 1, 2, 255],
    }
}

/// Drives every method through `client` (of codec `C`) and checks the replies.
async fn exercise_every_method<C>(mut client: KitchenClient<Channel, C>, codec: &str)
where
    C: Codec<Order> + Codec<OrderReply> + Codec<OrderRef> + Codec<()> + Codec<order::Item>,
    C: Codec<Self_>,
{
    // Unary, every field kind, metadata both ways.
    let sent = full_order("o-1");
    let mut req = Request::new(sent.clone());
    req.metadata_mut().insert("x-tenant", "acme");
    let reply = client.place_order(req).await.expect("place_order");
    assert_eq!(trpc::codec::codec_name(reply.metadata()), codec);
    assert_eq!(reply.metadata().get("x-tenant-seen"), Some("acme"));
    let reply = reply.into_inner();
    assert_eq!(reply.items, 2);
    assert_eq!(
        reply.order.as_ref(),
        Some(&sent),
        "{codec}: every field survives"
    );

    // A bare message works as a request too; Empty is `()`.
    let got = client
        .get_order(OrderRef { id: "o-1".into() })
        .await
        .expect("get_order")
        .into_inner();
    assert_eq!((got.id.as_str(), got.state()), ("o-1", OrderState::Open));
    client
        .cancel_order(OrderRef { id: "o-1".into() })
        .await
        .expect("cancel_order");

    // A method named after a keyword.
    let me = client
        .r#type(Self_ { self_: "me".into() })
        .await
        .expect("type")
        .into_inner();
    assert_eq!(me.self_, "me!");
    let made = client
        .new_(OrderRef { id: "n".into() })
        .await
        .expect("new")
        .into_inner();
    assert_eq!(made.id, "new n");

    // Server streaming.
    let stream = client
        .watch_orders(OrderRef { id: "5".into() })
        .await
        .expect("watch_orders")
        .into_inner();
    let ids: Vec<String> = stream
        .map(|o| o.expect("streamed order").id)
        .collect()
        .await;
    assert_eq!(ids, ["0", "1", "2", "3", "4"]);

    // Client streaming.
    let items = futures_util::stream::iter((1..=4).map(|i| order::Item {
        name: format!("item {i}"),
        count: i,
    }));
    let summary = client
        .upload_items(items)
        .await
        .expect("upload_items")
        .into_inner();
    assert_eq!((summary.items, summary.id.as_str()), (4, "total 10"));

    // Bidirectional: each reply arrives before the next order is sent.
    let (tx, rx) = mpsc::channel::<Order>(1);
    let rx =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|o| (o, rx)) });
    let mut replies = client.chat(rx).await.expect("chat").into_inner();
    for i in 0..4 {
        tx.send(Order {
            id: format!("n{i}"),
            ..Order::default()
        })
        .await
        .expect("send order");
        let echo = tokio::time::timeout(SOON, replies.message())
            .await
            .expect("echo in time")
            .expect("echo")
            .expect("an echo, not the end");
        assert_eq!(echo.id, format!("re: n{i}"));
    }
    drop(tx);
    let end = tokio::time::timeout(SOON, replies.message())
        .await
        .expect("end in time");
    assert!(matches!(end, Ok(None)), "{end:?}");
}

#[tokio::test]
async fn generated_client_and_server_interoperate_with_protobuf() {
    let server = serve().await;
    let client = KitchenClient::new(channel(server.addr).await);
    tokio::time::timeout(
        Duration::from_secs(60),
        exercise_every_method(client, "proto"),
    )
    .await
    .expect("done in time");
}

#[tokio::test]
async fn generated_client_and_server_interoperate_over_grpc() {
    // The same server port answers gRPC; the generated client runs over a
    // gRPC channel unchanged.
    let server = serve().await;
    let client = KitchenClient::new(channel_to(format!("grpc://{}", server.addr)).await);
    tokio::time::timeout(
        Duration::from_secs(60),
        exercise_every_method(client, "proto"),
    )
    .await
    .expect("done in time");
}

#[tokio::test]
async fn generated_client_and_server_interoperate_with_json() {
    let server = serve().await;
    let client = KitchenClient::with_codec(channel(server.addr).await, Json);
    tokio::time::timeout(
        Duration::from_secs(60),
        exercise_every_method(client, "json"),
    )
    .await
    .expect("done in time");
}

#[tokio::test]
async fn generated_routes_speak_the_protobuf_json_mapping_to_untyped_clients() {
    let server = serve().await;
    let mut client = trpc::Client::new(channel(server.addr).await); // JSON, no trpc-codec
    let reply: serde_json::Value = client
        .unary_message(
            kitchen_methods::PLACE_ORDER.name(),
            serde_json::json!({
                "id": "j-1",
                "items": [{"name": "egg", "count": 2}],
                "placedAt": "2023-11-14T22:13:20Z",
                "budget": "1.500s",
                "state": "ORDER_STATE_CLOSED",
                "sequence": "18446744073709551615",
                "type": "lunch",
                "card": "4111",
            }),
        )
        .await
        .expect("json call");
    assert_eq!(reply["items"], 1);
    let order = &reply["order"];
    assert_eq!(order["placedAt"], "2023-11-14T22:13:20+00:00");
    assert_eq!(order["budget"], "1.500s");
    assert_eq!(order["state"], "ORDER_STATE_CLOSED");
    assert_eq!(order["sequence"], "18446744073709551615");
    assert_eq!(order["type"], "lunch");
    assert_eq!(order["card"], "4111");
}

#[tokio::test]
async fn handler_errors_arrive_as_statuses() {
    let server = serve().await;
    let mut client = KitchenClient::new(channel(server.addr).await);
    let err = client
        .place_order(Order {
            id: "fail".into(),
            ..Order::default()
        })
        .await
        .expect_err("a failed precondition");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "the kitchen is closed");

    // A stream that fails after its messages: the messages, then the status.
    let mut stream = client
        .watch_orders(OrderRef { id: "2!".into() })
        .await
        .expect("watch_orders")
        .into_inner();
    assert_eq!(
        stream.message().await.expect("first").map(|o| o.id),
        Some("0".into())
    );
    assert_eq!(
        stream.message().await.expect("second").map(|o| o.id),
        Some("1".into())
    );
    let err = stream.message().await.expect_err("the stream's status");
    assert_eq!(
        (err.code(), err.message()),
        (Code::DataLoss, "the feed broke")
    );

    // Bad input is INVALID_ARGUMENT from the handler, the server carries on.
    let err = client
        .watch_orders(OrderRef { id: "many".into() })
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    client
        .get_order(OrderRef { id: "x".into() })
        .await
        .expect("the server carries on");
}

#[tokio::test]
async fn a_codec_the_routes_do_not_accept_is_rejected_clearly() {
    #[derive(Clone, Copy, Debug)]
    struct Xml;
    impl<T: Message + Default + Send + 'static> Codec<T> for Xml {
        fn name(&self) -> &'static str {
            "xml"
        }
        fn encode(&self, item: &T, dst: &mut bytes::BytesMut) -> Result<(), Status> {
            Codec::<T>::encode(&Proto, item, dst)
        }
        fn decode(&self, src: bytes::Bytes) -> Result<T, Status> {
            Codec::<T>::decode(&Proto, src)
        }
    }
    let server = serve().await;
    let mut client = KitchenClient::with_codec(channel(server.addr).await, Xml);
    let err = client
        .get_order(OrderRef { id: "x".into() })
        .await
        .expect_err("xml is not accepted");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("xml"), "{}", err.message());
}

#[tokio::test]
async fn the_deadline_of_a_generated_call_is_enforced() {
    let server = serve().await;
    let mut client = KitchenClient::new(channel(server.addr).await);
    let mut req = Request::new(OrderRef { id: "slow".into() });
    req.set_timeout(Duration::from_millis(200));
    let err = tokio::time::timeout(SOON, client.get_order(req))
        .await
        .expect("the deadline ends the call")
        .expect_err("deadline exceeded");
    assert_eq!(err.code(), Code::DeadlineExceeded);
}

#[tokio::test]
async fn the_retry_layer_retries_methods_the_proto_marks_idempotent() {
    let server = serve().await;
    let retry = trpc_layers::RetryLayer::exponential(4)
        .backoff(Duration::from_millis(1), Duration::from_millis(10))
        .no_budget();
    let stack = tower::ServiceBuilder::new()
        .layer(retry)
        .service(channel(server.addr).await);
    let mut client = KitchenClient::new(stack);

    // GetOrder is NO_SIDE_EFFECTS: two UNAVAILABLE answers are retried.
    server.kitchen.get_failures.store(2, Ordering::SeqCst);
    let got = client
        .get_order(OrderRef { id: "r".into() })
        .await
        .expect("retried to success");
    assert_eq!(got.into_inner().id, "r");
    assert_eq!(server.kitchen.gets.load(Ordering::SeqCst), 3);

    // PlaceOrder is not idempotent: the server processed the call, no retry.
    server.kitchen.place_failures.store(1, Ordering::SeqCst);
    let err = client
        .place_order(full_order("p"))
        .await
        .expect_err("not retried");
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(server.kitchen.places.load(Ordering::SeqCst), 1);
}

#[test]
fn descriptors_and_the_descriptor_set_describe_the_service() {
    assert_eq!(kitchen_methods::SERVICE, "kitchen.v1.Kitchen");
    assert_eq!(kitchen_methods::ALL.len(), 8);
    let chat = kitchen_methods::CHAT;
    assert_eq!(
        (chat.service(), chat.method_name()),
        ("kitchen.v1.Kitchen", "Chat")
    );
    assert_eq!(chat.kind(), trpc::MethodKind::BidiStreaming);
    assert!(kitchen_methods::CANCEL_ORDER.is_idempotent());
    assert!(!kitchen_methods::PLACE_ORDER.is_idempotent());
    assert!(protos::kitchen::common::v1::clock_methods::NOW.is_idempotent());

    let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set");
    let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
    for want in [
        "kitchen/v1/kitchen.proto",
        "kitchen/common/v1/common.proto",
        "google/protobuf/timestamp.proto",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
}
