//! Spur's Delta Lake: the tables every service reads or writes, their Arrow schemas
//! ([`schema`]) and row types ([`model`]), and [`Lake`], which opens or creates them,
//! appends record batches together with source offsets in one atomic commit, reads
//! those offsets back, compacts small files and hands the tables to DataFusion.
//!
//! The processor writes `events`, `sessions` and `contacts` (addresses sealed under
//! per-subject data keys kept outside the lake; read with [`contacts`]); the audience crate reads them and
//! writes `scores` (interest scores, one commit per scoring run), `segment_changes`
//! (segment membership history, the dispatcher's outbox) and `ledger` (consent and
//! identity, hash-chained); the GDPR crate writes `erasures` (erasure requests and
//! receipts). Deletes, redactions, vacuum, retention and the erasure suppression list
//! are in `maintenance.rs`. Shared by every reader: [`read`] (collect a query, take a
//! column as Rust values) and [`positions`] (the `txn` app ids and the offsets in the
//! events topic each writer has covered). Layout, columns and the offset convention
//! are documented in `docs/lake.md`.
//!
//! Must never: talk to Kafka or HTTP, or know a service's rules. Storage only.

mod config;
pub mod contacts;
pub mod dwell;
pub mod error;
mod maintenance;
pub mod model;
pub mod positions;
pub mod read;
pub mod schema;
mod table;
pub mod views;

#[cfg(test)]
mod tests;

pub use config::LakeConfig;
pub use error::{Error, Result};
pub use maintenance::{ExpireSummary, RewriteSummary, digest_predicate, erased_digests, id_digest};
pub use schema::{
    audience_state_batch, contacts_batch, erasures_batch, events_batch, ledger_batch, scores_batch,
    segment_changes_batch, sessions_batch,
};
pub use table::{Lake, OptimizeSummary, ROW_GROUP_ROWS, TableKind, ZSTD_LEVEL, writer_properties};
