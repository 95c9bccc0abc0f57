//! Context and serialisation end to end: text and binary metadata both ways,
//! the peer address, and JSON/protobuf codecs on one route.

use bytes::{Bytes, BytesMut};
use trpc::codec::{Codec, Json, Proto};
use trpc::server::{unary, Router};
use trpc::{Client, Code, MetadataMap, Request, Response, Status};

use trpc_integration::client::connect;
use trpc_integration::frames::unary_request;
use trpc_integration::messages::EchoMsg;
use trpc_integration::peer::Peer;
use trpc_integration::server::serve;
use trpc_integration::{within, SOON};

/// What the handler saw, sent back to the test.
#[derive(Clone, PartialEq, Eq, prost::Message, serde::Serialize, serde::Deserialize)]
struct Seen {
    /// `x-user` text value.
    #[prost(string, tag = "1")]
    user: String,
    /// Every `x-tag` value, in order.
    #[prost(string, repeated, tag = "2")]
    tags: Vec<String>,
    /// The `trace-bin` binary value.
    #[prost(bytes = "vec", tag = "3")]
    trace: Vec<u8>,
    /// `req.remote_addr()`.
    #[prost(string, tag = "4")]
    peer: String,
    /// The `trpc-codec` the request came in.
    #[prost(string, tag = "5")]
    codec: String,
}

fn inspect(req: &Request<EchoMsg>) -> Seen {
    let md = req.metadata();
    Seen {
        user: md.get("x-user").unwrap_or_default().to_string(),
        tags: md.get_all("x-tag").map(str::to_string).collect(),
        trace: md
            .get_bin("trace-bin")
            .map(|b| b.to_vec())
            .unwrap_or_default(),
        peer: req.remote_addr().map(|a| a.to_string()).unwrap_or_default(),
        codec: trpc::codec::codec_name(md).to_string(),
    }
}

fn router() -> Router {
    Router::new()
        .route(
            "meta.Meta/Inspect",
            unary(|req: Request<EchoMsg>| async move {
                let seen = inspect(&req);
                let mut resp = Response::new(seen);
                resp.metadata_mut().insert("x-reply", "from the server");
                resp.metadata_mut()
                    .insert_bin("reply-bin", Bytes::from_static(&[0, 0xff, 0x80, 7]));
                Ok::<_, Status>(resp)
            })
            .codec((Json, Proto)),
        )
        .route(
            "meta.Meta/JsonOnly",
            unary(|req: Request<EchoMsg>| async move {
                Ok::<_, Status>(Response::new(req.into_inner()))
            }),
        )
        .route(
            "meta.Meta/Both",
            unary(|req: Request<EchoMsg>| async move {
                let codec = trpc::codec::codec_name(req.metadata()).to_string();
                let msg = req.into_inner().message;
                Ok::<_, Status>(Response::new(EchoMsg::new(format!("{msg} via {codec}"))))
            })
            .codec((Json, Proto)),
        )
}

#[tokio::test]
async fn text_and_binary_metadata_travel_both_ways() {
    let server = serve(router()).await;
    let mut client = Client::new(connect(server.addr).await);

    let mut req = Request::new(EchoMsg::new("hi"));
    let md: &mut MetadataMap = req.metadata_mut();
    md.insert("x-user", "alice");
    md.append("x-tag", "one").expect("append");
    md.append("x-tag", "two").expect("append");
    md.insert_bin(
        "trace-bin",
        Bytes::from_static(&[0xde, 0xad, 0x00, 0xbe, 0xef]),
    );

    let resp: Response<Seen> = within(SOON, "inspect", client.unary("meta.Meta/Inspect", req))
        .await
        .expect("inspect");
    let seen = resp.get_ref();
    assert_eq!(seen.user, "alice");
    assert_eq!(seen.tags, ["one", "two"]);
    assert_eq!(seen.trace, [0xde, 0xad, 0x00, 0xbe, 0xef]);
    assert_eq!(seen.codec, "json");

    assert_eq!(resp.metadata().get("x-reply"), Some("from the server"));
    assert_eq!(
        resp.metadata().get_bin("reply-bin").map(|b| &b[..]),
        Some(&[0, 0xff, 0x80, 7][..])
    );
    server.shutdown().await;
}

#[tokio::test]
async fn handler_sees_the_peer_address() {
    let server = serve(router()).await;

    // Through a channel: a loopback address on another port than the server's.
    let mut client = Client::new(connect(server.addr).await);
    let seen: Seen = within(
        SOON,
        "inspect",
        client.unary_message("meta.Meta/Inspect", EchoMsg::new("x")),
    )
    .await
    .expect("inspect");
    let peer: std::net::SocketAddr = seen.peer.parse().expect("peer address");
    assert!(peer.ip().is_loopback(), "{peer}");
    assert_ne!(peer.port(), server.addr.port());

    // Through a raw socket whose local address we know: exactly that address.
    let mut raw = Peer::connect(server.addr).await;
    let local = raw.io.local_addr().expect("local addr");
    raw.exchange_settings().await;
    let body = serde_json::to_vec(&EchoMsg::new("x")).expect("json");
    raw.send(&unary_request(1, "meta.Meta/Inspect", &[], body))
        .await;
    let r = raw.response().await;
    assert_eq!(r.status, 0, "{}", r.message);
    let seen: Seen = serde_json::from_slice(&r.payload).expect("json");
    assert_eq!(seen.peer, local.to_string());
    server.shutdown().await;
}

