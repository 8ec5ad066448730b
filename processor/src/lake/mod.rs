//! The Delta Lake layer: the `events` and `sessions` tables, their Arrow schemas
//! ([`schema`]), and [`Lake`], which opens or creates them, appends record batches
//! together with Kafka offsets in one atomic commit, reads those offsets back,
//! compacts small files and hands the tables to DataFusion for SQL.
//!
//! Layout, columns and the offset convention are documented in `docs/lake.md`.

pub mod schema;
mod table;

#[cfg(test)]
mod tests;

pub use schema::{events_batch, sessions_batch};
pub use table::{Lake, OptimizeSummary, ROW_GROUP_ROWS, TableKind, ZSTD_LEVEL, writer_properties};
