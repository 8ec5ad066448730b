//! The GDPR duties over a real lake: identity links only with consent evidence and
//! can be split, the ledger detects tampering, double opt-in and one-click
//! unsubscribe gate segment entries, an export holds exactly one subject's rows, an
//! erasure (interrupted, then resumed) leaves no trace in any file, and retention
//! physically removes old partitions.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result, ensure};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::datafusion::prelude::{col, lit};
use spur_audience::{ChangeKind, Engine, Ledger, LifecycleConfig, SegmentDef, verify};
use spur_gdpr::{EraseOptions, admin, erase, export};
use spur_lake::model::EventRow;
use spur_lake::{Lake, TableKind};
use spur_testkit::{BOOT_FANS, T0, Writer, boot_views, confirm, pageview, root, signup};

const MIN: i64 = 60_000;
const A: &str = "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0";
const A_PHONE: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const A_LAPTOP: &str = "a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2";
const B: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
const B_PHONE: &str = "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1";

/// The testkit's `boot_fans` and `customers` segments, as the engine takes them.
fn boot_fans() -> Vec<SegmentDef> {
    BOOT_FANS
        .iter()
        .map(|(name, condition)| SegmentDef {
            name: (*name).into(),
            condition: (*condition).into(),
        })
        .collect()
}

/// Two people: A on two devices (anonymous history first), B on one.
fn history() -> Vec<EventRow> {
    let mut rows = Vec::new();
    rows.extend(boot_views("a-anon", A_PHONE, T0, 3));
    rows.push(signup("a-sign", A_PHONE, T0 + 10 * MIN, A, true));
    rows.extend(boot_views("a-lap", A_LAPTOP, T0 + 20 * MIN, 2));
    rows.push(signup("a-sign2", A_LAPTOP, T0 + 30 * MIN, A, true));
    rows.extend(boot_views("b-anon", B_PHONE, T0, 2));
    rows.push(signup("b-sign", B_PHONE, T0 + 5 * MIN, B, true));
    rows
}

/// A string column (DataFusion hands out `Utf8View`) as owned strings.
fn texts(column: &datafusion::arrow::array::ArrayRef) -> Result<Vec<String>> {
    let column = cast(column, &DataType::Utf8)?;
    Ok(column
        .as_string::<i32>()
        .iter()
        .map(|v| v.unwrap_or_default().to_owned())
        .collect())
}

async fn subjects(lake: &Lake) -> Result<Vec<(String, String)>> {
    let ctx = lake.session_context().await?;
    let batches = ctx
        .sql(&format!(
            "SELECT visitor_id, subject_id FROM ({}) ORDER BY visitor_id",
            spur_audience::SUBJECTS_SQL
        ))
        .await?
        .collect()
        .await?;
    let mut out = Vec::new();
    for batch in &batches {
        out.extend(
            texts(batch.column(0))?
                .into_iter()
                .zip(texts(batch.column(1))?),
        );
    }
    Ok(out)
}

#[tokio::test]
async fn identify_links_only_with_consent_evidence_and_a_split_undoes_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut w = Writer::new(&root(&dir)?).await?;
    let mut rows = history();
    // An identify without a policy reference must not link.
    let mut bare = signup(
        "c-sign",
        "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1",
        T0,
        "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0",
        true,
    );
    bare.consent_evidence = Some(r#"{"purposes":["marketing"],"text_id":"nl"}"#.into());
    rows.push(bare);
    w.append(rows).await?;
    let mut ledger = Ledger::load(&w.lake).await?;
    let step = ledger.step(&mut w.lake, T0 + DAY_MS, None).await?;
    let kinds: Vec<(String, Option<String>)> = step
        .entries
        .iter()
        .map(|e| (e.kind.clone(), e.reason.clone()))
        .collect();
    ensure!(
        kinds.iter().filter(|(k, _)| k == "link").count() == 3,
        "three links expected: {kinds:?}"
    );
    ensure!(
        kinds.contains(&("link_refused".into(), Some("no_policy_reference".into()))),
        "refusal with its reason expected: {kinds:?}"
    );
    let refused = step
        .entries
        .iter()
        .find(|e| e.kind == "link_refused")
        .context("refused")?;
    ensure!(
        refused.subject_id.is_none(),
        "a refused link names no person"
    );

    let map = subjects(&w.lake).await?;
    let of = |v: &str| map.iter().find(|(x, _)| x == v).map(|(_, s)| s.clone());
    ensure!(of(A_PHONE).as_deref() == Some(A) && of(A_LAPTOP).as_deref() == Some(A));
    ensure!(
        of("c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1").as_deref()
            == Some("c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1")
    );
    // A's anonymous history (3 views before the sign-up) is A's now.
    let export_a = export(&w.lake, A, T0 + DAY_MS, None).await?;
    ensure!(
        export_a.tables["events"].len() == 3 + 1 + 2 + 1,
        "A's events: {}",
        export_a.tables["events"].len()
    );

    // A wrong merge is split: the laptop is no longer A.
    admin::split(
        &mut w.lake,
        A,
        Some(A_LAPTOP.into()),
        Some("shared laptop".into()),
        T0 + DAY_MS,
    )
    .await?;
    let map = subjects(&w.lake).await?;
    let of = |v: &str| map.iter().find(|(x, _)| x == v).map(|(_, s)| s.clone());
    ensure!(
        of(A_LAPTOP).as_deref() == Some(A_LAPTOP),
        "split undone: {map:?}"
    );
    ensure!(of(A_PHONE).as_deref() == Some(A));
    ensure!(verify(&w.lake).await?.problem.is_none());
    // Splitting what is not linked is refused.
    ensure!(
        admin::split(&mut w.lake, A, Some(B_PHONE.into()), None, T0)
            .await
            .is_err()
    );
    Ok(())
}

