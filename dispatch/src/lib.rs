//! Spur's dispatch: the segment service (`spur segments`). It runs the audience
//! engine on a timer and delivers every committed `segment.entered` /
//! `segment.exited` to the mailing system, exactly once per sink and in order per
//! subject.
//!
//! - [`config`]: `[segments]` — timing, segment definitions, topic, webhooks.
//! - [`service`]: the engine loop and one delivery task per sink.
//! - `outbox`: the committed changes held in memory until every sink is done with
//!   them.
//! - `metrics`: the segment service's metric names and the recording of them.
//! - [`sink`]: the segment-changes Kafka topic (own partitioning, `seq` header,
//!   exactly once by reading each partition's last record).
//! - [`webhook`]: Standard Webhooks — configuration, signing and verification,
//!   delivery with backoff, durable cursors and the given-up log.
//!
//! Must never: decide membership (that is `spur-audience`'s engine; this crate only
//! delivers what it committed), send a change before its commit, or put a secret or
//! a subject's address in a log line or a metric label.

pub mod config;
mod contacts;
mod error;
mod metrics;
mod outbox;
pub mod service;
pub mod sink;
pub mod webhook;

pub use config::SegmentsConfig;
pub use error::{Error, Result};
pub use service::{Config, run};
