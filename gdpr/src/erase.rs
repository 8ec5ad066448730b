//! Erasure (GDPR Art. 17) of one subject: every row of it, in every table, physically
//! removed; a receipt of what was removed. Idempotent and resumable.
//!
//! Steps, each one committed before the next:
//! 1. **request**: the subject's pseudonyms (the subject and every visitor linked to
//!    it) are resolved and their SHA-256 digests written to table `erasures`
//!    (`requested`). From here on only the digests are used, so a resumed run needs
//!    nothing that an earlier step already deleted.
//! 2. **delete** per table (`events`, `sessions`, `scores`, `segment_changes`): a
//!    Delta DELETE whose predicate compares digests (the log records digests, never
//!    the ids); a `table_done` row with the counts after each.
//! 3. **redact** the ledger: the seqs of the subject's entries are listed first (a
//!    `table_done` row for `ledger`, which `spur ledger verify` requires of every
//!    redaction), then exactly those entries' content is set to NULL, chain kept.
//! 4. **vacuum** every table: the files the deletes replaced are deleted from storage,
//!    so no older table version holds the subject.
//! 5. **state files**: lines of the segment service's webhook parking files
//!    (`webhook-<name>.parked.jsonl`, and old given-up logs) naming the subject are
//!    removed, holding the parking's lock so that no append is lost.
//! 6. **completed** row with the receipt.
//!
//! A run finding a `requested` erasure for the subject without `completed` resumes it
//! (tables already done are skipped); finding a `completed` one, it repeats steps 2–5
//! (nothing left to remove: no commits) and returns the stored receipt. The digests
//! stay in `erasures` as the minimal proof and as the suppression list that keeps
//! the subject's future events out (processor, segment service).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use datafusion::arrow::array::AsArray as _;
use serde::{Deserialize, Serialize};
use spur_lake::model::ErasureRow;
use spur_lake::{Lake, RewriteSummary, TableKind, digest_predicate, erasures_batch, id_digest};
use tracing::info;

use datafusion::prelude::{col, lit};
use spur_audience::ledger::{REDACTED_COLUMNS, REDACTION_STATUS};
use spur_lake::read::{collect, int64s, quote, strings};
use spur_schemas::time::{date, rfc3339_ms};

use crate::error::{Error, Result};
use crate::export::visitors_of;

/// How an erasure runs.
#[derive(Debug, Clone, Default)]
pub struct EraseOptions {
    /// The segment service's state directory, whose given-up logs are cleaned.
    pub state_dir: Option<PathBuf>,
    /// Statements about copies outside the lake (Kafka topics and when their
    /// records expire), copied into the receipt.
    pub outside_lake: Vec<String>,
    /// Stop with an error right after this table's delete (tests of crash recovery).
    pub interrupt_after: Option<TableKind>,
    /// The key directory (`keys.dir`): the subject's contact data key there is
    /// destroyed first (crypto-shredding, `spur_keys::vault`).
    pub keys_dir: Option<PathBuf>,
}

/// What one table lost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableReceipt {
    pub rows: u64,
    pub files_rewritten: u64,
    pub files_deleted: u64,
    /// Ledger only: the seqs of the entries redacted (`spur ledger verify` accepts a
    /// redaction only when an erasure lists its seq).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seqs: Vec<i64>,
}

/// The receipt of an erasure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub erasure_id: String,
    /// SHA-256 of the subject id: how the receipt names the subject.
    pub subject_digest: String,
    /// Pseudonyms erased (the subject and its visitors).
    pub pseudonyms: usize,
    pub requested_at: String,
    pub completed_at: String,
    /// Per table: rows deleted (ledger: entries redacted) and files.
    pub tables: BTreeMap<String, TableReceipt>,
    /// State files from which lines were removed.
    pub state_files: Vec<String>,
    /// The subject's contact data key was destroyed by this erasure (or an earlier
    /// run of it): every sealed copy of the address is unreadable.
    #[serde(default)]
    pub contact_key_destroyed: bool,
    pub outside_lake: Vec<String>,
    /// The run resumed an interrupted one.
    pub resumed: bool,
    /// The subject had already been erased; this run found nothing left.
    pub repeated: bool,
}

