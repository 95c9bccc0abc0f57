//! `trpc list`, `describe`, schema-aware `call` and `gen`, run as the real
//! binary against the route guide server (examples/route_guide, the code
//! `route_guide_server` runs) on a loopback port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};

use tokio::sync::oneshot;
use trpc::server::{Router, Server};

/// A server on its own runtime, stopped on drop.
struct TestServer {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
    _rt: tokio::runtime::Runtime,
}

fn serve(router: Router) -> TestServer {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    rt.spawn(
        Server::builder().serve_with_listener(listener, router, async move {
            let _ = stopped.await;
        }),
    );
    TestServer {
        addr,
        _stop: stop,
        _rt: rt,
    }
}

fn route_guide() -> TestServer {
    serve(route_guide::router(route_guide::features()))
}

fn route_guide_without_reflection() -> TestServer {
    let svc = route_guide::RouteGuideService::new(route_guide::features());
    serve(route_guide::routeguide::RouteGuideServer::new(svc).into_router())
}

fn trpc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trpc"))
        .args(args)
        .output()
        .expect("run trpc")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "trpc failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const LIGHTHOUSE: &str = r#"{"latitude": 409146138, "longitude": -746188906}"#;

#[test]
fn list_prints_the_services_and_the_methods_of_one() {
    let server = route_guide();
    let addr = server.addr.to_string();
    assert_eq!(
        stdout(&trpc(&["list", &addr])),
        "grpc.reflection.v1.ServerReflection\ngrpc.reflection.v1alpha.ServerReflection\nrouteguide.RouteGuide\n"
    );
    assert_eq!(
        stdout(&trpc(&["list", &addr, "routeguide.RouteGuide"])),
        "routeguide.RouteGuide.GetFeature\nrouteguide.RouteGuide.ListFeatures\n\
         routeguide.RouteGuide.RecordRoute\nrouteguide.RouteGuide.RouteChat\n"
    );
}

#[test]
fn describe_prints_services_methods_and_messages_as_proto_text() {
    let server = route_guide();
    let addr = server.addr.to_string();
    let svc = stdout(&trpc(&["describe", &addr, "routeguide.RouteGuide"]));
    assert!(
        svc.starts_with("routeguide.RouteGuide is a service:\n"),
        "{svc}"
    );
    for line in [
        "// Answers questions about features on a map and records routes.",
        "service RouteGuide {",
        "  rpc GetFeature(.routeguide.Point) returns (.routeguide.Feature) { option idempotency_level = NO_SIDE_EFFECTS; }",
        "  rpc ListFeatures(.routeguide.Rectangle) returns (stream .routeguide.Feature);",
        "  rpc RecordRoute(stream .routeguide.Point) returns (.routeguide.RouteSummary);",
        "  rpc RouteChat(stream .routeguide.RouteNote) returns (stream .routeguide.RouteNote);",
    ] {
        assert!(svc.lines().any(|l| l == line), "missing {line:?} in\n{svc}");
    }

    let method = stdout(&trpc(&[
        "describe",
        &addr,
        "routeguide.RouteGuide/ListFeatures",
    ]));
    assert!(method.contains("is a method:"), "{method}");
    assert!(
        method.contains("// The features inside a rectangle"),
        "{method}"
    );

    let msg = stdout(&trpc(&["describe", &addr, "routeguide.RouteSummary"]));
    assert!(msg.contains("message RouteSummary {"), "{msg}");
    assert!(msg.contains("  int32 elapsed_time = 4;"), "{msg}");
    assert!(msg.contains("  // Distance covered, in metres."), "{msg}");

    let out = trpc(&["describe", &addr, "routeguide.Nowhere"]);
    assert_eq!(out.status.code(), Some(64 + 5), "NOT_FOUND");
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("NOT_FOUND: "));
}

#[test]
fn call_converts_json_to_protobuf_through_the_reflected_schema() {
    let server = route_guide();
    let addr = server.addr.to_string();
    let out = trpc(&[
        "call",
        "-v",
        &addr,
        "routeguide.RouteGuide/GetFeature",
        LIGHTHOUSE,
    ]);
    let reply: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON reply");
    assert_eq!(
        reply["name"],
        "Old Harbour Lighthouse, 1 Quay Road, Saltmere"
    );
    assert_eq!(reply["location"]["latitude"], 409146138);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("< trpc-codec: proto"),
        "sent as protobuf: {stderr}"
    );

    // JSON that does not fit the schema is rejected before any call.
    let out = trpc(&[
        "call",
        &addr,
        "routeguide.RouteGuide/GetFeature",
        r#"{"latitude": "north"}"#,
    ]);
    assert_eq!(out.status.code(), Some(64 + 3), "INVALID_ARGUMENT");
    // A method the described service lacks.
    let out = trpc(&["call", &addr, "routeguide.RouteGuide/Teleport", "{}"]);
    assert_eq!(out.status.code(), Some(64 + 12), "UNIMPLEMENTED");
}

