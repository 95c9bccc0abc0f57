//! [`Index`]: the registered file descriptors, by file name, symbol and
//! extension, and the answers to reflection queries.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use bytes::Bytes;
use prost::Message;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
};

use crate::v1::server_reflection_request::MessageRequest;
use crate::v1::server_reflection_response::MessageResponse;
use crate::v1::{
    ErrorResponse, ExtensionNumberResponse, FileDescriptorResponse, ListServiceResponse,
    ServerReflectionRequest, ServerReflectionResponse, ServiceResponse,
};

/// A `FileDescriptorSet` whose files are kept as the bytes they came in, so
/// they are served exactly as generated (unknown options included).
#[derive(Clone, PartialEq, Message)]
struct RawFileDescriptorSet {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    file: Vec<Bytes>,
}

/// A descriptor set that could not be decoded.
#[derive(Debug)]
pub struct DescriptorError(String);

impl fmt::Display for DescriptorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid file descriptor set: {}", self.0)
    }
}

impl std::error::Error for DescriptorError {}

/// The files a reflection service knows, indexed for its queries.
#[derive(Debug, Default)]
pub struct Index {
    /// File name → the encoded `FileDescriptorProto`.
    files: HashMap<String, Bytes>,
    /// File name → the names of the files it imports.
    deps: HashMap<String, Vec<String>>,
    /// Fully qualified symbol (no leading dot) → its file.
    symbols: HashMap<String, String>,
    /// (extended message, field number) → the extension's file.
    extensions: HashMap<(String, i32), String>,
    services: BTreeSet<String>,
}

impl Index {
    /// Indexes the files of the encoded `FileDescriptorSet`s, plus those of
    /// the reflection protocol itself. A file registered twice is kept once.
    pub fn new(descriptor_sets: &[&[u8]]) -> Result<Index, DescriptorError> {
        let mut index = Index::default();
        for set in [crate::v1::FILE_DESCRIPTOR_SET]
            .iter()
            .chain(descriptor_sets)
        {
            let raw =
                RawFileDescriptorSet::decode(*set).map_err(|e| DescriptorError(e.to_string()))?;
            for bytes in raw.file {
                let file = FileDescriptorProto::decode(bytes.clone())
                    .map_err(|e| DescriptorError(e.to_string()))?;
                index.add(file, bytes);
            }
        }
        Ok(index)
    }

    fn add(&mut self, file: FileDescriptorProto, bytes: Bytes) {
        let name = file.name().to_string();
        if self.files.contains_key(&name) {
            return;
        }
        let package = file.package();
        let scope = |n: &str| {
            if package.is_empty() {
                n.to_string()
            } else {
                format!("{package}.{n}")
            }
        };
        for s in &file.service {
            let svc = scope(s.name());
            for m in &s.method {
                self.symbols
                    .insert(format!("{svc}.{}", m.name()), name.clone());
            }
            self.services.insert(svc.clone());
            self.symbols.insert(svc, name.clone());
        }
        for m in &file.message_type {
            self.add_message(&scope(m.name()), m, &name);
        }
        for e in &file.enum_type {
            self.add_enum(&scope(e.name()), e, &name);
        }
        for x in &file.extension {
            self.add_extension(&scope(x.name()), x, &name);
        }
        self.deps.insert(name.clone(), file.dependency.clone());
        self.files.insert(name, bytes);
    }

    fn add_message(&mut self, full: &str, m: &DescriptorProto, file: &str) {
        self.symbols.insert(full.to_string(), file.to_string());
        for f in &m.field {
            self.symbols
                .insert(format!("{full}.{}", f.name()), file.to_string());
        }
        for o in &m.oneof_decl {
            self.symbols
                .insert(format!("{full}.{}", o.name()), file.to_string());
        }
        for n in &m.nested_type {
            self.add_message(&format!("{full}.{}", n.name()), n, file);
        }
        for e in &m.enum_type {
            self.add_enum(&format!("{full}.{}", e.name()), e, file);
        }
        for x in &m.extension {
            self.add_extension(&format!("{full}.{}", x.name()), x, file);
        }
    }

