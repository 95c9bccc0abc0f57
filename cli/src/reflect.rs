//! Schemas from server reflection: `trpc list`, `trpc describe`, and the
//! JSON ↔ protobuf conversion of a schema-aware `trpc call`.

use std::fmt::Write;
use std::time::Duration;

use bytes::Bytes;
use prost_reflect::{
    Cardinality, DescriptorPool, DynamicMessage, EnumDescriptor, FieldDescriptor, Kind,
    MessageDescriptor, MethodDescriptor, SerializeOptions, ServiceDescriptor,
};
use prost_types::FileDescriptorProto;
use trpc::{Body, Channel, MetadataMap, Request, Status};
use trpc_reflection::ReflectionClient;

/// Reflection queries run with the call's metadata (credentials) and a deadline.
pub(crate) type Stack =
    tower::util::MapRequest<Channel, Box<dyn Fn(Request<Body>) -> Request<Body> + Send>>;

/// How `list` and `describe` reach the server.
#[derive(clap::Args, Debug)]
pub(crate) struct ConnArgs {
    /// Deadline for each reflection query (default 10s).
    #[arg(long, value_parser = trpc::util::parse_duration)]
    timeout: Option<Duration>,
    /// Connect timeout.
    #[arg(long, value_parser = trpc::util::parse_duration, default_value = "5s")]
    connect_timeout: Duration,
    /// Request metadata, repeatable: -H key=value.
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE")]
    headers: Vec<String>,
    #[command(flatten)]
    tls: crate::tls::TlsArgs,
}

impl ConnArgs {
    pub(crate) async fn reflection(&self, addr: &str) -> Result<ReflectionClient<Stack>, Status> {
        let endpoint = trpc::Endpoint::new(addr)?.connect_timeout(self.connect_timeout);
        let channel = self.tls.apply(endpoint)?.connect().await?;
        client(channel, &self.headers, self.timeout)
    }
}

/// A reflection client over `channel` whose queries carry `headers` and time
/// out after `timeout` (10 s when not given).
pub(crate) fn client(
    channel: Channel,
    headers: &[String],
    timeout: Option<Duration>,
) -> Result<ReflectionClient<Stack>, Status> {
    let mut md = MetadataMap::new();
    apply_headers(&mut md, headers)?;
    let timeout = timeout.unwrap_or(Duration::from_secs(10));
    let add: Box<dyn Fn(Request<Body>) -> Request<Body> + Send> = Box::new(move |mut req| {
        for (k, v) in md.iter() {
            let _ = if k.ends_with("-bin") {
                req.metadata_mut()
                    .try_insert_bin(k, Bytes::copy_from_slice(v))
            } else {
                req.metadata_mut().append(k, &String::from_utf8_lossy(v))
            };
        }
        req.set_timeout(timeout);
        req
    });
    Ok(ReflectionClient::new(tower::util::MapRequest::new(
        channel, add,
    )))
}

/// Adds `-H key=value` headers to `md` (`-bin` keys as bytes).
pub(crate) fn apply_headers(md: &mut MetadataMap, headers: &[String]) -> Result<(), Status> {
    for h in headers {
        let (k, v) = h
            .split_once('=')
            .ok_or_else(|| Status::invalid_argument(format!("header {h:?} is not key=value")))?;
        let k = k.trim().to_ascii_lowercase();
        let res = if k.ends_with("-bin") {
            md.try_insert_bin(&k, Bytes::from(v.to_string()))
        } else {
            md.append(&k, v)
        };
        res.map_err(|e| Status::invalid_argument(e.to_string()))?;
    }
    Ok(())
}

/// A descriptor pool holding `symbol` and everything it depends on.
pub(crate) async fn pool_for(
    client: &mut ReflectionClient<Stack>,
    symbol: &str,
) -> Result<DescriptorPool, Status> {
    let files = client.files_for_symbol(symbol).await?;
    pool_of(files)
}