const ROW_TABLES: [(TableKind, &[&str]); 6] = [
    (TableKind::Contacts, &["subject_id"]),
    (TableKind::Events, &["visitor_id", "email_hash"]),
    (TableKind::Sessions, &["visitor_id"]),
    (TableKind::Scores, &["subject_id"]),
    (TableKind::SegmentChanges, &["subject_id"]),
    (TableKind::AudienceState, &["visitor_id"]),
];

struct Request {
    id: String,
    requested_at: i64,
    digests: Vec<String>,
    done: BTreeMap<String, TableReceipt>,
    completed: Option<Receipt>,
}

/// Erases `subject` (an e-mail pseudonym or an anonymous visitor id).
pub async fn erase(
    lake: &mut Lake,
    subject: &str,
    now_ms: i64,
    options: &EraseOptions,
) -> Result<Receipt> {
    lake.refresh().await?;
    let subject_digest = id_digest(subject);
    let (request, resumed) = match find(lake, &subject_digest).await? {
        Some(request) => {
            let resumed = request.completed.is_none();
            (request, resumed)
        }
        None => {
            let ctx = lake.session_context().await?;
            let visitors = visitors_of(&ctx, subject).await?;
            let mut digests: Vec<String> = visitors.iter().map(|v| id_digest(v)).collect();
            digests.sort();
            digests.dedup();
            let id = format!("era_{}", hex::encode(rand::random::<[u8; 16]>()));
            write_step(lake, &id, "requested", now_ms, &digests, None).await?;
            info!(erasure = %id, pseudonyms = digests.len(), "erasure requested");
            let request = Request {
                id,
                requested_at: now_ms,
                digests,
                done: BTreeMap::new(),
                completed: None,
            };
            (request, false)
        }
    };

    // The data key first: from here on no copy of the address opens, whatever
    // happens to the rest of the run.
    // (An anonymous subject, named by a visitor pseudonym, never had an address.)
    let vault = options
        .keys_dir
        .as_deref()
        .map(spur_keys::vault::Vault::new);
    let contact_key_destroyed = match vault {
        Some(vault) if vault.key_path(subject).is_ok() => {
            vault.destroy(subject)?;
            true
        }
        _ => false,
    };
    let mut tables = request.done.clone();
    for (kind, columns) in ROW_TABLES {
        if tables.contains_key(kind.name()) && request.completed.is_none() {
            continue;
        }
        let summary = lake
            .delete(kind, digest_predicate(columns, &request.digests))
            .await?;
        let receipt = table_receipt(summary);
        if request.completed.is_none() {
            let json = serde_json::to_string(&(kind.name(), &receipt)).unwrap_or_default();
            write_step(lake, &request.id, "table_done", now_ms, &[], Some(json)).await?;
            tables.insert(kind.name().to_owned(), receipt);
        }
        if options.interrupt_after == Some(kind) {
            return Err(Error::Config(format!(
                "erasure {} interrupted after table {kind} (as requested)",
                request.id
            )));
        }
    }
    // The ledger: the seqs are listed in `erasures` first, then exactly those are
    // redacted, so no redaction lacks the row that accounts for it (`spur ledger
    // verify` fails on one that does); after a crash in between, the resumed run
    // lists them again and redacts them.
    let seqs = ledger_seqs(lake, &request.digests).await?;
    let redacted = if seqs.is_empty() {
        RewriteSummary::default()
    } else {
        let listed = TableReceipt {
            rows: seqs.len() as u64,
            seqs: seqs.clone(),
            ..TableReceipt::default()
        };
        let json = serde_json::to_string(&(TableKind::Ledger.name(), &listed)).unwrap_or_default();
        write_step(lake, &request.id, REDACTION_STATUS, now_ms, &[], Some(json)).await?;
        let listed: Vec<_> = seqs.iter().map(|seq| lit(*seq)).collect();
        lake.redact(
            TableKind::Ledger,
            digest_predicate(&["subject_id", "visitor_id"], &request.digests)
                .and(col("seq").in_list(listed, false)),
            &REDACTED_COLUMNS,
            "erased",
        )
        .await?
    };
    if request.completed.is_none() {
        let entry = tables
            .entry(TableKind::Ledger.name().to_owned())
            .or_default();
        entry.seqs.extend(seqs);
        entry.seqs.sort_unstable();
        entry.seqs.dedup();
        entry.rows = entry.seqs.len() as u64;
        entry.files_rewritten += redacted.files_removed;
    }
    for kind in TableKind::ALL {
        let deleted = lake.vacuum(kind).await?;
        if request.completed.is_none() && !deleted.is_empty() {
            tables
                .entry(kind.name().to_owned())
                .or_default()
                .files_deleted += deleted.len() as u64;
        }
    }
    let digests: HashSet<&str> = request.digests.iter().map(String::as_str).collect();
    let state_files = match &options.state_dir {
        Some(dir) => scrub_state(dir, &digests)?,
        None => Vec::new(),
    };

    if let Some(mut receipt) = request.completed {
        receipt.repeated = true;
        receipt.resumed = false;
        return Ok(receipt);
    }
    let receipt = Receipt {
        erasure_id: request.id.clone(),
        subject_digest,
        pseudonyms: request.digests.len(),
        requested_at: rfc3339_ms(request.requested_at),
        completed_at: rfc3339_ms(now_ms),
        tables,
        state_files,
        contact_key_destroyed,
        outside_lake: options.outside_lake.clone(),
        resumed,
        repeated: false,
    };
    let json = serde_json::to_string(&receipt).unwrap_or_default();
    write_step(
        lake,
        &request.id,
        "completed",
        now_ms,
        &request.digests,
        Some(json),
    )
    .await?;
    info!(erasure = %request.id, resumed, "erasure completed");
    Ok(receipt)
}

