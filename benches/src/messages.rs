//! The messages every RPC system exchanges, as hand-written prost structs
//! (trpc's `Proto` codec and tonic both use them; tarpc sends the same bytes
//! with bincode).

use bytes::Bytes;

/// An echo request or reply: opaque payload bytes (decoded without a copy).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EchoMsg {
    /// The payload.
    #[prost(bytes = "bytes", tag = "1")]
    pub(crate) payload: Bytes,
}

/// Asks the server to stream `total` bytes back in chunks of `chunk` bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct DownloadRequest {
    /// Bytes to send in all.
    #[prost(uint64, tag = "1")]
    pub(crate) total: u64,
    /// Bytes per message.
    #[prost(uint32, tag = "2")]
    pub(crate) chunk: u32,
}

/// A payload of `len` bytes (a non-constant pattern, so nothing compresses it
/// away by accident).
pub(crate) fn payload(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// The messages of a download of `total` bytes in `chunk`-byte messages
/// (slices of one buffer: producing them costs nothing).
pub(crate) fn chunks<E>(
    total: u64,
    chunk: u32,
) -> impl futures::Stream<Item = Result<EchoMsg, E>> + Send + 'static {
    let chunk = (chunk as usize).clamp(1, crate::systems::MAX_MESSAGE);
    let data = payload(chunk);
    let mut left = total as usize;
    futures::stream::poll_fn(move |_| {
        if left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = left.min(chunk);
        left -= n;
        std::task::Poll::Ready(Some(Ok(EchoMsg {
            payload: data.slice(..n),
        })))
    })
}
