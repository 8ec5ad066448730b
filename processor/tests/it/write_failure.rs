//! A lake that cannot be written, through the real consumer loop: while a table's day
//! partition is blocked, nothing of the flush is visible (no rows, no positions, no
//! data file referenced by the log), Kafka's committed offsets stay where they were and
//! the processor keeps retrying; once storage works again every event is in the lake
//! exactly once, with its sessions. Also: `events` committed but `sessions` blocked,
//! recovered by the retry and, past the retry budget, by a restart.
//!
//! The failed attempts are counted from the processor's log, so these tests run one at
//! a time (`SERIAL`). Each waits for three failures before storage is repaired; the
//! tests that expect the processor to keep retrying give it a retry budget no slow
//! machine exhausts, the one that expects it to give up a small one.

use std::path::Path;
use std::time::Duration;

use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use spur_lake::positions::processor_app_id as app_id;
use spur_lake::{Lake, TableKind};
use spur_processor::Config;
use spur_schemas::record::{EventRecord, Payload};

use crate::common::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The day of `T0`, where `history` puts its events.
const DAY1: &str = "2025-11-29";
/// A retry budget the tests outlast: the backoff reaches 15 s after 5 retries.
const KEEP_RETRYING: u32 = 1000;

/// The next day: minute 1014 after `T0` is 00:00:40 on it.
const DAY2: &str = "2025-11-30";

/// The table positions (`txn` versions: last Kafka offset written) per partition.
async fn positions(env: &Env, lake: &str, table: &str) -> Vec<Option<i64>> {
    let kind = match table {
        "events" => TableKind::Events,
        _ => TableKind::Sessions,
    };
    let lake = Lake::open(lake).await.expect("lake");
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        let app = app_id(table, &env.kafka.topics.events, p);
        out.push(lake.txn_version(kind, &app).await.expect("txn version"));
    }
    out
}

/// Positions that cover everything up to `end` (end offsets per partition).
fn last_offsets(end: &[i64]) -> Vec<Option<i64>> {
    end.iter().map(|&e| (e > 0).then(|| e - 1)).collect()
}

/// Kafka committed offsets that cover everything up to `end`.
fn covering(end: &[i64]) -> Vec<Option<i64>> {
    end.iter().map(|&e| (e > 0).then_some(e)).collect()
}

/// Every data file the table's Delta log references exists, has the size the log
/// records and reads back whole (as many rows as its statistics say). Returns the rows
/// read. Files on disk that the log does not reference (from failed appends) are not
/// part of the table and are not read.
async fn read_back(lake: &str, kind: TableKind) -> i64 {
    let opened = Lake::open(lake).await.expect("lake");
    let table_dir = Path::new(lake).join(kind.name());
    let mut total = 0;
    let snapshot = opened.table(kind).snapshot().expect("snapshot");
    for file in snapshot.log_data().iter() {
        let path = table_dir.join(file.path().as_ref());
        let len = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{} is in the log: {e}", path.display()))
            .len();
        assert_eq!(len as i64, file.size(), "size of {}", path.display());
        let reader = ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&path).expect("open data file"),
        )
        .and_then(|b| b.build())
        .unwrap_or_else(|e| panic!("{} does not read: {e}", path.display()));
        let rows: usize = reader.map(|b| b.expect("record batch").num_rows()).sum();
        let stats: serde_json::Value =
            serde_json::from_str(&file.stats().expect("stats")).expect("stats json");
        assert_eq!(stats["numRecords"], rows, "rows of {}", path.display());
        total += rows as i64;
    }
    total
}

/// Waits until the processors have logged `n` more failed commits than `before`,
/// checking that this one is still running.
async fn wait_for_failures(run: &Running, before: usize, n: usize) {
    eventually(&format!("{n} commits failed"), || {
        assert!(
            run.is_running(),
            "the processor exited on a transient error"
        );
        async move { failed_commits() >= before + n }
    })
    .await;
}

