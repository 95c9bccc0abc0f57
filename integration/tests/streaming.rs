//! Streaming calls end to end: the three shapes with both codecs, ordering,
//! empty streams, errors with trailers, cancellation both ways, deadlines,
//! flow control bounds, and unary calls beside a big stream.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, Stream, StreamExt};
use tokio::time::timeout;
use trpc::codec::{Json, Proto};
use trpc::server::{bidi_streaming, client_streaming, server_streaming, unary, Router, Server};
use trpc::stats::TransportStats;
use trpc::{Client, Code, MetadataMap, Request, Response, Status, Streaming};
use trpc_integration::client::{connect as channel, endpoint};
use trpc_integration::messages::Num;
use trpc_integration::probe::{count_router, Event, Events, Probe};
use trpc_integration::server::{serve_with, TestServer};

#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
struct Chunk {
    #[prost(bytes = "bytes", tag = "1")]
    #[serde(with = "serde_bytes_compat")]
    data: Bytes,
}

/// Bytes as a JSON array of numbers (the tests using chunks use protobuf).
mod serde_bytes_compat {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};
    pub(super) fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(b.iter())
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        Vec::<u8>::deserialize(d).map(Bytes::from)
    }
}

type NumStream = std::pin::Pin<Box<dyn Stream<Item = Result<Num, Status>> + Send>>;

