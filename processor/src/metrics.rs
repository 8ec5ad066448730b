//! The processor's metrics (names `spur_processor_*`), recorded on the consumer thread
//! into the instance's recorder and served on `/metrics`. Labels are low cardinality:
//! table, outcome, reason code, partition number.

use std::time::Duration;

/// Records read from Kafka, by `outcome`: `row` (new event), `duplicate` (an event id
/// already processed: a client retry), `dead_letter` (undecodable), `replayed`
/// (re-read after a restart or rebalance, already in the lake).
pub const RECORDS: &str = "spur_processor_records_total";
/// Rows committed to a lake table, by `table`.
pub const ROWS_WRITTEN: &str = "spur_processor_rows_written_total";
/// Parquet files added to a lake table, by `table`.
pub const FILES_WRITTEN: &str = "spur_processor_files_written_total";
/// Delta commits that failed (each is retried), by `table`.
pub const COMMIT_FAILURES: &str = "spur_processor_commit_failures_total";
/// Records sent to the dead-letter topic, by `reason`.
pub const DEAD_LETTERED: &str = "spur_processor_dead_lettered_total";
/// Time of one flush: dead letters, both Delta commits and the Kafka offset commit.
pub const FLUSH_DURATION: &str = "spur_processor_flush_duration_seconds";
/// Records in a partition not yet in the lake (high watermark − lake position), by
/// `partition`.
pub const LAG: &str = "spur_processor_lag_records";
/// Partitions this processor owns.
pub const PARTITIONS: &str = "spur_processor_partitions_assigned";
/// Sessions held open in memory.
pub const OPEN_SESSIONS: &str = "spur_processor_open_sessions";

pub fn describe() {
    metrics::describe_counter!(RECORDS, "Records read from Kafka, by outcome.");
    metrics::describe_counter!(ROWS_WRITTEN, "Rows committed to a lake table.");
    metrics::describe_counter!(FILES_WRITTEN, "Parquet files added to a lake table.");
    metrics::describe_counter!(COMMIT_FAILURES, "Failed (retried) Delta commits.");
    metrics::describe_counter!(DEAD_LETTERED, "Records sent to the dead-letter topic.");
    metrics::describe_histogram!(
        FLUSH_DURATION,
        metrics::Unit::Seconds,
        "Duration of a flush (dead letters, Delta commits, offset commit)."
    );
    metrics::describe_gauge!(LAG, "Records in a partition not yet in the lake.");
    metrics::describe_gauge!(PARTITIONS, "Partitions this processor owns.");
    metrics::describe_gauge!(OPEN_SESSIONS, "Sessions held open in memory.");
}

pub fn record(outcome: &'static str) {
    metrics::counter!(RECORDS, "outcome" => outcome).increment(1);
}

pub fn flushed(elapsed: Duration) {
    metrics::histogram!(FLUSH_DURATION).record(elapsed.as_secs_f64());
}
