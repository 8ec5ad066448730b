//! The state's edges: computed from scratch out of the lake ([`rebuild`]: closed-form
//! SQL, used to bootstrap the engine and to verify it), saved as a checkpoint (table
//! `audience_state`, replaced as a whole, with the positions it reflects) and loaded
//! back ([`load`]).
//!
//! A checkpoint records, as `txn` versions of its commit, the last event offset per
//! partition of the events topic (`spur-state-events-<p>`) and the `sessions` table
//! version whose dwell times it has settled (`spur-state-sessions`). Loading it and
//! reading on from there gives the same state as never having stopped.

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use spur_lake::model::AudienceStateRow;
use spur_lake::read::{booleans, collect, float64s, int64s, optional_int64s, strings};
use spur_lake::{Lake, TableKind, audience_state_batch};

use super::{PendingView, TopicState, VisitorState};
use crate::config::LifecycleConfig;
use crate::error::{Error, Result};
use crate::profile::purchase_condition;
use crate::score::{Model, Per, View, datafusion_ms, interest_session, interest_sql};

/// How long a view waits for its dwell time before it keeps the unknown-dwell
/// weight for good (its session closed long ago without one).
pub const PENDING_HORIZON_MS: i64 = 7 * 86_400_000;
/// How far back the sessions that may still receive events are looked for.
const OPEN_SESSIONS_MS: i64 = 2 * 86_400_000;

/// `txn` app id of a checkpoint's position in partition `p` of the events topic.
pub fn events_app_id(partition: i32) -> String {
    format!("spur-state-events-{partition}")
}

/// `txn` app id of the `sessions` version a checkpoint has settled.
pub const SESSIONS_APP_ID: &str = "spur-state-sessions";

/// Where a state stands: the events it has counted and the dwell it has settled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Kafka partition → last event offset counted.
    pub events: BTreeMap<i32, i64>,
    /// Version of `sessions` whose appended rows are settled.
    pub sessions: i64,
}

