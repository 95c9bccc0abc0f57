//! Unit tests of the compression layer (tower-test mocks, every encoding).

use bytes::Bytes;
use futures_util::StreamExt;
use tower::{Layer, Service, ServiceExt};
use tower_test::mock;
use trpc::{Body, Code, Payload, Request, Response, Status};

use super::codec::{compress, decompress};
use super::error::{DecompressError, UnsupportedEncoding};
use super::{CompressionLayer, Encoding, Level, ACCEPT_ENCODING, ENCODING};
use crate::test_util::{status, stream_body};

fn text(n: usize) -> Bytes {
    let mut v = "all work and no play makes jack a dull boy. "
        .repeat(n / 44 + 1)
        .into_bytes();
    v.truncate(n);
    v.into()
}

fn noise(n: usize) -> Bytes {
    (0..n).map(|_| crate::util::random_u64() as u8).collect()
}

fn compressed(enc: Encoding, data: &[u8]) -> Payload {
    Payload {
        bytes: compress(enc, Level::Default, data).unwrap(),
        compressed: true,
    }
}

fn source_is<E: std::error::Error + 'static>(s: &Status) -> bool {
    std::error::Error::source(s).is_some_and(|e| e.is::<E>())
}

#[test]
fn every_encoding_round_trips_and_bounds_its_output() {
    let data = text(100_000);
    for &enc in Encoding::ALL {
        for level in [Level::Fastest, Level::Default, Level::Best] {
            let c = compress(enc, level, &data).unwrap();
            assert!(c.len() < data.len() / 10, "{enc}: {} bytes", c.len());
            assert_eq!(decompress(enc, &c, data.len()).unwrap(), data);
        }
        let c = compress(enc, Level::Default, &data).unwrap();
        let e = decompress(enc, &c, data.len() - 1).unwrap_err();
        assert!(e.is_too_large(), "{enc}: {e}");
        let e = decompress(enc, b"definitely not compressed", 1 << 20).unwrap_err();
        assert!(!e.is_too_large(), "{enc}: {e}");
        assert_eq!(Encoding::parse(enc.as_str()), Some(enc));
    }
}

#[tokio::test]
async fn the_client_compresses_large_requests_only() {
    for &enc in Encoding::ALL {
        let layer = CompressionLayer::client().encoding(enc).min_size(100);
        let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer);
        for (data, expect_compressed) in [
            (text(99), false),
            (text(10_000), true),
            (noise(10_000), false),
        ] {
            assert!(svc.poll_ready().is_ready());
            let fut =
                svc.call(Request::new(Body::once(Payload::new(data.clone()))).with_method("a.B/C"));
            let (req, send) = handle.next_request().await.unwrap();
            let p = req.get_ref().as_once().unwrap();
            assert_eq!(
                p.compressed,
                expect_compressed,
                "{enc} {} bytes",
                data.len()
            );
            let accept = req.metadata().get(ACCEPT_ENCODING).unwrap();
            assert!(accept.contains(enc.as_str()), "{accept}");
            if expect_compressed {
                assert_eq!(req.metadata().get(ENCODING), Some(enc.as_str()));
                assert!(p.len() < data.len() / 10);
                assert_eq!(decompress(enc, &p.bytes, 1 << 20).unwrap(), data);
            } else {
                assert_eq!(req.metadata().get(ENCODING), None);
                assert_eq!(p.bytes, data);
            }
            send.send_response(Response::new(Body::once(Payload::new("ok"))));
            fut.await.unwrap();
        }
    }
}

