//! Uploads a file to a trpc server and downloads it back as streams of chunks,
//! with a progress bar and a checksum check at the end.
//!
//! Run: `cargo run --release --example file_transfer -- --size 2GiB`
//! (`--file PATH` to send an existing file; `--chunk 256KiB`, `--window 1MiB`
//! to tune; `--addr HOST:PORT` to use a server started with `--serve HOST:PORT`
//! instead of the in-process one).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use clap::Parser;
use futures_util::{stream, Stream, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use trpc::codec::Proto;
use trpc::server::{client_streaming, server_streaming, Router, Server};
use trpc::{Client, Endpoint, Request, Response, Status, Streaming};

#[derive(Parser, Debug)]
#[command(about = "Upload and download a file over trpc streams")]
struct Args {
    /// Size of the generated test file (e.g. 2GiB, 100MB, 4096).
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    size: u64,
    /// Send this file instead of a generated one.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Chunk (message) size.
    #[arg(long, default_value = "256KiB", value_parser = parse_size)]
    chunk: u64,
    /// Flow-control window per stream, both sides.
    #[arg(long, value_parser = parse_size)]
    window: Option<u64>,
    /// Use the server at this address instead of an in-process one.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Only run a server on this address (until Ctrl-C).
    #[arg(long)]
    serve: Option<SocketAddr>,
    /// Hide the progress bars (for scripts).
    #[arg(long)]
    quiet: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return Err(format!("bad size unit in {s:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} too large"))
}

/// One piece of a file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Chunk {
    /// The bytes.
    #[prost(bytes = "bytes", tag = "1")]
    pub data: Bytes,
}

/// What the server stored.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileInfo {
    /// Name to download it back.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Size in bytes.
    #[prost(uint64, tag = "2")]
    pub size: u64,
    /// CRC-32 of the content.
    #[prost(uint32, tag = "3")]
    pub crc32: u32,
}

struct Store {
    dir: PathBuf,
    chunk: usize,
}

fn io_status(e: std::io::Error) -> Status {
    Status::internal(format!("storage: {e}"))
}

fn router(store: Arc<Store>) -> Router {
    let s = store.clone();
    let upload = move |req: Request<Streaming<Chunk>>| {
        let s = s.clone();
        async move {
            let name = format!("upload-{}", std::process::id());
            let path = s.dir.join(&name);
            let mut file = tokio::io::BufWriter::with_capacity(
                1 << 20,
                tokio::fs::File::create(&path).await.map_err(io_status)?,
            );
            let mut chunks = req.into_inner();
            let mut crc = crc32fast::Hasher::new();
            let mut size = 0u64;
            while let Some(c) = chunks.message().await? {
                crc.update(&c.data);
                size += c.data.len() as u64;
                file.write_all(&c.data).await.map_err(io_status)?;
            }
            file.flush().await.map_err(io_status)?;
            Ok::<_, Status>(Response::new(FileInfo {
                name,
                size,
                crc32: crc.finalize(),
            }))
        }
    };
    let s = store;
    let download = move |req: Request<FileInfo>| {
        let s = s.clone();
        async move {
            let name = req.into_inner().name;
            if name.contains('/') || name.contains("..") {
                return Err(Status::invalid_argument("bad file name"));
            }
            let file = tokio::fs::File::open(s.dir.join(&name))
                .await
                .map_err(|e| Status::not_found(format!("{name}: {e}")))?;
            Ok(Response::new(read_chunks(file, s.chunk)))
        }
    };
    Router::new()
        .route("files.Files/Upload", client_streaming(upload).codec(Proto))
        .route(
            "files.Files/Download",
            server_streaming(download).codec(Proto),
        )
}

/// A file as a stream of chunks.
fn read_chunks(
    file: tokio::fs::File,
    chunk: usize,
) -> impl Stream<Item = Result<Chunk, Status>> + Send + 'static {
    stream::unfold(Some(file), move |file| async move {
        let mut file = file?;
        let mut buf = BytesMut::with_capacity(chunk);
        while buf.len() < chunk {
            match file.read_buf(&mut buf).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Some((Err(io_status(e)), None)),
            }
        }
        if buf.is_empty() {
            return None;
        }
        Some((Ok(Chunk { data: buf.freeze() }), Some(file)))
    })
}