const DAY_MS: i64 = 86_400_000;

#[tokio::test]
async fn tampering_with_a_past_ledger_entry_is_detected() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut w = Writer::new(&root(&dir)?).await?;
    w.append(history()).await?;
    Ledger::load(&w.lake)
        .await?
        .step(&mut w.lake, T0 + DAY_MS, None)
        .await?;
    let clean = verify(&w.lake).await?;
    ensure!(clean.problem.is_none() && clean.entries >= 6, "{clean:?}");

    // Someone rewrites entry 2 (a grant) as a withdrawal.
    let table = w.lake.table(TableKind::Ledger).clone();
    let (_, metrics) = table
        .update()
        .with_predicate(col("seq").eq(lit(2i64)))
        .with_update("kind", lit("withdraw"))
        .await?;
    ensure!(metrics.num_updated_rows == 1);
    w.lake.refresh().await?;
    let report = verify(&w.lake).await?;
    let problem = report.problem.context("tampering not detected")?;
    ensure!(problem.starts_with("entry 2:"), "{problem}");

    // Deleting an entry breaks the sequence.
    let dir = tempfile::tempdir()?;
    let mut w = Writer::new(&root(&dir)?).await?;
    w.append(history()).await?;
    Ledger::load(&w.lake)
        .await?
        .step(&mut w.lake, T0 + DAY_MS, None)
        .await?;
    w.lake
        .delete(TableKind::Ledger, col("seq").eq(lit(3i64)))
        .await?;
    let problem = verify(&w.lake)
        .await?
        .problem
        .context("deletion not detected")?;
    ensure!(problem.contains("entry 4"), "{problem}");
    Ok(())
}

