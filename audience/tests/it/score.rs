//! Interest scoring over a real lake: bots left out, visitors mapped to subjects
//! (latest e-mail pseudonym, else visitor id), dwell of closed sessions, url
//! rules, the as-of cut-off, and the `scores` table written and read back with SQL.

use anyhow::{Context, Result};
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use spur_audience::score::{self, ScoringConfig, UrlRule};
use spur_lake::model::EventRow;
use spur_lake::{Lake, TableKind};

const DAY: i64 = 86_400_000;
const HALF_LIFE: i64 = 14 * DAY;
/// The first run's as-of time: 2025-12-10T00:00:00Z.
const AS_OF: i64 = 1_765_324_800_000;

use spur_testkit::{identify, pageview as row};

/// Visitor `va` (identified twice: the later pseudonym `mail-a` wins): `/boots/1` now
/// with 60 s of engagement (weight 2) and `/boots/2` one half-life ago, the last page
/// of its session (dwell unknown: weight 1, decay 0.5) — raw 2.5.
/// Visitor `vb` (never identified): `/blog/post` then 15 s later `/other` (topic
/// `x`, dwell unknown), a day before as-of; and a `boots` view after as-of.
/// Visitor `vc`: a bot viewing `boots` — must not be scored.
fn rows() -> Vec<EventRow> {
    let mut engagement = row("a1e", "va", "sa", AS_OF + 5_000, "/boots/1", &[]);
    engagement.event_type = "engagement".into();
    engagement.engaged_ms = Some(60_000);
    let mut bot = row("c1", "vc", "sc", AS_OF - 1_000, "/boots/1", &["boots"]);
    bot.is_bot = true;
    bot.bot_reason = Some("crawler".into());
    vec![
        row("a1", "va", "sa", AS_OF, "/boots/1", &["boots"]),
        engagement,
        row("a2", "va", "sa0", AS_OF - HALF_LIFE, "/boots/2", &["boots"]),
        identify("a3", "va", AS_OF - 13 * DAY, "mail-a-old"),
        identify("a4", "va", AS_OF - DAY, "mail-a"),
        row("b1", "vb", "sb", AS_OF - DAY - 15_000, "/blog/post", &[]),
        row("b2", "vb", "sb", AS_OF - DAY, "/other", &["x"]),
        row("b3", "vb", "sb2", AS_OF + 3_600_000, "/boots/3", &["boots"]),
        bot,
    ]
}

async fn lake_with_rows() -> Result<(tempfile::TempDir, Config)> {
    let dir = tempfile::tempdir()?;
    let root = dir
        .path()
        .to_str()
        .context("non-UTF-8 temp dir")?
        .to_owned();
    let mut lake = Lake::open(&root).await?;
    lake.append(TableKind::Events, spur_lake::events_batch(&rows())?, &[])
        .await?;
    // Every session closed: the processor wrote their dwell times.
    spur_testkit::append_closed_sessions(&mut lake, &rows()).await?;
    // The identity links, as the ledger follower records them.
    spur_audience::Ledger::load(&lake)
        .await?
        .step(&mut lake, AS_OF, None)
        .await?;
    let config = Config {
        lake: root,
        scoring: ScoringConfig {
            url_rules: vec![UrlRule {
                path_prefix: "/blog/".into(),
                topics: vec!["reading".into()],
            }],
            ..ScoringConfig::default()
        },
    };
    Ok((dir, config))
}

/// What `spur score` runs with: the lake root and `[scoring]`.
struct Config {
    lake: String,
    scoring: ScoringConfig,
}

/// One row of `scores` as read back through SQL.
#[derive(Debug, PartialEq)]
struct Read {
    subject: String,
    topic: String,
    score: f64,
    raw: f64,
    views: i64,
    last_view_ms: i64,
}

