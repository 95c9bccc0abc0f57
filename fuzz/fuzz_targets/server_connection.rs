//! A whole server connection driven by fuzz bytes over an in-memory pipe
//! (`tokio::io::duplex`), through `Server::serve_connection`: whatever the
//! client sends, the server never panics and the connection always ends
//! (virtual time: every timeout fires at once when nothing else can happen,
//! so a run that would hang is reported as a failure, not waited for).
//!
//! Input: byte 0 holds flags (bit 0: send a valid SETTINGS first so that the
//! fuzzer reaches calls sooner; bit 1: close the client's side after
//! sending, or keep it open and let the server's timeouts end it), bytes
//! 1..9 seed the write sizes, the rest is what the client sends.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{stream, StreamExt};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use trpc::server::{bidi_streaming, client_streaming, server_streaming, unary, Router, Server};
use trpc::{Request, Response, Status, Streaming};

#[path = "support/pipe_input.rs"]
mod pipe_input;
use pipe_input::{drain, piece, PipeInput};

fn router() -> Router {
    Router::new()
        .route(
            "f.F/Echo",
            unary(|req: Request<Value>| async move { Ok::<_, Status>(Response::new(req.into_inner())) }),
        )
        .route(
            "f.F/Sleep",
            unary(|req: Request<Value>| async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<_, Status>(Response::new(req.into_inner()))
            }),
        )
        .route(
            "f.F/Range",
            server_streaming(|req: Request<Value>| async move {
                let n = req.get_ref().as_u64().unwrap_or(3).min(64);
                Ok::<_, Status>(Response::new(stream::iter((0..n).map(|i| Ok(Value::from(i))))))
            }),
        )
        .route(
            "f.F/Sum",
            client_streaming(|req: Request<Streaming<Value>>| async move {
                let mut s = req.into_inner();
                let mut total = 0u64;
                while let Some(v) = s.message().await? {
                    total = total.wrapping_add(v.as_u64().unwrap_or(1));
                }
                Ok::<_, Status>(Response::new(Value::from(total)))
            }),
        )
        .route(
            "f.F/Bidi",
            bidi_streaming(|req: Request<Streaming<Value>>| async move {
                let s = req.into_inner();
                let out = stream::unfold(s, |mut s| async move {
                    match s.message().await {
                        Ok(Some(v)) => Some((Ok(v), s)),
                        Ok(None) => None,
                        Err(e) => Some((Err(e), s)),
                    }
                });
                Ok::<_, Status>(Response::new(out.boxed()))
            }),
        )
}

fn server() -> Server {
    let s = Duration::from_secs(1);
    Server::builder()
        .handshake_timeout(s)
        .frame_timeout(s)
        .write_timeout(s)
        .idle_timeout(Some(2 * s))
        .keepalive(Some((s, s)))
        .stream_idle_timeout(2 * s)
        .timeout(10 * s)
        .max_concurrent_streams(16)
        .max_message_size(64 * 1024)
        .max_buffered_request_bytes(256 * 1024)
        .max_cancel_rate(Some((8, s)))
}

async fn run(data: &[u8]) {
    let mut input = PipeInput::parse(data);
    let close_after = input.close_after();

    let (client, server_io) = tokio::io::duplex(16 * 1024);
    let peer: SocketAddr = ([127, 0, 0, 1], 9).into();
    let served = tokio::spawn(server().serve_connection(server_io, peer, router()));
    let (rd, mut wr) = tokio::io::split(client);
    let reader = drain(rd);
    let wire = std::mem::take(&mut input.wire);
    let mut rest = &wire[..];
    while !rest.is_empty() {
        let seed = input.next_seed();
        let n = piece(seed, rest.len());
        if wr.write_all(&rest[..n]).await.is_err() {
            break; // the server closed
        }
        rest = &rest[n..];
        if seed % 7 == 0 {
            // Let virtual time pass between some writes (slow peers).
            tokio::time::sleep(Duration::from_millis(seed % 1500)).await;
        }
    }
    if close_after {
        let _ = wr.shutdown().await;
    }
    // Every connection ends: by EOF, an error, or the server's timeouts.
    match tokio::time::timeout(Duration::from_secs(3600), served).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("the server connection task failed: {e}"),
        Err(_) => panic!("the server connection did not end within an hour of virtual time"),
    }
    drop(wr);
    let _ = tokio::time::timeout(Duration::from_secs(60), reader).await;
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(run(data));
});
