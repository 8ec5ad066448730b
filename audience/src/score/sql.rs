//! Scoring's edges: views read out of the lake (`pageviews`, bots excluded, each
//! mapped to its subject) and scores written back (table `scores`, one commit per
//! run). Everything else is in [`super::model`].

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type};
use datafusion::error::DataFusionError;
use datafusion::prelude::{SessionContext, col, in_list, lit};
use spur_lake::model::ScoreRow;
use spur_lake::{Lake, TableKind};

use super::model::{Model, Score, View};
use crate::error::{Error, Result};

/// Who a visitor is: defined with the identity ledger (`crate::identity`).
use crate::identity::SUBJECTS_SQL;

/// The views scoring reads: human pageviews with their subject, time in ms, dwell
/// time, page topics and path.
fn views_sql() -> String {
    format!(
        "SELECT s.subject_id AS subject_id, p.event_id AS event_id,
                CAST(p.event_time AS BIGINT) / 1000 AS time_ms,
                p.dwell_ms AS dwell_ms, p.topics AS topics, p.path AS path
         FROM pageviews p
         JOIN ({SUBJECTS_SQL}) s ON s.visitor_id = p.visitor_id
         WHERE p.is_bot = false"
    )
}

/// Reads the views scoring uses from a session over the lake
/// (`Lake::session_context`): pageviews not labelled as bots, at or before `as_of_ms`,
/// of every subject or — for recomputing a few — only of `subjects`.
pub async fn load_views(
    ctx: &SessionContext,
    as_of_ms: i64,
    subjects: Option<&[String]>,
) -> Result<Vec<View>> {
    let mut frame = ctx
        .sql(&views_sql())
        .await
        .map_err(Error::Query)?
        .filter(col("time_ms").lt_eq(lit(as_of_ms)))
        .map_err(Error::Query)?;
    if let Some(subjects) = subjects {
        let list = subjects.iter().map(|s| lit(s.as_str())).collect();
        frame = frame
            .filter(in_list(col("subject_id"), list, false))
            .map_err(Error::Query)?;
    }
    let batches = frame.collect().await.map_err(Error::Query)?;
    let mut views = Vec::new();
    for batch in &batches {
        read_views(batch, &mut views).map_err(Error::Query)?;
    }
    Ok(views)
}

/// Column `name` of `batch` cast to `to` (string columns may arrive as views or
/// dictionaries, depending on the reader).
fn column(
    batch: &RecordBatch,
    name: &str,
    to: &DataType,
) -> Result<Arc<dyn Array>, DataFusionError> {
    let array = batch
        .column_by_name(name)
        .ok_or_else(|| DataFusionError::Internal(format!("scoring query lost column {name}")))?;
    Ok(cast(array, to)?)
}

pub(crate) fn read_views(batch: &RecordBatch, out: &mut Vec<View>) -> Result<(), DataFusionError> {
    let list = DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)));
    let subject = column(batch, "subject_id", &DataType::Utf8)?;
    let event_id = column(batch, "event_id", &DataType::Utf8)?;
    let time = column(batch, "time_ms", &DataType::Int64)?;
    let dwell = column(batch, "dwell_ms", &DataType::Int64)?;
    let topics = column(batch, "topics", &list)?;
    let path = column(batch, "path", &DataType::Utf8)?;
    let (subject, event_id) = (subject.as_string::<i32>(), event_id.as_string::<i32>());
    let (time, dwell) = (
        time.as_primitive::<Int64Type>(),
        dwell.as_primitive::<Int64Type>(),
    );
    let (topics, path) = (topics.as_list::<i32>(), path.as_string::<i32>());
    for row in 0..batch.num_rows() {
        let page_topics = if topics.is_null(row) {
            Vec::new()
        } else {
            let values = topics.value(row);
            values
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(str::to_owned)
                .collect()
        };
        out.push(View {
            subject: subject.value(row).to_owned(),
            event_id: event_id.value(row).to_owned(),
            time_ms: time.value(row),
            dwell_ms: dwell.is_valid(row).then(|| dwell.value(row)),
            topics: page_topics,
            path: path.is_valid(row).then(|| path.value(row).to_owned()),
        });
    }
    Ok(())
}