/// The state of every visitor from the lake as `ctx` sees it, as of `as_of_ms`: the
/// events and views at or before it (the engine passes a time no event is after).
pub async fn rebuild(
    ctx: &SessionContext,
    model: &Model,
    lifecycle: &LifecycleConfig,
    as_of_ms: i64,
) -> Result<HashMap<String, VisitorState>> {
    let mut states: HashMap<String, VisitorState> = HashMap::new();
    let t = datafusion_ms("e.event_time");
    let purchase = purchase_condition(lifecycle);
    // Per session first, then per visitor: every aggregate is one DataFusion can keep
    // per group in flat arrays (a `count(DISTINCT …)` or an ordered `last_value` per
    // visitor kept a set or a boxed accumulator per group: 16.9 GB on 10M events).
    for batch in &collect(
        ctx,
        &format!(
            "SELECT visitor_id, bool_or(identified) AS identified,
                min(first_seen) AS first_seen, max(last_seen) AS last_seen,
                sum(events) AS events, sum(pageviews) AS pageviews, count(*) AS sessions,
                sum(purchases) AS purchases, min(first_purchase) AS first_purchase,
                max(last_purchase) AS last_purchase
             FROM (
                SELECT e.visitor_id AS visitor_id,
                    bool_or(e.event_type = 'identify' AND e.email_hash IS NOT NULL) AS identified,
                    min({t}) AS first_seen, max({t}) AS last_seen, count(*) AS events,
                    count(*) FILTER (WHERE e.event_type = 'pageview') AS pageviews,
                    count(*) FILTER (WHERE {purchase}) AS purchases,
                    min({t}) FILTER (WHERE {purchase}) AS first_purchase,
                    max({t}) FILTER (WHERE {purchase}) AS last_purchase
                FROM events e WHERE e.is_bot = false AND {t} <= {as_of_ms}
                GROUP BY e.visitor_id, e.session_id)
             GROUP BY visitor_id"
        ),
    )
    .await?
    {
        let visitor = strings(batch, "visitor_id")?;
        let identified = booleans(batch, "identified")?;
        let int = |name| int64s(batch, name);
        let opt = |name: &str| optional_int64s(batch, name);
        let (events, pageviews, sessions, purchases) = (
            int("events")?,
            int("pageviews")?,
            int("sessions")?,
            int("purchases")?,
        );
        let (first_seen, last_seen) = (opt("first_seen")?, opt("last_seen")?);
        let (first_purchase, last_purchase) = (opt("first_purchase")?, opt("last_purchase")?);
        for (i, visitor) in visitor.into_iter().enumerate() {
            let Some(visitor) = visitor else { continue };
            let state = states.entry(visitor).or_default();
            state.identified = identified[i];
            state.first_seen = first_seen[i];
            state.last_seen = last_seen[i];
            state.events = events[i];
            state.pageviews = pageviews[i];
            state.sessions = sessions[i];
            state.purchases = purchases[i];
            state.first_purchase = first_purchase[i];
            state.last_purchase = last_purchase[i];
            state.interest_ref = as_of_ms;
        }
    }
    // The latest country (by time, then event id), folded from a stream: memory
    // follows visitors, not events.
    let mut stream = ctx
        .sql(&format!(
            "SELECT e.visitor_id AS visitor_id, {t} AS time_ms, e.event_id AS event_id,
                    e.country AS country
             FROM events e
             WHERE e.is_bot = false AND e.country IS NOT NULL AND {t} <= {as_of_ms}"
        ))
        .await
        .map_err(Error::Query)?
        .execute_stream()
        .await
        .map_err(Error::Query)?;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(Error::Query)?;
        let text = |name: &str| -> Result<ArrayRef> {
            let array = batch
                .column_by_name(name)
                .ok_or_else(|| Error::Config(format!("rebuild: no column {name}")))?;
            cast(array, &DataType::Utf8).map_err(|e| Error::Query(e.into()))
        };
        let (visitor, event, country) = (text("visitor_id")?, text("event_id")?, text("country")?);
        let (visitor, event, country) = (
            visitor.as_string::<i32>(),
            event.as_string::<i32>(),
            country.as_string::<i32>(),
        );
        let time = int64s(&batch, "time_ms")?;
        for (i, &time) in time.iter().enumerate() {
            let (Some(v), Some(e), Some(c)) =
                (text_at(visitor, i), text_at(event, i), text_at(country, i))
            else {
                continue;
            };
            if let Some(state) = states.get_mut(v)
                && state
                    .country
                    .as_ref()
                    .is_none_or(|(at, id, _)| (time, e) > (*at, id.as_str()))
            {
                state.country = Some((time, e.to_owned(), c.to_owned()));
            }
        }
    }

    // The latest sessions of each visitor, for counting the sessions of new events.
    let from = spur_schemas::time::date(as_of_ms - OPEN_SESSIONS_MS);
    let mut recent: HashMap<String, Vec<(i64, String)>> = HashMap::new();
    for batch in &collect(
        ctx,
        &format!(
            "SELECT e.visitor_id AS visitor_id, e.session_id AS session_id, max({t}) AS last
             FROM events e
             WHERE e.is_bot = false AND e.dt >= '{from}' AND {t} <= {as_of_ms}
             GROUP BY e.visitor_id, e.session_id"
        ),
    )
    .await?
    {
        let (visitor, session, last) = (
            strings(batch, "visitor_id")?,
            strings(batch, "session_id")?,
            int64s(batch, "last")?,
        );
        for i in 0..batch.num_rows() {
            if let (Some(v), Some(s)) = (&visitor[i], &session[i]) {
                recent
                    .entry(v.clone())
                    .or_default()
                    .push((last[i], s.clone()));
            }
        }
    }
    for (visitor, mut sessions) in recent {
        sessions.sort();
        let keep = sessions.len().saturating_sub(super::RECENT_SESSIONS);
        if let Some(state) = states.get_mut(&visitor) {
            state.recent_sessions = sessions.into_iter().skip(keep).map(|(_, s)| s).collect();
        }
    }

    // Interest: the closed form.
    for batch in &collect(
        &interest_session(ctx),
        &interest_sql(model, as_of_ms, Per::Visitor, &datafusion_ms),
    )
    .await?
    {
        let (id, topic) = (strings(batch, "id")?, strings(batch, "topic")?);
        let raw = float64s(batch, "raw")?;
        let (views, last_view) = (int64s(batch, "views")?, int64s(batch, "last_view")?);
        for i in 0..batch.num_rows() {
            if let (Some(id), Some(topic)) = (&id[i], &topic[i])
                && let Some(state) = states.get_mut(id)
            {
                state.interest.insert(
                    topic.clone(),
                    TopicState {
                        raw: raw[i],
                        views: views[i],
                        last_view: last_view[i],
                    },
                );
            }
        }
    }

    // Views still waiting for their session's dwell. Their sessions started at
    // most `OPEN_SESSIONS_MS` before them (the processor's `max_duration` is a day by
    // default), so only those `sessions` partitions are read.
    let t = datafusion_ms("e.event_time");
    let since = as_of_ms - PENDING_HORIZON_MS;
    let batches = ctx
        .sql(&format!(
            "SELECT e.visitor_id AS subject_id, e.event_id AS event_id, {t} AS time_ms,
                    CAST(NULL AS BIGINT) AS dwell_ms, e.topics AS topics, e.path AS path
             FROM events e LEFT JOIN (
                SELECT d['event_id'] AS event_id
                FROM (SELECT unnest(pageview_dwell) AS d FROM sessions WHERE dt >= '{}')) d
               ON d.event_id = e.event_id
             WHERE e.event_type = 'pageview' AND e.is_bot = false AND d.event_id IS NULL
               AND e.dt >= '{}' AND {t} >= {since} AND {t} <= {as_of_ms}
             ORDER BY time_ms, event_id",
            spur_schemas::time::date(since - OPEN_SESSIONS_MS),
            spur_schemas::time::date(since),
        ))
        .await
        .map_err(Error::Query)?
        .collect()
        .await
        .map_err(Error::Query)?;
    let mut views: Vec<View> = Vec::new();
    for batch in &batches {
        crate::score::sql::read_views(batch, &mut views).map_err(Error::Query)?;
    }
    for view in &views {
        let topics: Vec<String> = model.topics(view).into_iter().map(str::to_owned).collect();
        if let (false, Some(state)) = (topics.is_empty(), states.get_mut(&view.subject)) {
            state.pending.push(PendingView {
                event_id: view.event_id.clone(),
                time_ms: view.time_ms,
                topics,
            });
        }
    }
    Ok(states)
}