#[test]
fn call_prints_a_server_stream_as_one_json_object_per_line() {
    let server = route_guide();
    let addr = server.addr.to_string();
    let rect = r#"{"lo": {"latitude": 400000000, "longitude": -750000000},
                   "hi": {"latitude": 410000000, "longitude": -745000000}}"#;
    let text = stdout(&trpc(&[
        "call",
        &addr,
        "routeguide.RouteGuide/ListFeatures",
        rect,
    ]));
    let names: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("each line is JSON");
            v["name"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "Old Harbour Lighthouse, 1 Quay Road, Saltmere",
            "The Copper Kettle Tearoom, 14 Mill Lane, Saltmere",
            "Otter Pool Waterfall, Riverside Walk, Kettleby",
        ]
    );
}

#[test]
fn call_sends_a_json_array_to_a_client_streaming_method_as_messages() {
    let server = route_guide();
    let addr = server.addr.to_string();
    let route = r#"[{"latitude": 409146138, "longitude": -746188906},
                    {"latitude": 408122808, "longitude": -743999179},
                    {"latitude": 1, "longitude": 1}]"#;
    let text = stdout(&trpc(&[
        "call",
        &addr,
        "routeguide.RouteGuide/RecordRoute",
        route,
    ]));
    let summary: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(summary["pointCount"], 3);
    assert_eq!(summary["featureCount"], 2);
}

#[test]
fn call_falls_back_to_the_json_codec_without_reflection() {
    let server = route_guide_without_reflection();
    let addr = server.addr.to_string();
    let out = trpc(&[
        "call",
        "-v",
        &addr,
        "routeguide.RouteGuide/GetFeature",
        LIGHTHOUSE,
    ]);
    let reply: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON reply");
    assert_eq!(
        reply["name"],
        "Old Harbour Lighthouse, 1 Quay Road, Saltmere"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no schema from reflection (UNIMPLEMENTED"),
        "{stderr}"
    );

    let out = trpc(&["list", &addr]);
    assert_eq!(
        out.status.code(),
        Some(64 + 12),
        "no reflection: UNIMPLEMENTED"
    );

    // --no-reflection skips the lookup on a server that has it.
    let server = route_guide();
    let addr = server.addr.to_string();
    let out = trpc(&[
        "call",
        "-v",
        "--no-reflection",
        &addr,
        "routeguide.RouteGuide/GetFeature",
        LIGHTHOUSE,
    ]);
    assert!(stdout(&out).contains("Old Harbour Lighthouse"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("trpc-codec: proto"));
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trpc-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn gen_writes_the_generated_code_and_reports_proto_errors_with_file_and_line() {
    let proto = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/route_guide/proto/route_guide.proto");
    let out_dir = temp_dir("gen");
    let out = trpc(&[
        "gen",
        proto.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--serde",
    ]);
    let listed = stdout(&out);
    assert!(
        listed.contains("routeguide.rs") && listed.contains("file_descriptor_set.bin"),
        "{listed}"
    );
    let code = std::fs::read_to_string(out_dir.join("routeguide.rs")).expect("routeguide.rs");
    for needle in [
        "pub trait RouteGuide",
        "pub struct RouteGuideClient",
        "impl serde::Serialize for Point",
    ] {
        assert!(code.contains(needle), "generated code lacks {needle:?}");
    }

    let broken = out_dir.join("broken.proto");
    std::fs::write(
        &broken,
        "syntax = \"proto3\";\npackage b;\nmessage M { Unknown u = 1; }\n",
    )
    .unwrap();
    let out = trpc(&[
        "gen",
        broken.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.proto:3:13: "), "{stderr}");
    let _ = std::fs::remove_dir_all(&out_dir);
}

#[test]
fn call_prints_a_json_codec_stream_as_lines_too() {
    // Without the schema (the JSON codec end to end), a streamed reply is
    // still one JSON document per line, after the channel is gone.
    let server = route_guide();
    let addr = server.addr.to_string();
    let rect = r#"{"lo": {"latitude": 400000000, "longitude": -750000000},
                   "hi": {"latitude": 410000000, "longitude": -745000000}}"#;
    let text = stdout(&trpc(&[
        "call",
        "--no-reflection",
        &addr,
        "routeguide.RouteGuide/ListFeatures",
        rect,
    ]));
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0]["name"]
        .as_str()
        .unwrap_or_default()
        .contains("Lighthouse"));
}