/// The rows of table `scores` for one run.
pub fn score_rows(scores: &[Score], as_of_ms: i64) -> Result<Vec<ScoreRow>> {
    if chrono::DateTime::from_timestamp_millis(as_of_ms).is_none() {
        return Err(Error::Config(format!(
            "as-of time {as_of_ms} ms is out of range"
        )));
    }
    let dt = spur_schemas::time::date(as_of_ms);
    Ok(scores
        .iter()
        .map(|s| ScoreRow {
            subject_id: s.subject.clone(),
            topic: s.topic.clone(),
            score: s.score,
            raw: s.raw,
            views: s.views,
            last_view: s.last_view_ms,
            as_of: as_of_ms,
            dt: dt.clone(),
        })
        .collect())
}

/// Appends one run's scores to table `scores` in one commit and returns the table
/// version. A run without scores commits nothing (`None`).
pub async fn write_scores(lake: &mut Lake, scores: &[Score], as_of_ms: i64) -> Result<Option<i64>> {
    if scores.is_empty() {
        return Ok(None);
    }
    let batch = spur_lake::scores_batch(&score_rows(scores, as_of_ms)?)?;
    Ok(Some(lake.append(TableKind::Scores, batch, &[]).await?))
}

/// Milliseconds since the epoch of a timestamp column, in DataFusion's dialect.
pub fn datafusion_ms(column: &str) -> String {
    format!("(CAST({column} AS BIGINT) / 1000)")
}

/// Whom the closed-form interest SQL sums by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Per {
    /// Per visitor: the segment engine's state ([`crate::state`]).
    Visitor,
    /// Per subject (visitor → person from the ledger's links): `spur score`.
    Subject,
}

/// The closed-form interest of every visitor or subject and topic as of `as_of_ms`:
/// `Σ weight(dwell) · 2^(−(as_of − t) / half_life)` over the human pageviews at or
/// before `as_of`, with the view's topics (page topics ∪ URL rules, each once), dwell
/// from `sessions.pageview_dwell` (NULL while the session is open). Columns `id`
/// (`visitor_id` or `subject_id`), `topic`, `raw`, `score`, `views`, `last_view` (ms).
/// Portable SQL over the tables `events`, `sessions` and `ledger`: `ms` gives the
/// dialect's epoch-milliseconds of a timestamp ([`datafusion_ms`]; DuckDB:
/// `epoch_ms(t)`), and DuckDB runs the same text.
///
/// One pass over the pageviews, one row per (view, topic) and one aggregate: a view's
/// topics are made distinct as a list (`array_distinct`), the URL rules' topics
/// joined to the list as elements that are `''` when the path does not match. A
/// `DISTINCT` over (view, topic) rows instead grouped every view's strings once more,
/// and a `UNION ALL` branch for the rules read the pageviews join twice (DataFusion
/// inlines a CTE at each use).
pub fn interest_sql(model: &Model, as_of_ms: i64, per: Per, ms: &dyn Fn(&str) -> String) -> String {
    let pageviews = spur_lake::views::PAGEVIEWS_SQL;
    let t = ms("p.event_time");
    // The links (small) on the join's left: DataFusion builds its hash table there.
    let (id, from) = match per {
        Per::Visitor => ("p.visitor_id", format!("({pageviews}) p")),
        Per::Subject => (
            "COALESCE(l.subject_id, p.visitor_id)",
            format!(
                "({}) l RIGHT JOIN ({pageviews}) p ON l.visitor_id = p.visitor_id",
                crate::identity::LINKS_SQL
            ),
        ),
    };
    let topics = rule_topics_sql(model, "p.path").map_or_else(
        || "p.topics".to_owned(),
        |rules| format!("array_concat(p.topics, {rules})"),
    );
    let weight = model.weight_sql("dwell_ms");
    let decay = model.decay_sql("t", as_of_ms);
    let score = model.normalise_sql("SUM(c)");
    format!(
        "WITH views AS (
            SELECT {id} AS id, {t} AS t, p.dwell_ms, {topics} AS topics
            FROM {from}
            WHERE p.is_bot = false AND {t} <= {as_of_ms}),
         view_topics AS (
            SELECT id, t, dwell_ms, unnest(array_distinct(topics)) AS topic FROM views),
         contributions AS (
            SELECT id, topic, t, ({weight}) * {decay} AS c FROM view_topics
            WHERE topic <> '')
         SELECT id, topic, SUM(c) AS raw, {score} AS score, COUNT(*) AS views,
                MAX(t) AS last_view
         FROM contributions GROUP BY id, topic"
    )
}

