//! [`verify`]: the chain recomputed, compared with the head every commit recorded,
//! and every redaction matched with the erasure that lists it.

use std::collections::HashSet;

use datafusion::prelude::SessionContext;
use serde_json::Value;
use spur_lake::positions::LEDGER_HEAD_APP_ID;
use spur_lake::read::{booleans, collect, int64s, quote, strings};
use spur_lake::{Lake, TableKind};

use super::entries::{Draft, digest, head_record, link};
use super::{GENESIS, HEAD_METADATA_KEY, REDACTION_STATUS};
use crate::error::Result;

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verification {
    pub entries: u64,
    pub erased: u64,
    /// Heads recorded by commits still in the Delta log that were compared.
    pub heads: u64,
    /// The table's head, `<seq>:<chain>` (seq 0 and the genesis when empty): kept
    /// elsewhere, it lets a later run show that nothing up to it was rewritten.
    pub head: String,
    /// The first problem found, if any (`None`: the chain is intact).
    pub problem: Option<String>,
}

/// Checks the ledger as this `Lake` holds it:
/// 1. in seq order from 1, every digest (of entries not erased) and every chain link;
///    an erased entry must hold no content and be listed by an erasure
///    ([`REDACTION_STATUS`]);
/// 2. every head a commit still in the Delta log recorded (`seq:chain` under
///    [`HEAD_METADATA_KEY`], and the `txn` [`LEDGER_HEAD_APP_ID`]) is in the table
///    with the same chain — entries removed from the end or a chain rewritten from
///    some entry on fail here;
/// 3. the last commit's `txn` head is the table's last seq (nothing appended outside
///    the ledger's writers).
///
/// The problem names the first entry concerned (`entry <seq>: ...`).
pub async fn verify(lake: &Lake) -> Result<Verification> {
    let ctx = lake.session_context().await?;
    let accounted = redactions(&ctx).await?;
    let batches = collect(
        &ctx,
        "SELECT seq, CAST(at AS BIGINT) / 1000 AS at, kind, purpose, subject_id, visitor_id,
                site_id, event_id, evidence, reason, digest, chain, erased
         FROM ledger ORDER BY seq",
    )
    .await?;
    let mut previous = GENESIS.to_owned();
    // chains[i] is the chain of entry i + 1 (seqs are checked to run from 1).
    let mut chains: Vec<String> = Vec::new();
    let mut report = Verification {
        entries: 0,
        erased: 0,
        heads: 0,
        head: head_record(&(0, GENESIS.to_owned())),
        problem: None,
    };
    for batch in &batches {
        let column = |name: &str| strings(batch, name);
        let (kinds, purposes, subjects, visitors, sites) = (
            column("kind")?,
            column("purpose")?,
            column("subject_id")?,
            column("visitor_id")?,
            column("site_id")?,
        );
        let (events, evidence, reasons, digests, chain_column) = (
            column("event_id")?,
            column("evidence")?,
            column("reason")?,
            column("digest")?,
            column("chain")?,
        );
        let (seqs, ats, erased) = (
            int64s(batch, "seq")?,
            int64s(batch, "at")?,
            booleans(batch, "erased")?,
        );
        for i in 0..batch.num_rows() {
            report.entries += 1;
            let seq = seqs[i];
            let fail = |what: String| Some(format!("entry {seq}: {what}"));
            let expected_seq = chains.len() as i64 + 1;
            if seq != expected_seq {
                report.problem = fail(format!(
                    "expected seq {expected_seq} (entries missing or reordered)"
                ));
                return Ok(report);
            }
            let stored = digests[i].clone().unwrap_or_default();
            if erased[i] {
                report.erased += 1;
                let content = [
                    &subjects[i],
                    &visitors[i],
                    &sites[i],
                    &events[i],
                    &evidence[i],
                    &reasons[i],
                ];
                if content.iter().any(|c| c.is_some()) {
                    report.problem = fail("marked erased but holds content".into());
                    return Ok(report);
                }
                if !accounted.contains(&seq) {
                    report.problem =
                        fail("redacted, but no erasure in table erasures lists it".into());
                    return Ok(report);
                }
            } else {
                let draft = Draft {
                    at: ats[i],
                    kind: kind_name(kinds[i].as_deref().unwrap_or_default()),
                    purpose: purposes[i].clone(),
                    subject_id: subjects[i].clone(),
                    visitor_id: visitors[i].clone(),
                    site_id: sites[i].clone(),
                    event_id: events[i].clone(),
                    evidence: evidence[i].clone(),
                    reason: reasons[i].clone(),
                };
                if kinds[i].as_deref() != Some(draft.kind) || digest(seq, &draft) != stored {
                    report.problem = fail("content does not match its digest (altered)".into());
                    return Ok(report);
                }
            }
            let expected = link(&previous, &stored);
            if chain_column[i].as_deref() != Some(expected.as_str()) {
                report.problem =
                    fail("chain link broken (an earlier entry or this digest was altered)".into());
                return Ok(report);
            }
            chains.push(expected.clone());
            previous = expected;
        }
    }
    let mut records: Vec<RecordedHead> = lake
        .commit_records(TableKind::Ledger)
        .await?
        .into_iter()
        .map(|r| RecordedHead {
            version: r.version,
            txn: r.txns.get(LEDGER_HEAD_APP_ID).copied(),
            head: r.metadata.get(HEAD_METADATA_KEY).cloned(),
        })
        .collect();
    if records.iter().all(|r| r.txn.is_none()) {
        // The log no longer holds a commit with the head's `txn` (expired): the
        // table's state still knows the last one.
        records.push(RecordedHead {
            version: lake.version(TableKind::Ledger)?,
            txn: lake
                .txn_version(TableKind::Ledger, LEDGER_HEAD_APP_ID)
                .await?,
            head: None,
        });
    }
    let (heads, problem) = check_heads(&records, &chains);
    report.heads = heads;
    if let Some(last) = chains.last() {
        report.head = head_record(&(chains.len() as i64, last.clone()));
    }
    report.problem = problem;
    Ok(report)
}