fn table_receipt(summary: RewriteSummary) -> TableReceipt {
    TableReceipt {
        rows: summary.rows,
        files_rewritten: summary.files_removed,
        ..TableReceipt::default()
    }
}

/// The seqs of the ledger entries naming one of `digests` (as subject or visitor)
/// that are not redacted yet, in order.
async fn ledger_seqs(lake: &Lake, digests: &[String]) -> Result<Vec<i64>> {
    let ctx = lake.session_context().await?;
    let batches = ctx
        .table(TableKind::Ledger.name())
        .await?
        .filter(
            digest_predicate(&["subject_id", "visitor_id"], digests)
                .and(col("erased").eq(lit(false))),
        )?
        .select_columns(&["seq"])?
        .collect()
        .await?;
    let mut seqs = Vec::new();
    for batch in &batches {
        seqs.extend(int64s(batch, "seq")?);
    }
    seqs.sort_unstable();
    Ok(seqs)
}

async fn write_step(
    lake: &mut Lake,
    id: &str,
    status: &str,
    now_ms: i64,
    digests: &[String],
    receipt: Option<String>,
) -> Result<()> {
    let row = ErasureRow {
        erasure_id: id.to_owned(),
        status: status.to_owned(),
        at: now_ms,
        digests: digests.to_vec(),
        receipt,
        dt: date(now_ms),
    };
    lake.append(TableKind::Erasures, erasures_batch(&[row])?, &[])
        .await?;
    Ok(())
}

/// The latest erasure request naming `subject_digest`, with its progress.
async fn find(lake: &Lake, subject_digest: &str) -> Result<Option<Request>> {
    let ctx = lake.session_context().await?;
    let batches = collect(
        &ctx,
        &format!(
            "SELECT erasure_id, CAST(at AS BIGINT) / 1000 AS at FROM erasures
             WHERE status = 'requested' AND array_has(digests, {})
             ORDER BY at DESC LIMIT 1",
            quote(subject_digest)
        ),
    )
    .await?;
    let Some(id) = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .map(|b| strings(b, "erasure_id"))
        .transpose()?
        .and_then(|mut ids| ids.swap_remove(0))
    else {
        return Ok(None);
    };
    let steps = collect(
        &ctx,
        &format!(
            "SELECT status, digests, receipt, CAST(at AS BIGINT) / 1000 AS at FROM erasures
             WHERE erasure_id = {} ORDER BY at",
            quote(&id)
        ),
    )
    .await?;
    let mut request = Request {
        id,
        requested_at: 0,
        digests: Vec::new(),
        done: BTreeMap::new(),
        completed: None,
    };
    for batch in &steps {
        let status = strings(batch, "status")?;
        let receipt = strings(batch, "receipt")?;
        let at = int64s(batch, "at")?;
        let lists = batch
            .column_by_name("digests")
            .and_then(|c| {
                c.as_any()
                    .downcast_ref::<datafusion::arrow::array::ListArray>()
            })
            .ok_or_else(|| Error::Config("erasures.digests is not a list".into()))?;
        for i in 0..batch.num_rows() {
            match status[i].as_deref() {
                Some("requested") => {
                    request.requested_at = at[i];
                    let values = datafusion::arrow::compute::cast(
                        &lists.value(i),
                        &datafusion::arrow::datatypes::DataType::Utf8,
                    )
                    .map_err(|e| Error::Query(e.into()))?;
                    request.digests = values
                        .as_string::<i32>()
                        .iter()
                        .flatten()
                        .map(str::to_owned)
                        .collect();
                }
                Some("table_done") => {
                    if let Some((table, receipt)) = receipt[i]
                        .as_deref()
                        .and_then(|r| serde_json::from_str::<(String, TableReceipt)>(r).ok())
                    {
                        // The ledger may be listed more than once (a resumed run).
                        let seqs = request
                            .done
                            .remove(&table)
                            .map(|earlier| earlier.seqs)
                            .unwrap_or_default();
                        let mut receipt = receipt;
                        receipt.seqs.extend(seqs);
                        receipt.seqs.sort_unstable();
                        receipt.seqs.dedup();
                        request.done.insert(table, receipt);
                    }
                }
                Some("completed") => {
                    request.completed = receipt[i]
                        .as_deref()
                        .and_then(|r| serde_json::from_str(r).ok());
                }
                _ => {}
            }
        }
    }
    Ok(Some(request))
}

