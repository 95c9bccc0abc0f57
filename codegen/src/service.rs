//! The prost [`ServiceGenerator`] that writes, per service, the method
//! descriptors, the server trait, the router adapter and the typed client.

use std::fmt::Write;

use heck::{ToShoutySnakeCase, ToSnakeCase};
use prost_build::{Comments, Method, Service, ServiceGenerator};
use prost_types::method_options::IdempotencyLevel;

/// What to generate for each service.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) server: bool,
    pub(crate) client: bool,
    /// The messages implement serde (pbjson): servers accept JSON too.
    pub(crate) serde: bool,
    /// The path of the trpc crate in generated code.
    pub(crate) trpc: String,
}

/// Writes trpc service code into the module prost generates for a package.
#[derive(Debug)]
pub(crate) struct TrpcServiceGenerator {
    pub(crate) options: Options,
}

impl ServiceGenerator for TrpcServiceGenerator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let gen = Gen {
            o: &self.options,
            s: &service,
        };
        gen.descriptors(buf);
        if self.options.server {
            gen.server(buf);
        }
        if self.options.client {
            gen.client(buf);
        }
    }
}

struct Gen<'a> {
    o: &'a Options,
    s: &'a Service,
}

/// A Rust identifier from a proto name, raw or suffixed when it is a keyword.
pub(crate) fn ident(name: &str) -> String {
    match name {
        "as" | "break" | "const" | "continue" | "else" | "enum" | "false" | "fn" | "for" | "if"
        | "impl" | "in" | "let" | "loop" | "match" | "mod" | "move" | "mut" | "pub" | "ref"
        | "return" | "static" | "struct" | "trait" | "true" | "type" | "unsafe" | "use"
        | "where" | "while" | "dyn" | "abstract" | "become" | "box" | "do" | "final" | "macro"
        | "override" | "priv" | "typeof" | "unsized" | "virtual" | "yield" | "async" | "await"
        | "try" | "gen" => format!("r#{name}"),
        "_" | "super" | "self" | "Self" | "extern" | "crate" => format!("{name}_"),
        _ => name.to_string(),
    }
}

/// The client method for RPC `name` (snake case): a name that the client's
/// own methods use gets a `_` suffix (`rpc New` → `new_`).
pub(crate) fn client_method(name: &str) -> String {
    match name {
        "new" | "with_codec" | "get_ref" | "get_mut" | "into_inner" => format!("{name}_"),
        _ => ident(name),
    }
}

/// Rustdoc lines from proto comments, or `fallback` when there are none.
fn docs(comments: &Comments, fallback: &str, buf: &mut String) {
    if comments.leading.is_empty() && comments.trailing.is_empty() {
        let _ = writeln!(buf, "/// {fallback}");
        return;
    }
    let c = Comments {
        leading_detached: Vec::new(),
        leading: comments.leading.clone(),
        trailing: comments.trailing.clone(),
    };
    c.append_with_indent(0, buf);
}