async fn latest_scores(root: &str) -> Result<Vec<Read>> {
    let lake = Lake::open(root).await?;
    let ctx = lake.session_context().await?;
    let batches: Vec<RecordBatch> = ctx
        .sql(
            "SELECT subject_id, topic, score, raw, views,
                    CAST(last_view AS BIGINT) / 1000 AS last_view_ms
             FROM scores WHERE as_of = (SELECT max(as_of) FROM scores)
             ORDER BY subject_id, topic",
        )
        .await?
        .collect()
        .await?;
    let mut out = Vec::new();
    for batch in batches {
        let subject = cast(batch.column(0), &DataType::Utf8)?;
        let topic = cast(batch.column(1), &DataType::Utf8)?;
        let (subject, topic) = (subject.as_string::<i32>(), topic.as_string::<i32>());
        let score = batch.column(2).as_primitive::<Float64Type>();
        let raw = batch.column(3).as_primitive::<Float64Type>();
        let views = batch.column(4).as_primitive::<Int64Type>();
        let last = batch.column(5).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            out.push(Read {
                subject: subject.value(i).to_owned(),
                topic: topic.value(i).to_owned(),
                score: score.value(i),
                raw: raw.value(i),
                views: views.value(i),
                last_view_ms: last.value(i),
            });
        }
    }
    Ok(out)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_exclude_bots_map_subjects_and_land_in_the_scores_table() -> Result<()> {
    let (_dir, config) = lake_with_rows().await?;

    let summary = score::run(&config.lake, &config.scoring, AS_OF).await?;
    assert_eq!(
        summary.views, 4,
        "a1, a2, b1, b2: bot and after-as-of views left out"
    );
    assert_eq!((summary.subjects, summary.topics, summary.rows), (2, 3, 3));
    assert_eq!(
        summary.version,
        Some(1),
        "one commit on an empty scores table"
    );

    let scores = latest_scores(&config.lake).await?;
    let keys: Vec<(&str, &str)> = scores
        .iter()
        .map(|s| (s.subject.as_str(), s.topic.as_str()))
        .collect();
    // `va` is scored under its latest e-mail pseudonym, `vb` under its visitor id, the
    // bot `vc` not at all; `b3` (after as-of) adds no `boots` to `vb`.
    assert_eq!(keys, [("mail-a", "boots"), ("vb", "reading"), ("vb", "x")]);

    let boots = &scores[0];
    assert!(close(boots.raw, 2.5), "raw {}", boots.raw);
    assert!(close(boots.score, 2.5 / 7.5), "score {}", boots.score);
    assert_eq!((boots.views, boots.last_view_ms), (2, AS_OF));

    // `/blog/post`: topic from the url rule, dwell 15 s until the next pageview
    // (weight 0.5); `/other`: last page, dwell unknown (weight 1).
    let decay = |age: i64| (-(age as f64) / HALF_LIFE as f64).exp2();
    let reading = &scores[1];
    assert!(close(reading.raw, 0.5 * decay(DAY + 15_000)), "{reading:?}");
    let x = &scores[2];
    assert!(close(x.raw, decay(DAY)), "{x:?}");
    assert!(close(x.score, x.raw / (x.raw + 5.0)));

    // A second run, one half-life later, appends a second set in one more commit;
    // the latest is selected. `b3` is now before as-of and counts.
    let later = score::run(&config.lake, &config.scoring, AS_OF + HALF_LIFE).await?;
    assert_eq!(later.version, Some(2));
    let again = latest_scores(&config.lake).await?;
    let keys: Vec<(&str, &str)> = again
        .iter()
        .map(|s| (s.subject.as_str(), s.topic.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("mail-a", "boots"),
            ("vb", "boots"),
            ("vb", "reading"),
            ("vb", "x")
        ]
    );
    assert!(
        close(again[0].raw, 1.25),
        "everything a half-life older: {:?}",
        again[0]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_lists_the_views_behind_a_score_and_writes_nothing() -> Result<()> {
    let (_dir, config) = lake_with_rows().await?;

    let parts = score::explain(
        &config.lake,
        &config.scoring,
        "mail-a",
        Some("boots"),
        AS_OF,
    )
    .await?;
    let ids: Vec<&str> = parts.iter().map(|c| c.event_id.as_str()).collect();
    assert_eq!(ids, ["a2", "a1"]);
    assert_eq!(
        parts[1].dwell_ms,
        Some(60_000),
        "dwell from the engagement event"
    );
    assert!(close(parts[1].weight, 2.0) && close(parts[1].decay, 1.0));
    assert_eq!(parts[0].dwell_ms, None);
    assert!(close(parts[0].weight, 1.0) && close(parts[0].decay, 0.5));
    let sum: f64 = parts.iter().map(|c| c.contribution).sum();
    assert!(close(sum, 2.5));

    assert!(
        score::explain(&config.lake, &config.scoring, "vc", None, AS_OF)
            .await?
            .is_empty(),
        "bot"
    );
    assert!(
        score::explain(&config.lake, &config.scoring, "va", None, AS_OF)
            .await?
            .is_empty(),
        "an identified visitor's views belong to its e-mail pseudonym"
    );

    let mut text = Vec::new();
    score::write_contributions(&mut text, &parts, &config.scoring)?;
    let text = String::from_utf8(text)?;
    assert!(
        text.contains("2 views, raw 2.500000, score 0.333333"),
        "{text}"
    );

    let lake = Lake::open(&config.lake).await?;
    assert_eq!(lake.version(TableKind::Scores)?, 0, "explain wrote nothing");
    Ok(())
}

mod closed_form {
    //! The closed-form SQL (`score_all`, what `spur score` runs) against the model's
    //! sums over the same views (`load_views` + `Model::score`), on random pageviews:
    //! duplicated and empty page topics, no path, URL rules with overlapping prefixes
    //! and shared topics, open and closed sessions, views after as-of.
    use super::*;
    use proptest::prelude::*;
    use spur_audience::score::{Model, load_views, score_all};

    const TOPICS: [&str; 4] = ["boots", "sale", "", "reading"];
    const PATHS: [Option<&str>; 5] = [
        Some("/shop/boots/alpine"),
        Some("/shop/sale"),
        Some("/blog/boots"),
        Some("/other"),
        None,
    ];

    fn config() -> ScoringConfig {
        let rule = |prefix: &str, topics: &[&str]| UrlRule {
            path_prefix: prefix.into(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        };
        ScoringConfig {
            url_rules: vec![
                rule("/shop/boots", &["boots", "outdoor"]),
                rule("/shop/", &["shopping"]),
                rule("/blog/", &["reading", "boots"]),
            ],
            ..ScoringConfig::default()
        }
    }

    type Pageview = (usize, usize, i64, Vec<usize>, usize);

    fn pageviews() -> impl Strategy<Value = Vec<Pageview>> {
        // (visitor, session, minutes before as-of (negative: after), topics, path)
        prop::collection::vec(
            (
                0..3usize,
                0..2usize,
                -60i64..40_000,
                prop::collection::vec(0..TOPICS.len(), 0..4),
                0..PATHS.len(),
            ),
            1..24,
        )
    }

    async fn compare(views: Vec<Pageview>, close_sessions: bool) -> Result<()> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().to_str().context("non-UTF-8 temp dir")?;
        let rows: Vec<EventRow> = views
            .iter()
            .enumerate()
            .map(|(n, (visitor, session, minutes, topics, path))| {
                let topics: Vec<&str> = topics.iter().map(|t| TOPICS[*t]).collect();
                let mut row = row(
                    &format!("e{n}"),
                    &format!("v{visitor}"),
                    &format!("s{visitor}-{session}"),
                    AS_OF - minutes * 60_000,
                    PATHS[*path].unwrap_or(""),
                    &topics,
                );
                row.path = PATHS[*path].map(str::to_owned);
                row
            })
            .collect();
        let mut lake = Lake::open(root).await?;
        lake.append(TableKind::Events, spur_lake::events_batch(&rows)?, &[])
            .await?;
        if close_sessions {
            spur_testkit::append_closed_sessions(&mut lake, &rows).await?;
        }
        let model = Model::new(&config())?;
        let ctx = lake.session_context().await?;
        // By subject and topic: sums in another order may break a tie of scores.
        let by_key = |mut scores: Vec<spur_audience::score::Score>| {
            scores.sort_by(|a, b| (&a.subject, &a.topic).cmp(&(&b.subject, &b.topic)));
            scores
        };
        let sql = by_key(score_all(&ctx, &model, AS_OF).await?);
        let want = by_key(model.score(&load_views(&ctx, AS_OF, None).await?, AS_OF));
        assert_eq!(sql.len(), want.len(), "{sql:?}\n{want:?}");
        for (got, want) in sql.iter().zip(&want) {
            assert_eq!(
                (&got.subject, &got.topic, got.views, got.last_view_ms),
                (&want.subject, &want.topic, want.views, want.last_view_ms)
            );
            assert!(close(got.raw, want.raw), "{got:?} != {want:?}");
            assert!(close(got.score, want.score), "{got:?} != {want:?}");
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn the_sql_sums_what_the_model_sums(views in pageviews(), close_sessions: bool) {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(compare(views, close_sessions)).expect("compare");
        }
    }
}
