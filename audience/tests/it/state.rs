//! The incremental state against the rebuild: random histories (sessions of pageviews
//! and engagement, sign-ups that link visitors, purchases, bots, sessions closing
//! later with their dwell times, splits) fed to the engine in steps of random sizes,
//! with restarts in between (from a checkpoint or from nothing). After every step the
//! engine's state equals the closed-form rebuild over the same lake, and a sweep
//! decides nothing new (its incremental decisions are those of a full evaluation).
//! Also: a merge folds a visitor's history into the person, a split gives it back.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, ensure};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use spur_audience::ledger::Draft;
use spur_audience::score::{Model, ScoringConfig};
use spur_audience::state::store::rebuild;
use spur_audience::state::{VisitorState, fold};
use spur_audience::{Engine, Ledger, LifecycleConfig, SegmentDef};
use spur_lake::model::EventRow;
use spur_testkit::{BOOT_FANS, T0, Writer, pageview, root, signup};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

fn segments() -> Vec<SegmentDef> {
    let mut defs: Vec<SegmentDef> = BOOT_FANS
        .iter()
        .map(|(name, condition)| SegmentDef {
            name: (*name).into(),
            condition: (*condition).into(),
        })
        .collect();
    defs.push(SegmentDef {
        name: "regulars".into(),
        condition: "sessions >= 3 AND country = 'DE' AND pageviews >= 4".into(),
    });
    defs
}

/// Scoring with a half-life of ten years: interest hardly decays between two steps
/// of a script, so a sweep right after a step has nothing left to decide (with the
/// default 14 days a score just above a threshold may decay below it between steps,
/// which only a sweep notices — by design). Decay itself is checked by the rebuild
/// comparison and `state::tests`.
fn scoring() -> ScoringConfig {
    ScoringConfig {
        half_life: std::time::Duration::from_secs(10 * 365 * 86_400),
        ..ScoringConfig::default()
    }
}

fn lifecycle() -> LifecycleConfig {
    LifecycleConfig {
        double_opt_in: false,
        ..LifecycleConfig::default()
    }
}

/// One generated thing that happens.
#[derive(Clone, Debug)]
enum Act {
    /// A session of visitor `v`: pageviews (topic choice per view), engagement after
    /// some of them, maybe a purchase; a bot's when `bot`.
    Session {
        v: usize,
        views: Vec<(u8, Option<u32>)>,
        purchase: bool,
        bot: bool,
    },
    /// Visitor `v` signs up as person `p` (marketing consent or not).
    Signup { v: usize, p: usize, marketing: bool },
    /// The open sessions close (their rows with dwell are written).
    Close,
    /// Visitor `v` is split from its person, if linked.
    Split { v: usize },
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        5 => (
            0usize..5,
            prop::collection::vec((0u8..4, prop::option::of(0u32..200_000)), 1..5),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.1),
        )
            .prop_map(|(v, views, purchase, bot)| Act::Session { v, views, purchase, bot }),
        1 => (0usize..5, 0usize..2, any::<bool>())
            .prop_map(|(v, p, marketing)| Act::Signup { v, p, marketing }),
        2 => Just(Act::Close),
        1 => (0usize..5).prop_map(|v| Act::Split { v }),
    ]
}

/// A script: acts, cut into steps; per step whether the engine restarts first and
/// whether it checkpoints after the step (a restart then reads on from the last
/// checkpoint, or rebuilds when there is none).
fn script() -> impl Strategy<Value = Vec<(Vec<Act>, bool, bool)>> {
    prop::collection::vec(
        (
            prop::collection::vec(act(), 1..6),
            prop::bool::weighted(0.3),
            prop::bool::weighted(0.4),
        ),
        2..7,
    )
}

const TOPICS: [&[&str]; 4] = [&["boots"], &["boots", "sale"], &["hats"], &[]];

struct World {
    w: Writer,
    clock: i64,
    n: usize,
    open: Vec<EventRow>,
    links: BTreeMap<usize, usize>,
}

impl World {
    fn id(&mut self, what: &str) -> String {
        self.n += 1;
        format!("{what}-{:05}", self.n)
    }

