//! Segment membership over a real lake: a scripted history makes subjects enter and
//! leave with the right reasons, only with marketing consent, never for bots; state
//! survives a reload; the analyst views (`profiles`, `segment_members`, `timeline`)
//! show the same.

use std::collections::BTreeSet;

use anyhow::{Result, ensure};
use datafusion::arrow::csv::WriterBuilder;
use spur_audience::{Change, ChangeKind, Engine, LifecycleConfig, SegmentDef};
use spur_lake::Lake;
use spur_testkit::{BOOT_FANS, T0, Writer, boot_views, consent, pageview, root, signup};

const DAY: i64 = 86_400_000;

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

/// `sql` over the lake at `root` with the analyst views of `lifecycle`, as CSV with
/// a header line — what `spur sql --format csv` prints for it (Arrow's CSV writer
/// with its defaults, the header written once, also for an empty result).
async fn csv(root: &str, lifecycle: &LifecycleConfig, sql: &str) -> Result<String> {
    let lake = Lake::open(root).await?;
    let ctx = lake.session_context().await?;
    spur_audience::views::register_views(&ctx, lifecycle).await?;
    let frame = ctx.sql(sql).await?;
    let schema = frame.schema().inner().clone();
    let batches = frame.collect().await?;
    let mut out = Vec::new();
    {
        let mut writer = WriterBuilder::new().with_header(true).build(&mut out);
        if batches.is_empty() {
            writer.write(&datafusion::arrow::array::RecordBatch::new_empty(schema))?;
        }
        for batch in &batches {
            writer.write(batch)?;
        }
    }
    Ok(String::from_utf8(out)?)
}

fn summary(changes: &[Change]) -> Vec<(String, String, ChangeKind, String)> {
    changes
        .iter()
        .map(|c| {
            (
                c.segment.clone(),
                c.subject_id.clone(),
                c.change,
                c.reason.clone(),
            )
        })
        .collect()
}

fn entered(segment: &str, subject: &str) -> (String, String, ChangeKind, String) {
    (
        segment.into(),
        subject.into(),
        ChangeKind::Entered,
        "matched".into(),
    )
}

