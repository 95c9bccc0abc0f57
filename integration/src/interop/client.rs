//! The interop test cases on a trpc [`Channel`]: each case calls
//! `grpc.testing.TestService` as the interop suite documents it and checks
//! the outcome; [`run`] returns `Err` with what went wrong.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tower::util::{BoxCloneService, MapResponseLayer};
use tower::ServiceBuilder;
use trpc::client::Trailers;
use trpc::codec::Proto;
use trpc::{Body, BoxError, Channel, Client, Code, Request, Response, Status};
use trpc_layers::compression::{CompressionLayer, Encoding};

use super::messages::*;
use super::server::{ECHO_INITIAL, ECHO_TRAILING};

/// Every case [`run`] knows, in the order `all` runs them.
pub const CASES: &[&str] = &[
    "empty_unary",
    "large_unary",
    "client_streaming",
    "server_streaming",
    "ping_pong",
    "empty_stream",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "unimplemented_method",
    "unimplemented_service",
    "cancel_after_begin",
    "cancel_after_first_response",
    "timeout_on_sleeping_server",
    "client_compressed_unary",
    "server_compressed_unary",
];

/// Set on a response by the client stack: whether its message arrived
/// compressed (before the compression layer inflated it); known once the
/// message was read.
#[derive(Clone, Debug, Default)]
pub struct ReplyCompressed(pub Arc<AtomicBool>);

type Stack = BoxCloneService<Request<Body>, Response<Body>, BoxError>;

/// The clients a case may use.
#[derive(Clone)]
struct Clients {
    /// Sends plain requests; inflates replies, noting which were compressed.
    plain: Client<Stack, Proto>,
    /// gzip-compresses every request message.
    gzip: Client<Stack, Proto>,
}

fn mark_reply(resp: Response<Body>) -> Response<Body> {
    let seen = ReplyCompressed::default();
    let flag = seen.0.clone();
    let (md, mut ext, body) = resp.into_parts();
    ext.insert(seen);
    let body = body
        .map_payloads(move |p| {
            flag.fetch_or(p.compressed, Ordering::Relaxed);
            Ok(p)
        })
        .unwrap_or_default();
    Response::from_parts(md, ext, body)
}

impl Clients {
    fn new(channel: Channel) -> Clients {
        let plain = ServiceBuilder::new()
            .layer(CompressionLayer::client().decompress_only())
            .layer(MapResponseLayer::new(mark_reply as fn(_) -> _))
            .service(channel.clone());
        let gzip = ServiceBuilder::new()
            .layer(
                CompressionLayer::client()
                    .encoding(Encoding::Gzip)
                    .min_size(0),
            )
            .service(channel);
        Clients {
            plain: Client::with_codec(BoxCloneService::new(plain), Proto),
            gzip: Client::with_codec(BoxCloneService::new(gzip), Proto),
        }
    }
}

const SVC: &str = "grpc.testing.TestService";

fn method(name: &str) -> String {
    format!("{SVC}/{name}")
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn zeros_of(p: &Option<Payload>, n: usize) -> Result<(), String> {
    let body = p.as_ref().map(|p| &p.body[..]).unwrap_or_default();
    check(body.len() == n && body.iter().all(|&b| b == 0), || {
        format!("expected {n} zero bytes, got {} bytes", body.len())
    })
}

fn expect_code<T>(r: Result<T, Status>, code: Code, message: Option<&str>) -> Result<(), String> {
    match r {
        Ok(_) => Err(format!("expected {code}, the call succeeded")),
        Err(s) if s.code() == code && message.is_none_or(|m| s.message() == m) => Ok(()),
        Err(s) => Err(format!("expected {code} {message:?}, got {s}")),
    }
}

fn large() -> SimpleRequest {
    SimpleRequest {
        response_size: 314_159,
        payload: Some(zeros(271_828)),
        ..Default::default()
    }
}

fn ping(resp: i32, req: usize) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_parameters: vec![ResponseParameters {
            size: resp,
            ..Default::default()
        }],
        payload: Some(zeros(req)),
        ..Default::default()
    }
}

