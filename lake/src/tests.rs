//! Tests of [`Lake`] against real Delta tables in temporary directories: creation,
//! appends read back through SQL and through the bare Parquet files, transaction
//! versions, compression, compaction, and what a failed append leaves behind.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use datafusion::arrow::array::{Array, Int64Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
use tempfile::TempDir;

use crate::dwell::{PageEvent, pageview_dwell};
use crate::model::EventRow;
use crate::schema::fixtures::{event, session};
use crate::*;

const DAY0: &str = "2025-11-29";
const DAY1: &str = "2025-11-30";

fn root(dir: &TempDir) -> Result<String> {
    dir.path()
        .to_str()
        .map(str::to_owned)
        .context("temporary directory path is not UTF-8")
}

fn events(day: i64, count: i64) -> Vec<EventRow> {
    (0..count).map(|n| event(day, n)).collect()
}

async fn query(lake: &Lake, sql: &str) -> Result<Vec<RecordBatch>> {
    let ctx = lake.session_context().await?;
    Ok(ctx.sql(sql).await?.collect().await?)
}

/// The single Int64 value a `SELECT COUNT(*) ...` returns.
async fn count(lake: &Lake, sql: &str) -> Result<i64> {
    let batches = query(lake, sql).await?;
    let batch = batches.first().context("no result batch")?;
    let column = batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .context("count is not Int64")?;
    ensure!(column.len() == 1, "expected one row, got {}", column.len());
    Ok(column.value(0))
}

/// Every row of the first column, as text (whatever its Arrow type, dictionary-encoded
/// partition values included); `None` for nulls.
async fn strings(lake: &Lake, sql: &str) -> Result<Vec<Option<String>>> {
    let mut out = Vec::new();
    for batch in query(lake, sql).await? {
        let text = cast(batch.column(0), &DataType::Utf8)?;
        let text = text
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .context("cast to Utf8")?;
        out.extend(text.iter().map(|v| v.map(str::to_owned)));
    }
    Ok(out)
}

/// The Parquet files under a table directory, `_delta_log` excluded, sorted.
fn data_files(table_dir: &Path) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.file_name().is_some_and(|n| n == "_delta_log") {
                continue;
            }
            if path.is_dir() {
                walk(&path, out)?;
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(table_dir, &mut out)?;
    out.sort();
    Ok(out)
}

