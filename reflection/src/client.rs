//! [`ReflectionClient`]: asks a server for its services and the file
//! descriptors that define them (v1, falling back to v1alpha).

use std::collections::{HashMap, HashSet};
use std::fmt;

use prost::Message;
use prost_types::FileDescriptorProto;
use trpc::{Body, BoxError, Code, Request, Response, Status};

use crate::v1::server_reflection_request::MessageRequest;
use crate::v1::server_reflection_response::MessageResponse;
use crate::v1::{ServerReflectionRequest, ServerReflectionResponse};

/// A reflection client over any client stack (a [`trpc::Channel`] in layers).
///
/// Each query is one `ServerReflectionInfo` call. The first query tries
/// `grpc.reflection.v1`; a server that does not know it (UNIMPLEMENTED) is
/// asked with `v1alpha` from then on.
///
/// ```no_run
/// # async fn f() -> Result<(), trpc::Status> {
/// let channel = trpc::Endpoint::new("tcp://127.0.0.1:7000")?.connect().await?;
/// let mut reflection = trpc_reflection::ReflectionClient::new(channel);
/// for service in reflection.list_services().await? {
///     println!("{service}");
/// }
/// let files = reflection.files_for_symbol("routeguide.RouteGuide").await?;
/// # Ok(()) }
/// ```
pub struct ReflectionClient<S> {
    inner: trpc::Client<S, trpc::codec::Proto>,
    alpha: bool,
}

impl<S> ReflectionClient<S>
where
    S: trpc::codegen::Service<Request<Body>, Response = Response<Body>>,
    S::Error: Into<BoxError>,
{
    /// A client over `service`.
    pub fn new(service: S) -> Self {
        ReflectionClient {
            inner: trpc::Client::with_codec(service, trpc::codec::Proto),
            alpha: false,
        }
    }

    /// Sends one query and returns its answer; an error response becomes a
    /// [`Status`] with its code and message.
    pub async fn query(&mut self, request: MessageRequest) -> Result<MessageResponse, Status> {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        let reply = match self.call(request.clone()).await {
            Err(e) if e.code() == Code::Unimplemented && !self.alpha => {
                self.alpha = true;
                self.call(request).await
            }
            other => other,
        }?;
        match reply.message_response {
            Some(MessageResponse::ErrorResponse(e)) => Err(Status::new(
                Code::from_u32(u32::try_from(e.error_code).unwrap_or(u32::MAX)),
                e.error_message,
            )),
            Some(r) => Ok(r),
            None => Err(Status::internal("empty reflection response")),
        }
    }

    async fn call(
        &mut self,
        request: ServerReflectionRequest,
    ) -> Result<ServerReflectionResponse, Status> {
        let method = if self.alpha {
            crate::v1alpha::server_reflection_methods::SERVER_REFLECTION_INFO
        } else {
            crate::v1::server_reflection_methods::SERVER_REFLECTION_INFO
        };
        let requests = futures_util::stream::iter([request]);
        let mut replies = self
            .inner
            .bidi_streaming(
                method.method(),
                trpc::codegen::streaming_request(requests, &method),
            )
            .await?
            .into_inner();
        replies
            .message()
            .await?
            .ok_or_else(|| Status::internal("the reflection stream ended without an answer"))
    }

    /// The services the server offers, sorted as the server lists them.
    pub async fn list_services(&mut self) -> Result<Vec<String>, Status> {
        match self
            .query(MessageRequest::ListServices(String::new()))
            .await?
        {
            MessageResponse::ListServicesResponse(l) => {
                Ok(l.service.into_iter().map(|s| s.name).collect())
            }
            other => Err(unexpected(&other)),
        }
    }

    /// The files the server sends for `symbol` (its file and dependencies).
    pub async fn file_containing_symbol(
        &mut self,
        symbol: &str,
    ) -> Result<Vec<FileDescriptorProto>, Status> {
        self.files(MessageRequest::FileContainingSymbol(symbol.into()))
            .await
    }

    /// The files the server sends for file `name` (it and its dependencies).
    pub async fn file_by_filename(
        &mut self,
        name: &str,
    ) -> Result<Vec<FileDescriptorProto>, Status> {
        self.files(MessageRequest::FileByFilename(name.into()))
            .await
    }

    async fn files(&mut self, request: MessageRequest) -> Result<Vec<FileDescriptorProto>, Status> {
        match self.query(request).await? {
            MessageResponse::FileDescriptorResponse(f) => f
                .file_descriptor_proto
                .iter()
                .map(|b| {
                    FileDescriptorProto::decode(&b[..])
                        .map_err(|e| Status::internal(format!("undecodable file descriptor: {e}")))
                })
                .collect(),
            other => Err(unexpected(&other)),
        }
    }

    /// The file defining `symbol` and every file it imports, fetching any
    /// import the server left out by name: a complete set, ready for a
    /// descriptor pool.
    pub async fn files_for_symbol(
        &mut self,
        symbol: &str,
    ) -> Result<Vec<FileDescriptorProto>, Status> {
        let mut files: HashMap<String, FileDescriptorProto> = HashMap::new();
        let mut order = Vec::new();
        for f in self.file_containing_symbol(symbol).await? {
            if !files.contains_key(f.name()) {
                order.push(f.name().to_string());
                files.insert(f.name().to_string(), f);
            }
        }
        let mut asked = HashSet::new();
        // Bounded: each round asks for a file not asked for before.
        loop {
            let missing = files
                .values()
                .flat_map(|f| f.dependency.iter())
                .find(|d| !files.contains_key(*d) && !asked.contains(*d))
                .cloned();
            let Some(name) = missing else { break };
            asked.insert(name.clone());
            for f in self.file_by_filename(&name).await? {
                if !files.contains_key(f.name()) {
                    order.push(f.name().to_string());
                    files.insert(f.name().to_string(), f);
                }
            }
        }
        Ok(order.into_iter().filter_map(|n| files.remove(&n)).collect())
    }
}

fn unexpected(r: &MessageResponse) -> Status {
    Status::internal(format!("unexpected reflection answer: {r:?}"))
}

impl<S: fmt::Debug> fmt::Debug for ReflectionClient<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReflectionClient")
            .field("inner", &self.inner)
            .field("alpha", &self.alpha)
            .finish()
    }
}
