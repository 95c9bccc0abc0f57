//! The connection engine both roles share (h2's `proto/`, hyper's
//! `Dispatcher`): flow control ([`flow`]), the peer's settings, keepalive,
//! the stream table with an explicit stream state, the state a connection's
//! task shares with its streams' owners, connection errors as a `Result`,
//! and the task that drives a connection. A client and a server differ only
//! in their [`driver::Role`] (src/client/connection.rs, src/server/conn.rs).

pub(crate) mod deadlines;
pub(crate) mod driver;
pub(crate) mod error;
pub(crate) mod flow;
pub(crate) mod keepalive;
pub(crate) mod settings;
pub(crate) mod shared;
pub(crate) mod streams;
pub(crate) mod timer;

pub(crate) use driver::{Driver, DriverConfig, Role};
pub(crate) use error::{ConnError, Exit};
pub(crate) use settings::PeerSettings;
pub(crate) use shared::{RoleStream, SendError, Shared, State};
pub(crate) use streams::{Stream, StreamState};
