//! Physical removal: row deletes and redactions that rewrite the affected Parquet
//! files, `vacuum` that deletes the files those commits replaced, and retention by
//! partition date. Erasure (GDPR Art. 17) and retention are built from these three.
//!
//! Why the removed data is really gone afterwards:
//! - a delete or update rewrites every file holding a matching row and records the
//!   old file as removed; [`Lake::vacuum`] then deletes removed files regardless of
//!   their age (`lite` mode: only files the log says were removed, so files of a
//!   concurrent writer's commit in flight are never touched), so no older table version
//!   can be read back;
//! - the log keeps no data: statistics are limited to non-identifying columns
//!   (`TableKind::stats_columns`), and predicates are written as digests
//!   ([`digest_predicate`]), never as the identifiers themselves.

use datafusion::functions::expr_fn::{encode, sha256};
use datafusion::prelude::{Expr, col, lit};
use std::collections::HashSet;

use deltalake::operations::vacuum::VacuumMode;
use sha2::{Digest as _, Sha256};
use tracing::info;

use crate::error::Result;
use crate::table::{Lake, TableKind, loaded_version};

/// SHA-256 of an identifier, hex: how erasure requests name what they remove, in the
/// table `erasures` and in the Delta log.
pub fn id_digest(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// `encode(sha256(c), 'hex') IN (digests)` for each of `columns`, OR-ed: matches the
/// rows whose identifier in any of the columns has one of the digests (NULLs never
/// match). Empty `digests` → matches nothing.
pub fn digest_predicate(columns: &[&str], digests: &[String]) -> Expr {
    let list: Vec<Expr> = digests.iter().map(|d| lit(d.as_str())).collect();
    columns
        .iter()
        .map(|c| encode(sha256(col(*c)), lit("hex")).in_list(list.clone(), false))
        .reduce(Expr::or)
        .filter(|_| !digests.is_empty())
        .unwrap_or_else(|| lit(false))
}

/// What a [`Lake::delete`] or [`Lake::redact`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RewriteSummary {
    /// Rows deleted or redacted.
    pub rows: u64,
    /// Data files replaced (to be physically deleted by the next vacuum).
    pub files_removed: u64,
    /// Data files written with the remaining rows.
    pub files_added: u64,
}

impl Lake {
    /// Deletes the rows of `kind` matching `predicate` in one commit (files with a
    /// match are rewritten without it). Rows already gone match nothing, so a repeat
    /// is a no-op that writes no commit.
    pub async fn delete(&mut self, kind: TableKind, predicate: Expr) -> Result<RewriteSummary> {
        let table = self.table_mut(kind);
        table.update_state().await?;
        let (deleted, metrics) = table.clone().delete().with_predicate(predicate).await?;
        *table = deleted;
        let summary = RewriteSummary {
            rows: metrics.num_deleted_rows.unwrap_or(0) as u64,
            files_removed: metrics.num_removed_files as u64,
            files_added: metrics.num_added_files as u64,
        };
        if summary.rows > 0 || summary.files_removed > 0 {
            info!(table = %kind, rows = summary.rows, files_removed = summary.files_removed, "lake delete");
        }
        Ok(summary)
    }

    /// Sets `columns` to NULL and `flag` to true in the rows of `kind` matching
    /// `predicate`, in one commit (the ledger's redaction: content goes, the chain
    /// stays).
    pub async fn redact(
        &mut self,
        kind: TableKind,
        predicate: Expr,
        columns: &[&str],
        flag: &str,
    ) -> Result<RewriteSummary> {
        let table = self.table_mut(kind);
        table.update_state().await?;
        let mut update = table.clone().update().with_predicate(predicate);
        for column in columns {
            update = update.with_update(
                *column,
                Expr::Literal(datafusion::scalar::ScalarValue::Utf8(None), None),
            );
        }
        let (updated, metrics) = update.with_update(flag, lit(true)).await?;
        *table = updated;
        Ok(RewriteSummary {
            rows: metrics.num_updated_rows as u64,
            files_removed: metrics.num_removed_files as u64,
            files_added: metrics.num_added_files as u64,
        })
    }

    /// Physically deletes every data file of `kind` that a commit removed (delete,
    /// redaction, compaction, retention), whatever its age. Older table versions stop
    /// being readable. Returns the deleted files' paths, relative to the table.
    pub async fn vacuum(&mut self, kind: TableKind) -> Result<Vec<String>> {
        let table = self.table_mut(kind);
        table.update_state().await?;
        let (vacuumed, metrics) = table
            .clone()
            .vacuum()
            .with_mode(VacuumMode::Lite)
            .with_retention_period(chrono::Duration::zero())
            .with_enforce_retention_duration(false)
            .await?;
        *table = vacuumed;
        if !metrics.files_deleted.is_empty() {
            info!(table = %kind, files = metrics.files_deleted.len(), "lake vacuum");
        }
        Ok(metrics.files_deleted)
    }

    /// Retention: deletes every partition of `kind` dated before `before_dt`
    /// (`YYYY-MM-DD`) — whole files, no rewrite — and vacuums, so the rows are gone
    /// from storage, not only from the current version.
    pub async fn expire(&mut self, kind: TableKind, before_dt: &str) -> Result<ExpireSummary> {
        let deleted = self
            .delete(
                kind,
                col(crate::schema::PARTITION_COLUMN).lt(lit(before_dt)),
            )
            .await?;
        let vacuumed = self.vacuum(kind).await?;
        Ok(ExpireSummary {
            table: kind.name(),
            before: before_dt.to_owned(),
            rows: deleted.rows,
            files_deleted: vacuumed.len() as u64,
            version: loaded_version(self.table(kind))?,
        })
    }
}

impl Lake {
    /// The suppression list of erasures: SHA-256 digests of every erased pseudonym,
    /// if table `erasures` changed since version `seen` (`None`: unchanged). Returns
    /// the version read with the set.
    pub async fn erased_since(
        &mut self,
        seen: Option<i64>,
    ) -> Result<Option<(i64, HashSet<String>)>> {
        let table = self.table_mut(TableKind::Erasures);
        table.update_state().await?;
        let version = loaded_version(table)?;
        if seen == Some(version) {
            return Ok(None);
        }
        let ctx = datafusion::prelude::SessionContext::new();
        table.update_datafusion_session(&ctx.state())?;
        ctx.register_table("erasures", table.table_provider().await?)?;
        let set = erased_digests(&ctx).await?;
        Ok(Some((version, set)))
    }
}

/// The suppression list in a session that has table `erasures`: SHA-256 digests
/// ([`id_digest`]) of every erased pseudonym. The one reader of the list: the
/// processor, the segment engine and erasure itself use it.
pub async fn erased_digests(ctx: &datafusion::prelude::SessionContext) -> Result<HashSet<String>> {
    let mut set = HashSet::new();
    for batch in &crate::read::collect(
        ctx,
        "SELECT DISTINCT unnest(digests) AS d FROM erasures WHERE status = 'requested'",
    )
    .await?
    {
        set.extend(crate::read::strings(batch, "d")?.into_iter().flatten());
    }
    Ok(set)
}

/// What a [`Lake::expire`] removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExpireSummary {
    pub table: &'static str,
    /// Partitions dated before this were removed.
    pub before: String,
    pub rows: u64,
    /// Files physically deleted (by this run's vacuum, including files earlier
    /// commits had replaced).
    pub files_deleted: u64,
    pub version: i64,
}
