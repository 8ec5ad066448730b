//! Rebuilding a partition's in-memory state from the lake when it is assigned: where
//! the tables stand, the sessions that were still open, and the recent event ids.
//!
//! The open sessions at the `sessions` table's position are the sessions that have
//! rows in `events` (at or before that offset) but no row in `sessions`. Their events
//! are fed again, in offset order, through a fresh sessioniser, which reproduces the
//! state exactly (session ids are derived from the data). The partition's watermark
//! travels as a `txn` version next to the offsets, which bounds the scan by `dt`.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int32Type, Int64Type};
use spur_lake::positions::processor_app_id;
use spur_lake::{Lake, TableKind};
use spur_schemas::time::date as date_of;

use crate::config::Config;
use crate::error::Result;
use crate::sessions::{Observed, SessionRules, Sessioniser};
use crate::state::{PartitionState, RecentIds};

const DAY_MS: i64 = 86_400_000;
/// Most recent event ids remembered per partition for de-duplication.
const MAX_RECENT_IDS: usize = 2_000_000;

/// Column `i` of `batch` as `to` (strings may come back as views, integers narrower).
fn column(batch: &RecordBatch, i: usize, to: &DataType) -> Result<ArrayRef> {
    Ok(cast(batch.column(i), to)?)
}

pub fn rules(config: &Config) -> SessionRules {
    SessionRules {
        inactivity_ms: config.sessions.inactivity.as_millis() as i64,
        max_duration_ms: config.sessions.max_duration.as_millis() as i64,
    }
}

/// The state of `partition` of `topic` as the lake records it.
pub async fn load(
    lake: &mut Lake,
    config: &Config,
    topic: &str,
    partition: i32,
) -> Result<PartitionState> {
    // Another processor may have written this partition until the rebalance.
    lake.refresh().await?;
    let events_done = lake
        .txn_version(
            TableKind::Events,
            &processor_app_id("events", topic, partition),
        )
        .await?;
    let sessions_done = lake
        .txn_version(
            TableKind::Sessions,
            &processor_app_id("sessions", topic, partition),
        )
        .await?;
    let watermark = lake
        .txn_version(
            TableKind::Sessions,
            &processor_app_id("watermark", topic, partition),
        )
        .await?;
    let evicted_until = lake
        .txn_version(
            TableKind::Sessions,
            &processor_app_id("evicted", topic, partition),
        )
        .await?;
    let window_ms = config.dedupe_window.as_millis() as i64;
    let mut state = PartitionState {
        partition,
        sessions: Sessioniser::new(rules(config), config.sessions.max_open),
        recent: RecentIds::new(window_ms, MAX_RECENT_IDS),
        events_done,
        sessions_done,
        processed: None,
        skip_through: None,
        rows: Vec::new(),
        contacts: Vec::new(),
        closed: Vec::new(),
    };
    state.skip_through = state.resume_from().map(|r| r - 1);
    let (Some(done), Some(watermark)) = (sessions_done, watermark) else {
        // Nothing committed for sessions yet: everything is replayed from the start.
        state.sessions_done = None;
        return Ok(state);
    };
    let rules = rules(config);
    // Open sessions started at most max_duration before their last event, which is
    // at most `inactivity` before the watermark (they were closed otherwise).
    let events_from = date_of(watermark - rules.max_duration_ms - rules.inactivity_ms - DAY_MS);
    let sessions_from =
        date_of(watermark - 2 * rules.max_duration_ms - rules.inactivity_ms - DAY_MS);
    let ctx = lake.session_context().await?;
    let open = ctx
        .sql(&format!(
            "SELECT event_id, site_id, visitor_id, CAST(event_time AS BIGINT) / 1000 AS t, event_type, path, \
                    engaged_ms, is_bot, country, device, session_id, scroll_pct \
             FROM events \
             WHERE kafka_partition = {partition} AND kafka_offset <= {done} AND dt >= '{events_from}' \
               AND session_id NOT IN (SELECT session_id FROM sessions \
                                      WHERE kafka_partition = {partition} AND dt >= '{sessions_from}') \
             ORDER BY kafka_offset"
        ))
        .await?
        .collect()
        .await?;
    let mut mismatches = 0usize;
    for batch in &open {
        let strings: Vec<ArrayRef> = [0, 1, 2, 4, 5, 8, 9, 10]
            .iter()
            .map(|i| column(batch, *i, &DataType::Utf8))
            .collect::<Result<_>>()?;
        let s = |i: usize| strings[i].as_string::<i32>();
        let (ids, sites, visitors, types, paths, countries, devices, sessions) =
            (s(0), s(1), s(2), s(3), s(4), s(5), s(6), s(7));
        let times = column(batch, 3, &DataType::Int64)?;
        let times = times.as_primitive::<Int64Type>();
        let engaged = column(batch, 6, &DataType::Int64)?;
        let engaged = engaged.as_primitive::<Int64Type>();
        let bots = column(batch, 7, &DataType::Boolean)?;
        let bots = bots.as_boolean();
        let scroll = column(batch, 11, &DataType::Int32)?;
        let scroll = scroll.as_primitive::<Int32Type>();
        for i in 0..batch.num_rows() {
            let id = state.sessions.observe(&Observed {
                site_id: sites.value(i),
                visitor_id: visitors.value(i),
                event_id: ids.value(i),
                event_time: times.value(i),
                event_type: types.value(i),
                path: (!paths.is_null(i)).then(|| paths.value(i)),
                engaged_ms: (!engaged.is_null(i)).then(|| engaged.value(i)),
                scroll_pct: (!scroll.is_null(i)).then(|| scroll.value(i)),
                is_bot: bots.value(i),
                country: (!countries.is_null(i)).then(|| countries.value(i)),
                device: devices.value(i),
            });
            if id != sessions.value(i) {
                mismatches += 1;
            }
        }
    }
    if mismatches > 0 {
        tracing::warn!(
            partition,
            mismatches,
            "restored sessions differ from the stored session ids"
        );
    }
    state
        .sessions
        .restore_progress(watermark, evicted_until.unwrap_or(i64::MIN));

    let recent_from = watermark - window_ms;
    let ids = ctx
        .sql(&format!(
            "SELECT event_id, CAST(event_time AS BIGINT) / 1000 AS t FROM events \
             WHERE kafka_partition = {partition} AND kafka_offset <= {done} AND dt >= '{}' \
             ORDER BY kafka_offset",
            date_of(recent_from)
        ))
        .await?
        .collect()
        .await?;
    for batch in &ids {
        let (id, t) = (
            column(batch, 0, &DataType::Utf8)?,
            column(batch, 1, &DataType::Int64)?,
        );
        let (id, t) = (id.as_string::<i32>(), t.as_primitive::<Int64Type>());
        for i in 0..batch.num_rows() {
            if t.value(i) >= recent_from {
                state.recent.insert(id.value(i), t.value(i), watermark);
            }
        }
    }
    tracing::debug!(
        partition,
        open = state.sessions.open_sessions().count(),
        recent = state.recent.len(),
        "partition restored"
    );
    Ok(state)
}
