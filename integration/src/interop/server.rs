//! `grpc.testing.TestService` on trpc: a [`Router`] of typed handlers behind
//! the server layers the cases need, served by a trpc [`Server`] (native
//! trpc and gRPC on one port).

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::net::TcpListener;
use tower::util::{MapRequestLayer, MapResponseLayer};
use trpc::client::Trailers;
use trpc::codec::Proto;
use trpc::server::{bidi_streaming, client_streaming, server_streaming, unary, Router, Server};
use trpc::{Body, Code, MetadataMap, Payload, Request, Response, Status, Streaming};
use trpc_layers::CompressionLayer;

use super::messages::*;

/// The metadata key whose text value the server echoes in its response
/// headers.
pub const ECHO_INITIAL: &str = "x-grpc-test-echo-initial";
/// The metadata key whose binary value the server echoes in its trailers.
pub const ECHO_TRAILING: &str = "x-grpc-test-echo-trailing-bin";

/// Set on a request by the server stack: whether its message arrived
/// compressed (before the compression layer inflated it); known once the
/// handler has the message.
#[derive(Clone, Debug, Default)]
pub struct RequestCompressed(pub Arc<AtomicBool>);

/// Set on a response by a handler: compress the reply with gzip (true) or
/// send it plain (false).
#[derive(Clone, Copy, Debug)]
pub struct CompressReply(pub bool);

const SERVICE: &str = "grpc.testing.TestService";

/// The TestService methods (every one but UnimplementedCall), protobuf.
pub fn router() -> Router {
    let m = |name: &str| format!("{SERVICE}/{name}");
    Router::new()
        .route(&m("EmptyCall"), unary(empty_call).codec(Proto))
        .route(&m("UnaryCall"), unary(unary_call).codec(Proto))
        .route(&m("CacheableUnaryCall"), unary(unary_call).codec(Proto))
        .route(
            &m("StreamingOutputCall"),
            server_streaming(streaming_output_call).codec(Proto),
        )
        .route(
            &m("StreamingInputCall"),
            client_streaming(streaming_input_call).codec(Proto),
        )
        .route(
            &m("FullDuplexCall"),
            bidi_streaming(full_duplex_call).codec(Proto),
        )
        .route(
            &m("HalfDuplexCall"),
            bidi_streaming(half_duplex_call).codec(Proto),
        )
}

/// Serves the interop service on `listener` until `signal` completes:
/// native trpc and gRPC on the one port, requests decompressed by
/// trpc-layers' compression layer, replies compressed when a handler asks.
pub async fn serve(listener: TcpListener, signal: impl Future<Output = ()>) -> io::Result<()> {
    Server::builder()
        .max_message_size(8 << 20)
        .layer(MapRequestLayer::new(mark_compressed as fn(_) -> _))
        .layer(CompressionLayer::server().decompress_only())
        .layer(MapResponseLayer::new(compress_reply as fn(_) -> _))
        .serve_with_listener(listener, router(), signal)
        .await
}

fn mark_compressed(req: Request<Body>) -> Request<Body> {
    let seen = RequestCompressed::default();
    let flag = seen.0.clone();
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(seen);
    let body = body
        .map_payloads(move |p| {
            flag.fetch_or(p.compressed, Ordering::Relaxed);
            Ok(p)
        })
        .unwrap_or_default();
    Request::from_parts(parts, body)
}

fn compress_reply(resp: Response<Body>) -> Response<Body> {
    if !resp
        .extensions()
        .get::<CompressReply>()
        .is_some_and(|c| c.0)
    {
        return resp;
    }
    let (mut md, ext, body) = resp.into_parts();
    let body = match body.into_once() {
        Ok(p) if !p.compressed => match gzip(&p.bytes) {
            Ok(bytes) => {
                md.insert("trpc-encoding", "gzip");
                Body::once(Payload {
                    bytes,
                    compressed: true,
                })
            }
            Err(_) => Body::once(p),
        },
        Ok(p) => Body::once(p),
        Err(body) => body,
    };
    Response::from_parts(md, ext, body)
}

/// gzip-compresses `data`.
pub fn gzip(data: &[u8]) -> io::Result<bytes::Bytes> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data)?;
    Ok(enc.finish()?.into())
}

fn echo_initial(from: &MetadataMap, to: &mut MetadataMap) {
    if let Some(v) = from.get(ECHO_INITIAL) {
        let _ = to.try_insert(ECHO_INITIAL, v);
    }
}

fn echo_trailing(from: &MetadataMap) -> Option<MetadataMap> {
    let v = from.get_bin(ECHO_TRAILING)?;
    let mut md = MetadataMap::new();
    md.try_insert_bin(ECHO_TRAILING, v.clone()).ok()?;
    Some(md)
}

fn requested_status(s: &Option<EchoStatus>) -> Option<Status> {
    let s = s.as_ref().filter(|s| s.code != 0)?;
    Some(Status::new(
        Code::from_u32(s.code as u32),
        s.message.clone(),
    ))
}

