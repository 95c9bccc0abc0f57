//! [`Page`]: an endpoint of the admin server.

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderValue, Response, StatusCode};

/// An endpoint of the admin server, rendered for each request: `/metrics`,
/// `/healthz` and `/readyz` are pages, and so is anything added with
/// [`AdminBuilder::page`](super::AdminBuilder::page) (a status page, a
/// debug dump).
///
/// Implemented for closures `Fn(&http::request::Parts) -> http::Response<Bytes>`.
/// Pages render synchronously from in-memory state.
///
/// ```
/// use bytes::Bytes;
/// use trpc_layers::admin::{text, Page};
///
/// let version = |_req: &http::request::Parts| text(http::StatusCode::OK, "v1.2.3\n");
/// let (parts, ()) = http::Request::get("/version").body(()).unwrap().into_parts();
/// assert_eq!(version.render(&parts).body(), &Bytes::from("v1.2.3\n"));
/// ```
pub trait Page: Send + Sync + 'static {
    /// The response to `req` (its method, URI and headers).
    fn render(&self, req: &Parts) -> Response<Bytes>;
}

impl<F> Page for F
where
    F: Fn(&Parts) -> Response<Bytes> + Send + Sync + 'static,
{
    fn render(&self, req: &Parts) -> Response<Bytes> {
        self(req)
    }
}

/// A plain-text (UTF-8) response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Bytes> {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
