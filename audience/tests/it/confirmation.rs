//! Confirmation requests (double opt-in): a marketing grant of a subject whose consent
//! is not yet valid gets one `consent.confirmation_requested`, naming the grant;
//! grants repeated by a banner within `confirmation_interval` get none; after the
//! interval a new grant gets a new one; the signed confirmation of the latest grant
//! makes the subject a member and no request follows; a reloaded engine decides
//! nothing twice.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use spur_audience::{Change, ChangeKind, Engine, LifecycleConfig, ScoringConfig, SegmentDef};
use spur_testkit::{BOOT_FANS, T0, Writer, boot_views, confirm, consent, root, signup};

const A: &str = "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0";
const A_PHONE: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const HOUR: i64 = 3_600_000;

fn segments() -> Vec<SegmentDef> {
    BOOT_FANS
        .iter()
        .map(|(name, condition)| SegmentDef {
            name: (*name).into(),
            condition: (*condition).into(),
        })
        .collect()
}

fn requests(changes: &[Change]) -> Vec<&Change> {
    changes
        .iter()
        .filter(|c| c.change == ChangeKind::ConfirmationRequested)
        .collect()
}

#[tokio::test]
async fn a_pending_grant_is_asked_to_confirm_once_per_interval() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut w = Writer::new(&root(&dir)?).await?;
    let mut rows = boot_views("a", A_PHONE, T0, 5);
    rows.push(signup("a-sign", A_PHONE, T0 + 10 * 60_000, A, true));
    w.append(rows).await?;
    let lifecycle = LifecycleConfig {
        confirmation_interval: Duration::from_secs(24 * 3600),
        ..LifecycleConfig::default()
    };
    let scoring = ScoringConfig::default();
    let mut engine = Engine::load(&w.lake, &lifecycle, &segments(), &scoring).await?;

    // The sign-up's grant: one request, nobody enters (the browser's
    // `confirmation: true` in the testkit's sign-up counts for nothing).
    let step = engine.step(&mut w.lake, T0 + HOUR, false).await?;
    let asked = requests(&step.changes);
    ensure!(asked.len() == 1, "{:?}", step.changes);
    ensure!(asked[0].subject_id == A && asked[0].segment.is_empty());
    let first_grant = asked[0].grant_seq().context("grant seq")?;
    ensure!(
        step.changes.iter().all(|c| c.change != ChangeKind::Entered),
        "entered before confirming: {:?}",
        step.changes
    );
    let body: serde_json::Value = serde_json::from_slice(&asked[0].body())?;
    ensure!(body["type"] == "consent.confirmation_requested", "{body}");
    ensure!(body["data"].get("segment").is_none(), "{body}");

    // The banner grants again an hour later: within the interval, no second request.
    w.append(vec![consent("a-banner", A_PHONE, T0 + 2 * HOUR, "granted")])
        .await?;
    let step = engine.step(&mut w.lake, T0 + 2 * HOUR, false).await?;
    ensure!(requests(&step.changes).is_empty(), "{:?}", step.changes);

    // A day later, another grant: a new request, for that grant.
    w.append(vec![consent(
        "a-banner2",
        A_PHONE,
        T0 + 30 * HOUR,
        "granted",
    )])
    .await?;
    let step = engine.step(&mut w.lake, T0 + 30 * HOUR, false).await?;
    let asked = requests(&step.changes);
    ensure!(asked.len() == 1, "{:?}", step.changes);
    let latest_grant = asked[0].grant_seq().context("grant seq")?;
    ensure!(latest_grant > first_grant);

    // A reloaded engine decides nothing again for the same ledger entries.
    let mut engine = Engine::load(&w.lake, &lifecycle, &segments(), &scoring).await?;
    let step = engine.step(&mut w.lake, T0 + 31 * HOUR, false).await?;
    ensure!(step.changes.is_empty(), "{:?}", step.changes);

    // The signed confirmation of the latest grant: a member, and no request.
    w.append(vec![confirm("a-confirm", A, T0 + 32 * HOUR, latest_grant)])
        .await?;
    let step = engine.step(&mut w.lake, T0 + 32 * HOUR, false).await?;
    ensure!(requests(&step.changes).is_empty(), "{:?}", step.changes);
    ensure!(
        step.changes.iter().any(|c| c.change == ChangeKind::Entered
            && c.subject_id == A
            && c.segment == "boot_fans"),
        "{:?}",
        step.changes
    );

    // A confirmed subject's later grants (the banner on every visit) ask nothing.
    w.append(vec![consent(
        "a-banner3",
        A_PHONE,
        T0 + 60 * HOUR,
        "granted",
    )])
    .await?;
    let step = engine.step(&mut w.lake, T0 + 60 * HOUR, false).await?;
    ensure!(requests(&step.changes).is_empty(), "{:?}", step.changes);
    Ok(())
}

#[tokio::test]
async fn single_opt_in_asks_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut w = Writer::new(&root(&dir)?).await?;
    let mut rows = boot_views("a", A_PHONE, T0, 5);
    rows.push(signup("a-sign", A_PHONE, T0 + 10 * 60_000, A, true));
    w.append(rows).await?;
    let lifecycle = LifecycleConfig {
        double_opt_in: false,
        ..LifecycleConfig::default()
    };
    let mut engine =
        Engine::load(&w.lake, &lifecycle, &segments(), &ScoringConfig::default()).await?;
    let step = engine.step(&mut w.lake, T0 + HOUR, false).await?;
    ensure!(requests(&step.changes).is_empty(), "{:?}", step.changes);
    ensure!(
        step.changes
            .iter()
            .any(|c| c.change == ChangeKind::Entered && c.subject_id == A),
        "{:?}",
        step.changes
    );
    Ok(())
}
