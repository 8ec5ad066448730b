//! Lifecycle stages, segments and the segment service.
//!
//! - [`config`]: `[query.lifecycle]` and `[query.segments]`.
//! - [`profile`]: one row per subject with what conditions test (`docs/segments.md`).
//! - [`engine`]: membership, evaluated incrementally and committed with its position.
//! - [`service`]: `spur segments` — the engine on a timer and delivery to Kafka and
//!   webhooks.
//! - [`timeline`]: the views analysts get (`subjects`, `profiles`,
//!   `segment_members`, `timeline`).

pub mod config;
pub mod engine;
pub mod profile;
pub mod service;
pub mod timeline;

pub use config::{LifecycleConfig, SegmentDef, SegmentsConfig, Stage};
pub use engine::{Engine, StepSummary};
