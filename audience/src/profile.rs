//! Profiles: one row per subject with everything segment conditions and lifecycle
//! rules may test, bots excluded. Two builders of the same columns: [`profile_sql`]
//! over the events (the analysts' view `profiles`) and [`profiles_from_state`] from
//! the segment engine's incremental state (`crate::state`).
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
use datafusion::prelude::SessionContext;

use spur_lake::read::quote;

use crate::config::LifecycleConfig;
use crate::error::{Error, Result};
use crate::identity::{SUBJECTS_SQL, consent_sql};
use crate::score::Model;
use crate::state::Profile;

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

/// The profiles of `subjects` — each subject's folded state
/// ([`crate::state::fold`]) and its marketing-consent state — as a fresh session in
/// which they are the relation [`PROFILES`] (with `stage`, and `interest` as scores):
/// the columns of [`profile_sql`] plus `interest`.
pub async fn profiles_from_state(
    subjects: &[(String, Profile, Option<String>)],
    lifecycle: &LifecycleConfig,
    model: &Model,
) -> Result<SessionContext> {
    use datafusion::arrow::array::{
        BooleanArray, Int64Array, StringArray, TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::TimeUnit;
    let micros = |get: &dyn Fn(&Profile) -> Option<i64>| -> ArrayRef {
        Arc::new(
            subjects
                .iter()
                .map(|(_, p, _)| get(p).map(|ms| ms.saturating_mul(1_000)))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        )
    };
    let ints = |get: &dyn Fn(&Profile) -> i64| -> ArrayRef {
        Arc::new(
            subjects
                .iter()
                .map(|(_, p, _)| get(p))
                .collect::<Int64Array>(),
        )
    };
    let state = |c: &Option<String>| c.clone().unwrap_or_else(|| "none".to_owned());
    let timestamp = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let fields = vec![
        Field::new("subject_id", DataType::Utf8, false),
        Field::new("identified", DataType::Boolean, false),
        Field::new("first_seen", timestamp.clone(), true),
        Field::new("last_seen", timestamp.clone(), true),
        Field::new("events", DataType::Int64, false),
        Field::new("pageviews", DataType::Int64, false),
        Field::new("sessions", DataType::Int64, false),
        Field::new("purchases", DataType::Int64, false),
        Field::new("first_purchase", timestamp.clone(), true),
        Field::new("last_purchase", timestamp, true),
        Field::new("consent_marketing", DataType::Boolean, false),
        Field::new("consent_state", DataType::Utf8, false),
        Field::new("country", DataType::Utf8, true),
    ];
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            subjects.iter().map(|(s, _, _)| s),
        )),
        Arc::new(
            subjects
                .iter()
                .map(|(_, p, _)| Some(p.identified))
                .collect::<BooleanArray>(),
        ),
        micros(&|p| p.first_seen),
        micros(&|p| p.last_seen),
        ints(&|p| p.events),
        ints(&|p| p.pageviews),
        ints(&|p| p.sessions),
        ints(&|p| p.purchases),
        micros(&|p| p.first_purchase),
        micros(&|p| p.last_purchase),
        Arc::new(
            subjects
                .iter()
                .map(|(_, _, c)| Some(state(c) == "granted"))
                .collect::<BooleanArray>(),
        ),
        Arc::new(StringArray::from_iter_values(
            subjects.iter().map(|(_, _, c)| state(c)),
        )),
        Arc::new(
            subjects
                .iter()
                .map(|(_, p, _)| p.country.clone())
                .collect::<StringArray>(),
        ),
    ];
    let base = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Error::Query(e.into()))?;
    // The stage rules, in SQL over the base columns.
    let staged = {
        let ctx = SessionContext::new();
        let table = MemTable::try_new(base.schema(), vec![vec![base]]).map_err(Error::Query)?;
        ctx.register_table("base", Arc::new(table))
            .map_err(Error::Query)?;
        let frame = ctx
            .sql(&format!(
                "SELECT *, {} AS stage FROM base",
                stage_sql(lifecycle)
            ))
            .await
            .map_err(|e| Error::Config(format!("lifecycle: {e}")))?;
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await.map_err(Error::Query)?;
        concat_batches(&schema, &batches).map_err(|e| Error::Query(e.into()))?
    };
    let mut interest: HashMap<String, Vec<(String, f64)>> = HashMap::new();
    for (subject, profile, _) in subjects {
        interest.insert(
            subject.clone(),
            profile
                .interest
                .iter()
                .map(|(topic, t)| (topic.clone(), model.normalise(t.raw)))
                .collect(),
        );
    }
    let with_interest = add_interest(&staged, &interest)?;
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
