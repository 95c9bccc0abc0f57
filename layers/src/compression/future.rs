//! The [`ResponseFuture`] of [`Compression`](super::Compression).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use trpc::metadata::MetadataValue;
use trpc::{Body, BoxError, Response, Status};

use super::layer::Config;
use super::message::{compress_payload, decompress_payload, PeerEncoding};
use super::{Encoding, ACCEPT_ENCODING, ENCODING};
use crate::Side;

/// What a server does to its response: compress it with this encoding (if
/// any) and announce what it accepts (if the client is compression-aware).
pub(crate) type ServerPlan = (Option<Encoding>, Option<MetadataValue>);

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called {
            #[pin]
            future: F,
            config: Config,
            plan: Option<ServerPlan>,
        },
        Failed { error: Option<Status> },
    }
}

pin_project! {
    /// Decompresses (client) or compresses (server) the response.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(future: F, config: Config, plan: Option<ServerPlan>) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                config,
                plan,
            },
        }
    }

    pub(crate) fn failed(error: Status) -> Self {
        ResponseFuture {
            kind: Kind::Failed { error: Some(error) },
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (resp, config, plan) = match self.project().kind.project() {
            KindProj::Failed { error } => {
                let e = error
                    .take()
                    .unwrap_or_else(|| Status::internal("future polled after completion"));
                return Poll::Ready(Err(e.into()));
            }
            KindProj::Called {
                future,
                config,
                plan,
            } => match ready!(future.poll(cx)) {
                Ok(resp) => (resp, *config, plan.take()),
                Err(e) => return Poll::Ready(Err(e.into())),
            },
        };
        Poll::Ready(match config.side {
            Side::Client => decompress_response(resp, config),
            Side::Server => compress_response(resp, config, plan),
        })
    }
}

fn decompress_response(resp: Response<Body>, cfg: Config) -> Result<Response<Body>, BoxError> {
    // The common case, an uncompressed unary reply, costs nothing.
    if resp.get_ref().as_once().is_some_and(|p| !p.compressed) {
        return Ok(resp);
    }
    let (mut metadata, extensions, body) = resp.into_parts();
    let peer = PeerEncoding::from_metadata(&metadata, cfg.accept);
    let body = body.map_payloads(move |p| decompress_payload(p, &peer, &cfg))?;
    if !body.is_stream() && metadata.contains_key(ENCODING) {
        metadata.remove(ENCODING);
    }
    Ok(Response::from_parts(metadata, extensions, body))
}

fn compress_response(
    resp: Response<Body>,
    cfg: Config,
    plan: Option<ServerPlan>,
) -> Result<Response<Body>, BoxError> {
    let Some((encoding, announce)) = plan else {
        return Ok(resp);
    };
    let (mut metadata, extensions, body) = resp.into_parts();
    if let Some(accept) = announce {
        metadata.insert_value(ACCEPT_ENCODING, accept);
    }
    let body = match encoding {
        None => body,
        Some(enc) => {
            let body = body.map_payloads(move |p| Ok(compress_payload(p, enc, &cfg)))?;
            if body.is_stream() || body.as_once().is_some_and(|p| p.compressed) {
                metadata.insert_value(ENCODING, MetadataValue::from_static(enc.as_str()));
            }
            body
        }
    };
    Ok(Response::from_parts(metadata, extensions, body))
}
