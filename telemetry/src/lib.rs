//! The operational side every long-running Spur service shares, except the collector
//! (which serves the same three endpoints on its public port): a [`Health`] registry
//! fed by the service's own loops, a per-instance Prometheus recorder ([`Metrics`]),
//! and a small HTTP server ([`serve`]) answering `GET /livez`, `/readyz` and
//! `/metrics` on an operator-only address.
//!
//! Readiness comes from the loops themselves: each registers a component with a
//! deadline and reports on every turn; a component that has not reported within its
//! deadline, or that reported a problem, makes `/readyz` answer 503 with the reason.
//! [`LogConfig`] (`[log]`) installs the `tracing` subscriber every process logs with.
//!
//! Must never: put a visitor id, an address or a key in a metric label or a log
//! field, or depend on another Spur crate.

mod health;
mod logging;
mod metrics;
mod server;

pub use health::{Component, Health, HealthReport};
pub use logging::LogConfig;
pub use metrics::Metrics;
pub use server::serve;