fn pool_of(files: Vec<FileDescriptorProto>) -> Result<DescriptorPool, Status> {
    let mut pool = DescriptorPool::new();
    pool.add_file_descriptor_protos(files)
        .map_err(|e| Status::internal(format!("the server's descriptors are invalid: {e}")))?;
    Ok(pool)
}

/// `trpc list ADDR [SERVICE]`: the services, or the methods of one.
pub(crate) async fn list(
    client: &mut ReflectionClient<Stack>,
    service: Option<&str>,
) -> Result<String, Status> {
    let mut out = String::new();
    match service {
        None => {
            for s in client.list_services().await? {
                let _ = writeln!(out, "{s}");
            }
        }
        Some(name) => {
            let name = name.trim_start_matches('.');
            let pool = pool_for(client, name).await?;
            let svc = pool
                .get_service_by_name(name)
                .ok_or_else(|| Status::not_found(format!("{name:?} is not a service")))?;
            for m in svc.methods() {
                let _ = writeln!(out, "{}", m.full_name());
            }
        }
    }
    Ok(out)
}

/// `trpc describe ADDR SYMBOL`: a service, method, message or enum as
/// `.proto`-like text, with its comments.
pub(crate) async fn describe(
    client: &mut ReflectionClient<Stack>,
    symbol: &str,
) -> Result<String, Status> {
    let symbol = symbol.trim_start_matches('.').replace('/', ".");
    let pool = pool_for(client, &symbol).await?;
    let mut out = String::new();
    if let Some(s) = pool.get_service_by_name(&symbol) {
        let _ = writeln!(out, "{symbol} is a service:");
        service_text(&s, &mut out);
    } else if let Some(m) = method_by_name(&pool, &symbol) {
        let _ = writeln!(out, "{symbol} is a method:");
        comments(
            m.parent_file().file_descriptor_proto(),
            m.path(),
            "",
            &mut out,
        );
        method_text(&m, "", &mut out);
    } else if let Some(m) = pool.get_message_by_name(&symbol) {
        let _ = writeln!(out, "{symbol} is a message:");
        message_text(&m, "", &mut out);
    } else if let Some(e) = pool.get_enum_by_name(&symbol) {
        let _ = writeln!(out, "{symbol} is an enum:");
        enum_text(&e, "", &mut out);
    } else {
        return Err(Status::not_found(format!(
            "{symbol:?} is not a service, method, message or enum"
        )));
    }
    Ok(out)
}

fn method_by_name(pool: &DescriptorPool, full: &str) -> Option<MethodDescriptor> {
    let (service, method) = full.rsplit_once('.')?;
    pool.get_service_by_name(service)?
        .methods()
        .find(|m| m.name() == method)
}

/// The leading comment of the element at `path` in `file`, as `//` lines.
fn comments(file: &FileDescriptorProto, path: &[i32], indent: &str, out: &mut String) {
    let Some(info) = &file.source_code_info else {
        return;
    };
    let Some(loc) = info.location.iter().find(|l| l.path == path) else {
        return;
    };
    for line in loc.leading_comments().trim_end().lines() {
        let _ = writeln!(out, "{indent}//{line}");
    }
}

fn service_text(s: &ServiceDescriptor, out: &mut String) {
    comments(s.parent_file().file_descriptor_proto(), s.path(), "", out);
    let _ = writeln!(out, "service {} {{", s.name());
    for m in s.methods() {
        comments(m.parent_file().file_descriptor_proto(), m.path(), "  ", out);
        method_text(&m, "  ", out);
    }
    let _ = writeln!(out, "}}");
}