fn exited(segment: &str, subject: &str, reason: &str) -> (String, String, ChangeKind, String) {
    (
        segment.into(),
        subject.into(),
        ChangeKind::Exited,
        reason.into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjects_enter_and_leave_with_reasons_and_only_with_consent() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = root(&dir)?;
    let mut writer = Writer::new(&root).await?;
    let scoring = Default::default();
    // Consent as the sites send it: granted at sign-up or on the banner, no double
    // opt-in (its signed link is `ledger.rs`'s subject).
    let lifecycle = LifecycleConfig {
        double_opt_in: false,
        ..LifecycleConfig::default()
    };
    let segments = boot_fans();

    // mail-a: signs up with marketing consent and views 4 boots pages (raw ≈ 4 → 0.44).
    // mail-b: the same without marketing consent → never in a segment.
    // bot: views boots, a bot with consent → never.
    // vd: anonymous, grants marketing on the banner, views boots → enters as itself.
    let mut bot = boot_views("c", "vc", T0, 6);
    for row in &mut bot {
        row.is_bot = true;
        row.bot_reason = Some("crawler".into());
    }
    bot.push(signup("c-s", "vc", T0, "mail-c", true));
    for row in &mut bot {
        row.is_bot = true;
    }
    let mut rows = vec![signup("a-s", "va", T0, "mail-a", true)];
    rows.extend(boot_views("a", "va", T0, 4));
    rows.push(signup("b-s", "vb", T0, "mail-b", false));
    rows.extend(boot_views("b", "vb", T0, 4));
    rows.extend(bot);
    rows.push(consent("d-c", "vd", T0, "granted"));
    rows.extend(boot_views("d", "vd", T0, 4));
    writer.append(rows).await?;

    let mut engine = Engine::load(&writer.lake, &lifecycle, &segments, &scoring).await?;
    let now = T0 + 3_600_000;
    let first = engine.step(&mut writer.lake, now, true).await?;
    assert_eq!(
        summary(&first.changes),
        [entered("boot_fans", "mail-a"), entered("boot_fans", "vd")]
    );
    assert_eq!(
        first.changes.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [1, 2]
    );
    // Nothing new: a step does nothing, a sweep decides nothing.
    assert!(
        engine
            .step(&mut writer.lake, now, false)
            .await?
            .changes
            .is_empty()
    );
    assert!(
        engine
            .step(&mut writer.lake, now, true)
            .await?
            .changes
            .is_empty()
    );

    // mail-a withdraws marketing consent; mail-a buys (customer, but no consent);
    // vd signs up as mail-d with marketing consent: vd is merged into mail-d.
    let mut purchase = pageview("a-p", "va", "s-a", T0 + 2 * 3_600_000, "/checkout", &[]);
    purchase.event_type = "custom".into();
    purchase.name = Some("purchase".into());
    purchase.props = Some(r#"{"order":"o-1","value":120}"#.into());
    writer
        .append(vec![
            consent("a-c", "va", T0 + 3_600_000, "withdrawn"),
            purchase,
            signup("d-s", "vd", T0 + 3_600_000, "mail-d", true),
        ])
        .await?;
    let second = engine
        .step(&mut writer.lake, T0 + 3 * 3_600_000, false)
        .await?;
    assert_eq!(
        summary(&second.changes),
        [
            exited("boot_fans", "mail-a", "consent_withdrawn"),
            entered("boot_fans", "mail-d"),
            exited("boot_fans", "vd", "subject_merged"),
        ]
    );
    assert_eq!(second.events, 3);

    // mail-a grants again: back in, and now also a customer.
    writer
        .append(vec![consent("a-c2", "va", T0 + 4 * 3_600_000, "granted")])
        .await?;
    let third = engine
        .step(&mut writer.lake, T0 + 5 * 3_600_000, false)
        .await?;
    assert_eq!(
        summary(&third.changes),
        [
            entered("boot_fans", "mail-a"),
            entered("customers", "mail-a")
        ]
    );

    // A reload finds the same members and continues the sequence.
    let mut reloaded = Engine::load(&writer.lake, &lifecycle, &segments, &scoring).await?;
    assert_eq!(reloaded.next_seq(), 8);
    let members: BTreeSet<&str> = reloaded.members("boot_fans").collect();
    assert_eq!(members, BTreeSet::from(["mail-a", "mail-d"]));
    assert!(
        reloaded
            .step(&mut writer.lake, T0 + 5 * 3_600_000, false)
            .await?
            .changes
            .is_empty()
    );

    // Two months later interest has decayed (half-life 14 days): a sweep takes both
    // out of boot_fans; mail-a stays a customer.
    let later = reloaded.step(&mut writer.lake, T0 + 60 * DAY, true).await?;
    assert_eq!(
        summary(&later.changes),
        [
            exited("boot_fans", "mail-a", "no_longer_matched"),
            exited("boot_fans", "mail-d", "no_longer_matched"),
        ]
    );

    // A segment removed from the configuration: its members leave at the next sweep.
    let mut fewer = Engine::load(&writer.lake, &lifecycle, &segments[..1], &scoring).await?;
    let removed = fewer.step(&mut writer.lake, T0 + 60 * DAY, true).await?;
    assert_eq!(
        summary(&removed.changes),
        [exited("customers", "mail-a", "segment_removed")]
    );

    // What analysts see.
    let run = |sql: &'static str| csv(&root, &lifecycle, sql);
    assert_eq!(
        run("SELECT subject_id, stage, consent_marketing, purchases FROM profiles ORDER BY 1")
            .await?,
        "subject_id,stage,consent_marketing,purchases\n\
         mail-a,customer,true,1\n\
         mail-b,lead,false,0\n\
         mail-d,lead,true,0\n"
    );
    assert_eq!(
        run("SELECT * FROM segment_members").await?,
        "segment,subject_id,since\n"
    );
    let timeline = run(
        "SELECT kind, detail FROM timeline WHERE subject_id = 'mail-a' ORDER BY at, kind, detail",
    )
    .await?;
    ensure!(
        timeline.starts_with(
            "kind,detail\nconsent,grant analytics\nconsent,grant marketing\nfirst_contact,\nidentified,newsletter\n"
        ),
        "{timeline}"
    );
    for expected in [
        "consent,withdraw marketing",
        "purchase,\"{\"\"order\"\":\"\"o-1\"\",\"\"value\"\":120}\"",
        "segment_entered,boot_fans: matched",
        "segment_exited,boot_fans: consent_withdrawn",
        "segment_exited,customers: segment_removed",
    ] {
        ensure!(
            timeline.contains(expected),
            "{expected} missing from\n{timeline}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_condition_fails_at_load_naming_the_segment() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let writer = Writer::new(&root(&dir)?).await?;
    let segments = vec![SegmentDef {
        name: "typo".into(),
        condition: "interst['boots'] > 0.5".into(),
    }];
    let error = Engine::load(
        &writer.lake,
        &LifecycleConfig::default(),
        &segments,
        &Default::default(),
    )
    .await
    .expect_err("unknown column");
    let text = error.to_string();
    ensure!(text.contains("typo") && text.contains("interst"), "{text}");
    Ok(())
}
