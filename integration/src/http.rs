//! A minimal HTTP/1.1 GET for admin endpoints (`/metrics`, health), and
//! Prometheus text expositions: encoding a registry, reading a sample.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::wait::{within, SOON};

/// `GET path` over HTTP/1.1 on `addr`: (status code, body). Chunked
/// bodies are decoded.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    within(SOON, "http get", async {
        let mut tcp = TcpStream::connect(addr).await.expect("connect admin");
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        tcp.read_to_end(&mut buf).await.expect("read");
        let text = String::from_utf8(buf).expect("utf-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("http response");
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status code");
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        (code, body)
    })
    .await
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// The value of sample `name` with exactly `labels` in a Prometheus text
/// exposition.
///
/// ```
/// use trpc_integration::http::sample;
/// let text = "# HELP x help\nx{b=\"2\",a=\"1\"} 7\n";
/// assert_eq!(sample(text, "x", &[("a", "1"), ("b", "2")]), Some(7.0));
/// assert_eq!(sample(text, "x", &[("a", "1")]), None);
/// ```
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, ls) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let mut got: Vec<String> = ls
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            got.sort();
            (n == name && got == want).then(|| value.parse().ok())?
        })
}

/// The text exposition of everything in `registry` (what `/metrics` serves).
pub fn scrape(registry: &prometheus::Registry) -> String {
    use prometheus::Encoder;
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("encode metrics");
    String::from_utf8(out).expect("utf-8 metrics")
}