#[tokio::test]
async fn one_route_serves_json_and_protobuf_clients() {
    let server = serve(router()).await;
    let channel = connect(server.addr).await;
    let mut json = Client::new(channel.clone());
    let mut proto = Client::with_codec(channel.clone(), Proto);

    let reply: EchoMsg = within(
        SOON,
        "json call",
        json.unary_message("meta.Meta/Both", EchoMsg::new("a")),
    )
    .await
    .expect("json call");
    assert_eq!(reply.message, "a via json");

    let resp: Response<EchoMsg> = within(
        SOON,
        "proto call",
        proto.unary("meta.Meta/Both", Request::new(EchoMsg::new("b"))),
    )
    .await
    .expect("proto call");
    assert_eq!(resp.get_ref().message, "b via proto");
    assert_eq!(
        resp.metadata().get("trpc-codec"),
        Some("proto"),
        "the server names its codec"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn protobuf_on_the_wire_is_protobuf() {
    // A raw proto call: the payload is prost bytes and so is the answer.
    let server = serve(router()).await;
    let mut raw = Peer::connect(server.addr).await;
    raw.exchange_settings().await;
    let body = prost::Message::encode_to_vec(&EchoMsg::new("raw"));
    raw.send(&unary_request(
        1,
        "meta.Meta/Both",
        &[("trpc-codec", b"proto")],
        body,
    ))
    .await;
    let r = raw.response().await;
    assert_eq!(r.status, 0, "{}", r.message);
    let reply: EchoMsg = prost::Message::decode(r.payload).expect("protobuf answer");
    assert_eq!(reply.message, "raw via proto");
    assert!(
        r.metadata
            .iter()
            .any(|(k, v)| k == "trpc-codec" && v == b"proto"),
        "{:?}",
        r.metadata
    );
    server.shutdown().await;
}

#[tokio::test]
async fn json_only_route_rejects_protobuf_with_invalid_argument() {
    let server = serve(router()).await;
    let channel = connect(server.addr).await;
    let mut proto = Client::with_codec(channel.clone(), Proto);
    let err = within(
        SOON,
        "proto call to a json route",
        proto.unary_message::<_, EchoMsg>("meta.Meta/JsonOnly", EchoMsg::new("x")),
    )
    .await
    .expect_err("the route accepts JSON only");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("proto"), "names the codec: {err:?}");

    // JSON still works on the same connection.
    let mut json = Client::new(channel.clone());
    let reply: EchoMsg = within(
        SOON,
        "json call",
        json.unary_message("meta.Meta/JsonOnly", EchoMsg::new("ok")),
    )
    .await
    .expect("json call");
    assert_eq!(reply.message, "ok");
    assert_eq!(channel.connections(), 1);
    server.shutdown().await;
}

/// Sends pre-encoded bytes under a codec's name, so a test can send garbage.
#[derive(Clone, Copy, Debug)]
struct RawBytes(&'static str);

impl Codec<Vec<u8>> for RawBytes {
    fn name(&self) -> &'static str {
        self.0
    }
    fn encode(&self, item: &Vec<u8>, dst: &mut BytesMut) -> Result<(), Status> {
        dst.extend_from_slice(item);
        Ok(())
    }
    fn decode(&self, src: Bytes) -> Result<Vec<u8>, Status> {
        Ok(src.to_vec())
    }
}

#[tokio::test]
async fn undecodable_payload_fails_only_that_call() {
    let server = serve(router()).await;
    let channel = connect(server.addr).await;

    for (codec, garbage) in [
        ("json", &b"{\"message\": nope"[..]),
        ("proto", &[0xff, 0xff, 0xff, 0xff][..]),
    ] {
        let mut raw = Client::with_codec(channel.clone(), RawBytes(codec));
        let err = within(
            SOON,
            "garbage call",
            raw.unary_message::<_, Vec<u8>>("meta.Meta/Both", garbage.to_vec()),
        )
        .await
        .expect_err("the payload cannot be decoded");
        assert_eq!(err.code(), Code::InvalidArgument, "{codec}: {err:?}");

        // A well-formed payload in the same codec on the same connection.
        let good = match codec {
            "json" => serde_json::to_vec(&EchoMsg::new("fine")).expect("json"),
            _ => prost::Message::encode_to_vec(&EchoMsg::new("fine")),
        };
        let reply = within(
            SOON,
            "good call",
            raw.unary_message::<_, Vec<u8>>("meta.Meta/Both", good),
        )
        .await
        .expect("good call after a bad one");
        let reply: EchoMsg = match codec {
            "json" => serde_json::from_slice(&reply).expect("json"),
            _ => prost::Message::decode(&reply[..]).expect("proto"),
        };
        assert_eq!(reply.message, format!("fine via {codec}"));
    }
    assert_eq!(channel.connections(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn undecodable_response_is_internal_on_the_client() {
    // A client that expects a different message shape than the server sends.
    #[derive(Debug, serde::Deserialize, serde::Serialize)]
    struct Strict {
        count: u64,
    }
    let server = serve(router()).await;
    let mut client = Client::new(connect(server.addr).await);
    let err = within(
        SOON,
        "mismatched response",
        client.unary_message::<_, Strict>("meta.Meta/JsonOnly", EchoMsg::new("x")),
    )
    .await
    .expect_err("the response has no `count`");
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    server.shutdown().await;
}