#[tokio::test]
async fn double_opt_in_and_one_click_unsubscribe_gate_segment_changes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut w = Writer::new(&root(&dir)?).await?;
    let lifecycle = LifecycleConfig::default();
    ensure!(lifecycle.double_opt_in);
    let mut engine = Engine::load(&w.lake, &lifecycle, &boot_fans(), &Default::default()).await?;
    // Signed up with marketing consent, not yet confirmed: nothing is sent.
    let mut rows = boot_views("d", A_PHONE, T0, 5);
    let mut pending = signup("d-sign", A_PHONE, T0 + 6 * MIN, A, true);
    pending.consent_evidence =
        Some(r#"{"purposes":["marketing"],"text_id":"nl","policy_version":"3"}"#.into());
    rows.push(pending);
    w.append(rows).await?;
    let step = engine.step(&mut w.lake, T0 + 10 * MIN, false).await?;
    let kinds: Vec<_> = step.changes.iter().map(|c| c.change).collect();
    ensure!(
        kinds == [ChangeKind::ConfirmationRequested],
        "entered before confirmation: {:?}",
        step.changes
    );
    let grant = step.changes[0].grant_seq().context("grant")?;

    // A browser claiming the click (identify with confirmation evidence) confirms
    // nothing; the signed link's POST does.
    let mut forged = signup(
        "d-forged",
        "a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3",
        T0 + 15 * MIN,
        A,
        true,
    );
    forged.consent_evidence = Some(
        r#"{"purposes":["marketing"],"text_id":"nl","policy_version":"3","confirmation":true}"#
            .into(),
    );
    w.append(vec![forged]).await?;
    let step = engine.step(&mut w.lake, T0 + 16 * MIN, false).await?;
    ensure!(
        step.changes.iter().all(|c| c.change != ChangeKind::Entered),
        "a forged confirmation: {:?}",
        step.changes
    );
    // The link mailed for the first grant still confirms after the newer one.
    w.append(vec![confirm("d-confirm", A, T0 + 20 * MIN, grant)])
        .await?;
    let step = engine.step(&mut w.lake, T0 + 21 * MIN, false).await?;
    let entered: Vec<_> = step
        .changes
        .iter()
        .map(|c| (c.subject_id.as_str(), c.change))
        .collect();
    ensure!(entered == [(A, ChangeKind::Entered)], "{entered:?}");

    // One-click unsubscribe (as the collector records it).
    let mut unsubscribe = pageview("d-unsub", A, "s-u", T0 + 30 * MIN, "/", &[]);
    unsubscribe.event_type = "consent".into();
    unsubscribe.visitor_kind = "subject".into();
    unsubscribe.site_id = String::new();
    unsubscribe.url = None;
    unsubscribe.path = None;
    unsubscribe.consent_purposes = Some(r#"{"marketing":"withdrawn"}"#.into());
    unsubscribe.consent_evidence =
        Some(r#"{"purposes":["marketing"],"method":"one_click_unsubscribe"}"#.into());
    w.append(vec![unsubscribe]).await?;
    let step = engine.step(&mut w.lake, T0 + 31 * MIN, false).await?;
    let exits: Vec<_> = step
        .changes
        .iter()
        .map(|c| (c.subject_id.as_str(), c.change, c.reason.as_str()))
        .collect();
    ensure!(
        exits == [(A, ChangeKind::Exited, "unsubscribed")],
        "{exits:?}"
    );

    // More interest afterwards triggers nothing.
    w.append(boot_views("d-more", A_PHONE, T0 + 40 * MIN, 5))
        .await?;
    let step = engine.step(&mut w.lake, T0 + 50 * MIN, false).await?;
    ensure!(step.changes.is_empty(), "{:?}", step.changes);
    let step = engine.step(&mut w.lake, T0 + 60 * MIN, true).await?;
    ensure!(step.changes.is_empty(), "{:?}", step.changes);
    Ok(())
}

/// Every string value of every Parquet file under `dir`, decoded, plus every other
/// file's raw text (the Delta log), concatenated per file.
fn every_file(dir: &Path, out: &mut Vec<(String, String)>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            every_file(&path, out)?;
            continue;
        }
        let bytes = std::fs::read(&path)?;
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if path.extension().and_then(|e| e.to_str()) == Some("parquet") {
            let reader =
                ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path)?)?.build()?;
            for batch in reader {
                let batch = batch?;
                for column in batch.columns() {
                    let as_text = cast(column, &DataType::Utf8);
                    if let Ok(strings) = as_text {
                        let strings = strings.as_string::<i32>();
                        for i in 0..strings.len() {
                            if strings.is_valid(i) {
                                text.push_str(strings.value(i));
                                text.push('\n');
                            }
                        }
                    } else if let Some(list) = column.as_list_opt::<i32>() {
                        let values = cast(list.values(), &DataType::Utf8)?;
                        for v in values.as_string::<i32>().iter().flatten() {
                            text.push_str(v);
                            text.push('\n');
                        }
                    }
                }
            }
        }
        out.push((path.display().to_string(), text));
    }
    Ok(())
}

fn traces(dir: &Path, needles: &[&str]) -> Result<Vec<String>> {
    let mut files = Vec::new();
    every_file(dir, &mut files)?;
    Ok(files
        .into_iter()
        .filter(|(_, text)| needles.iter().any(|n| text.contains(n)))
        .map(|(path, _)| path)
        .collect())
}

async fn event_ids(lake: &Lake, filter: &str) -> Result<BTreeSet<String>> {
    let ctx = lake.session_context().await?;
    let batches = ctx
        .sql(&format!("SELECT event_id FROM events WHERE {filter}"))
        .await?
        .collect()
        .await?;
    let mut out = BTreeSet::new();
    for batch in &batches {
        out.extend(texts(batch.column(0))?);
    }
    Ok(out)
}

