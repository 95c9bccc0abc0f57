//! Mutual TLS: a server that requires client certificates, a client that
//! presents one, and the handler seeing who is calling. Also shows the errors a
//! plaintext client and a client without a certificate get.
//!
//! Run: `cargo run --example tls` (certificates are generated into a temporary
//! directory; `--keep-certs DIR` writes them to DIR and keeps them).

use std::path::{Path, PathBuf};

use clap::Parser;
use tokio::net::TcpListener;
use trpc::server::{unary, Router, Server};
use trpc::tls::{ClientTlsConfig, ServerTlsConfig, TlsInfo};
use trpc::{Client, Endpoint, Request, Response, Status};
use trpc_integration::pki::TestCa;

#[derive(Parser, Debug)]
#[command(about = "trpc mutual TLS example")]
struct Args {
    /// Write the generated PEM files here and keep them.
    #[arg(long)]
    keep_certs: Option<PathBuf>,
}

/// The reply of `demo.Tls/WhoAmI`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Who {
    client: String,
}

async fn whoami(req: Request<()>) -> Result<Response<Who>, Status> {
    let client = req
        .extensions()
        .get::<TlsInfo>()
        .and_then(|tls| tls.peer_identity())
        .and_then(|id| id.name())
        .unwrap_or("anonymous")
        .to_string();
    Ok(Response::new(Who { client }))
}

fn write(dir: &Path, name: &str, pem: &str) -> std::io::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, pem)?;
    Ok(path)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let dir = args
        .keep_certs
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("trpc-tls-{}", std::process::id())));
    std::fs::create_dir_all(&dir)?;

    // A CA, a server certificate for localhost, a client certificate for alice.
    let ca = TestCa::new("trpc example CA")?;
    let server = ca.server(&["localhost", "127.0.0.1"])?;
    let alice = ca.client("alice.example")?;
    let ca_pem = write(&dir, "ca.crt", &ca.cert_pem())?;
    let server_crt = write(&dir, "server.crt", &server.cert)?;
    let server_key = write(&dir, "server.key", &server.key)?;
    let alice_crt = write(&dir, "alice.crt", &alice.cert)?;
    let alice_key = write(&dir, "alice.key", &alice.key)?;
    println!("certificates in {}", dir.display());

    // Server: TLS from PEM files, client certificates required (mTLS).
    let tls = ServerTlsConfig::from_pem_files(&server_crt, &server_key)?
        .client_ca_pem(std::fs::read(&ca_pem)?)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = Router::new().route("demo.Tls/WhoAmI", unary(whoami));
    tokio::spawn(Server::builder().tls_config(tls)?.serve_with_listener(
        listener,
        router,
        std::future::pending(),
    ));
    println!("mTLS server on {addr}");

    // A client with alice's certificate.
    let client_tls = ClientTlsConfig::new()
        .ca_pem_file(&ca_pem)?
        .domain_name("localhost")
        .identity_pem(std::fs::read(&alice_crt)?, std::fs::read(&alice_key)?)?;
    let channel = Endpoint::new(format!("tcp://{addr}"))?
        .tls_config(client_tls)?
        .connect()
        .await?;
    let who: Who = Client::new(channel)
        .unary_message("demo.Tls/WhoAmI", ())
        .await?;
    println!(
        "with a client certificate: the server sees {:?}",
        who.client
    );

    // A client without a certificate, and a plaintext client: clear errors.
    let no_cert = ClientTlsConfig::new()
        .ca_pem_file(&ca_pem)?
        .domain_name("localhost");
    let err = Endpoint::new(format!("tcp://{addr}"))?
        .tls_config(no_cert)?
        .connect()
        .await
        .expect_err("the server requires a client certificate");
    println!(
        "without a client certificate: {}: {}",
        err.code(),
        err.message()
    );
    let err = Endpoint::new(format!("tcp://{addr}"))?
        .connect()
        .await
        .expect_err("the server requires TLS");
    println!("plaintext: {}: {}", err.code(), err.message());

    if args.keep_certs.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
