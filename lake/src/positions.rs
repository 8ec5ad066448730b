//! Positions in the events topic, kept in the lake: every writer that follows Kafka
//! records, in the same Delta commit as its output, the last offset it covered per
//! partition as a `txn` action (`app id → version`). These are the app ids, in one
//! place, and the SQL that finds the events past a set of positions.
//!
//! | writer | table | app id |
//! |---|---|---|
//! | processor | `events`, `sessions` | `spur-processor-<table>-<topic>-<partition>` (also `watermark`, `evicted`) |
//! | segment engine | `segment_changes` | `spur-segments-events-<partition>` |
//! | ledger follower | `ledger` | `spur-ledger-events-<partition>`, and `spur-ledger-head` (last seq) |

use std::collections::BTreeMap;

use datafusion::prelude::SessionContext;

use crate::error::Result;
use crate::read::{collect, int32s, int64s};

/// The processor's position of `table` (or its `watermark`/`evicted` marks) in one
/// partition of `topic`.
pub fn processor_app_id(table: &str, topic: &str, partition: i32) -> String {
    format!("spur-processor-{table}-{topic}-{partition}")
}

/// The segment engine's position in one partition of the events topic.
pub fn segments_app_id(partition: i32) -> String {
    format!("spur-segments-events-{partition}")
}

/// The ledger follower's position in one partition of the events topic.
pub fn ledger_app_id(partition: i32) -> String {
    format!("spur-ledger-events-{partition}")
}

/// The segment engine's position in the ledger (last seq it considered): grants after
/// it may need a confirmation request, and their subjects an evaluation.
pub const SEGMENTS_LEDGER_APP_ID: &str = "spur-segments-ledger";

/// The ledger chain's head (last seq): one writer at a time.
pub const LEDGER_HEAD_APP_ID: &str = "spur-ledger-head";

/// SQL condition on `events`: rows past `positions` (last offset per partition).
/// Written as a disjunction of ranges, which the file statistics of `kafka_partition`
/// and `kafka_offset` can prune (data files written before the positions are not
/// read).
pub fn past_positions(positions: &BTreeMap<i32, i64>) -> String {
    if positions.is_empty() {
        return "true".to_owned();
    }
    let mut parts: Vec<String> = positions
        .iter()
        .map(|(partition, offset)| {
            format!("(kafka_partition = {partition} AND kafka_offset > {offset})")
        })
        .collect();
    // Partitions without a position, as ranges around the known ones: a `NOT IN`
    // list cannot be checked against file statistics, and one term that cannot
    // makes the whole disjunction read every file (measured: 10 s instead of 1 s on
    // 10M events).
    let known: Vec<i32> = positions.keys().copied().collect();
    if let (Some(first), Some(last)) = (known.first(), known.last()) {
        parts.push(format!("kafka_partition < {first}"));
        for pair in known.windows(2) {
            if pair[1] > pair[0] + 1 {
                parts.push(format!(
                    "(kafka_partition > {} AND kafka_partition < {})",
                    pair[0], pair[1]
                ));
            }
        }
        parts.push(format!("kafka_partition > {last}"));
    }
    format!("({})", parts.join(" OR "))
}

/// Per partition, the last offset among the events matching the condition
/// `new_rows`, and how many events matched.
pub async fn new_positions(
    ctx: &SessionContext,
    new_rows: &str,
) -> Result<(BTreeMap<i32, i64>, u64)> {
    let mut marks = BTreeMap::new();
    let mut events = 0u64;
    for batch in &collect(
        ctx,
        &format!(
            "SELECT kafka_partition AS p, max(kafka_offset) AS last, count(*) AS n
             FROM events WHERE {new_rows} GROUP BY kafka_partition"
        ),
    )
    .await?
    {
        let last = int64s(batch, "last")?;
        let count = int64s(batch, "n")?;
        for (i, partition) in int32s(batch, "p")?.into_iter().enumerate() {
            if let Some(partition) = partition {
                marks.insert(partition, last[i]);
                events += u64::try_from(count[i]).unwrap_or(0);
            }
        }
    }
    Ok((marks, events))
}

/// The partitions of the events topic the lake has seen.
pub async fn event_partitions(ctx: &SessionContext) -> Result<Vec<i32>> {
    let mut out = Vec::new();
    for batch in &collect(ctx, "SELECT DISTINCT kafka_partition AS p FROM events").await? {
        out.extend(int32s(batch, "p")?.into_iter().flatten());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_positions_reads_every_partition() {
        assert_eq!(past_positions(&BTreeMap::new()), "true");
        let marks = BTreeMap::from([(0, 41), (3, 7)]);
        assert_eq!(
            past_positions(&marks),
            "((kafka_partition = 0 AND kafka_offset > 41) OR \
             (kafka_partition = 3 AND kafka_offset > 7) OR kafka_partition < 0 OR \
             (kafka_partition > 0 AND kafka_partition < 3) OR kafka_partition > 3)"
        );
        // Rows past the marks, and every row of a partition without one.
        let ctx = SessionContext::new();
        let rows = collect(
            &ctx,
            &format!(
                "SELECT kafka_partition * 100 + kafka_offset AS n FROM (VALUES \
                 (0, 41), (0, 42), (1, 0), (3, 7), (3, 8), (5, 0)) AS t(kafka_partition, kafka_offset) \
                 WHERE {} ORDER BY n",
                past_positions(&marks)
            ),
        )
        .await
        .expect("query");
        assert_eq!(int64s(&rows[0], "n").expect("n"), [42, 100, 308, 500]);
        assert_eq!(
            processor_app_id("events", "t", 2),
            "spur-processor-events-t-2"
        );
    }
}
