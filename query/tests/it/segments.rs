//! Segment membership over a real lake: a scripted history makes subjects enter and
//! leave with the right reasons, only with marketing consent, never for bots; state
//! survives a reload; the analyst views (`profiles`, `segment_members`, `timeline`)
//! show the same.

use std::collections::BTreeSet;

use anyhow::{Context, Result, ensure};
use spur_lake::model::EventRow;
use spur_lake::{Lake, TableKind};
use spur_query::dispatch::{Change, ChangeKind};
use spur_query::segments::{Engine, LifecycleConfig, SegmentDef};
use spur_query::{Catalog, Config, Format};

use crate::fixture::{identify, pageview};

const DAY: i64 = 86_400_000;
/// 2025-12-10T00:00:00Z.
pub const T0: i64 = 1_765_324_800_000;

/// Appends events to the lake with increasing offsets in partition 0, as the
/// processor would.
pub struct Writer {
    pub lake: Lake,
    offset: i64,
}

impl Writer {
    pub async fn new(root: &str) -> Result<Writer> {
        Ok(Writer {
            lake: Lake::open(root).await?,
            offset: 0,
        })
    }

    pub async fn append(&mut self, mut rows: Vec<EventRow>) -> Result<()> {
        for row in &mut rows {
            row.kafka_partition = 0;
            row.kafka_offset = self.offset;
            self.offset += 1;
        }
        let batch = spur_lake::events_batch(&rows)?;
        self.lake
            .append(
                TableKind::Events,
                batch,
                &[("spur-processor-events-test-0".to_owned(), self.offset - 1)],
            )
            .await?;
        Ok(())
    }
}

/// An `identify` of `visitor` as `email_hash` whose form collected marketing
/// consent (or not).
pub fn signup(id: &str, visitor: &str, time: i64, email_hash: &str, marketing: bool) -> EventRow {
    let mut row = identify(id, visitor, time, email_hash);
    row.form = Some("newsletter".into());
    row.consent_evidence = Some(if marketing {
        // Sent after the double opt-in click, so the consent is confirmed.
        r#"{"purposes":["analytics","marketing"],"text_id":"newsletter-v2","policy_version":"2025-06","confirmation":true}"#.into()
    } else {
        r#"{"purposes":["analytics"],"text_id":"marketing","policy_version":"2025-06"}"#.into()
    });
    row
}

/// A `consent` event of `visitor` setting marketing to `action`.
pub fn consent(id: &str, visitor: &str, time: i64, action: &str) -> EventRow {
    let mut row = pageview(id, visitor, "s-consent", time, "/privacy", &[]);
    row.event_type = "consent".into();
    row.path = None;
    row.consent_purposes = Some(format!(r#"{{"marketing":"{action}"}}"#));
    // A grant here is a confirmed one (double opt-in completed).
    row.consent_evidence = (action == "granted")
        .then(|| r#"{"purposes":["marketing"],"confirmation":true}"#.to_owned());
    row
}

/// `n` views of boots pages by `visitor`, a minute apart from `time`.
pub fn boot_views(prefix: &str, visitor: &str, time: i64, n: i64) -> Vec<EventRow> {
    (0..n)
        .map(|i| {
            pageview(
                &format!("{prefix}-{i}"),
                visitor,
                &format!("s-{prefix}"),
                time + i * 60_000,
                &format!("/boots/{i}"),
                &["boots"],
            )
        })
        .collect()
}

pub fn boot_fans() -> Vec<SegmentDef> {
    vec![
        SegmentDef {
            name: "boot_fans".into(),
            condition: "interest['boots'] >= 0.3".into(),
        },
        SegmentDef {
            name: "customers".into(),
            condition: "stage IN ('customer', 'retained')".into(),
        },
    ]
}

pub fn root(dir: &tempfile::TempDir) -> Result<String> {
    dir.path()
        .to_str()
        .map(str::to_owned)
        .context("non-UTF-8 temp dir")
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
    let lifecycle = LifecycleConfig::default();
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
    let config = Config {
        lake: root.clone(),
        ..Config::default()
    };
    let catalog = Catalog::open(&config).await?;
    let run = |sql: &'static str| {
        let catalog = &catalog;
        async move {
            let mut out = Vec::new();
            spur_query::run_sql(catalog, sql, Format::Csv, &mut out).await?;
            anyhow::Ok(String::from_utf8(out)?)
        }
    };
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
            "kind,detail\nconsent,confirm marketing\nconsent,grant analytics\nfirst_contact,\nidentified,newsletter\n"
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