fn commit_file(table_dir: &Path, version: i64) -> PathBuf {
    table_dir
        .join("_delta_log")
        .join(format!("{version:020}.json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_creates_every_table_partitioned_by_dt_and_reopens_them() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let lake = Lake::open(&root(&dir)?).await?;
    for kind in TableKind::ALL {
        let table_dir = dir.path().join(kind.name());
        assert!(commit_file(&table_dir, 0).is_file(), "{kind}: no version 0");
        assert_eq!(lake.version(kind)?, 0);
        let url = lake.table(kind).table_url().to_string();
        assert!(
            url.trim_end_matches('/').ends_with(&format!("/{kind}")),
            "{kind} is backed by {url}"
        );
        let snapshot = lake.table(kind).snapshot()?;
        let metadata = snapshot.metadata();
        assert_eq!(metadata.partition_columns(), ["dt"]);
        assert_eq!(
            metadata.configuration().get("delta.appendOnly"),
            Some(&"false".to_owned())
        );
        let columns: Vec<String> = snapshot
            .schema()
            .fields()
            .map(|f| f.name().to_owned())
            .collect();
        assert_eq!(columns.len(), kind.schema().fields().len());
    }
    drop(lake);

    // A second open loads the tables instead of creating them again.
    let again = Lake::open(&root(&dir)?).await?;
    for kind in TableKind::ALL {
        assert_eq!(again.version(kind)?, 0);
        assert!(!commit_file(&dir.path().join(kind.name()), 1).exists());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_urls_and_plain_paths_name_the_same_tables() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("file://{}/", root(&dir)?);
    let mut by_url = Lake::open(&url).await?;
    by_url
        .append(TableKind::Events, events_batch(&events(0, 2))?, &[])
        .await?;

    let by_path = Lake::open(&format!("{}/", root(&dir)?)).await?;
    assert_eq!(by_path.version(TableKind::Events)?, 1);
    assert_eq!(count(&by_path, "SELECT COUNT(*) FROM events").await?, 2);

    assert!(matches!(Lake::open("").await, Err(crate::Error::Config(_))));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_rows_read_back_through_sql() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut lake = Lake::open(&root(&dir)?).await?;

    // One batch spanning two days: one commit, one file per partition.
    let mut rows = events(0, 5);
    rows.extend(events(1, 3));
    let version = lake
        .append(TableKind::Events, events_batch(&rows)?, &[])
        .await?;
    assert_eq!(version, 1);
    let sessions = [session(0, 0), session(0, 1), session(1, 2)];
    lake.append(TableKind::Sessions, sessions_batch(&sessions)?, &[])
        .await?;

    assert_eq!(count(&lake, "SELECT COUNT(*) FROM events").await?, 8);
    assert_eq!(count(&lake, "SELECT COUNT(*) FROM sessions").await?, 3);
    assert_eq!(
        count(
            &lake,
            &format!("SELECT COUNT(*) FROM events WHERE dt = '{DAY1}'")
        )
        .await?,
        3
    );
    assert_eq!(
        count(
            &lake,
            &format!("SELECT COUNT(*) FROM sessions WHERE dt = '{DAY0}'")
        )
        .await?,
        2
    );

    // Field values survive the round trip, times as UTC microseconds.
    let one = "FROM events WHERE event_id = 'ev-0-2'";
    assert_eq!(
        strings(&lake, &format!("SELECT event_type {one}")).await?,
        [Some("identify".to_owned())]
    );
    assert_eq!(
        strings(&lake, &format!("SELECT email_hash {one}")).await?,
        [Some(format!("{:064x}", 0xe0 + 2))]
    );
    assert_eq!(
        strings(&lake, &format!("SELECT event_time {one}")).await?,
        [Some("2025-11-29T12:00:00.002Z".to_owned())]
    );
    assert_eq!(
        strings(&lake, &format!("SELECT dt {one}")).await?,
        [Some(DAY0.to_owned())]
    );
    assert_eq!(
        strings(&lake, &format!("SELECT array_element(topics, 2) {one}")).await?,
        [Some("sale".to_owned())]
    );
    assert_eq!(
        strings(
            &lake,
            "SELECT region FROM events WHERE event_id IN ('ev-1-0', 'ev-1-1') ORDER BY event_id"
        )
        .await?,
        [Some("BE".to_owned()), None]
    );
    assert_eq!(
        count(
            &lake,
            "SELECT COUNT(*) FROM events WHERE cardinality(topics) = 0 AND email_hash IS NULL"
        )
        .await?,
        3 // ev-0-1, ev-0-3, ev-1-1
    );
    assert_eq!(
        strings(
            &lake,
            "SELECT closed_by || ':' || CAST(duration_ms AS VARCHAR) FROM sessions \
             WHERE exit_path IS NULL"
        )
        .await?,
        [Some("inactivity:90000".to_owned())]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dt_filter_prunes_other_partitions() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut lake = Lake::open(&root(&dir)?).await?;
    let mut rows = events(0, 5);
    rows.extend(events(1, 3));
    lake.append(TableKind::Events, events_batch(&rows)?, &[])
        .await?;

    // Take day 1's files away behind Delta's back: a query that prunes that partition
    // never opens them, a query that does not prune fails.
    let day1_dir = dir.path().join("events").join(format!("dt={DAY1}"));
    for file in data_files(&day1_dir)? {
        fs::remove_file(file)?;
    }
    let pruned = strings(
        &lake,
        &format!("SELECT event_id FROM events WHERE dt = '{DAY0}' ORDER BY event_id"),
    )
    .await?;
    assert_eq!(pruned.len(), 5);
    assert!(
        strings(&lake, "SELECT event_id FROM events").await.is_err(),
        "an unpruned scan must hit the missing files"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_versions_of_one_commit_survive_reopen() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = root(&dir)?;
    let a = "spur-processor-events-spur.events.v1-0".to_owned();
    let b = "spur-processor-events-spur.events.v1-1".to_owned();

    let mut lake = Lake::open(&root).await?;
    let version = lake
        .append(
            TableKind::Events,
            events_batch(&events(0, 4))?,
            &[(a.clone(), 41), (b.clone(), 7)],
        )
        .await?;
    assert_eq!(version, 1);

    // The one commit holds the data files and both txn actions.
    let log = fs::read_to_string(commit_file(&dir.path().join("events"), 1))?;
    let actions: Vec<serde_json::Value> = log
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let mut txns: Vec<(String, i64)> = actions
        .iter()
        .filter_map(|action| action.get("txn"))
        .map(|txn| {
            (
                txn["appId"].as_str().unwrap_or_default().to_owned(),
                txn["version"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    txns.sort();
    assert_eq!(txns, [(a.clone(), 41), (b.clone(), 7)]);
    assert!(actions.iter().any(|action| action.get("add").is_some()));
    drop(lake);

    let mut reopened = Lake::open(&root).await?;
    assert_eq!(reopened.txn_version(TableKind::Events, &a).await?, Some(41));
    assert_eq!(reopened.txn_version(TableKind::Events, &b).await?, Some(7));
    assert_eq!(reopened.txn_version(TableKind::Sessions, &a).await?, None);
    assert_eq!(
        reopened
            .txn_version(TableKind::Events, "someone-else")
            .await?,
        None
    );

    // A later commit moves one source on; the other keeps its version.
    reopened
        .append(
            TableKind::Events,
            events_batch(&events(1, 2))?,
            &[(a.clone(), 50)],
        )
        .await?;
    assert_eq!(reopened.txn_version(TableKind::Events, &a).await?, Some(50));
    assert_eq!(reopened.txn_version(TableKind::Events, &b).await?, Some(7));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_version_sees_another_writers_commits() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut reader = Lake::open(&root(&dir)?).await?;
    let mut writer = Lake::open(&root(&dir)?).await?;
    let app = "spur-processor-sessions-spur.events.v1-3".to_owned();

    writer
        .append(
            TableKind::Sessions,
            sessions_batch(&[session(0, 0)])?,
            &[(app.clone(), 12)],
        )
        .await?;
    assert_eq!(
        reader.txn_version(TableKind::Sessions, &app).await?,
        Some(12)
    );

    // The SQL view is the loaded one until a refresh.
    assert_eq!(reader.version(TableKind::Sessions)?, 0);
    reader.refresh().await?;
    assert_eq!(reader.version(TableKind::Sessions)?, 1);
    assert_eq!(count(&reader, "SELECT COUNT(*) FROM sessions").await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_of_one_app_id_conflict() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut first = Lake::open(&root(&dir)?).await?;
    let mut second = Lake::open(&root(&dir)?).await?;
    let shared = "spur-processor-events-spur.events.v1-0".to_owned();
    let other = "spur-processor-events-spur.events.v1-1".to_owned();

    first
        .append(
            TableKind::Events,
            events_batch(&events(0, 2))?,
            &[(shared.clone(), 1)],
        )
        .await?;
    // `second` still holds version 0: its commit for the same source loses.
    let lost = second
        .append(
            TableKind::Events,
            events_batch(&events(1, 2))?,
            &[(shared.clone(), 9)],
        )
        .await;
    assert!(matches!(lost, Err(crate::Error::Delta(_))), "{lost:?}");
    // Another source commits on top of the winner without trouble.
    let version = second
        .append(
            TableKind::Events,
            events_batch(&events(1, 2))?,
            &[(other.clone(), 3)],
        )
        .await?;
    assert_eq!(version, 2);
    assert_eq!(
        second.txn_version(TableKind::Events, &shared).await?,
        Some(1)
    );
    assert_eq!(
        second.txn_version(TableKind::Events, &other).await?,
        Some(3)
    );
    assert_eq!(count(&second, "SELECT COUNT(*) FROM events").await?, 4);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_files_are_zstd_parquet() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut lake = Lake::open(&root(&dir)?).await?;
    lake.append(TableKind::Events, events_batch(&events(0, 6))?, &[])
        .await?;
    lake.append(TableKind::Sessions, sessions_batch(&[session(0, 0)])?, &[])
        .await?;

    assert_eq!(
        writer_properties().max_row_group_row_count(),
        Some(ROW_GROUP_ROWS)
    );
    for kind in [TableKind::Events, TableKind::Sessions] {
        let files = data_files(&dir.path().join(kind.name()))?;
        assert_eq!(files.len(), 1, "{kind}: {files:?}");
        assert_eq!(lake.table(kind).get_file_uris()?.count(), files.len());
        for file in files {
            let name = file.to_string_lossy();
            assert!(name.ends_with(".zstd.parquet"), "{name}");
            assert!(name.contains(&format!("/dt={DAY0}/")), "{name}");
            let reader = SerializedFileReader::new(fs::File::open(&file)?)?;
            let metadata = reader.metadata();
            assert!(metadata.num_row_groups() >= 1);
            for group in metadata.row_groups() {
                assert!(group.num_rows() as usize <= ROW_GROUP_ROWS);
                for column in group.columns() {
                    assert!(
                        matches!(column.compression(), Compression::ZSTD(_)),
                        "{name}: column {} is {:?}",
                        column.column_path(),
                        column.compression()
                    );
                }
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_files_are_readable_without_delta() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut lake = Lake::open(&root(&dir)?).await?;
    let day0 = events(0, 5);
    let day1 = events(1, 3);
    lake.append(TableKind::Events, events_batch(&day0)?, &[])
        .await?;
    lake.append(TableKind::Events, events_batch(&day1)?, &[])
        .await?;

    // Plain Parquet, no Delta log involved: every row is there once.
    let mut rows = 0;
    let mut ids = BTreeSet::new();
    let files = data_files(&dir.path().join("events"))?;
    assert_eq!(files.len(), 2);
    for file in &files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(file)?)?.build()?;
        for batch in reader {
            let batch = batch?;
            rows += batch.num_rows();
            // The partition value lives in the directory name, not in the file.
            assert!(batch.column_by_name("dt").is_none());
            let id = cast(
                batch.column_by_name("event_id").context("event_id")?,
                &DataType::Utf8,
            )?;
            let id = id
                .as_any()
                .downcast_ref::<datafusion::arrow::array::StringArray>()
                .context("event_id as Utf8")?;
            ids.extend(id.iter().flatten().map(str::to_owned));
        }
    }
    assert_eq!(rows, 8);
    let expected: BTreeSet<String> = day0
        .iter()
        .chain(&day1)
        .map(|e| e.event_id.clone())
        .collect();
    assert_eq!(ids, expected);
    Ok(())
}

/// Makes writes into a new partition of a table fail: the table directory becomes
/// read-only or, when permissions do not bind (running as root), a regular file takes
/// the partition directory's name. Undone on drop.
#[cfg(unix)]
struct WriteBlocker {
    table_dir: PathBuf,
    file_in_the_way: Option<PathBuf>,
}

#[cfg(unix)]
impl WriteBlocker {
    fn install(table_dir: &Path, partition: &str) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(table_dir, fs::Permissions::from_mode(0o555))?;
        let probe = table_dir.join("write-probe");
        if fs::write(&probe, b"").is_err() {
            return Ok(WriteBlocker {
                table_dir: table_dir.to_owned(),
                file_in_the_way: None,
            });
        }
        // Permissions are not enforced for this user.
        fs::remove_file(&probe)?;
        fs::set_permissions(table_dir, fs::Permissions::from_mode(0o755))?;
        let in_the_way = table_dir.join(partition);
        fs::write(&in_the_way, b"not a directory")?;
        Ok(WriteBlocker {
            table_dir: table_dir.to_owned(),
            file_in_the_way: Some(in_the_way),
        })
    }
}

#[cfg(unix)]
impl Drop for WriteBlocker {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = fs::set_permissions(&self.table_dir, fs::Permissions::from_mode(0o755));
        if let Some(file) = &self.file_in_the_way {
            let _ = fs::remove_file(file);
        }
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_append_commits_nothing_and_can_be_retried() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = root(&dir)?;
    let table_dir = dir.path().join("events");
    let app = "spur-processor-events-spur.events.v1-0".to_owned();
    let mut lake = Lake::open(&root).await?;
    let before = lake
        .append(
            TableKind::Events,
            events_batch(&events(0, 5))?,
            &[(app.clone(), 4)],
        )
        .await?;

    // Day 1 is a new partition directory, which cannot be made now.
    let blocker = WriteBlocker::install(&table_dir, &format!("dt={DAY1}"))?;
    let retry = events_batch(&events(1, 3))?;
    let failed = lake
        .append(TableKind::Events, retry.clone(), &[(app.clone(), 7)])
        .await;
    assert!(
        matches!(failed, Err(crate::Error::Delta(_))),
        "append into a blocked table: {failed:?}"
    );

    // Nothing of it is visible: not to this handle, not to a new reader.
    assert_eq!(lake.version(TableKind::Events)?, before);
    assert!(!commit_file(&table_dir, before + 1).exists());
    assert_eq!(lake.txn_version(TableKind::Events, &app).await?, Some(4));
    let reader = Lake::open(&root).await?;
    assert_eq!(reader.version(TableKind::Events)?, before);
    assert_eq!(count(&reader, "SELECT COUNT(*) FROM events").await?, 5);
    assert_eq!(reader.txn_version(TableKind::Events, &app).await?, Some(4));

    // Once storage works again, the same append goes through.
    drop(blocker);
    let after = lake
        .append(TableKind::Events, retry, &[(app.clone(), 7)])
        .await?;
    assert_eq!(after, before + 1);
    assert_eq!(count(&lake, "SELECT COUNT(*) FROM events").await?, 8);
    assert_eq!(lake.txn_version(TableKind::Events, &app).await?, Some(7));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_batch_commits_only_the_txns() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut lake = Lake::open(&root(&dir)?).await?;
    let app = "spur-processor-events-spur.events.v1-2".to_owned();
    let version = lake
        .append(TableKind::Events, events_batch(&[])?, &[(app.clone(), 99)])
        .await?;
    assert_eq!(version, 1);
    assert_eq!(lake.txn_version(TableKind::Events, &app).await?, Some(99));
    assert_eq!(count(&lake, "SELECT COUNT(*) FROM events").await?, 0);
    assert!(data_files(&dir.path().join("events"))?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_rejects_a_foreign_schema_and_repeated_app_ids() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut lake = Lake::open(&root(&dir)?).await?;
    let sessions = sessions_batch(&[session(0, 0)])?;
    assert!(lake.append(TableKind::Events, sessions, &[]).await.is_err());
    let twice = [("app".to_owned(), 1), ("app".to_owned(), 2)];
    assert!(
        lake.append(TableKind::Events, events_batch(&events(0, 1))?, &twice)
            .await
            .is_err()
    );
    assert_eq!(lake.version(TableKind::Events)?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_compacts_small_files_and_keeps_rows_and_offsets() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut lake = Lake::open(&root(&dir)?).await?;
    let app = "spur-processor-events-spur.events.v1-0".to_owned();
    for offset in 0..3 {
        let rows: Vec<EventRow> = (0..2).map(|n| event(0, offset * 2 + n)).collect();
        lake.append(
            TableKind::Events,
            events_batch(&rows)?,
            &[(app.clone(), offset * 2 + 1)],
        )
        .await?;
    }
    assert_eq!(lake.table(TableKind::Events).get_file_uris()?.count(), 3);

    let summary = lake.optimize(TableKind::Events).await?;
    assert_eq!(summary.files_removed, 3);
    assert_eq!(summary.files_added, 1);
    assert_eq!(summary.partitions_optimized, 1);
    assert_eq!(summary.version, 4);
    assert_eq!(lake.table(TableKind::Events).get_file_uris()?.count(), 1);
    assert_eq!(count(&lake, "SELECT COUNT(*) FROM events").await?, 6);
    assert_eq!(lake.txn_version(TableKind::Events, &app).await?, Some(5));

    // Compacted files are zstd Parquet too.
    let compacted = lake
        .table(TableKind::Events)
        .get_file_uris()?
        .collect::<Vec<_>>();
    assert!(compacted.iter().all(|uri| uri.ends_with(".zstd.parquet")));

    // Nothing left to do: no new commit.
    let again = lake.optimize(TableKind::Events).await?;
    assert_eq!(again.files_added, 0);
    assert_eq!(again.version, 4);
    Ok(())
}

/// A pageview-or-engagement event of session `session` at `NOON + secs` seconds.
fn view(id: &str, session: &str, secs: i64, path: &str, engaged: Option<(i64, i32)>) -> EventRow {
    let mut row = event(0, 0);
    row.event_id = id.into();
    row.session_id = session.into();
    row.event_time = super::schema::fixtures::NOON + secs * 1000;
    row.path = Some(path.into());
    row.event_type = if engaged.is_some() {
        "engagement"
    } else {
        "pageview"
    }
    .into();
    row.engaged_ms = engaged.map(|(ms, _)| ms);
    row.scroll_pct = engaged.map(|(_, pct)| pct);
    row.email_hash = None;
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pageviews_view_joins_the_dwell_of_closed_sessions() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut lake = Lake::open(&root(&dir)?).await?;
    let rows = vec![
        // Session s1 (closed): /a (engaged 3 s + 2 s, in two parts), /b, back to /a,
        // then /c last.
        view("a1", "s1", 0, "/a", None),
        view("e1", "s1", 5, "/a", Some((3_000, 40))),
        view("e2", "s1", 20, "/a", Some((2_000, 80))),
        view("b1", "s1", 30, "/b", None),
        view("a2", "s1", 90, "/a", None),
        view("e3", "s1", 95, "/a", Some((4_000, 10))),
        view("c1", "s1", 120, "/c", None),
        // Session s2 is still open: no dwell yet.
        view("a9", "s2", 10, "/a", None),
        view("b9", "s2", 70, "/b", None),
    ];
    lake.append(TableKind::Events, events_batch(&rows)?, &[])
        .await?;
    let pages: Vec<PageEvent> = rows[..7].iter().filter_map(PageEvent::of).collect();
    let mut s1 = super::schema::fixtures::session(0, 0);
    s1.session_id = "s1".into();
    s1.pageview_dwell = pageview_dwell(&pages);
    lake.append(TableKind::Sessions, sessions_batch(&[s1])?, &[])
        .await?;
    let got = strings(
        &lake,
        "SELECT event_id || ' ' || COALESCE(CAST(dwell_ms AS VARCHAR), '-') || ' ' || \
         COALESCE(dwell_source, '-') || ' ' || COALESCE(CAST(scroll_pct_max AS VARCHAR), '-') \
         FROM pageviews ORDER BY event_id",
    )
    .await?;
    let want = [
        "a1 5000 engagement 80",
        "a2 4000 engagement 10",
        "a9 - - -",
        "b1 60000 next_pageview -",
        "b9 - - -",
        "c1 - - -",
    ];
    assert_eq!(
        got,
        want.iter()
            .map(|s| Some((*s).to_owned()))
            .collect::<Vec<_>>()
    );
    // Every column of `events` is there too, partition column included.
    assert_eq!(
        count(
            &lake,
            "SELECT COUNT(*) FROM pageviews WHERE dt = '2025-11-29' AND site_id = 'shop'"
        )
        .await?,
        6
    );
    Ok(())
}

fn score_row(subject: &str, topic: &str, score: f64, as_of: i64) -> crate::model::ScoreRow {
    crate::model::ScoreRow {
        subject_id: subject.into(),
        topic: topic.into(),
        score,
        raw: score * 5.0 / (1.0 - score),
        views: 2,
        last_view: as_of - 1_000,
        as_of,
        dt: chrono::DateTime::from_timestamp_millis(as_of)
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_runs_append_one_commit_each_and_the_latest_is_selectable() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut lake = Lake::open(&root(&dir)?).await?;
    let first = crate::schema::fixtures::NOON;
    let second = first + 86_400_000;
    let run = |as_of, score| {
        scores_batch(&[
            score_row("s1", "boots", score, as_of),
            score_row("s2", "boots", score / 2.0, as_of),
        ])
    };
    assert_eq!(
        lake.append(TableKind::Scores, run(first, 0.5)?, &[])
            .await?,
        1
    );
    assert_eq!(
        lake.append(TableKind::Scores, run(second, 0.25)?, &[])
            .await?,
        2
    );
    // Other tables are untouched by score runs.
    assert_eq!(lake.version(TableKind::Events)?, 0);
    assert_eq!(lake.version(TableKind::Sessions)?, 0);

    assert_eq!(count(&lake, "SELECT count(*) FROM scores").await?, 4);
    let latest = strings(
        &lake,
        "SELECT concat(subject_id, ':', CAST(score AS VARCHAR), ':', CAST(dt AS VARCHAR)) FROM scores \
         WHERE as_of = (SELECT max(as_of) FROM scores) ORDER BY subject_id",
    )
    .await?;
    assert_eq!(
        latest,
        [
            Some(format!("s1:0.25:{DAY1}")),
            Some(format!("s2:0.125:{DAY1}"))
        ]
    );
    Ok(())
}

/// A lake written before a column was appended to `events` (here: `redacted`) opens
/// with the column added, old rows reading `NULL`, and takes new rows.
/// Creates table `kind` under `root` as an older version wrote it: without the last
/// column of today's schema, holding `batch` minus that column.
async fn older_table(root: &Path, kind: TableKind, batch: RecordBatch) -> Result<()> {
    use crate::schema::PARTITION_COLUMN;
    use datafusion::arrow::datatypes::Schema;
    use deltalake::kernel::StructType;
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;

    let location = root.join(kind.name());
    fs::create_dir_all(&location)?;
    let full = batch.schema();
    let old_fields = full.fields()[..full.fields().len() - 1].to_vec();
    let old_schema = std::sync::Arc::new(Schema::new(old_fields));
    let kernel: StructType = old_schema.as_ref().try_into_kernel()?;
    let url = deltalake::ensure_table_uri(location.to_str().context("utf-8")?)?;
    let table = deltalake::DeltaTableBuilder::from_url(url)?.build()?;
    let table = table
        .create()
        .with_table_name(kind.name())
        .with_columns(kernel.fields().cloned())
        .with_partition_columns([PARTITION_COLUMN])
        .await?;
    let old_batch = batch.project(&(0..batch.num_columns() - 1).collect::<Vec<_>>())?;
    let old_batch = RecordBatch::try_new(old_schema, old_batch.columns().to_vec())?;
    table.write([old_batch]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_adds_appended_columns_to_older_tables() -> Result<()> {
    let dir = tempfile::tempdir()?;
    older_table(dir.path(), TableKind::Events, events_batch(&events(0, 3))?).await?;
    let old_sessions: Vec<_> = (0..2).map(|n| session(0, n)).collect();
    older_table(
        dir.path(),
        TableKind::Sessions,
        sessions_batch(&old_sessions)?,
    )
    .await?;

    let mut lake = Lake::open(&root(&dir)?).await?;
    for (kind, column) in [
        (TableKind::Events, "redacted"),
        (TableKind::Sessions, "pageview_dwell"),
    ] {
        let columns: Vec<String> = lake
            .table(kind)
            .snapshot()?
            .schema()
            .fields()
            .map(|f| f.name().to_owned())
            .collect();
        assert_eq!(columns.last().map(String::as_str), Some(column));
    }
    lake.append(TableKind::Events, events_batch(&events(1, 2))?, &[])
        .await?;
    lake.append(TableKind::Sessions, sessions_batch(&[session(1, 5)])?, &[])
        .await?;
    let lake = Lake::open(&root(&dir)?).await?;
    for (sql, want) in [
        ("SELECT COUNT(*) FROM events WHERE redacted IS NULL", 3),
        ("SELECT COUNT(*) FROM events WHERE redacted IS NOT NULL", 2),
        (
            "SELECT COUNT(*) FROM sessions WHERE pageview_dwell IS NULL",
            2,
        ),
        (
            "SELECT COUNT(*) FROM sessions WHERE pageview_dwell IS NOT NULL",
            1,
        ),
        // The new session's one dwell entry, through the view's join source.
        (
            &format!("SELECT COUNT(*) FROM ({})", crate::views::DWELL_SQL),
            1,
        ),
    ] {
        assert_eq!(count(&lake, sql).await?, want, "{sql}");
    }
    Ok(())
}