/// Row `i` of a text column, `None` when NULL.
fn text_at(array: &StringArray, i: usize) -> Option<&str> {
    array.is_valid(i).then(|| array.value(i))
}

/// The stored form of a visitor's state (JSON in `audience_state.state`).
#[derive(Serialize, Deserialize)]
struct Stored {
    identified: bool,
    first_seen: Option<i64>,
    last_seen: Option<i64>,
    events: i64,
    pageviews: i64,
    sessions: i64,
    recent_sessions: Vec<String>,
    purchases: i64,
    first_purchase: Option<i64>,
    last_purchase: Option<i64>,
    country: Option<(i64, String, String)>,
    interest_ref: i64,
    /// topic → (raw, views, last_view)
    interest: BTreeMap<String, (f64, i64, i64)>,
    /// (event id, time, topics)
    pending: Vec<(String, i64, Vec<String>)>,
}

impl From<&VisitorState> for Stored {
    fn from(s: &VisitorState) -> Stored {
        Stored {
            identified: s.identified,
            first_seen: s.first_seen,
            last_seen: s.last_seen,
            events: s.events,
            pageviews: s.pageviews,
            sessions: s.sessions,
            recent_sessions: s.recent_sessions.clone(),
            purchases: s.purchases,
            first_purchase: s.first_purchase,
            last_purchase: s.last_purchase,
            country: s.country.clone(),
            interest_ref: s.interest_ref,
            interest: s
                .interest
                .iter()
                .map(|(k, t)| (k.clone(), (t.raw, t.views, t.last_view)))
                .collect(),
            pending: s
                .pending
                .iter()
                .map(|p| (p.event_id.clone(), p.time_ms, p.topics.clone()))
                .collect(),
        }
    }
}

