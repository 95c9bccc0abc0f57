//! The reflection service over real loopback sockets (native protocol): list
//! services, file by name, file containing a symbol, extensions, errors, and
//! the v1alpha name. (Interop with a stock gRPC reflection client, e.g.
//! Python's grpcio-reflection, needs the gRPC transport; it is not here yet.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use prost::Message;
use tokio::sync::oneshot;
use trpc::server::Server;
use trpc::{Channel, Code, Endpoint};
use trpc_reflection::v1::server_reflection_request::MessageRequest;
use trpc_reflection::v1::server_reflection_response::MessageResponse;
use trpc_reflection::v1::{ExtensionRequest, ServerReflectionRequest};
use trpc_reflection::ReflectionClient;

const SOON: Duration = Duration::from_secs(10);

/// The kitchen test protos of trpc-build (every feature), encoded.
fn kitchen_set() -> Vec<u8> {
    let protos = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../codegen/tests/proto");
    trpc_build::compile_descriptor_set(&["kitchen/v1/kitchen.proto"], &[protos])
        .expect("kitchen protos compile")
        .encode_to_vec()
}

/// A proto declaring an extension, to test the extension queries.
fn extension_set() -> Vec<u8> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("trpc-reflection-ext-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("ext.proto"),
        "syntax = \"proto2\";\npackage ext;\nmessage Base { extensions 100 to 200; }\n\
         extend Base { optional string tag = 150; optional int32 rank = 101; }\n",
    )
    .unwrap();
    let set = trpc_build::compile_descriptor_set(&["ext.proto"], &[&dir]).expect("ext compiles");
    let _ = std::fs::remove_dir_all(&dir);
    set.encode_to_vec()
}

struct TestServer {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn serve() -> TestServer {
    let (kitchen, ext) = (kitchen_set(), extension_set());
    let router = trpc_reflection::service(&[&kitchen, &ext]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        Server::builder().serve_with_listener(listener, router, async move {
            let _ = stopped.await;
        }),
    );
    TestServer { addr, _stop: stop }
}

async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::new(format!("tcp://{addr}"))
        .unwrap()
        .connect_timeout(SOON)
        .connect()
        .await
        .expect("connect")
}

fn names(files: &[prost_types::FileDescriptorProto]) -> Vec<&str> {
    files.iter().map(|f| f.name()).collect()
}

#[tokio::test]
async fn lists_every_registered_service_and_itself() {
    let server = serve().await;
    let mut client = ReflectionClient::new(channel(server.addr).await);
    let services = client.list_services().await.expect("list");
    assert_eq!(
        services,
        [
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "kitchen.common.v1.Clock",
            "kitchen.v1.Kitchen",
        ]
    );
}

#[tokio::test]
async fn reflection_answers_over_grpc_too() {
    // The same server port answers gRPC: a reflection client over a gRPC
    // channel (HTTP/2) sees the same services and files.
    let server = serve().await;
    let channel = Endpoint::new(format!("grpc://{}", server.addr))
        .unwrap()
        .connect_timeout(SOON)
        .connect()
        .await
        .expect("connect over gRPC");
    let mut client = ReflectionClient::new(channel);
    let services = client.list_services().await.expect("list over gRPC");
    assert!(
        services.iter().any(|s| s == "kitchen.v1.Kitchen"),
        "{services:?}"
    );
    let files = client
        .file_containing_symbol("kitchen.v1.Kitchen")
        .await
        .expect("file over gRPC");
    assert!(!files.is_empty());
}

#[tokio::test]
async fn answers_file_containing_symbol_with_the_file_and_its_imports() {
    let server = serve().await;
    let mut client = ReflectionClient::new(channel(server.addr).await);
    for symbol in [
        "kitchen.v1.Kitchen",
        "kitchen.v1.Kitchen.PlaceOrder",
        ".kitchen.v1.Order",
        "kitchen.v1.Order.Item",
        "kitchen.v1.Order.extras",
        "kitchen.v1.OrderState",
        "kitchen.v1.ORDER_STATE_OPEN",
    ] {
        let files = client.file_containing_symbol(symbol).await.expect(symbol);
        let names = names(&files);
        assert_eq!(names[0], "kitchen/v1/kitchen.proto", "{symbol}");
        for dep in [
            "kitchen/common/v1/common.proto",
            "google/protobuf/timestamp.proto",
            "google/protobuf/struct.proto",
        ] {
            assert!(
                names.contains(&dep),
                "{symbol}: {dep} missing from {names:?}"
            );
        }
    }
    let files = client
        .file_containing_symbol("kitchen.common.v1.Money")
        .await
        .expect("money");
    assert_eq!(names(&files), ["kitchen/common/v1/common.proto"]);
    // The served descriptors carry the .proto's comments.
    let info = files[0].source_code_info.as_ref().expect("source info");
    assert!(info
        .location
        .iter()
        .any(|l| l.leading_comments().contains("An amount of money.")));
}