#[tokio::test]
async fn the_client_decompresses_responses_and_reports_corrupt_ones_as_internal() {
    let enc = Encoding::ALL[0];
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<Body>, Response<Body>, _>(CompressionLayer::client());
    let data = text(5000);

    assert!(svc.poll_ready().is_ready());
    let fut = svc.call(Request::new(Body::once(Payload::new("q"))).with_method("a.B/C"));
    let (_req, send) = handle.next_request().await.unwrap();
    let mut resp = Response::new(Body::once(compressed(enc, &data)));
    resp.metadata_mut()
        .try_insert(ENCODING, enc.as_str())
        .unwrap();
    send.send_response(resp);
    let resp = fut.await.unwrap();
    let p = resp.get_ref().as_once().unwrap();
    assert!(!p.compressed);
    assert_eq!(p.bytes, data);

    for (name, bytes) in [
        (Some(enc.as_str()), Bytes::from_static(b"garbage")),
        (None, text(10)),
        (Some("lz4"), text(10)),
    ] {
        assert!(svc.poll_ready().is_ready());
        let fut = svc.call(Request::new(Body::once(Payload::new("q"))).with_method("a.B/C"));
        let (_req, send) = handle.next_request().await.unwrap();
        let mut resp = Response::new(Body::once(Payload {
            bytes,
            compressed: true,
        }));
        if let Some(name) = name {
            resp.metadata_mut().try_insert(ENCODING, name).unwrap();
        }
        send.send_response(resp);
        let s = status(fut.await.unwrap_err());
        assert_eq!(s.code(), Code::Internal, "{s}");
        if name == Some(enc.as_str()) {
            assert!(source_is::<DecompressError>(&s), "{s:?}");
        } else {
            assert!(source_is::<UnsupportedEncoding>(&s), "{s:?}");
        }
    }
}

#[tokio::test]
async fn the_server_decompresses_and_answers_in_an_encoding_the_client_accepts() {
    let all = Encoding::ALL;
    let (req_enc, accepted) = (all[all.len() - 1], all[all.len() - 1]);
    let layer = CompressionLayer::server().min_size(10);
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer);
    let data = text(8000);
    assert!(svc.poll_ready().is_ready());
    let mut req = Request::new(Body::once(compressed(req_enc, &data))).with_method("a.B/C");
    req.metadata_mut()
        .try_insert(ENCODING, req_enc.as_str())
        .unwrap();
    req.metadata_mut()
        .try_insert(ACCEPT_ENCODING, &format!("br, {accepted}"))
        .unwrap();
    let fut = svc.call(req);
    let (req, send) = handle.next_request().await.unwrap();
    let p = req.get_ref().as_once().unwrap();
    assert!(!p.compressed, "the handler must see a plain message");
    assert_eq!(p.bytes, data);
    send.send_response(Response::new(Body::once(Payload::new(data.clone()))));
    let resp = fut.await.unwrap();
    assert_eq!(resp.metadata().get(ENCODING), Some(accepted.as_str()));
    assert!(resp.metadata().get(ACCEPT_ENCODING).is_some());
    let p = resp.get_ref().as_once().unwrap();
    assert!(p.compressed);
    assert_eq!(decompress(accepted, &p.bytes, 1 << 20).unwrap(), data);
}

#[tokio::test]
async fn the_server_never_compresses_for_a_client_that_accepts_nothing() {
    let layer = CompressionLayer::server().min_size(0);
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer);
    for accept in [None, Some("lz4, br")] {
        assert!(svc.poll_ready().is_ready());
        let mut req = Request::new(Body::once(Payload::new("q"))).with_method("a.B/C");
        if let Some(a) = accept {
            req.metadata_mut().try_insert(ACCEPT_ENCODING, a).unwrap();
        }
        let fut = svc.call(req);
        let (_req, send) = handle.next_request().await.unwrap();
        send.send_response(Response::new(Body::once(Payload::new(text(10_000)))));
        let resp = fut.await.unwrap();
        assert!(!resp.get_ref().as_once().unwrap().compressed);
        assert_eq!(resp.metadata().get(ENCODING), None);
    }
}

#[tokio::test]
async fn bad_requests_fail_without_reaching_the_handler() {
    let enc = Encoding::ALL[0];
    let (mut svc, mut handle) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(
        CompressionLayer::server().max_decompressed_size(1000),
    );
    let cases: Vec<(Option<&str>, Payload, Code)> = vec![
        (
            Some(enc.as_str()),
            Payload {
                bytes: Bytes::from_static(b"\x1f\x8b garbage"),
                compressed: true,
            },
            Code::InvalidArgument,
        ),
        (Some("lz4"), compressed(enc, b"hello"), Code::Unimplemented),
        (None, compressed(enc, b"hello"), Code::Unimplemented),
        (
            Some(enc.as_str()),
            compressed(enc, &text(5000)),
            Code::ResourceExhausted,
        ),
    ];
    for (name, payload, code) in cases {
        assert!(svc.poll_ready().is_ready());
        let mut req = Request::new(Body::once(payload)).with_method("a.B/C");
        if let Some(n) = name {
            req.metadata_mut().try_insert(ENCODING, n).unwrap();
        }
        let s = status(svc.call(req).await.unwrap_err());
        assert_eq!(s.code(), code, "{name:?}: {s}");
    }
    assert!(
        handle.poll_request().is_pending(),
        "a bad request reached the handler"
    );
}

