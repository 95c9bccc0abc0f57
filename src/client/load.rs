//! [`tower::load::Load`] for [`Channel`]: its load is the number of calls in
//! flight, so `tower::balance::p2c::Balance` and `tower::load` wrappers can
//! weigh channels directly.
//!
//! ```
//! use tower::load::Load;
//! let channel = trpc::Endpoint::from_static("127.0.0.1:7000").connect_lazy();
//! assert_eq!(channel.load(), 0);
//! ```

use tower::load::Load;

use super::channel::Channel;

impl Load for Channel {
    /// Calls in flight over all of the channel's connections.
    type Metric = usize;

    fn load(&self) -> usize {
        self.in_flight()
    }
}
