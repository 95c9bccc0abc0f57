//! trpc's gRPC client against etcd (a Go gRPC server, Debian's `etcd-server`),
//! started by the test on free loopback ports with a temporary data dir:
//! KV Put and Range with prost messages written from etcd's documented
//! field numbers, an etcd error status, and a deadline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use tokio::process::{Child, Command};

use trpc::codec::Proto;
use trpc::{Channel, Client, Code, Endpoint, Request};
use trpc_integration::within;

/// `etcdserverpb.ResponseHeader`.
#[derive(Clone, PartialEq, prost::Message)]
struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    cluster_id: u64,
    #[prost(uint64, tag = "2")]
    member_id: u64,
    #[prost(int64, tag = "3")]
    revision: i64,
    #[prost(uint64, tag = "4")]
    raft_term: u64,
}

/// `mvccpb.KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
struct KeyValue {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(int64, tag = "2")]
    create_revision: i64,
    #[prost(int64, tag = "3")]
    mod_revision: i64,
    #[prost(int64, tag = "4")]
    version: i64,
    #[prost(bytes = "bytes", tag = "5")]
    value: Bytes,
    #[prost(int64, tag = "6")]
    lease: i64,
}

/// `etcdserverpb.PutRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct PutRequest {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
    #[prost(int64, tag = "3")]
    lease: i64,
    #[prost(bool, tag = "4")]
    prev_kv: bool,
}

/// `etcdserverpb.PutResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct PutResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
    #[prost(message, optional, tag = "2")]
    prev_kv: Option<KeyValue>,
}

/// `etcdserverpb.RangeRequest` (the fields used here).
#[derive(Clone, PartialEq, prost::Message)]
struct RangeRequest {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    range_end: Bytes,
    #[prost(int64, tag = "3")]
    limit: i64,
    #[prost(bool, tag = "9")]
    count_only: bool,
}

/// `etcdserverpb.RangeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    kvs: Vec<KeyValue>,
    #[prost(bool, tag = "3")]
    more: bool,
    #[prost(int64, tag = "4")]
    count: i64,
}

const PUT: &str = "etcdserverpb.KV/Put";
const RANGE: &str = "etcdserverpb.KV/Range";

/// An etcd server on free ports, killed (and its data dir removed) on drop.
struct Etcd {
    child: Child,
    dir: PathBuf,
    client: SocketAddr,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn etcd_binary() -> &'static str {
    if std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .is_ok()
    {
        return "etcd";
    }
    panic!("etcd is not installed: `apt-get install etcd-server` (make test does it)");
}

async fn start_etcd() -> Etcd {
    let (client_port, peer_port) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!(
        "trpc-grpc-etcd-{}-{client_port}",
        std::process::id()
    ));
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let child = Command::new(etcd_binary())
        .args(["--name", "trpc-test", "--data-dir"])
        .arg(&dir)
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("trpc-test={peer}")])
        .args(["--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start etcd");
    Etcd {
        child,
        dir,
        client: SocketAddr::from(([127, 0, 0, 1], client_port)),
    }
}

/// Waits until etcd answers a Range.
async fn ready(etcd: &Etcd) -> Client<Channel, Proto> {
    let channel = Endpoint::new(format!("grpc://{}", etcd.client))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
        .connect_lazy();
    let mut client = Client::with_codec(channel, Proto);
    within(Duration::from_secs(30), "etcd ready", async {
        loop {
            let req = RangeRequest {
                key: Bytes::from_static(b"probe"),
                ..Default::default()
            };
            match client.unary_message::<_, RangeResponse>(RANGE, req).await {
                Ok(_) => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    client
}

#[tokio::test]
async fn the_grpc_client_puts_and_ranges_keys_on_etcd() {
    let etcd = start_etcd().await;
    let mut kv = ready(&etcd).await;

    let put = |k: &'static str, v: &'static str| PutRequest {
        key: Bytes::from_static(k.as_bytes()),
        value: Bytes::from_static(v.as_bytes()),
        ..Default::default()
    };
    let first: PutResponse = kv.unary_message(PUT, put("trpc/a", "1")).await.unwrap();
    let rev = first.header.expect("header").revision;
    assert!(rev > 0);
    let second: PutResponse = kv
        .unary_message(
            PUT,
            PutRequest {
                prev_kv: true,
                ..put("trpc/a", "2")
            },
        )
        .await
        .unwrap();
    assert_eq!(second.header.unwrap().revision, rev + 1);
    assert_eq!(&second.prev_kv.expect("prev kv").value[..], b"1");
    let _: PutResponse = kv.unary_message(PUT, put("trpc/b", "3")).await.unwrap();

    // A prefix range: [trpc/, trpc0).
    let mut req = Request::new(RangeRequest {
        key: Bytes::from_static(b"trpc/"),
        range_end: Bytes::from_static(b"trpc0"),
        ..Default::default()
    });
    req.set_timeout(Duration::from_secs(5));
    let range = kv.unary::<_, RangeResponse>(RANGE, req).await.unwrap();
    let r = range.get_ref();
    assert_eq!(r.count, 2);
    let got: Vec<(&[u8], &[u8])> = r
        .kvs
        .iter()
        .map(|kv| (&kv.key[..], &kv.value[..]))
        .collect();
    assert_eq!(
        got,
        [(&b"trpc/a"[..], &b"2"[..]), (&b"trpc/b"[..], &b"3"[..])]
    );
    assert_eq!(r.kvs[0].version, 2);

    // etcd's own error statuses arrive as they are.
    let err = kv
        .unary_message::<_, PutResponse>(PUT, put("", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("key is not provided"), "{err}");
    let err = kv
        .unary_message::<_, PutResponse>("etcdserverpb.KV/NoSuchMethod", put("k", "v"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err}");
}