fn method_text(m: &MethodDescriptor, indent: &str, out: &mut String) {
    let stream = |yes: bool| if yes { "stream " } else { "" };
    let idempotency = match m
        .method_descriptor_proto()
        .options
        .as_ref()
        .map(|o| o.idempotency_level())
    {
        Some(prost_types::method_options::IdempotencyLevel::NoSideEffects) => {
            " { option idempotency_level = NO_SIDE_EFFECTS; }"
        }
        Some(prost_types::method_options::IdempotencyLevel::Idempotent) => {
            " { option idempotency_level = IDEMPOTENT; }"
        }
        _ => ";",
    };
    let _ = writeln!(
        out,
        "{indent}rpc {}({}.{}) returns ({}.{}){idempotency}",
        m.name(),
        stream(m.is_client_streaming()),
        m.input().full_name(),
        stream(m.is_server_streaming()),
        m.output().full_name(),
    );
}

fn type_name(f: &FieldDescriptor) -> String {
    match f.kind() {
        Kind::Message(m) => format!(".{}", m.full_name()),
        Kind::Enum(e) => format!(".{}", e.full_name()),
        Kind::Double => "double".into(),
        Kind::Float => "float".into(),
        Kind::Int32 => "int32".into(),
        Kind::Int64 => "int64".into(),
        Kind::Uint32 => "uint32".into(),
        Kind::Uint64 => "uint64".into(),
        Kind::Sint32 => "sint32".into(),
        Kind::Sint64 => "sint64".into(),
        Kind::Fixed32 => "fixed32".into(),
        Kind::Fixed64 => "fixed64".into(),
        Kind::Sfixed32 => "sfixed32".into(),
        Kind::Sfixed64 => "sfixed64".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "bytes".into(),
    }
}

fn field_text(f: &FieldDescriptor, indent: &str, out: &mut String) {
    comments(
        f.parent_file().file_descriptor_proto(),
        f.path(),
        indent,
        out,
    );
    let ty = if f.is_map() {
        match f.kind() {
            Kind::Message(entry) => format!(
                "map<{}, {}>",
                type_name(&entry.map_entry_key_field()),
                type_name(&entry.map_entry_value_field())
            ),
            _ => type_name(f),
        }
    } else {
        let label = match f.cardinality() {
            Cardinality::Repeated => "repeated ",
            Cardinality::Required => "required ",
            Cardinality::Optional
                if f.field_descriptor_proto().proto3_optional()
                    || f.parent_file().syntax() == prost_reflect::Syntax::Proto2 =>
            {
                "optional "
            }
            Cardinality::Optional => "",
        };
        format!("{label}{}", type_name(f))
    };
    let _ = writeln!(out, "{indent}{ty} {} = {};", f.name(), f.number());
}

fn message_text(m: &MessageDescriptor, indent: &str, out: &mut String) {
    comments(
        m.parent_file().file_descriptor_proto(),
        m.path(),
        indent,
        out,
    );
    let _ = writeln!(out, "{indent}message {} {{", m.name());
    let inner = format!("{indent}  ");
    for n in m.child_messages().filter(|n| !n.is_map_entry()) {
        message_text(&n, &inner, out);
    }
    for e in m.child_enums() {
        enum_text(&e, &inner, out);
    }
    let mut oneofs_done = Vec::new();
    for f in m.fields() {
        match f.containing_oneof().filter(|o| !o.is_synthetic()) {
            None => field_text(&f, &inner, out),
            Some(o) if !oneofs_done.contains(&o.name().to_string()) => {
                oneofs_done.push(o.name().to_string());
                comments(
                    o.parent_message().parent_file().file_descriptor_proto(),
                    o.path(),
                    &inner,
                    out,
                );
                let _ = writeln!(out, "{inner}oneof {} {{", o.name());
                let deeper = format!("{inner}  ");
                for of in o.fields() {
                    field_text(&of, &deeper, out);
                }
                let _ = writeln!(out, "{inner}}}");
            }
            Some(_) => {}
        }
    }
    let _ = writeln!(out, "{indent}}}");
}

