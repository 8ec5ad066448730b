//! Spur's Delta Lake: the tables every service reads or writes, their Arrow schemas
//! ([`schema`]) and row types ([`model`]), and [`Lake`], which opens or creates them,
//! appends record batches together with source offsets in one atomic commit, reads
//! those offsets back, compacts small files and hands the tables to DataFusion.
//!
//! The processor writes `events` and `sessions`; the query layer reads them and
//! writes `scores` (interest scores, one commit per scoring run) and
//! `segment_changes` (segment membership history, the dispatcher's outbox), `ledger`
//! (consent and identity, hash-chained) and `erasures` (erasure requests and
//! receipts). Deletes, redactions, vacuum and retention are in `maintenance.rs`. Layout,
//! columns and the offset convention are documented in `docs/lake.md`. No Kafka and
//! no HTTP here: this crate is storage only.

pub mod error;
mod maintenance;
pub mod model;
pub mod schema;
mod table;
pub mod views;

#[cfg(test)]
mod tests;

pub use error::{Error, Result};
pub use maintenance::{ExpireSummary, RewriteSummary, digest_predicate, id_digest};
pub use schema::{
    erasures_batch, events_batch, ledger_batch, scores_batch, segment_changes_batch, sessions_batch,
};
pub use table::{Lake, OptimizeSummary, ROW_GROUP_ROWS, TableKind, ZSTD_LEVEL, writer_properties};