/// The URL rules' topics of the page at `path` as an SQL list with one element per
/// topic any rule names: the topic when a prefix naming it matches, else `''`.
/// `None` without rules.
fn rule_topics_sql(model: &Model, path: &str) -> Option<String> {
    let mut prefixes: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for rule in model.url_rules() {
        for topic in &rule.topics {
            prefixes
                .entry(topic.as_str())
                .or_default()
                .push(rule.path_prefix.as_str());
        }
    }
    if prefixes.is_empty() {
        return None;
    }
    let quote = spur_lake::read::quote;
    let elements: Vec<String> = prefixes
        .iter()
        .map(|(topic, prefixes)| {
            let matches: Vec<String> = prefixes
                .iter()
                .map(|prefix| format!("starts_with({path}, {})", quote(prefix)))
                .collect();
            format!(
                "CASE WHEN {} THEN {} ELSE '' END",
                matches.join(" OR "),
                quote(topic)
            )
        })
        .collect();
    Some(format!("[{}]", elements.join(", ")))
}

/// A session for the closed-form SQL ([`interest_sql`]): `ctx` with hash joins that
/// build one table from their left side (the dwell of every pageview: event id and
/// dwell time; the identity links) and probe it from every partition, instead of
/// repartitioning both sides by event id, which copied every pageview's columns once
/// more. Measured on 10M events (`benches/segments.rs`): 2.9 GB peak → 1.4 GB, the
/// same time. (Parquet filter pushdown saved 0.5 s for 0.7 GB more: not taken.)
pub fn interest_session(ctx: &SessionContext) -> SessionContext {
    let mut state = ctx.state();
    state.config_mut().options_mut().optimizer.repartition_joins = false;
    SessionContext::new_with_state(state)
}

/// Every subject's scores as of `as_of_ms`, computed by the closed-form SQL
/// ([`interest_sql`]) in a session over the lake; the order of [`Model::score`].
pub async fn score_all(ctx: &SessionContext, model: &Model, as_of_ms: i64) -> Result<Vec<Score>> {
    use spur_lake::read::{collect, float64s, int64s, strings};
    let mut scores = Vec::new();
    for batch in &collect(
        &interest_session(ctx),
        &interest_sql(model, as_of_ms, Per::Subject, &datafusion_ms),
    )
    .await?
    {
        let (id, topic) = (strings(batch, "id")?, strings(batch, "topic")?);
        let (raw, score) = (float64s(batch, "raw")?, float64s(batch, "score")?);
        let (views, last_view) = (int64s(batch, "views")?, int64s(batch, "last_view")?);
        for i in 0..batch.num_rows() {
            if let (Some(subject), Some(topic)) = (id[i].clone(), topic[i].clone()) {
                scores.push(Score {
                    subject,
                    topic,
                    score: score[i],
                    raw: raw[i],
                    views: views[i],
                    last_view_ms: last_view[i],
                });
            }
        }
    }
    scores.sort_by(|a, b| {
        a.subject
            .cmp(&b.subject)
            .then(b.score.total_cmp(&a.score))
            .then_with(|| a.topic.cmp(&b.topic))
    });
    Ok(scores)
}