#[tokio::test]
async fn streams_are_compressed_and_decompressed_message_by_message() {
    // client layer -> (inspect the "wire") -> server layer -> echo handler
    let echo = tower::service_fn(|req: Request<Body>| async move {
        let mut resp = Response::new(req.into_inner());
        resp.metadata_mut().insert("x-echo", "1");
        Ok::<_, Status>(resp)
    });
    let server = CompressionLayer::server().min_size(100).layer(echo);
    let (wire_tx, mut wire_rx) = tokio::sync::mpsc::unbounded_channel();
    let wire = tower::service_fn(move |req: Request<Body>| {
        let mut server = server.clone();
        let wire_tx = wire_tx.clone();
        async move {
            let (parts, body) = req.into_parts();
            let tx = wire_tx.clone();
            let body = Body::stream(body.inspect(move |item| {
                if let Ok(p) = item {
                    let _ = tx.send(("request", p.compressed, p.len()));
                }
            }));
            let resp = server
                .ready()
                .await?
                .call(Request::from_parts(parts, body))
                .await?;
            let (md, ext, body) = resp.into_parts();
            assert!(md.get(ENCODING).is_some(), "{md:?}");
            let body = Body::stream(body.inspect(move |item| {
                if let Ok(p) = item {
                    let _ = wire_tx.send(("response", p.compressed, p.len()));
                }
            }));
            Ok::<_, trpc::BoxError>(Response::from_parts(md, ext, body))
        }
    });
    let mut client = CompressionLayer::client().min_size(100).layer(wire);
    let messages = vec![
        Ok(Payload::new(text(5000))),
        Ok(Payload::new("tiny")),
        Ok(Payload::new(text(20_000))),
        Err(Status::new(Code::Ok, "")), // trailers: a successful end
    ];
    let req = Request::new(stream_body(messages)).with_method("a.B/Echo");
    let resp = client.ready().await.unwrap().call(req).await.unwrap();
    let items: Vec<_> = resp.into_inner().collect().await;
    assert_eq!(items.len(), 4);
    assert_eq!(items[0].as_ref().unwrap().bytes, text(5000));
    assert_eq!(items[1].as_ref().unwrap().bytes, "tiny");
    assert_eq!(items[2].as_ref().unwrap().bytes, text(20_000));
    assert!(items
        .iter()
        .take(3)
        .all(|i| !i.as_ref().unwrap().compressed));
    assert_eq!(items[3].as_ref().unwrap_err().code(), Code::Ok);
    let mut seen = Vec::new();
    while let Ok(x) = wire_rx.try_recv() {
        seen.push(x);
    }
    let flags: Vec<_> = seen.iter().map(|(dir, c, _)| (*dir, *c)).collect();
    assert_eq!(
        flags,
        [
            ("request", true),
            ("response", true),
            ("request", false),
            ("response", false),
            ("request", true),
            ("response", true),
        ]
    );
    assert!(seen.iter().filter(|s| s.1).all(|s| s.2 < 2000), "{seen:?}");
}

#[tokio::test]
async fn a_corrupt_message_in_a_request_stream_fails_that_stream() {
    let enc = Encoding::ALL[0];
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<Body>, Response<Body>, _>(CompressionLayer::server());
    assert!(svc.poll_ready().is_ready());
    let mut req = Request::new(stream_body(vec![
        Ok(compressed(enc, &text(3000))),
        Ok(Payload {
            bytes: Bytes::from_static(b"junk"),
            compressed: true,
        }),
    ]))
    .with_method("a.B/Upload");
    req.metadata_mut()
        .try_insert(ENCODING, enc.as_str())
        .unwrap();
    let fut = svc.call(req);
    let (req, send) = handle.next_request().await.unwrap();
    let items: Vec<_> = req.into_inner().collect().await;
    assert_eq!(items[0].as_ref().unwrap().bytes, text(3000));
    assert_eq!(items[1].as_ref().unwrap_err().code(), Code::InvalidArgument);
    send.send_error(Status::invalid_argument("bad upload"));
    assert!(fut.await.is_err());
}