fn bar(quiet: bool, len: u64, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>9} [{bar:40.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Writes `size` bytes of pseudo-random content, returning its CRC-32.
async fn make_test_file(path: &Path, size: u64) -> std::io::Result<u32> {
    let mut out =
        tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::create(path).await?);
    let mut crc = crc32fast::Hasher::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        crc.update(&buf[..n]);
        out.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    out.flush().await?;
    Ok(crc.finalize())
}

async fn file_crc(path: &Path) -> std::io::Result<(u64, u32)> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0;
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok((size, crc.finalize()));
        }
        size += n as u64;
        crc.update(&buf[..n]);
    }
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn server(window: Option<u64>) -> Server {
    let mut s = Server::builder().max_message_size(16 << 20);
    if let Some(w) = window {
        s = s.stream_window(w.min(u32::MAX as u64) as u32);
    }
    s
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("trpc-file-transfer-{}", std::process::id()));
    tokio::fs::create_dir_all(&dir).await?;
    let store = Arc::new(Store {
        dir: dir.clone(),
        chunk: args.chunk as usize,
    });

    if let Some(addr) = args.serve {
        println!(
            "serving files.Files on {addr}, storing in {}",
            dir.display()
        );
        server(args.window).serve(addr, router(store)).await?;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        return Ok(());
    }

    let result = run(&args, &dir, store).await;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    result
}

async fn run(args: &Args, dir: &Path, store: Arc<Store>) -> Result<(), Box<dyn std::error::Error>> {
    let addr = match args.addr {
        Some(a) => a,
        None => {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let srv = server(args.window);
            tokio::spawn(srv.serve_with_listener(listener, router(store), std::future::pending()));
            addr
        }
    };

    let (path, size, crc) = match &args.file {
        Some(p) => {
            let (size, crc) = file_crc(p).await?;
            (p.clone(), size, crc)
        }
        None => {
            let p = dir.join("source.bin");
            if !args.quiet {
                println!(
                    "writing a {} test file...",
                    indicatif::HumanBytes(args.size)
                );
            }
            let crc = make_test_file(&p, args.size).await?;
            (p, args.size, crc)
        }
    };

    let mut endpoint = Endpoint::new(format!("tcp://{addr}"))?.max_message_size(16 << 20);
    if let Some(w) = args.window {
        endpoint = endpoint.stream_window(w.min(u32::MAX as u64) as u32);
    }
    let mut client = Client::with_codec(endpoint.connect().await?, Proto);

    // Upload.
    let pb = bar(args.quiet, size, "upload");
    let started = Instant::now();
    let file = tokio::fs::File::open(&path).await?;
    let pb2 = pb.clone();
    let chunks = read_chunks(file, args.chunk as usize).filter_map(move |c| {
        let pb = pb2.clone();
        async move {
            match c {
                Ok(c) => {
                    pb.inc(c.data.len() as u64);
                    Some(c)
                }
                Err(e) => {
                    pb.println(format!("read error: {e}"));
                    None
                }
            }
        }
    });
    let info: Response<FileInfo> = client
        .client_streaming("files.Files/Upload", Request::new(chunks))
        .await?;
    pb.finish();
    let up = started.elapsed();
    let info = info.into_inner();
    if info.size != size || info.crc32 != crc {
        return Err(format!(
            "upload mismatch: sent {size} bytes crc {crc:08x}, server got {} bytes crc {:08x}",
            info.size, info.crc32
        )
        .into());
    }

    // Download.
    let pb = bar(args.quiet, size, "download");
    let started = Instant::now();
    let mut chunks = client
        .server_streaming::<FileInfo, Chunk>("files.Files/Download", Request::new(info.clone()))
        .await?
        .into_inner();
    let mut got = 0u64;
    let mut hasher = crc32fast::Hasher::new();
    while let Some(c) = chunks.message().await? {
        hasher.update(&c.data);
        got += c.data.len() as u64;
        pb.inc(c.data.len() as u64);
    }
    pb.finish();
    let down = started.elapsed();
    let back = hasher.finalize();
    let mb = size as f64 / 1e6;
    println!(
        "upload   {} in {:.2?} ({:.0} MB/s)\ndownload {} in {:.2?} ({:.0} MB/s)",
        indicatif::HumanBytes(size),
        up,
        mb / up.as_secs_f64(),
        indicatif::HumanBytes(got),
        down,
        mb / down.as_secs_f64()
    );
    if got != size || back != crc {
        return Err(format!(
            "download mismatch: expected {size} bytes crc {crc:08x}, got {got} bytes crc {back:08x}"
        )
        .into());
    }
    println!("checksum ok: crc32 {crc:08x}");
    if let Some(rss) = peak_rss_mib() {
        println!("peak RSS of this process (client and server): {rss:.1} MiB");
    }
    Ok(())
}