#[tokio::test]
async fn export_holds_all_of_a_and_nothing_of_b() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut w = Writer::new(&root(&dir)?).await?;
    let rows = history();
    let truth: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.visitor_id.starts_with("a"))
        .map(|r| r.event_id.clone())
        .collect();
    w.append(rows).await?;
    let mut engine = Engine::load(
        &w.lake,
        &LifecycleConfig::default(),
        &boot_fans(),
        &Default::default(),
    )
    .await?;
    engine.step(&mut w.lake, T0 + DAY_MS, true).await?;
    let export = export(&w.lake, A, T0 + DAY_MS, None).await?;
    let got: BTreeSet<String> = export.tables["events"]
        .iter()
        .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
        .collect();
    ensure!(got == truth, "export {got:?} != truth {truth:?}");
    ensure!(!export.tables["ledger"].is_empty());
    ensure!(
        !export.tables["segment_changes"].is_empty(),
        "A entered boot_fans"
    );
    let json = export.to_json().to_string();
    for b in [B, B_PHONE, "b-anon", "b-sign"] {
        ensure!(!json.contains(b), "B's {b} in A's export");
    }
    let summary = export.summary();
    ensure!(
        summary.contains("Events recorded: 7") && summary.contains("grant marketing"),
        "{summary}"
    );
    Ok(())
}

#[tokio::test]
async fn erasure_interrupted_then_resumed_leaves_no_trace_and_spares_b() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut w = Writer::new(&root(&dir)?).await?;
    w.append(history()).await?;
    let sessions = vec![spur_testkit::session(0, 0), {
        let mut s = spur_testkit::session(0, 1);
        s.visitor_id = A_PHONE.into();
        s
    }];
    w.lake
        .append(
            TableKind::Sessions,
            spur_lake::sessions_batch(&sessions)?,
            &[],
        )
        .await?;
    let mut engine = Engine::load(
        &w.lake,
        &LifecycleConfig::default(),
        &boot_fans(),
        &Default::default(),
    )
    .await?;
    engine.step(&mut w.lake, T0 + DAY_MS, true).await?;
    // The segment engine's checkpoint holds A's visitors' states too.
    engine.checkpoint(&mut w.lake, T0 + DAY_MS).await?;
    let score = |subject: &str| spur_lake::model::ScoreRow {
        subject_id: subject.into(),
        topic: "boots".into(),
        score: 0.5,
        raw: 1.0,
        views: 3,
        last_view: T0,
        as_of: T0 + DAY_MS,
        dt: "2025-12-11".into(),
    };
    w.lake
        .append(
            TableKind::Scores,
            spur_lake::scores_batch(&[score(A), score(B)])?,
            &[],
        )
        .await?;
    let before_b = event_ids(&w.lake, &format!("visitor_id = '{B_PHONE}'")).await?;
    let a_ids = [A, A_PHONE, A_LAPTOP];
    ensure!(
        !traces(dir.path(), &a_ids)?.is_empty(),
        "the scan must see A before"
    );

    let state = tempfile::tempdir()?;
    std::fs::write(
        state.path().join("crm.failed.jsonl"),
        format!("{{\"subject_id\":\"{A}\"}}\n{{\"subject_id\":\"{B}\"}}\n"),
    )?;
    let interrupted = EraseOptions {
        state_dir: Some(state.path().to_owned()),
        interrupt_after: Some(TableKind::Sessions),
        ..EraseOptions::default()
    };
    ensure!(
        erase(&mut w.lake, A, T0 + DAY_MS, &interrupted)
            .await
            .is_err()
    );
    // A new process resumes it.
    let mut lake = Lake::open(&root(&dir)?).await?;
    let options = EraseOptions {
        state_dir: Some(state.path().to_owned()),
        ..EraseOptions::default()
    };
    let receipt = erase(&mut lake, A, T0 + DAY_MS, &options).await?;
    ensure!(receipt.resumed && !receipt.repeated, "{receipt:?}");
    ensure!(receipt.tables["events"].rows == 7, "{receipt:?}");
    ensure!(receipt.tables["sessions"].rows == 1, "{receipt:?}");
    ensure!(receipt.tables["ledger"].rows >= 4, "{receipt:?}");
    ensure!(receipt.state_files.len() == 1, "{receipt:?}");

    let found = traces(dir.path(), &a_ids)?;
    ensure!(found.is_empty(), "A still in {found:?}");
    ensure!(
        !traces(state.path(), &a_ids)?.iter().any(|_| true),
        "A in the state dir"
    );
    ensure!(
        event_ids(&lake, &format!("visitor_id = '{B_PHONE}'")).await? == before_b,
        "B changed"
    );
    ensure!(
        verify(&lake).await?.problem.is_none(),
        "the chain must survive redaction"
    );

    let again = erase(&mut lake, A, T0 + DAY_MS, &options).await?;
    ensure!(
        again.repeated && again.erasure_id == receipt.erasure_id,
        "{again:?}"
    );

    // The segment service drops A without telling anyone, and never re-adds it.
    let step = engine.step(&mut lake, T0 + 2 * DAY_MS, true).await?;
    ensure!(
        step.changes.iter().all(|c| c.subject_id != A),
        "{:?}",
        step.changes
    );
    ensure!(traces(dir.path(), &a_ids)?.is_empty());
    Ok(())
}