/// `t.S/Forever` and `t.S/Drain` report to `probe`; `t.S/Download`
/// counts the chunks it produced in `produced`.
fn router(probe: Probe, produced: Arc<AtomicUsize>) -> Router {
    let both = (Json, Proto);
    // 0..count, with trailers.
    let range = |req: Request<Num>| async move {
        let count = req.get_ref().n;
        let mut trailers = MetadataMap::new();
        trailers.try_insert("x-count", &count.to_string()).unwrap();
        let items = (0..count)
            .map(|n| Ok(Num { n }))
            .chain(std::iter::once(Err(Status::ok_with_trailers(trailers))));
        let mut resp = Response::new(stream::iter(items));
        resp.metadata_mut().insert("x-shape", "server-streaming");
        Ok::<_, Status>(resp)
    };
    let sum = |req: Request<Streaming<Num>>| async move {
        let mut s = req.into_inner();
        let mut total = 0;
        let mut count = 0;
        while let Some(m) = s.message().await? {
            total += m.n;
            count += 1;
        }
        Ok::<_, Status>(Response::new(Num {
            n: total * 1000 + count,
        }))
    };
    let echo = |req: Request<Streaming<Num>>| async move {
        let s: NumStream = Box::pin(req.into_inner().map(|m| m.map(|m| Num { n: m.n * 2 })));
        Ok::<_, Status>(Response::new(s))
    };
    // Three messages, then an error with trailers.
    let fail_mid = |_req: Request<Num>| async move {
        let mut md = MetadataMap::new();
        md.insert("x-reason", "third time");
        let items = vec![
            Ok(Num { n: 1 }),
            Ok(Num { n: 2 }),
            Ok(Num { n: 3 }),
            Err(Status::aborted("stopped after three").with_metadata(md)),
        ];
        Ok::<_, Status>(Response::new(stream::iter(items)))
    };
    let fail_first = |_req: Request<Num>| async move {
        Ok::<_, Status>(Response::new(stream::iter(vec![Err::<Num, _>(
            Status::not_found("nothing to stream"),
        )])))
    };
    // Endless slow stream; reports when dropped.
    let p = probe.clone();
    let forever = move |_req: Request<Num>| {
        let p = p.clone();
        async move {
            let guard = p.enter();
            let s = stream::unfold((0u64, guard), |(n, g)| async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((Ok(Num { n }), (n + 1, g)))
            });
            Ok::<_, Status>(Response::new(s))
        }
    };
    // Fails after two request messages while the client is still sending.
    let reject = |req: Request<Streaming<Num>>| async move {
        let mut s = req.into_inner();
        s.message().await?;
        s.message().await?;
        Err::<Response<Num>, _>(Status::invalid_argument("two is enough"))
    };
    // Big lazy download: n chunks of 1 MiB.
    let download = move |req: Request<Num>| {
        let p = produced.clone();
        async move {
            let count = req.get_ref().n;
            let chunk = Bytes::from(vec![7u8; 1 << 20]);
            let s = stream::iter(0..count).map(move |_| {
                p.fetch_add(1, Ordering::SeqCst);
                Ok(Chunk {
                    data: chunk.clone(),
                })
            });
            Ok::<_, Status>(Response::new(s))
        }
    };
    // Slow upload consumer: reads 16 chunks slowly, then stops reading.
    let slow_upload = |req: Request<Streaming<Chunk>>| async move {
        let mut s = req.into_inner();
        let mut total = 0u64;
        for _ in 0..16 {
            match s.message().await? {
                Some(c) => total += c.data.len() as u64,
                None => break,
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok::<_, Status>(Response::new(Num { n: total }))
    };
    let ping = |req: Request<Num>| async move { Ok::<_, Status>(Response::new(req.into_inner())) };
    Router::new()
        .route("t.S/Range", server_streaming(range).codec(both))
        .route("t.S/Sum", client_streaming(sum).codec(both))
        .route("t.S/Echo", bidi_streaming(echo).codec(both))
        .route("t.S/FailMid", server_streaming(fail_mid).codec(both))
        .route("t.S/FailFirst", server_streaming(fail_first).codec(both))
        .route("t.S/Forever", server_streaming(forever).codec(both))
        .route("t.S/Reject", client_streaming(reject).codec(both))
        .route("t.S/Download", server_streaming(download).codec(Proto))
        .route("t.S/SlowUpload", client_streaming(slow_upload).codec(Proto))
        .route("t.S/Ping", unary(ping).codec(both))
        // Reads the request stream until cancelled; reports when dropped.
        .merge(count_router(probe, "t.S/Drain"))
}

/// A server of [`router`] with its counters and probe events.
struct Srv {
    server: TestServer,
    stats: Arc<TransportStats>,
    events: Events,
    produced: Arc<AtomicUsize>,
}

async fn start(configure: impl FnOnce(Server) -> Server) -> Srv {
    let stats = TransportStats::new();
    let (probe, events) = Probe::new();
    let produced = Arc::new(AtomicUsize::new(0));
    let server = configure(Server::builder().transport_stats(stats.clone()));
    let server = serve_with(server, router(probe, produced.clone())).await;
    Srv {
        server,
        stats,
        events,
        produced,
    }
}

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn server_streaming_delivers_in_order_with_metadata_and_trailers_in_both_codecs() {
    let srv = start(|s| s).await;
    let ch = channel(srv.server.addr).await;
    for proto in [false, true] {
        let resp = if proto {
            Client::with_codec(ch.clone(), Proto)
                .server_streaming::<Num, Num>("t.S/Range", Request::new(Num { n: 100 }))
                .await
        } else {
            Client::new(ch.clone())
                .server_streaming::<Num, Num>("t.S/Range", Request::new(Num { n: 100 }))
                .await
        }
        .unwrap();
        assert_eq!(resp.metadata().get("x-shape"), Some("server-streaming"));
        let mut s = resp.into_inner();
        let mut got = Vec::new();
        while let Some(m) = timeout(LIMIT, s.message()).await.unwrap().unwrap() {
            got.push(m.n);
        }
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(s.trailers().and_then(|t| t.get("x-count")), Some("100"));
    }
}

#[tokio::test]
async fn client_streaming_sums_every_message_in_both_codecs() {
    let srv = start(|s| s).await;
    let ch = channel(srv.server.addr).await;
    let nums = || stream::iter((1..=500).map(|n| Num { n }));
    let json: Response<Num> = Client::new(ch.clone())
        .client_streaming("t.S/Sum", Request::new(nums()))
        .await
        .unwrap();
    let proto: Response<Num> = Client::with_codec(ch.clone(), Proto)
        .client_streaming("t.S/Sum", Request::new(nums()))
        .await
        .unwrap();
    let expected = (1..=500u64).sum::<u64>() * 1000 + 500;
    assert_eq!(json.get_ref().n, expected);
    assert_eq!(proto.get_ref().n, expected);
}

#[tokio::test]
async fn bidi_streaming_echoes_in_order_while_the_client_is_still_sending() {
    let srv = start(|s| s).await;
    let ch = channel(srv.server.addr).await;
    for proto in [false, true] {
        // The client sends one message at a time and waits for its echo, so
        // the two directions must really run concurrently.
        let (tx, rx) = tokio::sync::mpsc::channel::<Num>(1);
        let outgoing = tokio_stream_from(rx);
        let resp = if proto {
            Client::with_codec(ch.clone(), Proto)
                .bidi_streaming::<Num, Num, _>("t.S/Echo", Request::new(outgoing))
                .await
        } else {
            Client::new(ch.clone())
                .bidi_streaming::<Num, Num, _>("t.S/Echo", Request::new(outgoing))
                .await
        }
        .unwrap();
        let mut s = resp.into_inner();
        for n in 0..50 {
            tx.send(Num { n }).await.unwrap();
            let m = timeout(LIMIT, s.message()).await.unwrap().unwrap().unwrap();
            assert_eq!(m.n, n * 2);
        }
        drop(tx);
        assert!(timeout(LIMIT, s.message())
            .await
            .unwrap()
            .unwrap()
            .is_none());
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn empty_streams_work_both_ways() {
    let srv = start(|s| s).await;
    let ch = channel(srv.server.addr).await;
    let mut client = Client::new(ch);
    let resp = client
        .server_streaming::<Num, Num>("t.S/Range", Request::new(Num { n: 0 }))
        .await
        .unwrap();
    let mut s = resp.into_inner();
    assert!(s.message().await.unwrap().is_none());
    assert_eq!(s.trailers().and_then(|t| t.get("x-count")), Some("0"));
    let sum: Response<Num> = client
        .client_streaming("t.S/Sum", Request::new(stream::empty::<Num>()))
        .await
        .unwrap();
    assert_eq!(sum.get_ref().n, 0);
    let resp = client
        .bidi_streaming::<Num, Num, _>("t.S/Echo", Request::new(stream::empty::<Num>()))
        .await
        .unwrap();
    assert!(resp.into_inner().message().await.unwrap().is_none());
}

#[tokio::test]
async fn an_error_mid_stream_arrives_after_the_messages_with_its_trailers() {
    let srv = start(|s| s).await;
    let mut client = Client::new(channel(srv.server.addr).await);
    let mut s = client
        .server_streaming::<Num, Num>("t.S/FailMid", Request::new(Num { n: 0 }))
        .await
        .unwrap()
        .into_inner();
    for n in 1..=3 {
        assert_eq!(s.message().await.unwrap().unwrap().n, n);
    }
    let err = s.message().await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert_eq!(err.message(), "stopped after three");
    assert_eq!(err.metadata().get("x-reason"), Some("third time"));
    assert!(s.message().await.unwrap().is_none());

    // An error before the first message is the call's error.
    let err = client
        .server_streaming::<Num, Num>("t.S/FailFirst", Request::new(Num { n: 0 }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn dropping_the_response_stream_cancels_the_server_handler() {
    let mut srv = start(|s| s).await;
    let mut client = Client::new(channel(srv.server.addr).await);
    let mut s = client
        .server_streaming::<Num, Num>("t.S/Forever", Request::new(Num { n: 0 }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.message().await.unwrap().unwrap().n, 0);
    srv.events.expect(Event::Started, LIMIT).await;
    drop(s);
    // Panics if the server stream is not dropped after the client cancels.
    srv.events.expect(Event::Dropped, LIMIT).await;
}

#[tokio::test]
async fn dropping_a_client_streaming_call_cancels_the_server_handler() {
    let mut srv = start(|s| s).await;
    let ch = channel(srv.server.addr).await;
    let call = tokio::spawn(async move {
        Client::new(ch)
            .client_streaming::<Num, Num, _>("t.S/Drain", Request::new(stream::pending::<Num>()))
            .await
    });
    srv.events.expect(Event::Started, LIMIT).await;
    call.abort();
    // Panics if the handler is not dropped after the client cancels.
    srv.events.expect(Event::Dropped, LIMIT).await;
}

#[tokio::test]
async fn a_server_error_ends_the_call_while_the_client_is_still_sending() {
    let srv = start(|s| s).await;
    let mut client = Client::new(channel(srv.server.addr).await);
    // An endless request stream: the server's error must end the call anyway.
    let endless = stream::iter(0..).map(|n| Num { n });
    let err = timeout(
        LIMIT,
        client.client_streaming::<Num, Num, _>("t.S/Reject", Request::new(endless)),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "two is enough");
    // The connection is fine afterwards.
    let pong: Num = client
        .unary_message("t.S/Ping", Num { n: 9 })
        .await
        .unwrap();
    assert_eq!(pong.n, 9);
}

#[tokio::test]
async fn the_deadline_covers_the_whole_stream() {
    let mut srv = start(|s| s).await;
    let mut client = Client::new(channel(srv.server.addr).await);
    let mut req = Request::new(Num { n: 0 });
    req.set_timeout(Duration::from_millis(300));
    let started = tokio::time::Instant::now();
    let mut s = client
        .server_streaming::<Num, Num>("t.S/Forever", req)
        .await
        .unwrap()
        .into_inner();
    let mut received = 0;
    let err = loop {
        match timeout(LIMIT, s.message()).await.unwrap() {
            Ok(Some(_)) => received += 1,
            Ok(None) => panic!("stream ended without the deadline"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(received > 0, "some messages arrive before the deadline");
    assert!(started.elapsed() < Duration::from_secs(5));
    srv.events.expect(Event::Started, LIMIT).await;
    // Panics if the server stream is not dropped at the deadline.
    srv.events.expect(Event::Dropped, LIMIT).await;
}

const MIB: u64 = 1 << 20;

#[tokio::test]
async fn a_slow_reader_bounds_the_senders_buffered_bytes_on_download() {
    let srv = start(|s| s).await;
    let client_stats = TransportStats::new();
    let ch = endpoint(srv.server.addr)
        .transport_stats(client_stats.clone())
        .connect()
        .await
        .unwrap();
    let mut client = Client::with_codec(ch, Proto);
    // The server would send 1 GiB; the client reads 32 MiB slowly, then stops.
    let mut s = client
        .server_streaming::<Num, Chunk>("t.S/Download", Request::new(Num { n: 1024 }))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..32 {
        let c = timeout(LIMIT, s.message()).await.unwrap().unwrap().unwrap();
        assert_eq!(c.data.len() as u64, MIB);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let produced = srv.produced.load(Ordering::SeqCst) as u64;
    let server_peak = srv.stats.write_buffered_peak();
    let client_peak = client_stats.recv_buffered_peak();
    drop(s);
    eprintln!("produced {produced} MiB; server write buffer peak {server_peak} B; client receive queue peak {client_peak} B");
    // Window 1 MiB + one message in flight + what the kernel buffers: the
    // producer is held back, it does not run ahead to 1 GiB.
    assert!(
        produced < 32 + 16,
        "producer ran ahead: {produced} MiB produced"
    );
    assert!(server_peak < 4 * MIB, "server buffered {server_peak} bytes");
    assert!(client_peak < 4 * MIB, "client queued {client_peak} bytes");
}

#[tokio::test]
async fn a_slow_reader_bounds_the_senders_buffered_bytes_on_upload() {
    let srv = start(|s| s).await;
    let client_stats = TransportStats::new();
    let ch = endpoint(srv.server.addr)
        .transport_stats(client_stats.clone())
        .connect()
        .await
        .unwrap();
    let mut client = Client::with_codec(ch, Proto);
    let produced = Arc::new(AtomicUsize::new(0));
    let p = produced.clone();
    let chunk = Bytes::from(vec![1u8; MIB as usize]);
    // 1 GiB offered lazily; the server reads 16 MiB slowly and answers.
    let upload = stream::iter(0..1024).map(move |_| {
        p.fetch_add(1, Ordering::SeqCst);
        Chunk {
            data: chunk.clone(),
        }
    });
    let resp: Response<Num> = timeout(
        LIMIT,
        client.client_streaming("t.S/SlowUpload", Request::new(upload)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.get_ref().n, 16 * MIB);
    let produced = produced.load(Ordering::SeqCst) as u64;
    let client_peak = client_stats.write_buffered_peak();
    let server_peak = srv.stats.recv_buffered_peak();
    eprintln!("produced {produced} MiB; client write buffer peak {client_peak} B; server receive queue peak {server_peak} B");
    assert!(
        produced < 16 + 24,
        "producer ran ahead: {produced} MiB produced"
    );
    assert!(client_peak < 4 * MIB, "client buffered {client_peak} bytes");
    assert!(server_peak < 4 * MIB, "server queued {server_peak} bytes");
}

#[tokio::test]
async fn unary_calls_complete_while_a_big_stream_runs_on_the_same_connection() {
    let srv = start(|s| s).await;
    let ch = channel(srv.server.addr).await;
    let mut streaming = Client::with_codec(ch.clone(), Proto);
    let mut s = streaming
        .server_streaming::<Num, Chunk>("t.S/Download", Request::new(Num { n: 1 << 20 }))
        .await
        .unwrap()
        .into_inner();
    // Read the stream flat out in the background.
    let reader = tokio::spawn(async move {
        let mut bytes = 0u64;
        while let Ok(Some(c)) = s.message().await {
            bytes += c.data.len() as u64;
        }
        bytes
    });
    // Wait until the stream is really flowing.
    let flowing = async {
        while srv.produced.load(Ordering::SeqCst) < 64 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    timeout(LIMIT, flowing).await.unwrap();
    let mut client = Client::new(ch.clone());
    for n in 0..50 {
        let pong: Num = timeout(
            Duration::from_secs(5),
            client.unary_message("t.S/Ping", Num { n }),
        )
        .await
        .expect("unary call starved by the stream")
        .unwrap();
        assert_eq!(pong.n, n);
    }
    assert_eq!(ch.connections(), 1);
    reader.abort();
}