#[tokio::test]
async fn answers_file_by_filename() {
    let server = serve().await;
    let mut client = ReflectionClient::new(channel(server.addr).await);
    let files = client
        .file_by_filename("kitchen/common/v1/common.proto")
        .await
        .expect("by name");
    assert_eq!(names(&files), ["kitchen/common/v1/common.proto"]);
    let err = client
        .file_by_filename("nope.proto")
        .await
        .expect_err("unknown file");
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn an_unknown_symbol_is_a_not_found_error_response_and_the_stream_goes_on() {
    let server = serve().await;
    let mut raw = trpc_reflection::v1::ServerReflectionClient::new(channel(server.addr).await);
    let queries = [
        MessageRequest::FileContainingSymbol("no.Such".into()),
        MessageRequest::ListServices(String::new()),
        MessageRequest::AllExtensionNumbersOfType("ext.Base".into()),
        MessageRequest::FileContainingExtension(ExtensionRequest {
            containing_type: "ext.Base".into(),
            extension_number: 150,
        }),
        MessageRequest::FileContainingExtension(ExtensionRequest {
            containing_type: "ext.Base".into(),
            extension_number: 199,
        }),
    ];
    let requests =
        futures_util::stream::iter(queries.into_iter().map(|q| ServerReflectionRequest {
            host: "example".into(),
            message_request: Some(q),
        }));
    let mut replies = raw
        .server_reflection_info(requests)
        .await
        .expect("reflection call")
        .into_inner();
    async fn next(
        replies: &mut trpc::Streaming<trpc_reflection::v1::ServerReflectionResponse>,
    ) -> trpc_reflection::v1::ServerReflectionResponse {
        tokio::time::timeout(SOON, replies.message())
            .await
            .expect("answer in time")
            .expect("answer")
            .expect("one answer per query")
    }

    let first = next(&mut replies).await;
    assert_eq!(first.valid_host, "example");
    assert!(matches!(
        first.original_request.and_then(|r| r.message_request),
        Some(MessageRequest::FileContainingSymbol(s)) if s == "no.Such"
    ));
    match first.message_response {
        Some(MessageResponse::ErrorResponse(e)) => {
            assert_eq!(e.error_code, Code::NotFound as i32);
            assert!(e.error_message.contains("no.Such"), "{}", e.error_message);
        }
        other => panic!("expected an error response, got {other:?}"),
    }
    assert!(matches!(
        next(&mut replies).await.message_response,
        Some(MessageResponse::ListServicesResponse(l)) if l.service.len() == 4
    ));
    match next(&mut replies).await.message_response {
        Some(MessageResponse::AllExtensionNumbersResponse(x)) => {
            assert_eq!(
                (x.base_type_name.as_str(), x.extension_number),
                ("ext.Base", vec![101, 150])
            );
        }
        other => panic!("expected extension numbers, got {other:?}"),
    }
    match next(&mut replies).await.message_response {
        Some(MessageResponse::FileDescriptorResponse(f)) => {
            let file =
                prost_types::FileDescriptorProto::decode(&f.file_descriptor_proto[0][..]).unwrap();
            assert_eq!(file.name(), "ext.proto");
        }
        other => panic!("expected the extension's file, got {other:?}"),
    }
    assert!(matches!(
        next(&mut replies).await.message_response,
        Some(MessageResponse::ErrorResponse(e)) if e.error_code == Code::NotFound as i32
    ));
    let end = tokio::time::timeout(SOON, replies.message())
        .await
        .expect("end in time");
    assert!(matches!(end, Ok(None)), "{end:?}");
}

#[tokio::test]
async fn the_v1alpha_name_is_answered_too() {
    let server = serve().await;
    let mut alpha =
        trpc_reflection::v1alpha::ServerReflectionClient::new(channel(server.addr).await);
    let request = trpc_reflection::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            trpc_reflection::v1alpha::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut replies = alpha
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .expect("v1alpha call")
        .into_inner();
    let reply = replies
        .message()
        .await
        .expect("answer")
        .expect("one answer");
    match reply.message_response {
        Some(trpc_reflection::v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
            assert!(l.service.iter().any(|s| s.name == "kitchen.v1.Kitchen"));
        }
        other => panic!("expected a service list, got {other:?}"),
    }
}

#[tokio::test]
async fn a_server_without_reflection_is_unimplemented() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(Server::builder().serve_with_listener(
        listener,
        trpc::server::Router::new(),
        async move {
            let _ = stopped.await;
        },
    ));
    let mut client = ReflectionClient::new(channel(addr).await);
    let err = client.list_services().await.expect_err("no reflection");
    assert_eq!(err.code(), Code::Unimplemented);
}

#[test]
fn garbage_descriptor_sets_are_an_error() {
    let err = trpc_reflection::Index::new(&[&[0xff, 0xff, 0xff]]).expect_err("garbage");
    assert!(
        err.to_string().contains("invalid file descriptor set"),
        "{err}"
    );
}