async fn empty_call(req: Request<Empty>) -> Result<Response<Empty>, Status> {
    let mut resp = Response::new(Empty {});
    echo_initial(req.metadata(), resp.metadata_mut());
    if let Some(t) = echo_trailing(req.metadata()) {
        resp.extensions_mut().insert(Trailers(t));
    }
    Ok(resp)
}

async fn unary_call(req: Request<SimpleRequest>) -> Result<Response<SimpleResponse>, Status> {
    let compressed = req
        .extensions()
        .get::<RequestCompressed>()
        .is_some_and(|c| c.0.load(Ordering::Relaxed));
    let trailing = echo_trailing(req.metadata());
    let r = req.get_ref();
    if let Some(expect) = r.expect_compressed {
        if expect.value != compressed {
            return Err(Status::invalid_argument(format!(
                "expected a {} request",
                if expect.value { "compressed" } else { "plain" }
            )));
        }
    }
    if let Some(status) = requested_status(&r.response_status) {
        return Err(status.with_metadata(trailing.unwrap_or_default()));
    }
    let mut resp = Response::new(SimpleResponse {
        payload: Some(zeros(r.response_size.max(0) as usize)),
        ..Default::default()
    });
    echo_initial(req.metadata(), resp.metadata_mut());
    if let Some(t) = trailing {
        resp.extensions_mut().insert(Trailers(t));
    }
    if let Some(c) = r.response_compressed {
        resp.extensions_mut().insert(CompressReply(c.value));
    }
    Ok(resp)
}

type Replies =
    std::pin::Pin<Box<dyn Stream<Item = Result<StreamingOutputCallResponse, Status>> + Send>>;

/// The replies a request asks for, each after its interval.
fn replies(
    params: Vec<ResponseParameters>,
) -> impl Stream<Item = Result<StreamingOutputCallResponse, Status>> {
    futures_util::stream::iter(params).then(|p| async move {
        if p.interval_us > 0 {
            tokio::time::sleep(Duration::from_micros(p.interval_us as u64)).await;
        }
        Ok(StreamingOutputCallResponse {
            payload: Some(zeros(p.size.max(0) as usize)),
        })
    })
}

/// The end of a streamed reply: the echoed trailers (if any).
fn ending(
    trailing: Option<MetadataMap>,
) -> impl Stream<Item = Result<StreamingOutputCallResponse, Status>> {
    futures_util::stream::iter(trailing.map(|t| Err(Status::ok_with_trailers(t))))
}

async fn streaming_output_call(
    req: Request<StreamingOutputCallRequest>,
) -> Result<Response<Replies>, Status> {
    let trailing = echo_trailing(req.metadata());
    let mut md = MetadataMap::new();
    echo_initial(req.metadata(), &mut md);
    let r = req.into_inner();
    let status = requested_status(&r.response_status);
    let stream = replies(r.response_parameters)
        .chain(futures_util::stream::iter(status.map(Err)))
        .chain(ending(trailing));
    let mut resp = Response::new(Box::pin(stream) as Replies);
    *resp.metadata_mut() = md;
    Ok(resp)
}

async fn streaming_input_call(
    req: Request<Streaming<StreamingInputCallRequest>>,
) -> Result<Response<StreamingInputCallResponse>, Status> {
    let mut resp_md = MetadataMap::new();
    echo_initial(req.metadata(), &mut resp_md);
    let mut s = req.into_inner();
    let mut total = 0usize;
    while let Some(m) = s.message().await? {
        total += m.payload.map_or(0, |p| p.body.len());
    }
    let mut resp = Response::new(StreamingInputCallResponse {
        aggregated_payload_size: total as i32,
    });
    *resp.metadata_mut() = resp_md;
    Ok(resp)
}

async fn full_duplex_call(
    req: Request<Streaming<StreamingOutputCallRequest>>,
) -> Result<Response<Replies>, Status> {
    let trailing = echo_trailing(req.metadata());
    let mut md = MetadataMap::new();
    echo_initial(req.metadata(), &mut md);
    let stream = req
        .into_inner()
        .flat_map(|item| -> Replies {
            match item {
                Ok(r) => match requested_status(&r.response_status) {
                    Some(s) => Box::pin(futures_util::stream::iter([Err(s)])),
                    None => Box::pin(replies(r.response_parameters)),
                },
                Err(s) => Box::pin(futures_util::stream::iter([Err(s)])),
            }
        })
        .chain(ending(trailing));
    let mut resp = Response::new(Box::pin(stream) as Replies);
    *resp.metadata_mut() = md;
    Ok(resp)
}

async fn half_duplex_call(
    req: Request<Streaming<StreamingOutputCallRequest>>,
) -> Result<Response<Replies>, Status> {
    let trailing = echo_trailing(req.metadata());
    let mut md = MetadataMap::new();
    echo_initial(req.metadata(), &mut md);
    let mut s = req.into_inner();
    let mut all = Vec::new();
    while let Some(r) = s.message().await? {
        if let Some(status) = requested_status(&r.response_status) {
            return Err(status);
        }
        all.extend(r.response_parameters);
    }
    let stream = replies(all).chain(ending(trailing));
    let mut resp = Response::new(Box::pin(stream) as Replies);
    *resp.metadata_mut() = md;
    Ok(resp)
}
