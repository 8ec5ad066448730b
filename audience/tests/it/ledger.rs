//! The consent ledger's rules over a real lake: double opt-in only through the
//! signed link for the latest grant, identify links only a persistent visitor id
//! (two people behind one cookieless id stay apart in profiles and scores), and
//! `verify` catching removed trailing entries, a re-chained ledger and a redaction
//! no erasure accounts for.

use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};
use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::{col, lit};
use spur_audience::ledger::{Draft, REDACTED_COLUMNS, chain};
use spur_audience::{Ledger, LifecycleConfig, ScoringConfig, consent_sql, verify};
use spur_lake::model::{ErasureRow, EventRow, LedgerRow};
use spur_lake::read::{collect, int64s, strings};
use spur_lake::{Lake, TableKind, erasures_batch, ledger_batch};
use spur_testkit::{T0, Writer, boot_views, identify, pageview, root, signup};

const MIN: i64 = 60_000;
const A: &str = "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0";
const A_PHONE: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";

/// A consent event of `visitor` (visitor kind `kind`) setting marketing to `action`,
/// with `evidence`.
fn consent(
    id: &str,
    visitor: &str,
    kind: &str,
    time: i64,
    action: &str,
    evidence: &str,
) -> EventRow {
    let mut row = pageview(id, visitor, "s-consent", time, "/privacy", &[]);
    row.event_type = "consent".into();
    row.visitor_kind = kind.into();
    row.path = None;
    row.consent_purposes = Some(format!(r#"{{"marketing":"{action}"}}"#));
    row.consent_evidence = Some(evidence.into());
    row
}

/// The consent event the collector's `/v1/confirm` makes for grant `grant_seq` of
/// `subject` (visitor kind `subject`, evidence set by the collector only).
fn signed_confirm(id: &str, subject: &str, time: i64, grant_seq: i64) -> EventRow {
    let mut row = consent(
        id,
        subject,
        "subject",
        time,
        "granted",
        &format!(
            r#"{{"purposes":["marketing"],"confirmation":true,"method":"{}","grant_seq":{grant_seq}}}"#,
            spur_schemas::confirm::DOUBLE_OPT_IN_METHOD
        ),
    );
    row.site_id = String::new();
    row.url = None;
    row
}

/// Marketing consent state per subject, as profiles and segments see it.
async fn consent_states(lake: &Lake, double_opt_in: bool) -> Result<BTreeMap<String, String>> {
    let ctx = lake.session_context().await?;
    let mut out = BTreeMap::new();
    for batch in &collect(&ctx, &consent_sql(double_opt_in)).await? {
        let subjects = strings(batch, "subject_id")?;
        let states = strings(batch, "consent_state")?;
        for (s, state) in subjects.into_iter().zip(states) {
            out.insert(s.unwrap_or_default(), state.unwrap_or_default());
        }
    }
    Ok(out)
}

/// Runs the follower and returns the new entries as (seq, kind, reason).
async fn step(w: &mut Writer, now: i64) -> Result<Vec<(i64, String, Option<String>)>> {
    Ok(step_rows(w, now)
        .await?
        .into_iter()
        .map(|e| (e.seq, e.kind, e.reason))
        .collect())
}

async fn step_rows(w: &mut Writer, now: i64) -> Result<Vec<LedgerRow>> {
    let step = Ledger::load(&w.lake)
        .await?
        .step(&mut w.lake, now, None)
        .await?;
    Ok(step.entries)
}

/// The seq of the marketing grant among `entries`.
fn marketing_grant(entries: &[LedgerRow]) -> Result<i64> {
    entries
        .iter()
        .find(|e| e.kind == "grant" && e.purpose.as_deref() == Some("marketing"))
        .map(|e| e.seq)
        .with_context(|| format!("no marketing grant in {entries:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_opt_in_holds_only_through_the_signed_link_for_a_standing_grant() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut w = Writer::new(&root(&dir)?).await?;
    // The sign-up with marketing consent; its evidence claims the confirmation (a
    // browser could always send that): it only grants.
    w.append(vec![signup("a-sign", A_PHONE, T0, A, true)])
        .await?;
    let first = step_rows(&mut w, T0 + MIN).await?;
    let grant = marketing_grant(&first)?;
    ensure!(
        !first.iter().any(|e| e.kind == "confirm"),
        "an identify confirmed: {first:?}"
    );
    ensure!(consent_states(&w.lake, true).await?[A] == "pending");
    ensure!(consent_states(&w.lake, false).await?[A] == "granted");

    // A website's consent event claiming the confirmation: refused (its grant stays a
    // grant, still pending).
    w.append(vec![consent(
        "a-forged",
        A_PHONE,
        "persistent",
        T0 + 2 * MIN,
        "granted",
        &format!(
            r#"{{"purposes":["marketing"],"confirmation":true,"method":"double_opt_in_link","grant_seq":{grant}}}"#
        ),
    )])
    .await?;
    let forged = step_rows(&mut w, T0 + 3 * MIN).await?;
    let kinds: Vec<_> = forged
        .iter()
        .map(|e| (e.kind.as_str(), e.reason.as_deref()))
        .collect();
    ensure!(
        kinds
            == [
                ("grant", None),
                ("confirm_refused", Some("not_signed_link"))
            ],
        "{kinds:?}"
    );
    ensure!(consent_states(&w.lake, true).await?[A] == "pending");
    // The forged event's own grant is the latest; the link for `grant` stays valid
    // (banners grant again on every visit).
    let latest = marketing_grant(&forged)?;

    // A signed link naming a seq that is no grant of A's.
    w.append(vec![signed_confirm("a-c1", A, T0 + 4 * MIN, 999)])
        .await?;
    let unknown = step(&mut w, T0 + 5 * MIN).await?;
    ensure!(
        unknown
            == [(
                latest + 2,
                "confirm_refused".into(),
                Some("unknown_grant".into())
            )],
        "{unknown:?}"
    );
    // The signed link mailed for the first grant confirms, the newer grant
    // notwithstanding.
    w.append(vec![signed_confirm("a-c2", A, T0 + 6 * MIN, grant)])
        .await?;
    let older = step(&mut w, T0 + 7 * MIN).await?;
    ensure!(older == [(latest + 3, "confirm".into(), None)], "{older:?}");
    ensure!(consent_states(&w.lake, true).await?[A] == "granted");

    // A withdraws, then clicks the link of the latest grant: stale, stays withdrawn.
    w.append(vec![
        consent(
            "a-w",
            A_PHONE,
            "persistent",
            T0 + 8 * MIN,
            "withdrawn",
            "{}",
        ),
        signed_confirm("a-c3", A, T0 + 9 * MIN, latest),
    ])
    .await?;
    let withdrawn = step(&mut w, T0 + 10 * MIN).await?;
    let kinds: Vec<_> = withdrawn
        .iter()
        .map(|(_, k, r)| (k.as_str(), r.as_deref()))
        .collect();
    ensure!(
        kinds == [("withdraw", None), ("confirm_refused", Some("stale_link"))],
        "{kinds:?}"
    );
    ensure!(consent_states(&w.lake, true).await?[A] == "withdrawn");

    // A grants again and confirms through the link of that grant: granted.
    w.append(vec![consent(
        "a-g",
        A_PHONE,
        "persistent",
        T0 + 11 * MIN,
        "granted",
        r#"{"purposes":["marketing"]}"#,
    )])
    .await?;
    let regrant = marketing_grant(&step_rows(&mut w, T0 + 12 * MIN).await?)?;
    ensure!(consent_states(&w.lake, true).await?[A] == "pending");
    w.append(vec![signed_confirm("a-c4", A, T0 + 13 * MIN, regrant)])
        .await?;
    let confirmed = step(&mut w, T0 + 14 * MIN).await?;
    ensure!(
        confirmed == [(regrant + 1, "confirm".into(), None)],
        "{confirmed:?}"
    );
    ensure!(consent_states(&w.lake, true).await?[A] == "granted");
    // The entry says how it was confirmed.
    let ctx = w.lake.session_context().await?;
    let evidence = collect(
        &ctx,
        &format!("SELECT evidence FROM ledger WHERE seq = {}", regrant + 1),
    )
    .await?;
    let evidence = strings(&evidence[0], "evidence")?[0]
        .clone()
        .context("evidence")?;
    ensure!(
        evidence.contains(r#""method":"double_opt_in_link""#),
        "{evidence}"
    );
    // A later withdrawal wins over the confirmation.
    w.append(vec![consent(
        "a-w2",
        A_PHONE,
        "persistent",
        T0 + 15 * MIN,
        "withdrawn",
        "{}",
    )])
    .await?;
    step(&mut w, T0 + 16 * MIN).await?;
    ensure!(consent_states(&w.lake, true).await?[A] == "withdrawn");
    ensure!(verify(&w.lake).await?.problem.is_none());
    Ok(())
}

/// Profiles (the analyst view) as `subject_id → pageviews`.
async fn profile_pageviews(root: &str) -> Result<BTreeMap<String, i64>> {
    let lake = Lake::open(root).await?;
    let ctx = lake.session_context().await?;
    spur_audience::views::register_views(&ctx, &LifecycleConfig::default()).await?;
    let mut out = BTreeMap::new();
    for batch in &collect(&ctx, "SELECT subject_id, pageviews FROM profiles").await? {
        let subjects = strings(batch, "subject_id")?;
        let views = int64s(batch, "pageviews")?;
        for (s, v) in subjects.into_iter().zip(views) {
            out.insert(s.unwrap_or_default(), v);
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_behind_one_cookieless_id_stay_apart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = root(&dir)?;
    let mut w = Writer::new(&root).await?;
    // One address and browser, one day: the collector gives both the same
    // cookieless id.
    let shared = "c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5";
    // Person A signs up without analytics consent (so the id is cookieless).
    let mut signup = identify("a-sign", shared, T0, A);
    signup.visitor_kind = "cookieless".into();
    signup.consent_analytics = false;
    signup.consent_evidence =
        Some(r#"{"purposes":["marketing"],"text_id":"nl-2","policy_version":"2025-06"}"#.into());
    // Person B browses boots pages on the same id, later that day.
    let mut views = boot_views("b", shared, T0 + 30 * MIN, 6);
    for row in &mut views {
        row.visitor_kind = "cookieless".into();
        row.consent_analytics = false;
    }
    let mut rows = vec![signup];
    rows.extend(views);
    w.append(rows).await?;

    // `spur score` brings the ledger up to date and scores every subject.
    let summary =
        spur_audience::score::run(&root, &ScoringConfig::default(), T0 + 3_600_000).await?;
    ensure!(summary.views == 6, "{summary:?}");

    let lake = Lake::open(&root).await?;
    let ctx = lake.session_context().await?;
    let entries = collect(
        &ctx,
        "SELECT kind, subject_id, visitor_id, reason FROM ledger ORDER BY seq",
    )
    .await?;
    let (kinds, subjects, visitors, reasons) = (
        strings(&entries[0], "kind")?,
        strings(&entries[0], "subject_id")?,
        strings(&entries[0], "visitor_id")?,
        strings(&entries[0], "reason")?,
    );
    let ledger: Vec<_> = (0..kinds.len())
        .map(|i| {
            (
                kinds[i].as_deref().unwrap_or_default(),
                subjects[i].as_deref(),
                visitors[i].as_deref(),
                reasons[i].as_deref(),
            )
        })
        .collect();
    ensure!(
        ledger
            == [
                (
                    "link_refused",
                    Some(A),
                    Some(shared),
                    Some("not_persistent_visitor")
                ),
                ("grant", Some(A), None, None),
            ],
        "{ledger:?}"
    );
    // The person and the consent are recorded: A's marketing grant awaits its
    // confirmation.
    ensure!(
        consent_states(&lake, true)
            .await?
            .get(A)
            .map(String::as_str)
            == Some("pending")
    );

    // B's pageviews are the shared id's, never A's: not in A's profile, not in A's
    // scores.
    let profiles = profile_pageviews(&root).await?;
    ensure!(
        profiles.get(shared) == Some(&6),
        "the shared id's own profile: {profiles:?}"
    );
    ensure!(
        profiles.get(A).is_none_or(|views| *views == 0),
        "B's pageviews in A's profile: {profiles:?}"
    );
    let scores = collect(&ctx, "SELECT subject_id, topic FROM scores").await?;
    let scored: Vec<_> = scores
        .iter()
        .map(|b| strings(b, "subject_id"))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    ensure!(scored == [shared], "scores: {scored:?}");
    Ok(())
}

/// A lake with a few ledger commits (several steps, each recording its head).
async fn ledger_lake() -> Result<(tempfile::TempDir, Writer, i64)> {
    let dir = tempfile::tempdir()?;
    let mut w = Writer::new(&root(&dir)?).await?;
    let mut last = 0;
    for (i, visitor) in [
        A_PHONE,
        "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1",
        "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1",
    ]
    .iter()
    .enumerate()
    {
        let at = T0 + i as i64 * MIN;
        let subject = visitor.replace('1', "0");
        w.append(vec![
            signup(&format!("s{i}"), visitor, at, &subject, true),
            consent(
                &format!("w{i}"),
                visitor,
                "persistent",
                at + 1,
                "withdrawn",
                "{}",
            ),
        ])
        .await?;
        let entries = step(&mut w, at + MIN).await?;
        last = entries.last().map_or(last, |e| e.0);
    }
    let clean = verify(&w.lake).await?;
    ensure!(
        clean.problem.is_none() && clean.entries == last as u64 && clean.heads >= 3,
        "{clean:?}"
    );
    Ok((dir, w, last))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_last_entries_fails_verification() -> Result<()> {
    let (_dir, mut w, last) = ledger_lake().await?;
    w.lake
        .delete(TableKind::Ledger, col("seq").gt(lit(last - 2)))
        .await?;
    let report = verify(&w.lake).await?;
    let problem = report.problem.context("truncation not detected")?;
    ensure!(
        problem.starts_with(&format!("entry {}: missing", last - 1)),
        "{problem}"
    );
    Ok(())
}

/// The ledger's entries as drafts, in seq order.
async fn drafts(lake: &Lake) -> Result<Vec<Draft>> {
    let ctx = lake.session_context().await?;
    let batches: Vec<RecordBatch> = collect(
        &ctx,
        "SELECT CAST(at AS BIGINT) / 1000 AS at, kind, purpose, subject_id, visitor_id,
                site_id, event_id, evidence, reason
         FROM ledger ORDER BY seq",
    )
    .await?;
    let mut out = Vec::new();
    for b in &batches {
        let at = int64s(b, "at")?;
        let column = |name: &str| strings(b, name);
        let (kind, purpose, subject, visitor) = (
            column("kind")?,
            column("purpose")?,
            column("subject_id")?,
            column("visitor_id")?,
        );
        let (site, event, evidence, reason) = (
            column("site_id")?,
            column("event_id")?,
            column("evidence")?,
            column("reason")?,
        );
        for i in 0..b.num_rows() {
            let kind: &'static str = match kind[i].as_deref() {
                Some("link") => "link",
                Some("grant") => "grant",
                Some("withdraw") => "withdraw",
                other => anyhow::bail!("unexpected kind {other:?}"),
            };
            out.push(Draft {
                at: at[i],
                kind,
                purpose: purpose[i].clone(),
                subject_id: subject[i].clone(),
                visitor_id: visitor[i].clone(),
                site_id: site[i].clone(),
                event_id: event[i].clone(),
                evidence: evidence[i].clone(),
                reason: reason[i].clone(),
            });
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistently_rechained_ledger_fails_verification() -> Result<()> {
    let (_dir, mut w, last) = ledger_lake().await?;
    // Someone turns the first withdrawal into a grant and recomputes every digest
    // and chain, so that the table on its own is consistent again.
    let mut entries = drafts(&w.lake).await?;
    let altered = entries
        .iter()
        .position(|d| d.kind == "withdraw")
        .context("a withdrawal")?;
    entries[altered].kind = "grant";
    let rows: Vec<LedgerRow> = chain(&(0, "0".repeat(64)), entries, T0 + 3_600_000);
    ensure!(rows.len() as i64 == last);
    w.lake.delete(TableKind::Ledger, lit(true)).await?;
    w.lake
        .append(TableKind::Ledger, ledger_batch(&rows)?, &[])
        .await?;
    let report = verify(&w.lake).await?;
    let problem = report.problem.context("rewrite not detected")?;
    ensure!(problem.contains("its chain differs"), "{problem}");
    // The first head recorded at or after the altered entry is named.
    let named: i64 = problem
        .strip_prefix("entry ")
        .and_then(|p| p.split(':').next())
        .and_then(|n| n.parse().ok())
        .context("seq")?;
    ensure!(named > altered as i64, "{problem}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redaction_needs_the_erasure_that_lists_it() -> Result<()> {
    let (_dir, mut w, _) = ledger_lake().await?;
    // Someone marks entry 2 erased, without an erasure.
    w.lake
        .redact(
            TableKind::Ledger,
            col("seq").eq(lit(2i64)),
            &REDACTED_COLUMNS,
            "erased",
        )
        .await?;
    let report = verify(&w.lake).await?;
    let problem = report
        .problem
        .context("unaccounted redaction not detected")?;
    ensure!(
        problem.starts_with("entry 2: redacted, but no erasure"),
        "{problem}"
    );
    // An erasure row listing another seq does not account for it.
    let row = |seqs: &str| ErasureRow {
        erasure_id: "era_test".into(),
        status: "table_done".into(),
        at: T0,
        digests: Vec::new(),
        receipt: Some(format!(r#"["ledger",{{"rows":1,"seqs":[{seqs}]}}]"#)),
        dt: spur_schemas::time::date(T0),
    };
    w.lake
        .append(TableKind::Erasures, erasures_batch(&[row("3")])?, &[])
        .await?;
    ensure!(verify(&w.lake).await?.problem.is_some());
    // The erasure's own record does.
    w.lake
        .append(TableKind::Erasures, erasures_batch(&[row("2")])?, &[])
        .await?;
    let report = verify(&w.lake).await?;
    ensure!(report.problem.is_none() && report.erased == 1, "{report:?}");
    Ok(())
}