fn enum_text(e: &EnumDescriptor, indent: &str, out: &mut String) {
    comments(
        e.parent_file().file_descriptor_proto(),
        e.path(),
        indent,
        out,
    );
    let _ = writeln!(out, "{indent}enum {} {{", e.name());
    for v in e.values() {
        comments(
            v.parent_enum().parent_file().file_descriptor_proto(),
            v.path(),
            &format!("{indent}  "),
            out,
        );
        let _ = writeln!(out, "{indent}  {} = {};", v.name(), v.number());
    }
    let _ = writeln!(out, "{indent}}}");
}

/// What a schema-aware call needs: the method's message types.
#[derive(Debug)]
pub(crate) struct MethodSchema {
    input: MessageDescriptor,
    output: MessageDescriptor,
    client_streaming: bool,
}

impl MethodSchema {
    /// The schema of `method` (`pkg.Svc/Method`) from the server's reflection;
    /// `Ok(None)` when the server has no reflection or does not describe the
    /// service (the call then uses plain JSON).
    ///
    /// Only a method missing from a service the server describes is an error;
    /// when reflection itself fails the call goes on with JSON (`verbose`
    /// says why on stderr).
    pub(crate) async fn lookup(
        client: &mut ReflectionClient<Stack>,
        method: &str,
        verbose: bool,
    ) -> Result<Option<MethodSchema>, Status> {
        let Some((service, name)) = method.rsplit_once('/') else {
            return Ok(None);
        };
        let pool = match pool_for(client, service).await {
            Ok(pool) => pool,
            Err(e) => {
                if verbose {
                    eprintln!(
                        "* no schema from reflection ({}: {}); sending JSON",
                        e.code().as_str(),
                        e.message()
                    );
                }
                return Ok(None);
            }
        };
        if verbose {
            eprintln!("* schema from reflection: sending protobuf");
        }
        let m = pool
            .get_service_by_name(service)
            .and_then(|s| s.methods().find(|m| m.name() == name))
            .ok_or_else(|| {
                Status::unimplemented(format!(
                    "the server describes {service} but it has no method {name:?}"
                ))
            })?;
        Ok(Some(MethodSchema {
            input: m.input(),
            output: m.output(),
            client_streaming: m.is_client_streaming(),
        }))
    }

    /// The request body: `json` encoded as protobuf. For a client-streaming
    /// method a JSON array is sent as one message per element.
    pub(crate) fn encode_request(&self, json: &serde_json::Value) -> Result<Body, Status> {
        let messages: Vec<&serde_json::Value> = match json {
            serde_json::Value::Array(items) if self.client_streaming => items.iter().collect(),
            one => vec![one],
        };
        let mut payloads = Vec::with_capacity(messages.len());
        for m in messages {
            let msg = DynamicMessage::deserialize(self.input.clone(), m).map_err(|e| {
                Status::invalid_argument(format!(
                    "request does not fit {}: {e}",
                    self.input.full_name()
                ))
            })?;
            payloads.push(Ok(trpc::Payload::new(Bytes::from(
                prost::Message::encode_to_vec(&msg),
            ))));
        }
        if self.client_streaming {
            Ok(Body::stream(futures_util::stream::iter(payloads)))
        } else {
            let p = payloads
                .pop()
                .and_then(Result::ok)
                .unwrap_or_else(|| trpc::Payload::new(Bytes::new()));
            Ok(Body::once(p))
        }
    }

    /// A reply message as JSON (the protobuf JSON mapping).
    pub(crate) fn decode_reply(&self, bytes: Bytes) -> Result<serde_json::Value, Status> {
        let msg = DynamicMessage::decode(self.output.clone(), bytes).map_err(|e| {
            Status::internal(format!(
                "reply does not decode as {}: {e}",
                self.output.full_name()
            ))
        })?;
        let options = SerializeOptions::new().skip_default_fields(false);
        msg.serialize_with_options(serde_json::value::Serializer, &options)
            .map_err(|e| Status::internal(format!("reply to JSON: {e}")))
    }
}

/// Marks `req` as protobuf (the schema-aware path).
pub(crate) fn use_protobuf(req: &mut Request<Body>) {
    trpc::codec::set_codec_name(req.metadata_mut(), "proto");
}