/// For each visitor of `history(visitors, _)`: a pageview just after midnight (`DAY2`),
/// one ten minutes before it (`DAY1`, late) and one after it. All first pageviews are
/// produced first, so every partition's first record of these falls on `DAY2`: any
/// flush holding some of them has a row for `DAY2`, and none can commit only the
/// `DAY1` rows. They all join one session per visitor, which stays open.
fn next_day(visitors: usize) -> Vec<EventRecord> {
    let mut out = Vec::new();
    for (i, minute) in [1020, 1010, 1030].into_iter().enumerate() {
        for v in 0..visitors {
            out.push(record(
                &format!("next-{v:04}-{i}"),
                &format!("visitor-{v:04}"),
                minute,
                Payload::Pageview,
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_events_partition_commits_nothing_until_storage_recovers() {
    let _serial = SERIAL.lock().await;
    let env = Env::new();
    let visitors = 9;
    let config = Config {
        commit_retries: KEEP_RETRYING,
        ..env.config("lake", "g1")
    };
    let lake = config.lake.clone();
    let group = config.group_id.clone();
    drop(Lake::open(&lake).await.expect("lake"));
    let run = env.start(config);

    // A first day goes through: rows, positions and Kafka offsets at its end.
    let first = history(visitors, 6);
    env.produce(&first).await;
    let first_end = env.end_offsets();
    eventually("the first day is committed", || async {
        count(&lake, "SELECT count(*) FROM events").await == first.len() as i64
            && env.committed(&group) == covering(&first_end)
    })
    .await;
    let sessions_before = count(&lake, "SELECT count(*) FROM sessions").await;
    assert_eq!(sessions_before, visitors as i64, "first halves closed");

    // The next day cannot be written.
    let blocker = Blocker::install(&Path::new(&lake).join("events"), DAY2);
    let failures = failed_commits();
    let second = next_day(visitors);
    env.produce(&second).await;
    wait_for_failures(&run, failures, 3).await;

    // Nothing of the failed flushes is visible, and nothing moved.
    assert_eq!(
        count(&lake, "SELECT count(*) FROM events").await,
        first.len() as i64
    );
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM events WHERE event_id LIKE 'next-%'"
        )
        .await,
        0
    );
    assert_eq!(
        read_back(&lake, TableKind::Events).await,
        first.len() as i64
    );
    assert_eq!(
        positions(&env, &lake, "events").await,
        last_offsets(&first_end)
    );
    assert_eq!(
        positions(&env, &lake, "sessions").await,
        last_offsets(&first_end),
        "sessions are not committed before events"
    );
    assert_eq!(
        count(&lake, "SELECT count(*) FROM sessions").await,
        sessions_before
    );
    assert_eq!(env.committed(&group), covering(&first_end));
    assert!(run.is_running(), "the processor keeps retrying");

    // Storage works again: the retry completes the batch, and the rest follows.
    drop(blocker);
    let all = first.len() + second.len();
    let end = env.end_offsets();
    eventually("everything is committed", || async {
        count(&lake, "SELECT count(*) FROM events").await == all as i64
            && env.committed(&group) == covering(&end)
    })
    .await;
    assert_eq!(
        count(&lake, "SELECT count(DISTINCT event_id) FROM events").await,
        all as i64
    );
    assert_eq!(
        count(
            &lake,
            &format!("SELECT count(*) FROM events WHERE dt = '{DAY2}'")
        )
        .await,
        2 * visitors as i64
    );
    assert_eq!(read_back(&lake, TableKind::Events).await, all as i64);
    assert_eq!(positions(&env, &lake, "events").await, last_offsets(&end));
    assert_eq!(positions(&env, &lake, "sessions").await, last_offsets(&end));
    // Both sessions of the first day are closed; the next day's are still open.
    assert_eq!(
        count(&lake, "SELECT count(*) FROM sessions").await,
        2 * visitors as i64
    );
    assert_eq!(
        count(&lake, "SELECT sum(events) FROM sessions").await,
        first.len() as i64
    );
    run.stop().await.expect("processor ran cleanly");
}

/// `history(9, 6)` processed in one flush whose `events` commit succeeds and whose
/// `sessions` commit (the first halves, closed on `DAY1`) cannot be written.
struct SessionsBlocked {
    env: Env,
    config: Config,
    records: Vec<EventRecord>,
    visitors: usize,
}

async fn start_with_sessions_blocked(commit_retries: u32) -> (SessionsBlocked, Blocker, Running) {
    let env = Env::new();
    let visitors = 9;
    let records = history(visitors, 6);
    let config = Config {
        // One flush, once everything is read.
        flush_max_events: records.len(),
        flush_interval: Duration::from_secs(3600),
        commit_retries,
        ..env.config("lake", "g1")
    };
    drop(Lake::open(&config.lake).await.expect("lake"));
    let blocker = Blocker::install(&Path::new(&config.lake).join("sessions"), DAY1);
    env.produce(&records).await;
    let run = env.start(config.clone());
    let t = SessionsBlocked {
        env,
        config,
        records,
        visitors,
    };
    (t, blocker, run)
}

impl SessionsBlocked {
    /// `events` holds every record; `sessions`, its positions and Kafka nothing.
    async fn assert_only_events_committed(&self) {
        let (lake, n) = (&self.config.lake, self.records.len() as i64);
        let end = self.env.end_offsets();
        assert_eq!(count(lake, "SELECT count(*) FROM events").await, n);
        assert_eq!(
            count(lake, "SELECT count(DISTINCT event_id) FROM events").await,
            n
        );
        assert_eq!(read_back(lake, TableKind::Events).await, n);
        assert_eq!(
            positions(&self.env, lake, "events").await,
            last_offsets(&end)
        );
        assert_eq!(count(lake, "SELECT count(*) FROM sessions").await, 0);
        assert_eq!(read_back(lake, TableKind::Sessions).await, 0);
        let nothing = vec![None; PARTITIONS as usize];
        assert_eq!(positions(&self.env, lake, "sessions").await, nothing);
        assert_eq!(self.env.committed(&self.config.group_id), nothing);
    }

    async fn sessions_and_offsets_committed(&self) -> bool {
        count(&self.config.lake, "SELECT count(*) FROM sessions").await == self.visitors as i64
            && self.env.committed(&self.config.group_id) == covering(&self.env.end_offsets())
    }

    /// Every event once, the first halves as sessions, positions and Kafka at the end.
    async fn assert_complete(&self) {
        let (lake, n) = (&self.config.lake, self.records.len() as i64);
        let end = self.env.end_offsets();
        assert_eq!(count(lake, "SELECT count(*) FROM events").await, n);
        assert_eq!(
            count(lake, "SELECT count(DISTINCT event_id) FROM events").await,
            n
        );
        assert_eq!(read_back(lake, TableKind::Events).await, n);
        assert_eq!(
            count(lake, "SELECT count(*) FROM sessions").await,
            self.visitors as i64
        );
        assert_eq!(
            count(lake, "SELECT sum(events) FROM sessions").await,
            n / 2,
            "the first half of every visitor's events"
        );
        assert_eq!(
            read_back(lake, TableKind::Sessions).await,
            self.visitors as i64
        );
        for table in ["events", "sessions"] {
            assert_eq!(
                positions(&self.env, lake, table).await,
                last_offsets(&end),
                "{table}"
            );
        }
        assert_eq!(self.env.committed(&self.config.group_id), covering(&end));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_sessions_commit_is_retried_without_writing_events_twice() {
    let _serial = SERIAL.lock().await;
    let failures = failed_commits();
    let (t, blocker, run) = start_with_sessions_blocked(KEEP_RETRYING).await;
    wait_for_failures(&run, failures, 3).await;
    t.assert_only_events_committed().await;
    assert!(run.is_running(), "the processor keeps retrying");

    drop(blocker);
    eventually("sessions and offsets are committed", || {
        t.sessions_and_offsets_committed()
    })
    .await;
    t.assert_complete().await;
    run.stop().await.expect("processor ran cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_blocked_past_the_retry_budget_are_completed_by_a_restart() {
    let _serial = SERIAL.lock().await;
    let failures = failed_commits();
    let (t, blocker, run) = start_with_sessions_blocked(3).await;
    let exited = run.exited().await;
    assert!(
        matches!(exited, Err(spur_processor::Error::Lake(_))),
        "{exited:?}"
    );
    assert_eq!(
        failed_commits() - failures,
        3,
        "three retries, then the fourth failure is fatal"
    );
    t.assert_only_events_committed().await;

    // The restart replays from the lake: `events` is ahead, so its records only
    // rebuild the sessions.
    drop(blocker);
    let run = t.env.start(t.env.config("lake", &t.config.group_id));
    eventually("sessions and offsets are committed", || {
        assert!(run.is_running(), "the restarted processor exited");
        t.sessions_and_offsets_committed()
    })
    .await;
    t.assert_complete().await;
    run.stop().await.expect("processor ran cleanly");
}
