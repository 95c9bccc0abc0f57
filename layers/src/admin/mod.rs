//! The admin HTTP server: `/metrics`, `/healthz`, `/readyz` and pages of
//! your own, served with hyper next to the RPC port.
//!
//! [`Admin::builder`] says what to serve; [`AdminBuilder::bind`] starts the
//! server in a background task and returns its [`AdminServer`] handle (which
//! stops it on [`shutdown`](AdminServer::shutdown) or drop).
//!
//! | path | answers |
//! |---|---|
//! | `/` | the list of pages |
//! | `/metrics` | a prometheus registry in the text format ([`AdminBuilder::metrics`]) |
//! | `/healthz` | liveness: `200 ok` while every [`liveness`](AdminBuilder::liveness) check passes, else `503` |
//! | `/readyz` | readiness: `200 ok` while every liveness and [`readiness`](AdminBuilder::readiness) check passes, else `503` |
//! | your paths | any [`Page`] ([`AdminBuilder::page`]) |
//!
//! Health sources are [`HealthCheck`]s (closures returning `Result<(), String>`,
//! or a component's own health state); `?verbose` lists every check.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use std::sync::Arc;
//! use trpc_layers::admin::{text, Admin};
//!
//! let registry = prometheus::Registry::new();
//! let draining = Arc::new(AtomicBool::new(false));
//! let flag = draining.clone();
//! let admin = Admin::builder()
//!     .metrics(registry.clone())
//!     .readiness("server", move || {
//!         if flag.load(Ordering::Relaxed) { Err("draining".to_string()) } else { Ok(()) }
//!     })
//!     .page("/version", |_: &http::request::Parts| text(http::StatusCode::OK, "1.0\n"))
//!     .bind("127.0.0.1:9100".parse()?)
//!     .await?;
//! println!("admin on http://{}/", admin.local_addr());
//! # Ok(()) }
//! ```

mod builder;
mod health;
mod page;
mod server;

pub use builder::AdminBuilder;
pub use health::HealthCheck;
pub use page::{text, Page};
pub use server::AdminServer;

/// The entry point of the admin server: [`Admin::builder`].
#[derive(Debug, Clone, Copy)]
pub struct Admin(());

impl Admin {
    /// An admin server with `/healthz` and `/readyz` (always `ok`) and `/`;
    /// add metrics, checks and pages, then [`bind`](AdminBuilder::bind).
    pub fn builder() -> AdminBuilder {
        AdminBuilder::default()
    }
}

#[cfg(test)]
mod tests;
