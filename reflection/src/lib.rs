//! # trpc-reflection
//!
//! gRPC server reflection for trpc: register the descriptor sets that
//! `trpc-build` embeds in generated code (`FILE_DESCRIPTOR_SET`) and the
//! server answers `grpc.reflection.v1.ServerReflection/ServerReflectionInfo`
//! and its `v1alpha` twin, so tools (`trpc list`, `trpc describe`, schema-aware
//! `trpc call`, grpcurl over gRPC) can discover services and their messages.
//!
//! The reflection service is a [`Router`], so it is merged with the
//! application's routes and served over every protocol the server speaks:
//!
//! ```
//! use trpc::server::Router;
//!
//! # let app = Router::new();
//! # const FILE_DESCRIPTOR_SET: &[u8] = &[];
//! let router = app.merge(trpc_reflection::service(&[FILE_DESCRIPTOR_SET]));
//! assert!(router.has_method("grpc.reflection.v1.ServerReflection/ServerReflectionInfo"));
//! assert!(router.has_method("grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"));
//! ```
//!
//! The other side, [`ReflectionClient`], asks a server for its services and
//! descriptors over any client stack.

mod client;
mod index;

use std::sync::Arc;

use futures_util::StreamExt;
use trpc::codegen::BoxStream;
use trpc::server::Router;
use trpc::{Request, Response, Status, Streaming};

pub use client::ReflectionClient;
pub use index::{DescriptorError, Index};

/// `grpc.reflection.v1`: messages, server trait and client (generated).
pub mod v1 {
    trpc::include_proto!("grpc.reflection.v1");
}

/// `grpc.reflection.v1alpha`: the same protocol under its older name
/// (generated; the server answers it with the `v1` implementation).
pub mod v1alpha {
    trpc::include_proto!("grpc.reflection.v1alpha");
}

/// The reflection service for the given encoded `FileDescriptorSet`s (plus the
/// reflection protocol's own files), as routes to merge into a server's router.
///
/// # Panics
///
/// If a set is not a valid encoded `FileDescriptorSet`: they are constants
/// generated at build time; use [`Index::new`] and [`router`] to handle that
/// case as an error instead.
pub fn service(descriptor_sets: &[&[u8]]) -> Router {
    match Index::new(descriptor_sets) {
        Ok(index) => router(index),
        Err(e) => panic!("trpc_reflection::service: {e}"),
    }
}

/// The reflection service answering from `index`.
pub fn router(index: Index) -> Router {
    let svc = Arc::new(ServerReflection {
        index: Arc::new(index),
    });
    // v1alpha's messages are v1's on the wire: one implementation serves both.
    let alpha = v1alpha::server_reflection_methods::SERVER_REFLECTION_INFO;
    let alpha = Router::new().route(
        alpha.name(),
        trpc::server::bidi_streaming({
            let svc = svc.clone();
            move |request: Request<Streaming<v1::ServerReflectionRequest>>| {
                let svc = svc.clone();
                async move { v1::ServerReflection::server_reflection_info(&*svc, request).await }
            }
        })
        .codec(trpc::codec::Proto),
    );
    v1::ServerReflectionServer::from_arc(svc)
        .into_router()
        .merge(alpha)
}

/// Answers reflection queries from an [`Index`].
#[derive(Debug)]
struct ServerReflection {
    index: Arc<Index>,
}

impl v1::ServerReflection for ServerReflection {
    type ServerReflectionInfoStream = BoxStream<v1::ServerReflectionResponse>;

    async fn server_reflection_info(
        &self,
        request: Request<Streaming<v1::ServerReflectionRequest>>,
    ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
        let index = self.index.clone();
        let answers = request
            .into_inner()
            .map(move |query| query.map(|q| index.answer(q)));
        Ok(Response::new(Box::pin(answers)))
    }
}