impl From<Stored> for VisitorState {
    fn from(s: Stored) -> VisitorState {
        VisitorState {
            identified: s.identified,
            first_seen: s.first_seen,
            last_seen: s.last_seen,
            events: s.events,
            pageviews: s.pageviews,
            sessions: s.sessions,
            recent_sessions: s.recent_sessions,
            purchases: s.purchases,
            first_purchase: s.first_purchase,
            last_purchase: s.last_purchase,
            country: s.country,
            interest_ref: s.interest_ref,
            interest: s
                .interest
                .into_iter()
                .map(|(k, (raw, views, last_view))| {
                    (
                        k,
                        TopicState {
                            raw,
                            views,
                            last_view,
                        },
                    )
                })
                .collect(),
            pending: s
                .pending
                .into_iter()
                .map(|(event_id, time_ms, topics)| PendingView {
                    event_id,
                    time_ms,
                    topics,
                })
                .collect(),
        }
    }
}

/// Replaces the checkpoint with `states` at `position`, in one commit.
pub async fn save(
    lake: &mut Lake,
    states: &HashMap<String, VisitorState>,
    position: &Position,
    now_ms: i64,
) -> Result<i64> {
    let dt = spur_schemas::time::date(now_ms);
    let mut rows: Vec<AudienceStateRow> = Vec::with_capacity(states.len());
    for (visitor, state) in states {
        rows.push(AudienceStateRow {
            visitor_id: visitor.clone(),
            dt: dt.clone(),
            state: serde_json::to_string(&Stored::from(state))
                .map_err(|e| Error::Config(format!("audience state: {e}")))?,
        });
    }
    rows.sort_by(|a, b| a.visitor_id.cmp(&b.visitor_id));
    let mut txns: Vec<(String, i64)> = position
        .events
        .iter()
        .map(|(p, o)| (events_app_id(*p), *o))
        .collect();
    txns.push((SESSIONS_APP_ID.to_owned(), position.sessions));
    Ok(lake
        .replace(
            TableKind::AudienceState,
            audience_state_batch(&rows)?,
            &txns,
        )
        .await?)
}

/// The checkpoint and its position, `None` when none was saved.
pub async fn load(
    lake: &Lake,
    ctx: &SessionContext,
) -> Result<Option<(HashMap<String, VisitorState>, Position)>> {
    let Some(sessions) = lake
        .txn_version(TableKind::AudienceState, SESSIONS_APP_ID)
        .await?
    else {
        return Ok(None);
    };
    let mut position = Position {
        sessions,
        ..Position::default()
    };
    for partition in spur_lake::positions::event_partitions(ctx).await? {
        if let Some(offset) = lake
            .txn_version(TableKind::AudienceState, &events_app_id(partition))
            .await?
        {
            position.events.insert(partition, offset);
        }
    }
    let mut states = HashMap::new();
    for batch in &collect(ctx, "SELECT visitor_id, state FROM audience_state").await? {
        let (visitor, state) = (strings(batch, "visitor_id")?, strings(batch, "state")?);
        for (visitor, state) in visitor.into_iter().zip(state) {
            if let (Some(visitor), Some(state)) = (visitor, state) {
                let stored: Stored = serde_json::from_str(&state)
                    .map_err(|e| Error::Config(format!("audience_state of {visitor}: {e}")))?;
                states.insert(visitor, VisitorState::from(stored));
            }
        }
    }
    Ok(Some((states, position)))
}
