//! A whole client connection driven by fuzz bytes over an in-memory pipe
//! (`tokio::io::duplex`), through `Endpoint::connect_with_io`: whatever the
//! server sends, the client never panics, every call ends, and the
//! connection ends once the channel is dropped (virtual time: every timeout
//! fires at once when nothing else can happen, so a run that would hang is
//! reported as a failure, not waited for).
//!
//! The server sends its first frame (the SETTINGS of a well-behaved server),
//! waits until the client has connected and started its five calls (on
//! streams 1, 3, 5, 7 and 9, in that order: unary, unary with a 5 s
//! deadline, server streaming, client streaming with three messages, bidi
//! with two), then sends the rest.
//!
//! Input: byte 0 holds flags (bit 0: send a valid SETTINGS first so that the
//! fuzzer reaches calls sooner; bit 1: close the server's side after
//! sending, or keep it open and let the client's timers end it; bit 2: tiny
//! flow-control windows and message limits), bytes 1..9 seed the write
//! sizes and pauses, the rest is what the server sends.
#![no_main]

use std::time::Duration;

use futures_util::stream;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use trpc::{Channel, Client, Endpoint, Request, Status};

#[path = "support/pipe_input.rs"]
mod pipe_input;
use pipe_input::{drain, piece, PipeInput};

/// Longer than anything in a run may take, in virtual time.
const HOUR: Duration = Duration::from_secs(3600);

fn endpoint(tiny: bool) -> Endpoint {
    let s = Duration::from_secs(1);
    let e = Endpoint::from_static("tcp://127.0.0.1:9")
        .connect_timeout(10 * s)
        .keepalive(s, s)
        .idle_timeout(Some(2 * s));
    if tiny {
        e.stream_window(64)
            .connection_window(256)
            .max_message_size(128)
            .max_metadata_size(1024)
    } else {
        e.max_message_size(64 * 1024)
    }
}

/// The five calls; each returns once it has ended (its response and, for
/// streams, every message read).
fn calls(channel: &Channel) -> Vec<JoinHandle<Result<(), Status>>> {
    let client = Client::new(channel.clone());
    let mut out = Vec::new();
    let mut c = client.clone();
    out.push(tokio::spawn(async move {
        c.unary_message::<Value, Value>("f.F/Echo", Value::from(1))
            .await
            .map(drop)
    }));
    let mut c = client.clone();
    out.push(tokio::spawn(async move {
        let mut req = Request::new(Value::from(2));
        req.set_timeout(Duration::from_secs(5));
        c.unary::<Value, Value>("f.F/Sleep", req).await.map(drop)
    }));
    let mut c = client.clone();
    out.push(tokio::spawn(async move {
        let mut s = c
            .server_streaming::<Value, Value>("f.F/Range", Request::new(Value::from(3)))
            .await?
            .into_inner();
        while s.message().await?.is_some() {}
        Ok(())
    }));
    let mut c = client.clone();
    out.push(tokio::spawn(async move {
        let items = stream::iter([Value::from(1), Value::from(2), Value::from(3)]);
        c.client_streaming::<Value, Value, _>("f.F/Sum", Request::new(items))
            .await
            .map(drop)
    }));
    let mut c = client;
    out.push(tokio::spawn(async move {
        let items = stream::iter([Value::from("x"), Value::from("y")]);
        let mut s = c
            .bidi_streaming::<Value, Value, _>("f.F/Bidi", Request::new(items))
            .await?
            .into_inner();
        while s.message().await?.is_some() {}
        Ok(())
    }));
    out
}

/// The length of the first frame of `wire` (all of it when shorter).
fn first_frame_len(wire: &[u8]) -> usize {
    if wire.len() < 16 {
        return wire.len();
    }
    let metadata = u32::from_be_bytes([0, wire[5], wire[6], wire[7]]) as usize;
    let payload = u32::from_be_bytes([wire[12], wire[13], wire[14], wire[15]]) as usize;
    (16 + metadata + payload).min(wire.len())
}

async fn run(data: &[u8]) {
    let mut input = PipeInput::parse(data);
    let (flags, close_after) = (input.flags, input.close_after());
    let wire = std::mem::take(&mut input.wire);

    let (client_io, server_io) = tokio::io::duplex(16 * 1024);
    let (rd, mut wr) = tokio::io::split(server_io);
    // The server reads (and drops) whatever the client sends, until the
    // client closes the connection.
    let reader = drain(rd);
    // The server writes the fuzz bytes in seeded pieces; between pieces the
    // client handles what arrived (frames are applied), and some pauses let
    // the client's timers fire mid-conversation. After the first frame it
    // waits for the calls to start (or the connect to fail).
    let (calls_started, started) = oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        let mut started = Some(started);
        let handshake = first_frame_len(&wire);
        let mut rest = &wire[..];
        while !rest.is_empty() {
            if wire.len() - rest.len() >= handshake {
                if let Some(started) = started.take() {
                    let _ = started.await;
                }
            }
            let seed = input.next_seed();
            let mut n = piece(seed, rest.len());
            if started.is_some() {
                n = n.min(handshake - (wire.len() - rest.len()));
            }
            if wr.write_all(&rest[..n]).await.is_err() {
                break; // the client closed
            }
            rest = &rest[n..];
            let pause = if seed % 5 == 0 { seed % 3000 } else { 1 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        if close_after {
            let _ = wr.shutdown().await;
        }
        wr // kept open (unless shut down) until the run ends
    });

    match endpoint(flags & 4 != 0).connect_with_io(client_io).await {
        Ok(channel) => {
            let calls = calls(&channel);
            // Every task waits once the calls have sent their HEADERS: then
            // virtual time moves.
            tokio::time::sleep(Duration::from_millis(1)).await;
            let _ = calls_started.send(());
            for call in calls {
                match tokio::time::timeout(HOUR, call).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => panic!("a call task failed: {e}"),
                    Err(_) => panic!("a call did not end within an hour of virtual time"),
                }
            }
            drop(channel);
        }
        Err(_) => drop(calls_started), // a failed handshake closes the pipe
    }
    // The client's connection ends: the server's reader sees it close.
    if tokio::time::timeout(HOUR, reader).await.is_err() {
        panic!("the client connection did not end within an hour of virtual time");
    }
    match tokio::time::timeout(HOUR, writer).await {
        Ok(Ok(_wr)) => {}
        Ok(Err(e)) => panic!("the server writer failed: {e}"),
        Err(_) => panic!("the server writer did not end"),
    }
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
