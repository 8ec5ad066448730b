//! Profiles: one row per subject with everything segment conditions and lifecycle
//! rules may test. Built from the lake for a set of subjects (or all), bots excluded.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `subject_id` | text | e-mail pseudonym of an identified subject, else the visitor id |
//! | `identified` | bool | the subject is identified (has an `identify` event) |
//! | `first_seen`, `last_seen` | timestamp | first and latest event |
//! | `events`, `pageviews`, `sessions` | int | counts (sessions: distinct session ids) |
//! | `purchases` | int | `custom` events named in `lifecycle.purchase_events` |
//! | `first_purchase`, `last_purchase` | timestamp | NULL without purchases |
//! | `consent_marketing` | bool | valid marketing consent (see below) |
//! | `consent_state` | text | `granted`, `pending`, `withdrawn`, `unsubscribed` or `none` |
//! | `country` | text | of the latest event that had one |
//! | `interest` | map text→double | interest score per topic (`interest['boots']`, NULL if none) |
//! | `stage` | text | lifecycle stage: `anonymous` or the last stage whose rule holds |
//!
//! Stage rules see every column but `interest` and `stage`; segment conditions see
//! all. Analysts get the same relation, without `interest`, as the view `profiles`
//! (`interest` is in table `scores`).
//!
//! **Marketing consent** comes from the consent ledger (`crate::identity::consent_sql`):
//! `consent_state` is `granted`, `pending` (double opt-in not confirmed), `withdrawn`,
//! `unsubscribed` or `none`; `consent_marketing` is `consent_state = 'granted'`.
//! Browsing events carry the cookie's state of one device only and do not count.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Builder, MapBuilder, RecordBatch, StringBuilder,
};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionContext, col, in_list, lit};

use spur_lake::read::quote;

use crate::config::LifecycleConfig;
use crate::error::{Error, Result};
use crate::identity::{SUBJECTS_SQL, consent_sql};
use crate::score::{Model, load_views};

/// Name of the profile relation conditions are evaluated against.
pub const PROFILES: &str = "profiles";

/// The profile of every subject without `interest`: the view analysts query.
pub fn profile_sql(lifecycle: &LifecycleConfig) -> String {
    format!(
        "SELECT *, {} AS stage FROM ({})",
        stage_sql(lifecycle),
        base_sql(lifecycle)
    )
}

/// Aggregates per subject over `events` (everything but `interest` and `stage`).
/// Whether event `e` is a purchase (`lifecycle.purchase_events`).
pub(crate) fn purchase_condition(lifecycle: &LifecycleConfig) -> String {
    if lifecycle.purchase_events.is_empty() {
        return "false".to_owned();
    }
    let names: Vec<String> = lifecycle.purchase_events.iter().map(|n| quote(n)).collect();
    format!(
        "(e.event_type = 'custom' AND e.name IN ({}))",
        names.join(", ")
    )
}

fn base_sql(lifecycle: &LifecycleConfig) -> String {
    let purchase = purchase_condition(lifecycle);
    let consent = consent_sql(lifecycle.double_opt_in);
    format!(
        "SELECT s.subject_id AS subject_id,
            bool_or(e.event_type = 'identify' AND e.email_hash IS NOT NULL) AS identified,
            min(e.event_time) AS first_seen,
            max(e.event_time) AS last_seen,
            count(*) AS events,
            count(*) FILTER (WHERE e.event_type = 'pageview') AS pageviews,
            count(DISTINCT e.session_id) AS sessions,
            count(*) FILTER (WHERE {purchase}) AS purchases,
            min(e.event_time) FILTER (WHERE {purchase}) AS first_purchase,
            max(e.event_time) FILTER (WHERE {purchase}) AS last_purchase,
            COALESCE(max(c.consent_state), 'none') = 'granted' AS consent_marketing,
            COALESCE(max(c.consent_state), 'none') AS consent_state,
            last_value(e.country ORDER BY e.event_time, e.event_id)
                FILTER (WHERE e.country IS NOT NULL) AS country
         FROM events e
         JOIN ({SUBJECTS_SQL}) s ON s.visitor_id = e.visitor_id
         LEFT JOIN ({consent}) c ON c.subject_id = s.subject_id
         WHERE e.is_bot = false
         GROUP BY s.subject_id"
    )
}

/// Builds the profiles of `subjects` (all subjects when `None`) as of `as_of_ms` from
/// a session over the lake, and returns a fresh session in which they are the
/// relation [`PROFILES`] (with `stage`).
pub async fn profiles(
    lake: &SessionContext,
    lifecycle: &LifecycleConfig,
    model: &Model,
    as_of_ms: i64,
    subjects: Option<&[String]>,
) -> Result<SessionContext> {
    let mut frame = lake
        .sql(&profile_sql(lifecycle))
        .await
        .map_err(|e| Error::Config(format!("lifecycle: {e}")))?;
    if let Some(subjects) = subjects {
        let list = subjects.iter().map(|s| lit(s.as_str())).collect();
        frame = frame
            .filter(in_list(col("subject_id"), list, false))
            .map_err(Error::Query)?;
    }
    let schema = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await.map_err(Error::Query)?;
    let base = concat_batches(&schema, &batches).map_err(|e| Error::Query(e.into()))?;

    let views = load_views(lake, as_of_ms, subjects).await?;
    let mut interest: HashMap<String, Vec<(String, f64)>> = HashMap::new();
    for score in model.score(&views, as_of_ms) {
        interest
            .entry(score.subject)
            .or_default()
            .push((score.topic, score.score));
    }
    let with_interest = add_interest(&base, &interest)?;

    let ctx = SessionContext::new();
    let table = MemTable::try_new(with_interest.schema(), vec![vec![with_interest]])
        .map_err(Error::Query)?;
    ctx.register_table(PROFILES, Arc::new(table))
        .map_err(Error::Query)?;
    Ok(ctx)
}

/// `CASE WHEN <last rule> THEN '<last stage>' … ELSE 'anonymous' END`.
fn stage_sql(lifecycle: &LifecycleConfig) -> String {
    let mut sql = String::from("CASE");
    for stage in lifecycle.stages.iter().rev() {
        sql.push_str(&format!(
            " WHEN COALESCE(({}), false) THEN {}",
            stage.when,
            quote(&stage.name)
        ));
    }
    sql.push_str(" ELSE 'anonymous' END");
    sql
}

/// `base` with a column `interest` (map topic → score) aligned to `subject_id`.
fn add_interest(
    base: &RecordBatch,
    interest: &HashMap<String, Vec<(String, f64)>>,
) -> Result<RecordBatch> {
    let subjects = base
        .column_by_name("subject_id")
        .ok_or_else(|| Error::Config("profile query lost subject_id".to_owned()))?;
    let subjects = cast(subjects, &DataType::Utf8).map_err(|e| Error::Query(e.into()))?;
    let subjects = subjects.as_string::<i32>();
    let mut map = MapBuilder::new(None, StringBuilder::new(), Float64Builder::new());
    for row in 0..subjects.len() {
        for (topic, score) in interest.get(subjects.value(row)).into_iter().flatten() {
            map.keys().append_value(topic);
            map.values().append_value(*score);
        }
        map.append(true).map_err(|e| Error::Query(e.into()))?;
    }
    let map: ArrayRef = Arc::new(map.finish());
    let mut fields: Vec<Field> = base
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("interest", map.data_type().clone(), false));
    let mut columns = base.columns().to_vec();
    columns.push(map);
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| Error::Query(e.into()))
}
