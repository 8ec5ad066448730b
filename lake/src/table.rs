//! [`Lake`]: the Delta tables under one root, opened (or created) together, and
//! every write and read the processor and the scoring runs do on them.
//!
//! Exactly-once rests on one rule: an [`Lake::append`] is a single Delta commit that
//! holds the data files *and* the `txn` actions recording, per Kafka source, the last
//! offset those files contain. Delta makes the commit atomic (the log entry appears
//! whole or not at all, and data files are invisible until a log entry references
//! them), so after a crash the offsets read back with [`Lake::txn_version`] describe
//! exactly the rows that are in the table.

use std::collections::{HashMap, HashSet};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::SessionContext;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{Action, StructType, Transaction};
use deltalake::operations::optimize::OptimizeType;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use tracing::{debug, info};

use crate::error::{Error, Result};
use crate::schema::{
    PARTITION_COLUMN, audience_state_schema, contacts_schema, erasures_schema, events_schema,
    ledger_schema, scores_schema, segment_changes_schema, sessions_schema,
};

/// Rows per Parquet row group: large enough for good compression and few footer
/// entries, small enough that a reader filtering on statistics skips useful amounts.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// zstd level of data files: level 3 (zstd's own default) compresses these repetitive
/// string columns well at a small CPU cost; higher levels buy little.
pub const ZSTD_LEVEL: i32 = 3;

/// One of the lake's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableKind {
    /// `events`: one row per processed event ([`crate::model::EventRow`]).
    Events,
    /// `sessions`: one row per closed session ([`crate::model::SessionRow`]).
    Sessions,
    /// `scores`: interest scores, one row per subject and topic per scoring run
    /// ([`crate::model::ScoreRow`]). The processor never writes it.
    Scores,
    /// `segment_changes`: every entry into and exit from a segment
    /// ([`crate::model::SegmentChangeRow`]), written by segment evaluation.
    SegmentChanges,
    /// `ledger`: the consent and identity ledger, hash-chained
    /// ([`crate::model::LedgerRow`]), written by the ledger follower and by operator
    /// actions (identity splits).
    Ledger,
    /// `erasures`: erasure requests and their receipts ([`crate::model::ErasureRow`]).
    Erasures,
    /// `contacts`: e-mail addresses, sealed under per-subject data keys kept outside
    /// the lake ([`crate::model::ContactRow`]), written by the processor.
    Contacts,
    /// `audience_state`: the segment engine's per-visitor state checkpoint
    /// ([`crate::model::AudienceStateRow`]), replaced as a whole at each checkpoint.
    AudienceState,
}

impl TableKind {
    pub const ALL: [TableKind; 8] = [
        TableKind::Events,
        TableKind::Sessions,
        TableKind::Scores,
        TableKind::SegmentChanges,
        TableKind::Ledger,
        TableKind::Erasures,
        TableKind::Contacts,
        TableKind::AudienceState,
    ];

    /// Position in [`TableKind::ALL`].
    fn index(self) -> usize {
        self as usize
    }

