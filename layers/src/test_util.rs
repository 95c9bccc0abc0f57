//! Helpers for the layers' unit tests.
#![allow(dead_code)]

use bytes::Bytes;
use futures_util::StreamExt;
use trpc::{Body, BoxError, Payload, Request, Response, Status};

/// A unary request for `method` carrying `msg`.
pub(crate) fn request(method: &'static str, msg: &'static str) -> Request<Body> {
    Request::new(Body::once(Payload::new(Bytes::from_static(msg.as_bytes())))).with_method(method)
}

/// A unary response carrying `msg`.
pub(crate) fn response(msg: &'static str) -> Response<Body> {
    Response::new(Body::once(Payload::new(Bytes::from_static(msg.as_bytes()))))
}

/// A streaming body of the given items.
pub(crate) fn stream_body(items: Vec<Result<Payload, Status>>) -> Body {
    Body::stream(futures_util::stream::iter(items))
}

/// The status a boxed error maps to.
pub(crate) fn status(err: BoxError) -> Status {
    Status::from_error(err)
}

/// Drains a body into its items.
pub(crate) async fn collect(body: Body) -> Vec<Result<Payload, Status>> {
    body.collect().await
}

/// The bytes of a unary body.
pub(crate) fn once_bytes(body: &Body) -> Bytes {
    body.as_once().map(|p| p.bytes.clone()).unwrap_or_default()
}

/// Log lines captured, as JSON, from the current thread.
///
/// One global subscriber serves every test thread; it writes only for threads
/// that capture, at their level. (Per-thread `set_default` subscribers race
/// with other test threads over tracing's callsite interest cache.)
#[cfg(feature = "trace")]
pub(crate) struct Logs {
    buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

#[cfg(feature = "trace")]
type Capture = Option<(std::sync::Arc<std::sync::Mutex<Vec<u8>>>, tracing::Level)>;

#[cfg(feature = "trace")]
thread_local! {
    static CAPTURE: std::cell::RefCell<Capture> = const { std::cell::RefCell::new(None) };
}

#[cfg(feature = "trace")]
impl Logs {
    /// Starts capturing everything at TRACE and above.
    pub(crate) fn capture() -> Logs {
        Logs::capture_at(tracing::Level::TRACE)
    }

    /// Starts capturing everything at `level` and above.
    pub(crate) fn capture_at(level: tracing::Level) -> Logs {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::Layer;

        struct W;
        impl std::io::Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                CAPTURE.with(|c| {
                    if let Some((buf, _)) = &*c.borrow() {
                        buf.lock().unwrap().extend_from_slice(b);
                    }
                });
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        static INIT: std::sync::Once = std::sync::Once::new();
        INIT.call_once(|| {
            let filter = tracing_subscriber::filter::dynamic_filter_fn(|meta, _| {
                CAPTURE.with(|c| {
                    c.borrow()
                        .as_ref()
                        .is_some_and(|(_, max)| meta.level() <= max)
                })
            });
            let layer = tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .with_writer(|| W)
                .with_filter(filter);
            let _ =
                tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
        });
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        CAPTURE.with(|c| *c.borrow_mut() = Some((buf.clone(), level)));
        Logs { buf }
    }

    /// The captured lines that contain `needle`.
    pub(crate) fn lines_with(&self, needle: &str) -> Vec<String> {
        let buf = self.buf.lock().unwrap();
        String::from_utf8_lossy(&buf)
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

#[cfg(feature = "trace")]
impl Drop for Logs {
    fn drop(&mut self) {
        CAPTURE.with(|c| *c.borrow_mut() = None);
    }
}

/// The registry's metrics in the Prometheus text format.
#[cfg(feature = "metrics")]
pub(crate) fn scrape(registry: &prometheus::Registry) -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .unwrap();
    String::from_utf8(buf).unwrap()
}

/// The value of sample `name` with exactly `labels` in a text exposition.
#[cfg(feature = "metrics")]
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
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