    async fn apply(&mut self, act: &Act) -> Result<()> {
        match act {
            Act::Session {
                v,
                views,
                purchase,
                bot,
            } => {
                let session = self.id("s");
                let mut rows = Vec::new();
                for (topic, engaged) in views {
                    self.clock += 2 * MIN;
                    let id = self.id("pv");
                    let path = format!("/p/{topic}");
                    let mut row = pageview(
                        &id,
                        &format!("v{v}"),
                        &session,
                        self.clock,
                        &path,
                        TOPICS[*topic as usize],
                    );
                    row.country = Some(if v % 2 == 0 { "DE" } else { "FR" }.into());
                    rows.push(row);
                    if let Some(ms) = engaged {
                        let id = self.id("en");
                        let mut e = pageview(
                            &id,
                            &format!("v{v}"),
                            &session,
                            self.clock + 30_000,
                            &path,
                            &[],
                        );
                        e.event_type = "engagement".into();
                        e.engaged_ms = Some(i64::from(*ms));
                        rows.push(e);
                    }
                }
                if *purchase {
                    let id = self.id("buy");
                    let mut e = pageview(
                        &id,
                        &format!("v{v}"),
                        &session,
                        self.clock + MIN,
                        "/thanks",
                        &[],
                    );
                    e.event_type = "custom".into();
                    e.name = Some("purchase".into());
                    rows.push(e);
                }
                for row in &mut rows {
                    row.is_bot = *bot;
                }
                self.open.extend(rows.iter().cloned());
                self.w.append(rows).await?;
            }
            Act::Signup { v, p, marketing } => {
                self.clock += MIN;
                let id = self.id("id");
                let row = signup(
                    &id,
                    &format!("v{v}"),
                    self.clock,
                    &format!("mail-{p}"),
                    *marketing,
                );
                self.links.insert(*v, *p);
                self.open.push(row.clone());
                self.w.append(vec![row]).await?;
            }
            Act::Close => {
                let closing = std::mem::take(&mut self.open);
                self.w.close(&closing).await?;
            }
            Act::Split { v } => {
                if let Some(p) = self.links.remove(v) {
                    self.clock += MIN;
                    let draft = Draft {
                        at: self.clock,
                        kind: "unlink",
                        subject_id: Some(format!("mail-{p}")),
                        visitor_id: Some(format!("v{v}")),
                        reason: Some("operator_split".into()),
                        ..Draft::default()
                    };
                    Ledger::load(&self.w.lake)
                        .await?
                        .step(&mut self.w.lake, self.clock, None)
                        .await?;
                    Ledger::append_operator(&mut self.w.lake, vec![draft], self.clock).await?;
                }
            }
        }
        Ok(())
    }
}

/// The engine's state equals the rebuild over the same lake, visitor by visitor.
async fn assert_state_is_the_rebuild(
    engine: &Engine,
    w: &Writer,
    now: i64,
    scoring: &ScoringConfig,
) -> Result<()> {
    let model = Model::new(scoring)?;
    let ctx = w.lake.session_context().await?;
    let rebuilt = rebuild(&ctx, &model, &lifecycle(), now).await?;
    let got = engine.states();
    let keys = |m: &std::collections::HashMap<String, VisitorState>| {
        m.keys().cloned().collect::<BTreeSet<_>>()
    };
    ensure!(
        keys(got) == keys(&rebuilt),
        "visitors {:?} vs {:?}",
        keys(got),
        keys(&rebuilt)
    );
    for (visitor, want) in &rebuilt {
        let have = &got[visitor];
        let plain = |s: &VisitorState| {
            (
                s.identified,
                s.first_seen,
                s.last_seen,
                s.events,
                s.pageviews,
                s.sessions,
                s.purchases,
                s.first_purchase,
                s.last_purchase,
                s.country.as_ref().map(|c| c.2.clone()),
            )
        };
        ensure!(
            plain(have) == plain(want),
            "{visitor}: {:?} vs rebuild {:?}",
            plain(have),
            plain(want)
        );
        let pending = |s: &VisitorState| {
            s.pending
                .iter()
                .map(|p| p.event_id.clone())
                .collect::<BTreeSet<_>>()
        };
        ensure!(
            pending(have) == pending(want),
            "{visitor} pending: {:?} vs {:?}",
            pending(have),
            pending(want)
        );
        let (a, b) = (fold([have], now, &model), fold([want], now, &model));
        ensure!(
            a.interest.len() == b.interest.len(),
            "{visitor}: {:?} vs {:?}",
            a.interest,
            b.interest
        );
        for (topic, t) in &b.interest {
            let h = &a.interest[topic];
            ensure!(
                (h.raw - t.raw).abs() <= 1e-9 * t.raw.abs().max(1.0)
                    && (h.views, h.last_view) == (t.views, t.last_view),
                "{visitor} {topic}: {h:?} vs rebuild {t:?}"
            );
        }
    }
    Ok(())
}