    /// The table's name: its directory under the lake root and its SQL name.
    pub fn name(self) -> &'static str {
        match self {
            TableKind::Events => "events",
            TableKind::Sessions => "sessions",
            TableKind::Scores => "scores",
            TableKind::SegmentChanges => "segment_changes",
            TableKind::Ledger => "ledger",
            TableKind::Erasures => "erasures",
            TableKind::Contacts => "contacts",
            TableKind::AudienceState => "audience_state",
        }
    }

    /// The Arrow schema of the rows written to the table.
    pub fn schema(self) -> SchemaRef {
        match self {
            TableKind::Events => events_schema(),
            TableKind::Sessions => sessions_schema(),
            TableKind::Scores => scores_schema(),
            TableKind::SegmentChanges => segment_changes_schema(),
            TableKind::Ledger => ledger_schema(),
            TableKind::Erasures => erasures_schema(),
            TableKind::Contacts => contacts_schema(),
            TableKind::AudienceState => audience_state_schema(),
        }
    }

    fn comment(self) -> &'static str {
        match self {
            TableKind::Events => "Spur: one row per processed event (pseudonymised)",
            TableKind::Sessions => "Spur: one row per closed session (pseudonymised)",
            TableKind::Scores => "Spur: interest scores per subject and topic, one set per run",
            TableKind::SegmentChanges => "Spur: segment entries and exits, in decision order",
            TableKind::Ledger => "Spur: consent and identity ledger, hash-chained",
            TableKind::Erasures => "Spur: erasure requests and receipts",
            TableKind::Contacts => "Spur: e-mail addresses, sealed per subject",
            TableKind::AudienceState => "Spur: segment engine state per visitor (checkpoint)",
        }
    }

    /// Columns that get min/max statistics in the log. Statistics only help on
    /// columns queries filter or sort by; limiting them keeps every `add` action in
    /// the log small (the default is the first 32 columns, mostly useless here).
    ///
    /// No identifier column is listed: min/max statistics are copied into the Delta
    /// log, and log entries outlive the data files an erasure rewrites; a subject's
    /// pseudonym must not survive there. `None`: no column statistics at all
    /// (`audience_state`, only ever read whole; its one non-identifier column is the
    /// partition column, which has none).
    fn stats_columns(self) -> Option<&'static str> {
        match self {
            TableKind::Events => Some(
                "event_time,received_at,site_id,event_type,is_bot,kafka_partition,kafka_offset",
            ),
            TableKind::Sessions => Some("start_time,end_time,site_id,is_bot,kafka_partition"),
            TableKind::Scores => Some("as_of,topic,score,last_view"),
            TableKind::SegmentChanges => Some("seq,segment,at"),
            TableKind::Ledger => Some("seq,at,recorded_at,kind"),
            TableKind::Erasures => Some("at,status"),
            TableKind::Contacts => Some("recorded_at"),
            TableKind::AudienceState => None,
        }
    }

    /// Table properties set at creation. See docs/lake.md for the reasons.
    fn properties(self) -> Vec<(&'static str, Option<&'static str>)> {
        vec![
            // Rows are deleted later (GDPR erasure), so the table must not be append-only.
            ("delta.appendOnly", Some("false")),
            match self.stats_columns() {
                Some(columns) => ("delta.dataSkippingStatsColumns", Some(columns)),
                None => ("delta.dataSkippingNumIndexedCols", Some("0")),
            },
            // How long files removed by a delete or an optimize stay on storage for
            // readers of older versions; `vacuum` removes them after this. Erased rows
            // are physically gone at most this long after the delete commit.
            (
                "delta.deletedFileRetentionDuration",
                Some("interval 7 days"),
            ),
            ("delta.logRetentionDuration", Some("interval 30 days")),
        ]
    }
}