impl Gen<'_> {
    fn full_service(&self) -> String {
        if self.s.package.is_empty() {
            self.s.proto_name.clone()
        } else {
            format!("{}.{}", self.s.package, self.s.proto_name)
        }
    }

    /// `route_guide` for service `RouteGuide`: the stem of the generated names.
    fn snake(&self) -> String {
        self.s.proto_name.to_snake_case()
    }

    fn methods_mod(&self) -> String {
        format!("{}_methods", self.snake())
    }

    fn const_name(m: &Method) -> String {
        m.proto_name.to_shouty_snake_case()
    }

    fn stream_type(m: &Method) -> String {
        format!("{}Stream", m.proto_name)
    }

    fn descriptors(&self, buf: &mut String) {
        let t = &self.o.trpc;
        let full = self.full_service();
        let _ = writeln!(
            buf,
            "/// Method descriptors of `{full}`: full names, shapes, idempotency."
        );
        let _ = writeln!(buf, "pub mod {} {{", self.methods_mod());
        let _ = writeln!(buf, "/// The service's full name.");
        let _ = writeln!(buf, "pub const SERVICE: &str = \"{full}\";");
        for m in &self.s.methods {
            let kind = match (m.client_streaming, m.server_streaming) {
                (false, false) => "Unary",
                (false, true) => "ServerStreaming",
                (true, false) => "ClientStreaming",
                (true, true) => "BidiStreaming",
            };
            let idem = match m.options.idempotency_level() {
                IdempotencyLevel::IdempotencyUnknown => "Unknown",
                IdempotencyLevel::NoSideEffects => "NoSideEffects",
                IdempotencyLevel::Idempotent => "Idempotent",
            };
            let _ = writeln!(buf, "/// `{full}/{}`.", m.proto_name);
            let _ = writeln!(
                buf,
                "pub const {}: {t}::MethodDescriptor = {t}::MethodDescriptor::new(\"{full}/{}\", {t}::MethodKind::{kind}, {t}::Idempotency::{idem});",
                Self::const_name(m),
                m.proto_name
            );
        }
        let _ = writeln!(buf, "/// Every method, in `.proto` order.");
        let all: Vec<String> = self.s.methods.iter().map(Self::const_name).collect();
        let _ = writeln!(
            buf,
            "pub const ALL: &[{t}::MethodDescriptor] = &[{}];",
            all.join(", ")
        );
        let _ = writeln!(buf, "}}");
    }

    fn codecs(&self) -> String {
        let t = &self.o.trpc;
        if self.o.serde {
            format!("({t}::codec::Proto, {t}::codec::Json)")
        } else {
            format!("{t}::codec::Proto")
        }
    }

    fn server(&self, buf: &mut String) {
        let t = &self.o.trpc;
        let name = &self.s.name;
        let full = self.full_service();
        let server = format!("{name}Server");
        docs(
            &self.s.comments,
            &format!("The `{full}` service: implement it and serve it with [`{server}`]."),
            buf,
        );
        let _ = writeln!(
            buf,
            "///\n/// Implement the methods as `async fn`s; see [`{server}`] to serve it."
        );
        // RPC names are the .proto's: `IntoX` or `New` taking `&self` are fine here.
        let _ = writeln!(buf, "#[allow(clippy::wrong_self_convention)]");
        let _ = writeln!(
            buf,
            "pub trait {name}: ::core::marker::Send + ::core::marker::Sync + 'static {{"
        );
        for m in &self.s.methods {
            let method = ident(&m.name);
            let input = if m.client_streaming {
                format!("{t}::Streaming<{}>", m.input_type)
            } else {
                m.input_type.clone()
            };
            let output = if m.server_streaming {
                let st = Self::stream_type(m);
                let _ = writeln!(
                    buf,
                    "/// The stream of replies of [`{method}`](Self::{method}) (e.g. [`{t}::codegen::BoxStream`])."
                );
                let _ = writeln!(
                    buf,
                    "type {st}: {t}::codegen::Stream<Item = ::core::result::Result<{}, {t}::Status>> + ::core::marker::Send + 'static;",
                    m.output_type
                );
                format!("Self::{st}")
            } else {
                m.output_type.clone()
            };
            docs(&m.comments, &format!("`{full}/{}`.", m.proto_name), buf);
            let _ = writeln!(
                buf,
                "fn {method}(&self, request: {t}::Request<{input}>) -> impl ::core::future::Future<Output = ::core::result::Result<{t}::Response<{output}>, {t}::Status>> + ::core::marker::Send;"
            );
        }
        let _ = writeln!(buf, "}}");

        // The adapter to a Router.
        let codecs = self.codecs();
        let accepts = if self.o.serde {
            "protobuf (`trpc-codec: proto`) and JSON (`json`, the default when a call names no codec)"
        } else {
            "protobuf (`trpc-codec: proto`)"
        };
        let _ = writeln!(
            buf,
            "/// Serves a [`{name}`] implementation: [`into_router`](Self::into_router) gives the"
        );
        let _ = writeln!(
            buf,
            "/// routes of a [`{t}::server::Router`], to merge with others and wrap in layers."
        );
        let _ = writeln!(buf, "/// Every method accepts {accepts}.");
        let _ = writeln!(
            buf,
            "pub struct {server}<T> {{ inner: ::std::sync::Arc<T> }}"
        );
        let _ = writeln!(buf, "impl<T: {name}> {server}<T> {{");
        let _ = writeln!(buf, "/// Serves `service`.");
        let _ = writeln!(
            buf,
            "pub fn new(service: T) -> Self {{ Self::from_arc(::std::sync::Arc::new(service)) }}"
        );
        let _ = writeln!(buf, "/// Serves a shared `service`.");
        let _ = writeln!(
            buf,
            "pub fn from_arc(service: ::std::sync::Arc<T>) -> Self {{ Self {{ inner: service }} }}"
        );
        let _ = writeln!(buf, "/// The service's methods as routes.");
        let _ = writeln!(buf, "pub fn into_router(self) -> {t}::server::Router {{");
        let _ = writeln!(buf, "let svc = self.inner;");
        let _ = writeln!(buf, "{t}::server::Router::new()");
        let methods_mod = self.methods_mod();
        for m in &self.s.methods {
            let method = ident(&m.name);
            let ctor = match (m.client_streaming, m.server_streaming) {
                (false, false) => "unary",
                (false, true) => "server_streaming",
                (true, false) => "client_streaming",
                (true, true) => "bidi_streaming",
            };
            let input = if m.client_streaming {
                format!("{t}::Streaming<{}>", m.input_type)
            } else {
                m.input_type.clone()
            };
            let _ = writeln!(
                buf,
                ".route({methods_mod}::{}.name(), {t}::server::{ctor}({{ let svc = svc.clone(); move |request: {t}::Request<{input}>| {{ let svc = svc.clone(); async move {{ svc.{method}(request).await }} }} }}).codec({codecs}))",
                Self::const_name(m)
            );
        }
        let _ = writeln!(buf, "}}");
        let _ = writeln!(buf, "}}");
        let _ = writeln!(
            buf,
            "impl<T: {name}> ::core::convert::From<{server}<T>> for {t}::server::Router {{"
        );
        let _ = writeln!(
            buf,
            "fn from(server: {server}<T>) -> Self {{ server.into_router() }}"
        );
        let _ = writeln!(buf, "}}");
        let _ = writeln!(buf, "impl<T> ::core::clone::Clone for {server}<T> {{");
        let _ = writeln!(
            buf,
            "fn clone(&self) -> Self {{ Self {{ inner: self.inner.clone() }} }}"
        );
        let _ = writeln!(buf, "}}");
        let _ = writeln!(buf, "impl<T> ::core::fmt::Debug for {server}<T> {{");
        let _ = writeln!(buf, "fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {{ f.write_str(\"{server}\") }}");
        let _ = writeln!(buf, "}}");
    }

    fn client(&self, buf: &mut String) {
        let t = &self.o.trpc;
        let full = self.full_service();
        let client = format!("{}Client", self.s.name);
        let methods_mod = self.methods_mod();
        let _ = writeln!(
            buf,
            "/// A typed client of `{full}` over any service stack of"
        );
        let _ = writeln!(
            buf,
            "/// `Request<Body> → Response<Body>` (a [`{t}::Channel`] in any layers)."
        );
        let _ = writeln!(buf, "///");
        let _ = writeln!(
            buf,
            "/// Messages are sent as protobuf unless another codec is chosen with"
        );
        let _ = writeln!(
            buf,
            "/// [`with_codec`](Self::with_codec). Each request carries its"
        );
        let _ = writeln!(buf, "/// [`{t}::MethodDescriptor`] in its extensions, so idempotent methods are retried by the retry layer.");
        let _ = writeln!(buf, "#[derive(Clone)]");
        let _ = writeln!(
            buf,
            "pub struct {client}<S, C = {t}::codec::Proto> {{ inner: {t}::Client<S, C> }}"
        );
        let _ = writeln!(buf, "impl<S> {client}<S> {{");
        let _ = writeln!(buf, "/// A protobuf client over `service`.");
        let _ = writeln!(buf, "pub fn new(service: S) -> Self {{ Self {{ inner: {t}::Client::with_codec(service, {t}::codec::Proto) }} }}");
        let _ = writeln!(buf, "}}");
        let _ = writeln!(buf, "#[allow(clippy::wrong_self_convention)]");
        let _ = writeln!(buf, "impl<S, C> {client}<S, C> {{");
        let _ = writeln!(buf, "/// A client sending messages with `codec` (e.g. [`{t}::codec::Json`] when the messages implement serde).");
        let _ = writeln!(buf, "pub fn with_codec(service: S, codec: C) -> Self {{ Self {{ inner: {t}::Client::with_codec(service, codec) }} }}");
        let _ = writeln!(buf, "/// The service stack.");
        let _ = writeln!(
            buf,
            "pub fn get_ref(&self) -> &S {{ self.inner.get_ref() }}"
        );
        let _ = writeln!(buf, "/// The service stack, mutably.");
        let _ = writeln!(
            buf,
            "pub fn get_mut(&mut self) -> &mut S {{ self.inner.get_mut() }}"
        );
        let _ = writeln!(buf, "/// Takes the service stack.");
        let _ = writeln!(
            buf,
            "pub fn into_inner(self) -> S {{ self.inner.into_inner() }}"
        );
        let bounds = format!("S: {t}::codegen::Service<{t}::Request<{t}::Body>, Response = {t}::Response<{t}::Body>>, S::Error: ::core::convert::Into<{t}::BoxError>,");
        for m in &self.s.methods {
            let method = client_method(&m.name);
            let konst = format!("{methods_mod}::{}", Self::const_name(m));
            let (inp, out) = (&m.input_type, &m.output_type);
            docs(
                &m.comments,
                &format!("Calls `{full}/{}`.", m.proto_name),
                buf,
            );
            match (m.client_streaming, m.server_streaming) {
                (false, false) => {
                    let _ = writeln!(buf, "pub async fn {method}(&mut self, request: impl {t}::IntoRequest<{inp}>) -> ::core::result::Result<{t}::Response<{out}>, {t}::Status> where {bounds} C: {t}::codec::Codec<{inp}> + {t}::codec::Codec<{out}>, {{");
                    let _ = writeln!(buf, "self.inner.unary({konst}.method(), {t}::codegen::request(request, &{konst})).await");
                }
                (false, true) => {
                    let _ = writeln!(buf, "pub async fn {method}(&mut self, request: impl {t}::IntoRequest<{inp}>) -> ::core::result::Result<{t}::Response<{t}::Streaming<{out}>>, {t}::Status> where {bounds} C: {t}::codec::Codec<{inp}> + {t}::codec::Codec<{out}>, {{");
                    let _ = writeln!(buf, "self.inner.server_streaming({konst}.method(), {t}::codegen::request(request, &{konst})).await");
                }
                (true, false) => {
                    let _ = writeln!(buf, "pub async fn {method}<R>(&mut self, request: R) -> ::core::result::Result<{t}::Response<{out}>, {t}::Status> where {bounds} C: {t}::codec::Codec<{inp}> + {t}::codec::Codec<{out}>, R: {t}::IntoStreamingRequest<Message = {inp}>, {{");
                    let _ = writeln!(buf, "self.inner.client_streaming({konst}.method(), {t}::codegen::streaming_request(request, &{konst})).await");
                }
                (true, true) => {
                    let _ = writeln!(buf, "pub async fn {method}<R>(&mut self, request: R) -> ::core::result::Result<{t}::Response<{t}::Streaming<{out}>>, {t}::Status> where {bounds} C: {t}::codec::Codec<{inp}> + {t}::codec::Codec<{out}>, R: {t}::IntoStreamingRequest<Message = {inp}>, {{");
                    let _ = writeln!(buf, "self.inner.bidi_streaming({konst}.method(), {t}::codegen::streaming_request(request, &{konst})).await");
                }
            }
            let _ = writeln!(buf, "}}");
        }
        let _ = writeln!(buf, "}}");
        let _ = writeln!(buf, "impl<S: ::core::fmt::Debug, C: ::core::fmt::Debug> ::core::fmt::Debug for {client}<S, C> {{");
        let _ = writeln!(buf, "fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {{ f.debug_tuple(\"{client}\").field(&self.inner).finish() }}");
        let _ = writeln!(buf, "}}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_become_raw_or_suffixed_identifiers() {
        assert_eq!(ident("type"), "r#type");
        assert_eq!(ident("self"), "self_");
        assert_eq!(ident("Self"), "Self_");
        assert_eq!(ident("get_feature"), "get_feature");
    }

    #[test]
    fn client_methods_do_not_collide_with_the_clients_own() {
        assert_eq!(client_method("new"), "new_");
        assert_eq!(client_method("into_inner"), "into_inner_");
        assert_eq!(client_method("type"), "r#type");
        assert_eq!(client_method("say_hello"), "say_hello");
    }
}