async fn run_script(steps: Vec<(Vec<Act>, bool, bool)>) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut world = World {
        w: Writer::new(&root(&dir)?).await?,
        clock: T0,
        n: 0,
        open: Vec::new(),
        links: BTreeMap::new(),
    };
    let scoring = scoring();
    let mut engine = Engine::load(&world.w.lake, &lifecycle(), &segments(), &scoring).await?;
    for (acts, restart, checkpoint) in steps {
        for act in &acts {
            world.apply(act).await?;
        }
        if restart {
            engine = Engine::load(&world.w.lake, &lifecycle(), &segments(), &scoring).await?;
        }
        let now = world.clock + HOUR;
        engine.step(&mut world.w.lake, now, false).await?;
        assert_state_is_the_rebuild(&engine, &world.w, now, &scoring).await?;
        let sweep = engine.step(&mut world.w.lake, now, true).await?;
        ensure!(
            sweep.changes.is_empty(),
            "a sweep after a step decided {:?}",
            sweep.changes
        );
        if checkpoint {
            engine.checkpoint(&mut world.w.lake, now).await?;
        }
    }
    Ok(())
}

#[test]
fn incremental_state_equals_the_rebuild_across_steps_and_restarts() {
    let mut runner = TestRunner::new(Config {
        cases: 12,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&script(), |steps| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run_script(steps))
            .map_err(|e| TestCaseError::fail(format!("{e:#}")))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// (segment, subject, reason) of each change.
fn reasons(changes: &[spur_audience::Change]) -> Vec<(&str, &str, &str)> {
    changes
        .iter()
        .map(|c| (c.segment.as_str(), c.subject_id.as_str(), c.reason.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_folds_a_visitor_into_the_person_and_a_split_gives_it_back() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut w = Writer::new(&root(&dir)?).await?;
    let scoring = ScoringConfig::default();
    let boot_fans = &segments()[..1];
    let mut engine = Engine::load(&w.lake, &lifecycle(), boot_fans, &scoring).await?;
    // An anonymous visitor reads four boots pages (raw 4, score 0.44 ≥ 0.3), then
    // signs up with marketing consent on another device.
    let views: Vec<EventRow> = (0..4)
        .map(|i| {
            pageview(
                &format!("b{i}"),
                "laptop",
                "s1",
                T0 + i * MIN,
                "/boots",
                &["boots"],
            )
        })
        .collect();
    w.append(views).await?;
    w.append(vec![signup("s-phone", "phone", T0 + HOUR, "mail-a", true)])
        .await?;
    let now = T0 + 2 * HOUR;
    let step = engine.step(&mut w.lake, now, false).await?;
    ensure!(
        step.changes.is_empty(),
        "nobody with consent reads boots yet: {:?}",
        step.changes
    );
    // The laptop signs up too: merged into the person, its history comes along.
    w.append(vec![signup(
        "s-laptop",
        "laptop",
        T0 + 3 * HOUR,
        "mail-a",
        true,
    )])
    .await?;
    let now = T0 + 4 * HOUR;
    let step = engine.step(&mut w.lake, now, false).await?;
    let summary = reasons(&step.changes);
    ensure!(
        summary == [("boot_fans", "mail-a", "matched")],
        "{summary:?}"
    );
    assert_state_is_the_rebuild(&engine, &w, now, &scoring).await?;

    // A split: the laptop is not the person's after all.
    let draft = Draft {
        at: now,
        kind: "unlink",
        subject_id: Some("mail-a".into()),
        visitor_id: Some("laptop".into()),
        reason: Some("shared laptop".into()),
        ..Draft::default()
    };
    Ledger::append_operator(&mut w.lake, vec![draft], now).await?;
    let later = now + MIN;
    let step = engine.step(&mut w.lake, later, false).await?;
    let summary = reasons(&step.changes);
    ensure!(
        summary == [("boot_fans", "mail-a", "no_longer_matched")],
        "{summary:?}"
    );
    // The laptop's history is whole again, as its own (without consent: no member).
    let laptop = &engine.states()["laptop"];
    ensure!(
        laptop.pageviews == 4 && laptop.interest["boots"].views == 4,
        "{laptop:?}"
    );
    assert_state_is_the_rebuild(&engine, &w, later, &scoring).await?;
    Ok(())
}