impl std::fmt::Display for TableKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What one commit recorded besides its data ([`Lake::commit_records`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommitRecord {
    /// The table version the commit made.
    pub version: i64,
    /// Its `txn` actions: app id → version.
    pub txns: HashMap<String, i64>,
    /// The string values of its `commitInfo` (Delta's own, such as `operation`, and
    /// those given to [`Lake::append_with_metadata`]).
    pub metadata: HashMap<String, String>,
}

/// What an [`Lake::optimize`] did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OptimizeSummary {
    /// Table version after the run (unchanged if there was nothing to compact).
    pub version: i64,
    pub files_added: u64,
    pub files_removed: u64,
    pub bytes_added: i64,
    pub bytes_removed: i64,
    pub partitions_optimized: u64,
    pub files_considered: usize,
    pub files_skipped: usize,
}

/// The lake: every [`TableKind`]'s table under one root.
#[derive(Debug)]
pub struct Lake {
    root: String,
    /// One per kind, in the order of [`TableKind::ALL`].
    tables: Vec<DeltaTable>,
}

impl Lake {
    /// Opens the lake at `root` (a local directory, a `file://` URL, or any URL whose
    /// object store is compiled into delta-rs, e.g. `s3://bucket/prefix`), creating
    /// each table (`<root>/events`, `<root>/sessions`, ...) that does not exist yet.
    pub async fn open(root: &str) -> Result<Lake> {
        Self::open_with_storage_options(root, HashMap::new()).await
    }

    /// [`Lake::open`] with object-store options (credentials, endpoint, region, ...),
    /// passed unchanged to delta-rs (`DeltaTableBuilder::with_storage_options`).
    pub async fn open_with_storage_options(
        root: &str,
        storage_options: HashMap<String, String>,
    ) -> Result<Lake> {
        let trimmed = root.trim_end_matches('/');
        if trimmed.is_empty() {
            return Err(Error::Config(format!(
                "lake root {root:?} is not a directory or URL"
            )));
        }
        let mut tables = Vec::with_capacity(TableKind::ALL.len());
        for kind in TableKind::ALL {
            tables.push(open_or_create(trimmed, kind, &storage_options).await?);
        }
        Ok(Lake {
            root: trimmed.to_owned(),
            tables,
        })
    }

    /// The root this lake was opened with, without a trailing slash.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The table as of the last commit this `Lake` made or loaded.
    pub fn table(&self, kind: TableKind) -> &DeltaTable {
        &self.tables[kind.index()]
    }

    pub(crate) fn table_mut(&mut self, kind: TableKind) -> &mut DeltaTable {
        &mut self.tables[kind.index()]
    }

    /// The loaded version of a table.
    pub fn version(&self, kind: TableKind) -> Result<i64> {
        loaded_version(self.table(kind))
    }

    /// Data files in the loaded version of a table.
    pub fn file_count(&self, kind: TableKind) -> usize {
        self.table(kind)
            .snapshot()
            .map_or(0, |s| s.log_data().num_files())
    }

    /// Loads the commits other writers made since this `Lake` last looked.
    pub async fn refresh(&mut self) -> Result<()> {
        // `sessions` before `events`: the processor commits a flush's events before
        // the sessions it closes, so every session a reader sees then has its events
        // visible too (the segment engine settles dwell times on that).
        self.table_mut(TableKind::Sessions).update_state().await?;
        for kind in TableKind::ALL {
            if kind != TableKind::Sessions {
                self.table_mut(kind).update_state().await?;
            }
        }
        Ok(())
    }

    /// Appends `batch` to a table and records `txns` — `(app_id, version)` pairs, by
    /// convention `(spur-processor-<table>-<topic>-<partition>, last Kafka offset in
    /// the batch)` — in the same, single Delta commit. Returns the new table version.
    ///
    /// On error nothing is committed: data files already written are not referenced
    /// by the log, so no reader sees them (`vacuum` deletes such orphans later), and
    /// the transaction versions keep their previous values. The caller retries.
    ///
    /// An empty batch is allowed: the commit then carries only the `txn` actions,
    /// which is how offsets advance past records that produced no rows.
    ///
    /// The versions are recorded as given; that they only grow is the caller's rule
    /// (it reads [`Lake::txn_version`] and skips what is already written). If a
    /// commit made since this `Lake` last loaded the table carries a `txn` for one of
    /// the same app ids, the append fails with a conflict instead of being retried by
    /// delta-rs: another writer advanced that source, and retrying on this handle
    /// fails the same way ([`Lake::refresh`] and re-read the versions first).
    pub async fn append(
        &mut self,
        kind: TableKind,
        batch: RecordBatch,
        txns: &[(String, i64)],
    ) -> Result<i64> {
        self.append_with_metadata(kind, batch, txns, &[]).await
    }

    /// [`Lake::append`] that also records `metadata` — `(key, value)` pairs — in the
    /// commit's `commitInfo`, where [`Lake::commit_records`] reads them back (the
    /// ledger records its head this way). Keys must not be Delta's own
    /// (`operation`, `timestamp`, ...).
    pub async fn append_with_metadata(
        &mut self,
        kind: TableKind,
        batch: RecordBatch,
        txns: &[(String, i64)],
        metadata: &[(&str, String)],
    ) -> Result<i64> {
        self.write(kind, batch, SaveMode::Append, txns, metadata)
            .await
    }

    /// Replaces the whole content of a table with `batch` in one commit (Delta
    /// overwrite), recording `txns` as [`Lake::append`] does. For tables that hold a
    /// snapshot (`audience_state`), never for history.
    pub async fn replace(
        &mut self,
        kind: TableKind,
        batch: RecordBatch,
        txns: &[(String, i64)],
    ) -> Result<i64> {
        self.write(kind, batch, SaveMode::Overwrite, txns, &[])
            .await
    }

    /// One commit of `batch` to a table in `mode`, with `txns` and `metadata`.
    async fn write(
        &mut self,
        kind: TableKind,
        batch: RecordBatch,
        mode: SaveMode,
        txns: &[(String, i64)],
        metadata: &[(&str, String)],
    ) -> Result<i64> {
        let transactions = commit_inputs(kind, &batch, txns)?;
        let rows = batch.num_rows();
        // `write` consumes the table handle; it works on a clone so that after a
        // failure `self` still holds the last committed state.
        let written = self
            .table(kind)
            .clone()
            .write([batch])
            .with_save_mode(mode)
            .with_partition_columns([PARTITION_COLUMN])
            .with_writer_properties(writer_properties())
            .with_commit_properties(
                CommitProperties::default()
                    .with_application_transactions(transactions)
                    .with_metadata(
                        metadata
                            .iter()
                            .map(|(key, value)| ((*key).to_owned(), value.clone().into())),
                    ),
            )
            .await?;
        let version = loaded_version(&written)?;
        *self.table_mut(kind) = written;
        debug!(table = %kind, version, rows, txns = txns.len(), ?mode, "lake commit");
        Ok(version)
    }

    /// The rows appended to a table by the commits after version `after` up to the
    /// version this `Lake` holds — only appends (`WRITE` commits): rows that an
    /// optimize, delete or redaction rewrote are not new. Columns `columns` of the data
    /// files (the partition column `dt` is not in them). Returns the rows and the
    /// version they reach. Fails when a commit or a data file is gone (log retention,
    /// vacuum): the caller then reads the table whole.
    pub async fn appended_since(
        &self,
        kind: TableKind,
        after: i64,
        columns: &[&str],
    ) -> Result<(Vec<RecordBatch>, i64)> {
        use datafusion::parquet::arrow::ProjectionMask;
        use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        use deltalake::logstore::object_store::ObjectStoreExt as _;

        let table = self.table(kind);
        let latest = loaded_version(table)?;
        let (log, store) = (table.log_store(), table.object_store());
        let mut batches = Vec::new();
        for version in (after + 1).max(0)..=latest {
            let number = version.unsigned_abs();
            let bytes = log.read_commit_entry(number).await?.ok_or_else(|| {
                DeltaTableError::Generic(format!(
                    "{kind}: commit {version} is no longer in the log"
                ))
            })?;
            let actions = deltalake::logstore::get_actions(number, &bytes)?;
            let append = actions.iter().any(|a| {
                matches!(a, Action::CommitInfo(info) if info.operation.as_deref() == Some("WRITE"))
            });
            if !append {
                continue;
            }
            for action in actions {
                let Action::Add(add) = action else { continue };
                if !add.data_change {
                    continue;
                }
                let path = deltalake::Path::from_url_path(&add.path)
                    .map_err(|e| DeltaTableError::Generic(format!("{kind}: {e}")))?;
                let data = store.get(&path).await.map_err(DeltaTableError::from)?;
                let data = data.bytes().await.map_err(DeltaTableError::from)?;
                let parquet = |e| Error::Arrow(ArrowError::ExternalError(Box::new(e)));
                let builder = ParquetRecordBatchReaderBuilder::try_new(data).map_err(parquet)?;
                let schema = builder.parquet_schema();
                let indices: Vec<usize> = (0..schema.num_columns())
                    .filter(|i| {
                        let column = schema.column(*i);
                        let path = column.path();
                        path.parts()
                            .first()
                            .is_some_and(|name| columns.contains(&name.as_str()))
                    })
                    .collect();
                let mask = ProjectionMask::leaves(schema, indices);
                for batch in builder.with_projection(mask).build().map_err(parquet)? {
                    batches.push(batch?);
                }
            }
        }
        Ok((batches, latest))
    }

    /// The last version recorded for `app_id` in a table, from the newest commit in
    /// the log (commits of other writers included), or `None` if it never wrote.
    pub async fn txn_version(&self, kind: TableKind, app_id: &str) -> Result<Option<i64>> {
        // A clone, so the lookup needs no `&mut self`; cloning shares the loaded
        // state, and `update_state` then reads only the newer log entries.
        let mut table = self.table(kind).clone();
        table.update_state().await?;
        let version = table
            .snapshot()?
            .transaction_version(table.log_store().as_ref(), app_id)
            .await?;
        Ok(version)
    }

    /// What each commit of a table recorded — its `txn` versions and the metadata of
    /// [`Lake::append_with_metadata`] — for every commit still in the log
    /// (`delta.logRetentionDuration`) up to the version this `Lake` holds, oldest
    /// first: the same state [`Lake::session_context`] reads.
    pub async fn commit_records(&self, kind: TableKind) -> Result<Vec<CommitRecord>> {
        let table = self.table(kind);
        let latest = loaded_version(table)?;
        let store = table.log_store();
        let mut records = Vec::new();
        for version in 0..=latest {
            let number = version.unsigned_abs();
            // Commits older than the log's retention are gone: nothing to read.
            let Some(bytes) = store.read_commit_entry(number).await? else {
                continue;
            };
            let mut record = CommitRecord {
                version,
                ..CommitRecord::default()
            };
            for action in deltalake::logstore::get_actions(number, &bytes)? {
                match action {
                    Action::Txn(txn) => {
                        record.txns.insert(txn.app_id, txn.version);
                    }
                    Action::CommitInfo(info) => {
                        record
                            .metadata
                            .extend(info.info.into_iter().filter_map(|(key, value)| {
                                value.as_str().map(|v| (key, v.to_owned()))
                            }));
                    }
                    _ => {}
                }
            }
            records.push(record);
        }
        Ok(records)
    }

    /// A DataFusion session with every table registered under its name (`events`,
    /// `sessions`, `scores`),
    /// and the views of [`crate::views`] (`pageviews`, with dwell times),
    /// at the versions this `Lake` holds (call [`Lake::refresh`] first to see other
    /// writers' commits). Filters on `dt` prune whole partitions.
    pub async fn session_context(&self) -> Result<SessionContext> {
        let ctx: SessionContext = deltalake::delta_datafusion::create_session().into_inner();
        for kind in TableKind::ALL {
            let table = self.table(kind);
            // Makes the table's object store (local, s3, ...) known to the session.
            table.update_datafusion_session(&ctx.state())?;
            let provider = table.table_provider().await?;
            ctx.register_table(kind.name(), provider)?;
        }
        ctx.sql(&format!(
            "CREATE VIEW {} AS {}",
            crate::views::PAGEVIEWS,
            crate::views::PAGEVIEWS_SQL
        ))
        .await?;
        Ok(ctx)
    }

    /// Compacts a table's small files (bin-packing per partition) in one commit. Rows
    /// and transaction versions are unchanged; the replaced files stay on storage for
    /// `delta.deletedFileRetentionDuration`, until a `vacuum`.
    pub async fn optimize(&mut self, kind: TableKind) -> Result<OptimizeSummary> {
        let table = self.table_mut(kind);
        // Compact what other writers committed too, not only what this handle saw.
        table.update_state().await?;
        let (optimized, metrics) = table
            .clone()
            .optimize()
            .with_type(OptimizeType::Compact)
            .with_writer_properties(writer_properties())
            .await?;
        let version = loaded_version(&optimized)?;
        *table = optimized;
        info!(
            table = %kind,
            version,
            files_added = metrics.num_files_added,
            files_removed = metrics.num_files_removed,
            "lake optimize"
        );
        Ok(OptimizeSummary {
            version,
            files_added: metrics.num_files_added,
            files_removed: metrics.num_files_removed,
            bytes_added: metrics.files_added.total_size,
            bytes_removed: metrics.files_removed.total_size,
            partitions_optimized: metrics.partitions_optimized,
            files_considered: metrics.total_considered_files,
            files_skipped: metrics.total_files_skipped,
        })
    }
}

/// Parquet settings of every data file the lake writes (appends and compaction).
pub fn writer_properties() -> WriterProperties {
    // `ZstdLevel::try_new` only fails outside 1..=22.
    let level = ZstdLevel::try_new(ZSTD_LEVEL).unwrap_or_default();
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build()
}

pub(crate) fn loaded_version(table: &DeltaTable) -> Result<i64> {
    let version = table.version().ok_or(DeltaTableError::NotInitialized)?;
    i64::try_from(version).map_err(|_| {
        DeltaTableError::Generic(format!("table version {version} exceeds i64")).into()
    })
}

/// Loads `<root>/<table>`, creating it first if there is no Delta log there.
async fn open_or_create(
    root: &str,
    kind: TableKind,
    storage_options: &HashMap<String, String>,
) -> Result<DeltaTable> {
    let location = format!("{root}/{}", kind.name());
    // For local paths this also creates the directory and makes the path absolute.
    let url = deltalake::ensure_table_uri(&location)?;
    let mut table = DeltaTableBuilder::from_url(url)?
        .with_storage_options(storage_options.clone())
        .build()?;

    if !table.verify_deltatable_existence().await? {
        match create(&table, kind).await {
            Ok(created) => {
                info!(table = %kind, location = %created.table_url(), "created lake table");
                check_layout(&created, kind)?;
                return Ok(created);
            }
            Err(err) => {
                // Another process may have created it between the check and the
                // commit (the commit of version 0 is put-if-absent): then load theirs.
                if !table.verify_deltatable_existence().await? {
                    return Err(err);
                }
                debug!(table = %kind, error = %err, "table created concurrently");
            }
        }
    }
    table.load().await?;
    let table = evolve(table, kind).await?;
    check_layout(&table, kind)?;
    Ok(table)
}

/// Adds the columns this code appended to a table's schema after the table was
/// created: nullable and last, so older rows read as `NULL` and no file is rewritten
/// (one metadata commit). Any other difference is left to [`check_layout`] to refuse.
/// When several processes upgrade at once, the losers reload the winner's schema.
/// Checks a batch and `txn` pairs for a commit to `kind`: the table's schema, one
/// `txn` per app id (the Delta protocol allows no more). Returns the `txn` actions.
fn commit_inputs(
    kind: TableKind,
    batch: &RecordBatch,
    txns: &[(String, i64)],
) -> Result<Vec<Transaction>> {
    if batch.schema().fields() != kind.schema().fields() {
        return Err(ArrowError::SchemaError(format!(
            "batch does not have the schema of table {kind}"
        ))
        .into());
    }
    let mut app_ids = HashSet::new();
    if let Some((dup, _)) = txns.iter().find(|(id, _)| !app_ids.insert(id.as_str())) {
        return Err(DeltaTableError::Generic(format!(
            "application id {dup} appears twice in one commit"
        ))
        .into());
    }
    let now = chrono::Utc::now().timestamp_millis();
    Ok(txns
        .iter()
        .map(|(app_id, version)| Transaction::new_with_last_update(app_id, *version, Some(now)))
        .collect())
}

async fn evolve(table: DeltaTable, kind: TableKind) -> Result<DeltaTable> {
    let found: Vec<String> = table
        .snapshot()?
        .schema()
        .fields()
        .map(|f| f.name().to_owned())
        .collect();
    let expected = kind.schema();
    let fields = expected.fields();
    let is_prefix =
        found.len() < fields.len() && fields.iter().zip(&found).all(|(e, f)| e.name() == f);
    let missing = &fields[found.len().min(fields.len())..];
    if !is_prefix || missing.iter().any(|f| !f.is_nullable()) {
        return Ok(table);
    }
    let added: StructType =
        (&datafusion::arrow::datatypes::Schema::new(missing.to_vec())).try_into_kernel()?;
    let names: Vec<&str> = missing.iter().map(|f| f.name().as_str()).collect();
    match table
        .clone()
        .add_columns()
        .with_fields(added.fields().cloned().collect::<Vec<_>>())
        .await
    {
        Ok(evolved) => {
            info!(table = %kind, columns = ?names, "added columns to lake table");
            Ok(evolved)
        }
        Err(err) => {
            let mut reloaded = table;
            reloaded.load().await?;
            if reloaded.snapshot()?.schema().fields().count() == fields.len() {
                debug!(table = %kind, error = %err, "columns added concurrently");
                Ok(reloaded)
            } else {
                Err(err.into())
            }
        }
    }
}

async fn create(table: &DeltaTable, kind: TableKind) -> Result<DeltaTable> {
    let schema: StructType = kind.schema().as_ref().try_into_kernel()?;
    let created = table
        .create()
        .with_save_mode(SaveMode::ErrorIfExists)
        .with_table_name(kind.name())
        .with_comment(kind.comment())
        .with_columns(schema.fields().cloned())
        .with_partition_columns([PARTITION_COLUMN])
        .with_configuration(kind.properties())
        .await?;
    Ok(created)
}

/// Refuses a table that is not what this code writes: a wrong root, or a table made
/// by an incompatible version. Appends would fail later anyway; this says why, early.
fn check_layout(table: &DeltaTable, kind: TableKind) -> Result<()> {
    let snapshot = table.snapshot()?;
    let partitions = snapshot.metadata().partition_columns();
    if partitions != [PARTITION_COLUMN] {
        return Err(Error::Config(format!(
            "lake table {} is partitioned by {partitions:?}, expected [\"{PARTITION_COLUMN}\"]",
            table.table_url()
        )));
    }
    let found: Vec<String> = snapshot
        .schema()
        .fields()
        .map(|f| f.name().to_owned())
        .collect();
    let expected: Vec<String> = kind
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().to_owned())
        .collect();
    if found != expected {
        return Err(Error::Config(format!(
            "lake table {} has columns {found:?}, expected {expected:?}",
            table.table_url()
        )));
    }
    Ok(())
}