/// Removes, from every `*.jsonl` file in `dir`, the lines holding a 32-hex-digit
/// token whose digest is erased. Each file is read and rewritten holding an exclusive
/// lock on `<file>.lock`, the lock the segment service and `spur segments replay`
/// take to change a webhook parking file, and replaced durably (synced temporary
/// file, rename, directory sync). Returns the files changed.
fn scrub_state(dir: &Path, digests: &HashSet<&str>) -> Result<Vec<String>> {
    let state = |path: &Path, source| Error::State {
        path: path.display().to_string(),
        source,
    };
    let mut changed = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(changed),
        Err(e) => return Err(state(dir, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| state(dir, e))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
            continue;
        }
        let mut lock = path.clone().into_os_string();
        lock.push(".lock");
        let lock = PathBuf::from(lock);
        let locked = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .and_then(|file| file.lock().map(|()| file))
            .map_err(|e| state(&lock, e))?;
        let text = std::fs::read_to_string(&path).map_err(|e| state(&path, e))?;
        let kept: Vec<&str> = text
            .lines()
            .filter(|line| !names_erased(line, digests))
            .collect();
        if kept.len() == text.lines().count() {
            continue;
        }
        let mut body = kept.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        spur_keys::files::replace_private(&path, body.as_bytes()).map_err(|e| state(&path, e))?;
        drop(locked);
        changed.push(path.display().to_string());
    }
    Ok(changed)
}

fn names_erased(line: &str, digests: &HashSet<&str>) -> bool {
    line.split(|c: char| !c.is_ascii_hexdigit())
        .filter(|t| t.len() == 32)
        .any(|t| digests.contains(id_digest(t).as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_only_lines_naming_the_subject() {
        let dir = tempfile::tempdir().expect("test");
        let a = "0123456789abcdef0123456789abcdef";
        let b = "fedcba9876543210fedcba9876543210";
        // A webhook parking file as the segment service writes it.
        let path = dir.path().join("webhook-crm.parked.jsonl");
        let line = |seq: u32, subject: &str| {
            format!(
                "{{\"seq\":{seq},\"id\":\"chg_00112233445566778899aabbccddeeff\",\
                 \"segment\":\"fans\",\"subject_id\":\"{subject}\",\
                 \"type\":\"segment.entered\",\"reason\":\"max_age\",\"attempts\":9,\
                 \"error\":\"HTTP 500\",\"at\":\"2026-12-03T10:00:00.000Z\"}}\n"
            )
        };
        std::fs::write(&path, format!("{}{}", line(1, a), line(2, b))).expect("test");
        let digest = id_digest(a);
        let set = HashSet::from([digest.as_str()]);
        let changed = scrub_state(dir.path(), &set).expect("test");
        assert_eq!(changed.len(), 1);
        let left = std::fs::read_to_string(&path).expect("test");
        assert!(!left.contains(a));
        assert!(left.contains(b));
        // Again: nothing to change.
        assert!(scrub_state(dir.path(), &set).expect("test").is_empty());
    }
}
