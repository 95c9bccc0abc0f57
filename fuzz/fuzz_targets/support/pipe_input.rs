//! What the two connection fuzz targets share: how the input is read (byte
//! 0 flags, bytes 1..9 a seed, the rest the wire), the seeded piece sizes,
//! and the peer's reader that drains the pipe until the other side closes.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;
use trpc::frame::Settings;

/// A fuzz input for a connection target.
pub struct PipeInput {
    /// Byte 0: bit 0 prepends a valid SETTINGS, bit 1 closes the peer's
    /// side after sending; other bits are the target's.
    pub flags: u8,
    /// The bytes the fuzzed peer sends.
    pub wire: Vec<u8>,
    seed: u64,
}

impl PipeInput {
    /// Reads `data` (at least 9 bytes).
    pub fn parse(data: &[u8]) -> PipeInput {
        let flags = data[0];
        let seed = u64::from_le_bytes(data[1..9].try_into().unwrap()) | 1;
        let mut wire = Vec::new();
        if flags & 1 != 0 {
            let mut b = BytesMut::new();
            Settings::default().encode(&mut b);
            wire.extend_from_slice(&b);
        }
        wire.extend_from_slice(&data[9..]);
        PipeInput { flags, wire, seed }
    }

    /// True when the peer closes its side after sending.
    pub fn close_after(&self) -> bool {
        self.flags & 2 != 0
    }

    /// The next seeded number (xorshift): piece sizes and pauses.
    pub fn next_seed(&mut self) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed
    }
}

/// The size of the next piece to write, from a seed: 1 to 512 bytes, at
/// most `left`.
pub fn piece(seed: u64, left: usize) -> usize {
    (1 + (seed % 512) as usize).min(left)
}

/// Reads (and drops) everything from `rd` until the other side closes.
pub fn drain<R: AsyncRead + Unpin + Send + 'static>(mut rd: R) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut sink = vec![0u8; 16 * 1024];
        while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
    })
}