/// What one ledger commit recorded about the head it left.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RecordedHead {
    /// The table version of the commit.
    pub(super) version: i64,
    /// Its `txn` [`LEDGER_HEAD_APP_ID`]: the last seq.
    pub(super) txn: Option<i64>,
    /// Its `commitInfo` [`HEAD_METADATA_KEY`]: `<seq>:<chain>`.
    pub(super) head: Option<String>,
}

/// Compares the heads the commits recorded (oldest first) with the table's chains
/// (`chains[i]`: the chain of entry i + 1). Returns how many heads were compared and
/// the problem with the lowest seq, if any.
pub(super) fn check_heads(records: &[RecordedHead], chains: &[String]) -> (u64, Option<String>) {
    let last = chains.len() as i64;
    let mut compared = 0;
    let mut problems: Vec<(i64, String)> = Vec::new();
    let missing = |version: i64, seq: i64, problems: &mut Vec<(i64, String)>| {
        problems.push((
            last + 1,
            format!(
                "entry {}: missing, but commit {version} recorded the head at seq {seq} \
                 (entries after {last} removed)",
                last + 1
            ),
        ));
    };
    for record in records {
        if let Some(seq) = record.txn
            && seq > last
        {
            missing(record.version, seq, &mut problems);
        }
        let Some(head) = &record.head else {
            continue;
        };
        compared += 1;
        let parsed = head
            .split_once(':')
            .and_then(|(seq, chain)| Some((seq.parse::<i64>().ok()?, chain)));
        let Some((seq, chain)) = parsed else {
            problems.push((
                0,
                format!(
                    "commit {}: unreadable recorded head {head:?}",
                    record.version
                ),
            ));
            continue;
        };
        if seq > last {
            missing(record.version, seq, &mut problems);
        } else if seq >= 1 && chains[(seq - 1) as usize] != chain {
            problems.push((
                seq,
                format!(
                    "entry {seq}: its chain differs from the one commit {} recorded \
                     (entries up to here rewritten)",
                    record.version
                ),
            ));
        } else if seq == 0 && chain != GENESIS {
            problems.push((
                0,
                format!(
                    "commit {}: recorded an empty ledger with a chain",
                    record.version
                ),
            ));
        }
    }
    // The newest commit that recorded a head must have recorded this table's last
    // entry: later entries were appended by no ledger writer.
    if let Some(seq) = records.iter().rev().find_map(|r| r.txn)
        && seq < last
    {
        problems.push((
            seq + 1,
            format!(
                "entry {}: after the head the last ledger commit recorded ({seq}): \
                 appended outside the ledger's writers",
                seq + 1
            ),
        ));
    }
    let problem = problems
        .into_iter()
        .min_by_key(|(seq, _)| *seq)
        .map(|(_, p)| p);
    (compared, problem)
}

/// The ledger seqs the erasures list as redacted by them.
async fn redactions(ctx: &SessionContext) -> Result<HashSet<i64>> {
    let batches = collect(
        ctx,
        &format!(
            "SELECT receipt FROM erasures WHERE status = {} AND receipt IS NOT NULL",
            quote(REDACTION_STATUS)
        ),
    )
    .await?;
    let mut seqs = HashSet::new();
    for batch in &batches {
        for receipt in strings(batch, "receipt")?.into_iter().flatten() {
            seqs.extend(redacted_seqs(&receipt));
        }
    }
    Ok(seqs)
}

/// The seqs an erasure's receipt `["ledger", {"seqs": [...]}]` lists (none for
/// another table's).
pub(super) fn redacted_seqs(receipt: &str) -> Vec<i64> {
    let Ok(Value::Array(parts)) = serde_json::from_str::<Value>(receipt) else {
        return Vec::new();
    };
    match parts.as_slice() {
        [Value::String(table), detail, ..] if table == TableKind::Ledger.name() => detail["seqs"]
            .as_array()
            .map(|seqs| seqs.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The static name of a known entry kind ("" for an unknown one, which then fails
/// verification).
pub(super) fn kind_name(kind: &str) -> &'static str {
    [
        "link",
        "link_refused",
        "unlink",
        "grant",
        "confirm",
        "confirm_refused",
        "withdraw",
        "unsubscribe",
    ]
    .into_iter()
    .find(|k| *k == kind)
    .unwrap_or("")
}