/// A request stream fed through a channel.
fn feed<T: Send + 'static>() -> (
    tokio::sync::mpsc::Sender<T>,
    impl futures_util::Stream<Item = T> + Send + 'static,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<T>(8);
    let s =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    (tx, s)
}

/// Runs one case (or `all`) against the server behind `channel`.
pub async fn run(case: &str, channel: Channel) -> Result<(), String> {
    let clients = Clients::new(channel);
    if case == "all" {
        for c in CASES {
            Box::pin(run_one(c, clients.clone()))
                .await
                .map_err(|e| format!("{c}: {e}"))?;
        }
        return Ok(());
    }
    run_one(case, clients).await
}

async fn run_one(case: &str, c: Clients) -> Result<(), String> {
    let Clients {
        mut plain,
        mut gzip,
    } = c;
    let err = |s: Status| s.to_string();
    match case {
        "empty_unary" => {
            let _: Empty = plain
                .unary_message(method("EmptyCall"), Empty {})
                .await
                .map_err(err)?;
        }
        "large_unary" => {
            let r: SimpleResponse = plain
                .unary_message(method("UnaryCall"), large())
                .await
                .map_err(err)?;
            zeros_of(&r.payload, 314_159)?;
        }
        "client_streaming" => {
            let sizes = [27_182, 8, 1_828, 45_904];
            let msgs = futures_util::stream::iter(sizes.map(|n| StreamingInputCallRequest {
                payload: Some(zeros(n)),
                ..Default::default()
            }));
            let r: StreamingInputCallResponse = plain
                .client_streaming(method("StreamingInputCall"), Request::new(msgs))
                .await
                .map_err(err)?
                .into_inner();
            check(r.aggregated_payload_size == 74_922, || {
                format!("aggregated size {}", r.aggregated_payload_size)
            })?;
        }
        "server_streaming" => {
            let sizes = [31_415, 9, 2_653, 58_979];
            let req = StreamingOutputCallRequest {
                response_parameters: sizes
                    .iter()
                    .map(|&size| ResponseParameters {
                        size,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            let mut s = plain
                .server_streaming::<_, StreamingOutputCallResponse>(
                    method("StreamingOutputCall"),
                    Request::new(req),
                )
                .await
                .map_err(err)?
                .into_inner();
            for n in sizes {
                let m = s
                    .message()
                    .await
                    .map_err(err)?
                    .ok_or("stream ended early")?;
                zeros_of(&m.payload, n as usize)?;
            }
            check(s.message().await.map_err(err)?.is_none(), || {
                "more replies than asked".into()
            })?;
        }
        "ping_pong" => {
            // The first request goes out with the call: a server may hold
            // its response headers until it has read one (grpcio does).
            let pings = [(31_415, 27_182), (9, 8), (2_653, 1_828), (58_979, 45_904)];
            let (tx, reqs) = feed();
            tx.send(ping(pings[0].0, pings[0].1))
                .await
                .map_err(|e| e.to_string())?;
            let mut s = plain
                .bidi_streaming::<_, StreamingOutputCallResponse, _>(
                    method("FullDuplexCall"),
                    Request::new(reqs),
                )
                .await
                .map_err(err)?
                .into_inner();
            for (i, (resp, _)) in pings.iter().enumerate() {
                if i > 0 {
                    tx.send(ping(pings[i].0, pings[i].1))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                let resp = *resp;
                let m = s
                    .message()
                    .await
                    .map_err(err)?
                    .ok_or("stream ended early")?;
                zeros_of(&m.payload, resp as usize)?;
            }
            drop(tx);
            check(s.message().await.map_err(err)?.is_none(), || {
                "more replies than asked".into()
            })?;
        }
        "empty_stream" => {
            let reqs = futures_util::stream::empty::<StreamingOutputCallRequest>();
            let mut s = plain
                .bidi_streaming::<_, StreamingOutputCallResponse, _>(
                    method("FullDuplexCall"),
                    Request::new(reqs),
                )
                .await
                .map_err(err)?
                .into_inner();
            check(s.message().await.map_err(err)?.is_none(), || {
                "a reply to nothing".into()
            })?;
        }
        "custom_metadata" => {
            fn with_md<T>(req: T) -> Request<T> {
                let mut r = Request::new(req);
                r.metadata_mut()
                    .insert(ECHO_INITIAL, "test_initial_metadata_value");
                r.metadata_mut()
                    .insert_bin(ECHO_TRAILING, Bytes::from_static(&[0xab, 0xab, 0xab]));
                r
            }
            let check_md = |initial: Option<&str>, trailing: Option<&Bytes>| {
                check(initial == Some("test_initial_metadata_value"), || {
                    format!("initial metadata {initial:?}")
                })?;
                check(
                    trailing.map(|b| &b[..]) == Some(&[0xab, 0xab, 0xab][..]),
                    || format!("trailing metadata {trailing:?}"),
                )
            };
            let r = plain
                .unary::<_, SimpleResponse>(method("UnaryCall"), with_md(large()))
                .await
                .map_err(err)?;
            zeros_of(&r.get_ref().payload, 314_159)?;
            let trailers = r.extensions().get::<Trailers>().map(|t| &t.0);
            check_md(
                r.metadata().get(ECHO_INITIAL),
                trailers.and_then(|t| t.get_bin(ECHO_TRAILING)),
            )?;
            let reqs = futures_util::stream::iter([ping(314_159, 271_828)]);
            let resp = plain
                .bidi_streaming::<_, StreamingOutputCallResponse, _>(
                    method("FullDuplexCall"),
                    with_md(reqs),
                )
                .await
                .map_err(err)?;
            let initial = resp.metadata().get(ECHO_INITIAL).map(str::to_owned);
            let mut s = resp.into_inner();
            let m = s.message().await.map_err(err)?.ok_or("no reply")?;
            zeros_of(&m.payload, 314_159)?;
            check(s.message().await.map_err(err)?.is_none(), || {
                "extra reply".into()
            })?;
            check_md(
                initial.as_deref(),
                s.trailers().and_then(|t| t.get_bin(ECHO_TRAILING)),
            )?;
        }
        "status_code_and_message" | "special_status_message" => {
            let message = if case == "status_code_and_message" {
                "test status message"
            } else {
                "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n"
            };
            let status = EchoStatus {
                code: 2,
                message: message.into(),
            };
            let r = plain
                .unary_message::<_, SimpleResponse>(
                    method("UnaryCall"),
                    SimpleRequest {
                        response_status: Some(status.clone()),
                        ..Default::default()
                    },
                )
                .await;
            expect_code(r, Code::Unknown, Some(message))?;
            if case == "status_code_and_message" {
                let reqs = futures_util::stream::iter([StreamingOutputCallRequest {
                    response_status: Some(status),
                    ..Default::default()
                }]);
                let r = plain
                    .bidi_streaming::<_, StreamingOutputCallResponse, _>(
                        method("FullDuplexCall"),
                        Request::new(reqs),
                    )
                    .await;
                let r = match r {
                    Ok(resp) => resp.into_inner().message().await,
                    Err(s) => Err(s),
                };
                expect_code(r, Code::Unknown, Some(message))?;
            }
        }
        "unimplemented_method" => {
            let r = plain
                .unary_message::<_, Empty>(method("UnimplementedCall"), Empty {})
                .await;
            expect_code(r, Code::Unimplemented, None)?;
        }
        "unimplemented_service" => {
            let r = plain
                .unary_message::<_, Empty>(
                    "grpc.testing.UnimplementedService/UnimplementedCall",
                    Empty {},
                )
                .await;
            expect_code(r, Code::Unimplemented, None)?;
        }
        "cancel_after_begin" => {
            // Cancelling is dropping the call: the stream is reset
            // (RST_STREAM(CANCEL)) and the caller sees CANCELLED.
            let (tx, reqs) = feed::<StreamingInputCallRequest>();
            let mut client = plain.clone();
            let call = tokio::spawn(async move {
                client
                    .client_streaming::<_, StreamingInputCallResponse, _>(
                        method("StreamingInputCall"),
                        Request::new(reqs),
                    )
                    .await
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            call.abort();
            let r = match call.await {
                Err(e) if e.is_cancelled() => Err(Status::cancelled("cancelled by the client")),
                Err(e) => return Err(format!("the call task failed: {e}")),
                Ok(r) => r.map(drop),
            };
            drop(tx);
            expect_code(r, Code::Cancelled, None)?;
            // The connection carries on.
            let _: Empty = plain
                .unary_message(method("EmptyCall"), Empty {})
                .await
                .map_err(err)?;
        }
        "cancel_after_first_response" => {
            let (tx, reqs) = feed();
            tx.send(ping(31_415, 27_182))
                .await
                .map_err(|e| e.to_string())?;
            let mut s = plain
                .bidi_streaming::<_, StreamingOutputCallResponse, _>(
                    method("FullDuplexCall"),
                    Request::new(reqs),
                )
                .await
                .map_err(err)?
                .into_inner();
            let m = s.message().await.map_err(err)?.ok_or("no reply")?;
            zeros_of(&m.payload, 31_415)?;
            drop(s); // cancels: RST_STREAM(CANCEL)
            drop(tx);
            let _: Empty = plain
                .unary_message(method("EmptyCall"), Empty {})
                .await
                .map_err(err)?;
        }
        "timeout_on_sleeping_server" => {
            let (tx, reqs) = feed();
            let mut req = Request::new(reqs);
            req.set_timeout(Duration::from_millis(1));
            let _ = tx.try_send(ping(31_415, 27_182));
            let r = match plain
                .bidi_streaming::<_, StreamingOutputCallResponse, _>(method("FullDuplexCall"), req)
                .await
            {
                Ok(resp) => {
                    let mut s = resp.into_inner();
                    loop {
                        match s.message().await {
                            Ok(Some(_)) => continue,
                            other => break other.map(drop),
                        }
                    }
                }
                Err(s) => Err(s),
            };
            drop(tx);
            expect_code(r, Code::DeadlineExceeded, None)?;
        }
        "client_compressed_unary" => {
            let req = |expect: bool| SimpleRequest {
                expect_compressed: Some(BoolValue { value: expect }),
                ..large()
            };
            let probe = plain
                .unary_message::<_, SimpleResponse>(method("UnaryCall"), req(true))
                .await;
            expect_code(probe, Code::InvalidArgument, None)?;
            let r: SimpleResponse = gzip
                .unary_message(method("UnaryCall"), req(true))
                .await
                .map_err(err)?;
            zeros_of(&r.payload, 314_159)?;
            let r: SimpleResponse = plain
                .unary_message(method("UnaryCall"), req(false))
                .await
                .map_err(err)?;
            zeros_of(&r.payload, 314_159)?;
        }
        "server_compressed_unary" => {
            for compressed in [true, false] {
                let req = SimpleRequest {
                    response_compressed: Some(BoolValue { value: compressed }),
                    ..large()
                };
                let r = plain
                    .unary::<_, SimpleResponse>(method("UnaryCall"), Request::new(req))
                    .await
                    .map_err(err)?;
                let seen = r
                    .extensions()
                    .get::<ReplyCompressed>()
                    .map(|c| c.0.load(Ordering::Relaxed));
                check(seen == Some(compressed), || {
                    format!("asked for a compressed reply: {compressed}; compressed: {seen:?}")
                })?;
                zeros_of(&r.get_ref().payload, 314_159)?;
            }
        }
        other => return Err(format!("unknown test case {other:?}")),
    }
    Ok(())
}