    fn add_enum(&mut self, full: &str, e: &EnumDescriptorProto, file: &str) {
        self.symbols.insert(full.to_string(), file.to_string());
        // Enum values are scoped beside their enum, as in protobuf.
        let parent = full.rsplit_once('.').map(|(p, _)| p);
        for v in &e.value {
            let value = match parent {
                Some(p) => format!("{p}.{}", v.name()),
                None => v.name().to_string(),
            };
            self.symbols.insert(value, file.to_string());
        }
    }

    fn add_extension(&mut self, full: &str, x: &FieldDescriptorProto, file: &str) {
        self.symbols.insert(full.to_string(), file.to_string());
        let extendee = x.extendee().trim_start_matches('.').to_string();
        self.extensions
            .insert((extendee, x.number()), file.to_string());
    }

    /// The fully qualified names of the registered services, sorted.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.services.iter().map(String::as_str)
    }

    /// The file defining `symbol` (a leading `.` is ignored).
    pub fn file_containing_symbol(&self, symbol: &str) -> Option<&str> {
        self.symbols
            .get(symbol.trim_start_matches('.'))
            .map(String::as_str)
    }

    /// `name` and every file it imports, directly or not, encoded; `name` first.
    pub fn file_with_dependencies(&self, name: &str) -> Option<Vec<Bytes>> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let mut todo = vec![name.to_string()];
        while let Some(n) = todo.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            // A dependency the index lacks is left out; the file itself must exist.
            match self.files.get(&n) {
                Some(bytes) => out.push(bytes.clone()),
                None if n == name => return None,
                None => continue,
            }
            if let Some(deps) = self.deps.get(&n) {
                todo.extend(deps.iter().rev().cloned());
            }
        }
        Some(out)
    }

    /// The answer to one reflection query.
    pub fn answer(&self, request: ServerReflectionRequest) -> ServerReflectionResponse {
        let response = match &request.message_request {
            Some(MessageRequest::FileByFilename(name)) => self
                .files_response(self.file_with_dependencies(name), || {
                    format!("file {name:?} not found")
                }),
            Some(MessageRequest::FileContainingSymbol(symbol)) => self.files_response(
                self.file_containing_symbol(symbol)
                    .and_then(|f| self.file_with_dependencies(f)),
                || format!("symbol {symbol:?} not found"),
            ),
            Some(MessageRequest::FileContainingExtension(x)) => {
                let key = (
                    x.containing_type.trim_start_matches('.').to_string(),
                    x.extension_number,
                );
                self.files_response(
                    self.extensions
                        .get(&key)
                        .and_then(|f| self.file_with_dependencies(f)),
                    || {
                        format!(
                            "extension {} of {:?} not found",
                            x.extension_number, x.containing_type
                        )
                    },
                )
            }
            Some(MessageRequest::AllExtensionNumbersOfType(ty)) => {
                let ty = ty.trim_start_matches('.');
                if self.symbols.contains_key(ty) {
                    let mut numbers: Vec<i32> = self
                        .extensions
                        .keys()
                        .filter(|(t, _)| t == ty)
                        .map(|(_, n)| *n)
                        .collect();
                    numbers.sort_unstable();
                    MessageResponse::AllExtensionNumbersResponse(ExtensionNumberResponse {
                        base_type_name: ty.to_string(),
                        extension_number: numbers,
                    })
                } else {
                    not_found(format!("type {ty:?} not found"))
                }
            }
            Some(MessageRequest::ListServices(_)) => {
                MessageResponse::ListServicesResponse(ListServiceResponse {
                    service: self
                        .services()
                        .map(|name| ServiceResponse { name: name.into() })
                        .collect(),
                })
            }
            None => MessageResponse::ErrorResponse(ErrorResponse {
                error_code: trpc::Code::InvalidArgument as i32,
                error_message: "the request names no query".into(),
            }),
        };
        ServerReflectionResponse {
            valid_host: request.host.clone(),
            original_request: Some(request),
            message_response: Some(response),
        }
    }

    fn files_response(
        &self,
        files: Option<Vec<Bytes>>,
        missing: impl FnOnce() -> String,
    ) -> MessageResponse {
        match files {
            Some(files) => MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
                file_descriptor_proto: files.into_iter().map(Vec::from).collect(),
            }),
            None => not_found(missing()),
        }
    }
}

fn not_found(message: String) -> MessageResponse {
    MessageResponse::ErrorResponse(ErrorResponse {
        error_code: trpc::Code::NotFound as i32,
        error_message: message,
    })
}
