//! Transport counters: connections and bytes, for metrics layers and admin pages.
//!
//! Give the same [`TransportStats`] to a [`Server`](crate::Server) or an
//! [`Endpoint`](crate::Endpoint) (`.transport_stats(stats.clone())`) and read
//! it from anywhere; counting costs one relaxed atomic add per event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Connection and byte counters of a server or a client.
#[derive(Debug, Default)]
pub struct TransportStats {
    opened: AtomicU64,
    closed: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    write_buffered_peak: AtomicU64,
    recv_buffered: AtomicU64,
    recv_buffered_peak: AtomicU64,
}

impl TransportStats {
    /// New, shareable counters.
    pub fn new() -> Arc<Self> {
        Arc::new(TransportStats::default())
    }

    /// Connections opened so far.
    pub fn opened_total(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Connections closed so far.
    pub fn closed_total(&self) -> u64 {
        self.closed.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.opened_total().saturating_sub(self.closed_total())
    }

    /// Bytes received so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Bytes sent so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }

    /// The most bytes ever waiting in one connection's write buffer (output
    /// accepted from the application but not yet taken by the kernel).
    pub fn write_buffered_peak(&self) -> u64 {
        self.write_buffered_peak.load(Ordering::Relaxed)
    }

    /// Bytes of received stream messages queued for the application now.
    pub fn recv_buffered(&self) -> u64 {
        self.recv_buffered.load(Ordering::Relaxed)
    }

    /// The most bytes of received stream messages ever queued at once.
    pub fn recv_buffered_peak(&self) -> u64 {
        self.recv_buffered_peak.load(Ordering::Relaxed)
    }

    pub(crate) fn observe_write_buffered(&self, n: usize) {
        self.write_buffered_peak
            .fetch_max(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_recv_buffered(&self, n: usize) {
        let now = self.recv_buffered.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        self.recv_buffered_peak.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn sub_recv_buffered(&self, n: usize) {
        self.recv_buffered.fetch_sub(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn on_open(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn on_close(&self) {
        self.closed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn on_read(&self, n: usize) {
        self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn on_write(&self, n: usize) {
        self.bytes_written.fetch_add(n as u64, Ordering::Relaxed);
    }
}