#[tokio::test]
async fn retention_removes_old_partitions_from_storage() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut w = Writer::new(&root(&dir)?).await?;
    let old: Vec<EventRow> = boot_views("old", A_PHONE, T0 - 40 * DAY_MS, 3);
    let new: Vec<EventRow> = boot_views("new", A_PHONE, T0, 3);
    w.append(old).await?;
    w.append(new).await?;
    let cutoff = chrono::DateTime::from_timestamp_millis(T0 - 30 * DAY_MS)
        .context("date")?
        .format("%Y-%m-%d")
        .to_string();
    let summary = w.lake.expire(TableKind::Events, &cutoff).await?;
    ensure!(
        summary.rows == 3 && summary.files_deleted >= 1,
        "{summary:?}"
    );
    ensure!(event_ids(&w.lake, "true").await?.len() == 3);
    let found = traces(dir.path(), &["old-0", "old-1", "old-2"])?;
    ensure!(found.is_empty(), "old rows still stored in {found:?}");
    Ok(())
}

/// One raw HTTP/1.1 request to `addr`; the status line and the body.
async fn http(addr: std::net::SocketAddr, request: String) -> Result<(String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.lines().next().unwrap_or_default().to_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Ok((format!("{status}\n{head}"), body.to_owned()))
}

fn post(path: &str, token: Option<&str>, body: &str) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "POST {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_need_the_token_and_are_not_cors_open() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut w = Writer::new(&root(&dir)?).await?;
    w.append(history()).await?;
    Ledger::load(&w.lake)
        .await?
        .step(&mut w.lake, T0 + DAY_MS, None)
        .await?;
    let token = "t0123456789abcdef0123456789abcdef";
    let admin = std::sync::Arc::new(admin::Admin {
        lake: tokio::sync::Mutex::new(Lake::open(&root(&dir)?).await?),
        token: spur_schemas::Secret::new(token),
        resolve: std::sync::Arc::new(|s: &str| Ok(s.to_owned())),
        erase: EraseOptions::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(admin::serve(listener, admin, async {
        let _ = stopped.await;
    }));
    let body = format!(r#"{{"subject":"{A}"}}"#);

    for bad in [
        None,
        Some("wrong"),
        Some("t0123456789abcdef0123456789abcdeX"),
    ] {
        let (status, _) = http(addr, post("/v1/subjects/export", bad, &body)).await?;
        ensure!(status.starts_with("HTTP/1.1 401"), "{bad:?}: {status}");
    }
    let preflight = format!(
        "OPTIONS /v1/subjects/export HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\
         Origin: https://evil.example\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    let (status, _) = http(addr, preflight).await?;
    ensure!(status.starts_with("HTTP/1.1 405"), "{status}");
    ensure!(
        !status.to_ascii_lowercase().contains("access-control"),
        "{status}"
    );

    let (status, json) = http(addr, post("/v1/subjects/export", Some(token), &body)).await?;
    ensure!(status.starts_with("HTTP/1.1 200"), "{status}");
    ensure!(
        !status.to_ascii_lowercase().contains("access-control"),
        "{status}"
    );
    let export: serde_json::Value = serde_json::from_str(&json)?;
    ensure!(
        export["subject_id"] == A && export["counts"]["events"] == 7,
        "{export}"
    );
    ensure!(!json.contains(B_PHONE));
    let (status, _) = http(addr, post("/v1/subjects/export", Some(token), "{nope")).await?;
    ensure!(status.starts_with("HTTP/1.1 400"), "{status}");

    let _ = stop.send(());
    server.await??;
    Ok(())
}
