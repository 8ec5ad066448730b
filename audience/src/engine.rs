//! [`Engine`]: segment membership, kept current by evaluating the subjects of new
//! events (a *step*) and, now and then, every subject (a *sweep*).
//!
//! **State.** The engine keeps each visitor's profile inputs and decayed interest in
//! memory ([`crate::state`]), updated from the events past its position and from the
//! dwell times of newly closed sessions: a step costs what is new, never history.
//! A subject's profile is the fold of its visitors' states (identity from the
//! ledger), so merges and splits need no state moved. The state is checkpointed to
//! table `audience_state` with the position it reflects ([`Engine::checkpoint`]: the
//! segment service calls it every [`CHECKPOINT_INTERVAL_MS`] and after every sweep);
//! without a checkpoint it is rebuilt once from the lake with the closed-form SQL
//! ([`crate::state::store`]).
//!
//! **Membership** lives in the lake: table `segment_changes` is the membership history
//! (the latest change per segment and subject says whether it is a member). Each
//! commit to it carries the event offsets its decisions reflect (`txn` app id
//! `spur-segments-events-<partition>`) and the ledger position. Decisions compare a
//! profile with that membership, so after a crash — state from an older checkpoint,
//! the events since read again — the same subjects are evaluated again and nothing
//! already committed is emitted twice, nothing is skipped.
//!
//! **A step** does nothing while `events`, `sessions` and `ledger` are unchanged; else
//! it updates the state, takes the subjects of the touched visitors (and those
//! visitors as subjects, so an anonymous subject that became identified leaves its
//! segments) and of new ledger entries, and compares each segment's condition with the
//! current membership. **A sweep** evaluates every subject from the state — O(subjects),
//! no read of `events` — so decayed scores and conditions on time take effect.
//!
//! A subject is in a segment when its profile satisfies the segment's condition *and*
//! it has valid marketing consent (the consent ledger; changes go to the mailing
//! system). Erased subjects are dropped without a change. Exits say why:
//! `unsubscribed` (one-click unsubscribe), `consent_withdrawn`, `subject_merged` (an anonymous subject that is now part of an
//! identified one), `segment_removed` (no longer configured) or `no_longer_matched`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::prelude::SessionContext;
use spur_lake::positions::{
    SEGMENTS_LEDGER_APP_ID, event_partitions, past_positions, segments_app_id,
};
use spur_lake::read::{booleans, collect, int32s, int64s, strings};
use spur_lake::{Lake, TableKind, erased_digests, id_digest, segment_changes_batch};
use tracing::{debug, info};

use crate::change::{Change, ChangeKind, grant_reason};
use crate::config::{LifecycleConfig, SegmentDef};
use crate::error::{Error, Result};
use crate::identity::{Entry, Identity};
use crate::ledger::Ledger;
use crate::profile::{PROFILES, profiles_from_state, purchase_condition};
use crate::score::{Model, ScoringConfig};
use crate::state::store::{self, Position};
use crate::state::{Observed, VisitorState, fold};

/// What one step or sweep did.
#[derive(Debug, Clone, Default)]
pub struct StepSummary {
    pub full: bool,
    /// Subjects whose profiles were evaluated.
    pub subjects: usize,
    /// New events the step covered.
    pub events: u64,
    /// The changes decided and committed, in `seq` order.
    pub changes: Vec<Change>,
    /// Version of `segment_changes` after the commit, `None` if nothing was committed.
    pub version: Option<i64>,
}

/// Segment membership and the position it reflects.
#[derive(Debug)]
pub struct Engine {
    lifecycle: LifecycleConfig,
    segments: Vec<SegmentDef>,
    model: Model,
    /// Segment → current members (segments no longer configured included, until a
    /// sweep exits their members).
    members: BTreeMap<String, BTreeSet<String>>,
    next_seq: i64,
    /// Kafka partition → last event offset evaluated.
    watermarks: BTreeMap<i32, i64>,
    /// Version of `events` the last successful step looked at: an unchanged table
    /// has no new events, so a step can skip the scan.
    events_seen: Option<i64>,
    /// The consent and identity ledger, brought up to date before each step.
    ledger: Ledger,
    /// Version of `erasures` whose suppression list was applied.
    erasures_seen: Option<i64>,
    /// Last ledger seq considered (committed as `spur-segments-ledger`).
    ledger_seen: i64,
    /// Version of `ledger` whose entries [`Engine::identity`] has taken in (`None`:
    /// none yet, or an erasure redacted entries: it is built again from the whole
    /// ledger).
    identity_version: Option<i64>,
    /// Subject → when its last confirmation request was decided, ms.
    requested: HashMap<String, i64>,
    /// Every visitor's state, and where it stands.
    states: HashMap<String, VisitorState>,
    position: Position,
    /// Who each visitor is and each subject's marketing consent, taken in from the
    /// ledger's new entries.
    identity: Identity,
    /// When the state was last checkpointed (`None`: it never was, or it was rebuilt
    /// and not yet saved).
    checkpointed_at: Option<i64>,
}

/// How often the state is checkpointed to table `audience_state` (and after every
/// sweep). A restart reads the events since the last checkpoint again.
pub const CHECKPOINT_INTERVAL_MS: i64 = 5 * 60 * 1000;

impl Engine {
    /// Loads membership and position from the lake, and checks every lifecycle rule
    /// and segment condition against the profile columns.
    pub async fn load(
        lake: &Lake,
        lifecycle: &LifecycleConfig,
        segments: &[SegmentDef],
        scoring: &ScoringConfig,
    ) -> Result<Engine> {
        let model = Model::new(scoring)?;
        let ctx = lake.session_context().await?;
        let latest = collect(
            &ctx,
            "SELECT segment, subject_id, change, seq FROM (
                SELECT segment, subject_id, change, seq, ROW_NUMBER() OVER (
                    PARTITION BY segment, subject_id ORDER BY seq DESC) AS rn
                FROM segment_changes) WHERE rn = 1",
        )
        .await?;
        let mut members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut last_seq = 0;
        for batch in &latest {
            let segment = strings(batch, "segment")?;
            let subject = strings(batch, "subject_id")?;
            let change = strings(batch, "change")?;
            let seq = int64s(batch, "seq")?;
            for i in 0..batch.num_rows() {
                last_seq = last_seq.max(seq[i]);
                if change[i].as_deref() == Some(ChangeKind::Entered.as_str())
                    && let (Some(segment), Some(subject)) = (&segment[i], &subject[i])
                {
                    members
                        .entry(segment.clone())
                        .or_default()
                        .insert(subject.clone());
                }
            }
        }
        let mut watermarks = BTreeMap::new();
        for partition in event_partitions(&ctx).await? {
            if let Some(offset) = lake
                .txn_version(TableKind::SegmentChanges, &segments_app_id(partition))
                .await?
            {
                watermarks.insert(partition, offset);
            }
        }
        // Without a recorded position (a lake from before confirmation requests), the
        // engine starts at the ledger's head: old grants get no request.
        let ledger_seen = match lake
            .txn_version(TableKind::SegmentChanges, SEGMENTS_LEDGER_APP_ID)
            .await?
        {
            Some(seq) => seq,
            None => {
                let head = collect(&ctx, "SELECT max(seq) AS seq FROM ledger").await?;
                head.first()
                    .filter(|b| b.num_rows() > 0)
                    .map(|b| int64s(b, "seq"))
                    .transpose()?
                    .map_or(0, |s| s[0])
            }
        };
        let mut requested = HashMap::new();
        for batch in &collect(
            &ctx,
            "SELECT subject_id, CAST(max(at) AS BIGINT) / 1000 AS at FROM segment_changes
             WHERE change = 'confirmation_requested' GROUP BY subject_id",
        )
        .await?
        {
            let at = int64s(batch, "at")?;
            for (i, subject) in strings(batch, "subject_id")?.into_iter().enumerate() {
                if let Some(subject) = subject {
                    requested.insert(subject, at[i]);
                }
            }
        }
        let (states, position, checkpointed_at) = match store::load(lake, &ctx).await? {
            Some((states, position)) => (
                states,
                position,
                Some(chrono::Utc::now().timestamp_millis()),
            ),
            None => {
                // No checkpoint: the state of everything in the lake, once.
                let position = Position {
                    events: current_positions(&ctx).await?,
                    sessions: lake.version(TableKind::Sessions)?,
                };
                let newest = collect(
                    &ctx,
                    "SELECT CAST(max(event_time) AS BIGINT) / 1000 AS t FROM events",
                )
                .await?;
                let newest = newest
                    .first()
                    .filter(|b| b.num_rows() > 0)
                    .map(|b| int64s(b, "t"))
                    .transpose()?
                    .map_or(0, |t| t[0]);
                // As of the newest event: every event counts, and the state's
                // reference time is not ahead of the evaluations to come.
                let states = store::rebuild(&ctx, &model, lifecycle, newest).await?;
                info!(
                    visitors = states.len(),
                    "audience state rebuilt from the lake"
                );
                (states, position, None)
            }
        };
        let engine = Engine {
            states,
            position,
            identity: Identity::default(),
            checkpointed_at,
            ledger_seen,
            identity_version: None,
            requested,
            lifecycle: lifecycle.clone(),
            segments: segments.to_vec(),
            model,
            members,
            next_seq: last_seq + 1,
            watermarks,
            events_seen: None,
            ledger: Ledger::load(lake).await?,
            erasures_seen: None,
        };
        engine.check_conditions().await?;
        info!(
            segments = engine.segments.len(),
            members = engine.members.values().map(BTreeSet::len).sum::<usize>(),
            next_seq = engine.next_seq,
            partitions = engine.watermarks.len(),
            "segment state loaded"
        );
        Ok(engine)
    }

    /// Current members of `segment`.
    pub fn members(&self, segment: &str) -> impl Iterator<Item = &str> {
        self.members
            .get(segment)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// The seq the next change will get.
    pub fn next_seq(&self) -> i64 {
        self.next_seq
    }

    /// Plans each rule and condition on an empty profile relation, so a typo fails
    /// at start-up with the segment's name instead of at the first evaluation.
    async fn check_conditions(&self) -> Result<()> {
        let ctx = profiles_from_state(&[], &self.lifecycle, &self.model).await?;
        ctx.sql(&format!("SELECT stage FROM {PROFILES}"))
            .await
            .map_err(|e| Error::Config(format!("lifecycle.stages: {e}")))?;
        for segment in &self.segments {
            ctx.sql(&format!(
                "SELECT COALESCE(({}), false) FROM {PROFILES}",
                segment.condition
            ))
            .await
            .map_err(|e| Error::Config(format!("segment {:?}: {e}", segment.name)))?;
        }
        Ok(())
    }

    /// Evaluates the subjects of what is new (`full = false`) or every subject (`full =
    /// true`) as of `now_ms`, and commits the resulting changes with the new position
    /// in one commit. On error nothing changed: call [`Engine::load`] again before the
    /// next step (another writer may have committed).
    pub async fn step(&mut self, lake: &mut Lake, now_ms: i64, full: bool) -> Result<StepSummary> {
        // Links and consents first: the profiles below read them. The follower
        // (which reads who is linked from the identity, when that is current)
        // refreshes the lake (`sessions` before `events`); then the identity takes in
        // the new entries (its own and other writers'), or, after an erasure, the
        // whole ledger again.
        let started = std::time::Instant::now();
        let ms = |since: std::time::Instant| since.elapsed().as_millis() as u64;
        lake.refresh().await?;
        let (erased, erasures_changed) = self.forget_erased(lake).await?;
        if erasures_changed {
            self.identity_version = None;
        }
        self.ledger.step(lake, now_ms, Some(&self.identity)).await?;
        let (regrouped, entries) = self.take_in_ledger(lake).await?;
        let ledger_ms = ms(started);
        let events_version = lake.version(TableKind::Events)?;
        let sessions_version = lake.version(TableKind::Sessions)?;
        if !full
            && self.events_seen == Some(events_version)
            && entries.is_empty()
            && regrouped.is_empty()
            && self.position.sessions == sessions_version
        {
            return Ok(StepSummary::default());
        }
        let ctx = lake.session_context().await?;

        // The state follows the new events and the dwell of newly closed sessions.
        let mut position = self.position.clone();
        let read = std::time::Instant::now();
        let (mut touched, events) = self.observe_events(&ctx, &mut position).await?;
        let events_ms = ms(read);
        let read = std::time::Instant::now();
        touched.extend(self.settle_dwell(lake, &mut position).await?);
        let dwell_ms = ms(read);
        if full {
            // Views past the horizon keep weight 1 for good; a sweep visits every
            // visitor anyway, a step must not.
            for visitor_state in self.states.values_mut() {
                visitor_state.expire_pending(now_ms - store::PENDING_HORIZON_MS);
            }
        }

        // The subjects to evaluate.
        let candidates_all: BTreeSet<String>;
        let affected: Option<BTreeSet<String>> = if full {
            None
        } else {
            let mut set = BTreeSet::new();
            for visitor in &touched {
                set.insert(self.identity.subjects().subject_of(visitor).to_owned());
                set.insert(visitor.clone());
            }
            set.extend(regrouped);
            for entry in &entries {
                set.extend(entry.subject_id.iter().cloned());
                if let Some(visitor) = &entry.visitor_id {
                    set.insert(self.identity.subjects().subject_of(visitor).to_owned());
                    set.insert(visitor.clone());
                }
            }
            Some(set)
        };
        let list: Vec<String> = match &affected {
            Some(set) => set.iter().cloned().collect(),
            None => {
                candidates_all = self
                    .states
                    .keys()
                    .map(|v| self.identity.subjects().subject_of(v).to_owned())
                    .collect();
                candidates_all.iter().cloned().collect()
            }
        };
        let read = std::time::Instant::now();
        let evaluation = self.evaluate(&list, now_ms).await?;
        let evaluate_ms = ms(read);
        let read = std::time::Instant::now();

        // Candidates: the evaluated subjects, and for a sweep every current member.
        let mut candidates: BTreeSet<String> = list.into_iter().collect();
        if full {
            for members in self.members.values() {
                candidates.extend(members.iter().cloned());
            }
        }
        candidates.retain(|s| !erased.contains(&id_digest(s)));

        let mut changes = Vec::new();
        let mut seq = self.next_seq;
        let mut decide = |segment: &str, subject: &str, kind: ChangeKind, reason: &str| {
            changes.push(Change::new(seq, segment, subject, kind, reason, now_ms));
            seq += 1;
        };
        for (index, segment) in self.segments.iter().enumerate() {
            let members = self.members.get(&segment.name);
            for subject in &candidates {
                let before = members.is_some_and(|m| m.contains(subject));
                let profile = evaluation.get(subject);
                let now = profile.is_some_and(|p| p.consent && p.matched[index]);
                match (before, now) {
                    (false, true) => decide(&segment.name, subject, ChangeKind::Entered, "matched"),
                    (true, false) => {
                        let reason = match profile {
                            Some(p) if !p.consent && p.unsubscribed => "unsubscribed",
                            Some(p) if !p.consent => "consent_withdrawn",
                            None if self.identity.subjects().person_of.contains_key(subject) => {
                                "subject_merged"
                            }
                            _ => "no_longer_matched",
                        };
                        decide(&segment.name, subject, ChangeKind::Exited, reason);
                    }
                    _ => {}
                }
            }
        }
        // Double opt-in: the latest marketing grant of each subject whose consent is
        // not yet valid gets one confirmation request per `confirmation_interval`.
        let mut requests: BTreeMap<&str, i64> = BTreeMap::new();
        if self.lifecycle.double_opt_in {
            for entry in &entries {
                if entry.kind == "grant"
                    && entry.purpose.as_deref() == Some("marketing")
                    && let Some(subject) = &entry.subject_id
                {
                    requests.insert(subject, entry.seq);
                }
            }
        }
        let interval =
            i64::try_from(self.lifecycle.confirmation_interval.as_millis()).unwrap_or(i64::MAX);
        for (subject, grant) in &requests {
            let confirmed =
                self.identity.consent(subject, self.lifecycle.double_opt_in) == Some("granted");
            let recent = self
                .requested
                .get(*subject)
                .is_some_and(|at| now_ms.saturating_sub(*at) < interval);
            if !confirmed && !recent && !erased.contains(&id_digest(subject)) {
                decide(
                    "",
                    subject,
                    ChangeKind::ConfirmationRequested,
                    &grant_reason(*grant),
                );
            }
        }
        if full {
            let configured: HashSet<&str> = self.segments.iter().map(|s| s.name.as_str()).collect();
            for (segment, members) in &self.members {
                if !configured.contains(segment.as_str()) {
                    for subject in members {
                        decide(segment, subject, ChangeKind::Exited, "segment_removed");
                    }
                }
            }
        }

        let ledger_seen = entries.last().map_or(self.ledger_seen, |e| e.seq);
        let summary_subjects = evaluation.len();
        self.position = position;
        self.events_seen = Some(events_version);
        // The decisions' position only rises (after a restart the state replays from
        // an older checkpoint).
        let mut watermarks = self.watermarks.clone();
        for (p, o) in &self.position.events {
            let mark = watermarks.entry(*p).or_insert(*o);
            *mark = (*mark).max(*o);
        }
        let version = if changes.is_empty() && watermarks == self.watermarks {
            // Entries that decided nothing need no commit: after a restart they are
            // read again and decide nothing again.
            self.ledger_seen = ledger_seen;
            None
        } else {
            let rows: Vec<_> = changes.iter().map(Change::to_row).collect();
            let batch = segment_changes_batch(&rows)?;
            let mut txns: Vec<(String, i64)> = watermarks
                .iter()
                .map(|(p, o)| (segments_app_id(*p), *o))
                .collect();
            txns.push((SEGMENTS_LEDGER_APP_ID.to_owned(), ledger_seen));
            let version = lake.append(TableKind::SegmentChanges, batch, &txns).await?;
            // Committed: now the in-memory membership follows.
            for change in &changes {
                let members = self.members.entry(change.segment.clone()).or_default();
                match change.change {
                    ChangeKind::Entered => members.insert(change.subject_id.clone()),
                    ChangeKind::Exited => members.remove(&change.subject_id),
                    ChangeKind::ConfirmationRequested => {
                        self.requested
                            .insert(change.subject_id.clone(), change.at_ms);
                        false
                    }
                };
            }
            self.members.retain(|_, m| !m.is_empty());
            self.next_seq += i64::try_from(changes.len()).unwrap_or(i64::MAX);
            self.watermarks = watermarks;
            self.ledger_seen = ledger_seen;
            Some(version)
        };
        debug!(
            full,
            ledger_ms,
            events_ms,
            dwell_ms,
            evaluate_ms,
            commit_ms = ms(read),
            total_ms = ms(started),
            subjects = summary_subjects,
            events,
            changes = changes.len(),
            version,
            "segments evaluated"
        );
        Ok(StepSummary {
            full,
            subjects: summary_subjects,
            events,
            changes,
            version,
        })
    }

    /// Whether the state should be checkpointed now: it never was since it was
    /// rebuilt, or [`CHECKPOINT_INTERVAL_MS`] have passed.
    pub fn checkpoint_due(&self, now_ms: i64) -> bool {
        self.checkpointed_at
            .is_none_or(|at| now_ms.saturating_sub(at) >= CHECKPOINT_INTERVAL_MS)
    }

    /// Saves the state and its position to table `audience_state` (one commit that
    /// replaces the previous checkpoint). The caller decides when: the segment
    /// service after a step when [`Engine::checkpoint_due`] and after every sweep.
    pub async fn checkpoint(&mut self, lake: &mut Lake, now_ms: i64) -> Result<()> {
        store::save(lake, &self.states, &self.position, now_ms).await?;
        self.checkpointed_at = Some(now_ms);
        debug!(visitors = self.states.len(), "audience state checkpointed");
        Ok(())
    }

    /// Every visitor's state (for tests and verification against a rebuild).
    pub fn states(&self) -> &HashMap<String, VisitorState> {
        &self.states
    }

    /// Brings the identity up to the ledger's version: takes in the entries after its
    /// seq, or builds it from the whole ledger when it has none (the first step, an
    /// erasure). Returns the subjects a visitor left or joined, and the entries after
    /// the decisions' position `ledger_seen` (operator entries — a withdrawal by the
    /// mailer, a split — come without any event, and grants may need a request).
    async fn take_in_ledger(&mut self, lake: &Lake) -> Result<(BTreeSet<String>, Vec<Entry>)> {
        let version = lake.version(TableKind::Ledger)?;
        if self.identity_version == Some(version) {
            return Ok((BTreeSet::new(), Vec::new()));
        }
        let ctx = lake.session_context().await?;
        let (new, regrouped) = if self.identity_version.is_none() {
            let all = ledger_after(&ctx, 0).await?;
            let mut identity = Identity::default();
            identity.apply(&all);
            let (before, after) = (self.identity.subjects(), identity.subjects());
            let mut regrouped = BTreeSet::new();
            for visitor in before.person_of.keys().chain(after.person_of.keys()) {
                let (was, is) = (before.subject_of(visitor), after.subject_of(visitor));
                if was != is {
                    regrouped.insert(was.to_owned());
                    regrouped.insert(is.to_owned());
                }
            }
            self.identity = identity;
            (all, regrouped)
        } else {
            // Entries between the decisions' position and the identity's (none, but
            // after an error) are read again: `apply` skips what it has.
            let new = ledger_after(&ctx, self.identity.seq().min(self.ledger_seen)).await?;
            let regrouped = self.identity.apply(&new);
            (new, regrouped)
        };
        self.identity_version = Some(version);
        let entries = new
            .into_iter()
            .filter(|e| e.seq > self.ledger_seen)
            .collect();
        Ok((regrouped, entries))
    }

    /// Counts the events past `position` into the visitors' states and moves the
    /// position past them. Returns the visitors with human events and how many events
    /// there were.
    async fn observe_events(
        &mut self,
        ctx: &SessionContext,
        position: &mut Position,
    ) -> Result<(BTreeSet<String>, u64)> {
        let purchase = purchase_condition(&self.lifecycle);
        let batches = ctx
            .sql(&format!(
                "SELECT e.visitor_id AS subject_id, e.event_id AS event_id,
                        CAST(e.event_time AS BIGINT) / 1000 AS time_ms,
                        CAST(NULL AS BIGINT) AS dwell_ms, e.topics AS topics, e.path AS path,
                        e.event_type AS event_type, e.session_id AS session_id,
                        e.event_type = 'identify' AND e.email_hash IS NOT NULL AS identifies,
                        COALESCE({purchase}, false) AS purchase, e.country AS country,
                        e.is_bot AS is_bot, e.kafka_partition AS kafka_partition,
                        e.kafka_offset AS kafka_offset
                 FROM events e WHERE {}
                 ORDER BY e.kafka_partition, e.kafka_offset",
                past_positions(&position.events)
            ))
            .await
            .map_err(Error::Query)?
            .collect()
            .await
            .map_err(Error::Query)?;
        let mut touched = BTreeSet::new();
        let mut events = 0u64;
        for batch in &batches {
            let mut views = Vec::with_capacity(batch.num_rows());
            crate::score::sql::read_views(batch, &mut views).map_err(Error::Query)?;
            let (kind, session) = (strings(batch, "event_type")?, strings(batch, "session_id")?);
            let (identifies, purchase) =
                (booleans(batch, "identifies")?, booleans(batch, "purchase")?);
            let (country, bot) = (strings(batch, "country")?, booleans(batch, "is_bot")?);
            let (partition, offset) = (
                int32s(batch, "kafka_partition")?,
                int64s(batch, "kafka_offset")?,
            );
            for (i, view) in views.iter().enumerate() {
                events += 1;
                if let Some(p) = partition[i] {
                    let mark = position.events.entry(p).or_insert(offset[i]);
                    *mark = (*mark).max(offset[i]);
                }
                if bot[i] {
                    continue;
                }
                let kind = kind[i].as_deref().unwrap_or_default();
                let topics = if kind == "pageview" {
                    self.model
                        .topics(view)
                        .into_iter()
                        .map(str::to_owned)
                        .collect()
                } else {
                    Vec::new()
                };
                let observed = Observed {
                    event_id: &view.event_id,
                    time_ms: view.time_ms,
                    event_type: kind,
                    session_id: session[i].as_deref().unwrap_or_default(),
                    identifies: identifies[i],
                    purchase: purchase[i],
                    country: country[i].as_deref(),
                    topics,
                };
                self.states
                    .entry(view.subject.clone())
                    .or_default()
                    .observe(&observed, &self.model);
                touched.insert(view.subject.clone());
            }
        }
        Ok((touched, events))
    }

    /// Settles the dwell times of the sessions closed since `position`'s `sessions`
    /// version and moves it. Returns the visitors whose interest changed.
    async fn settle_dwell(
        &mut self,
        lake: &Lake,
        position: &mut Position,
    ) -> Result<BTreeSet<String>> {
        let mut touched = BTreeSet::new();
        if lake.version(TableKind::Sessions)? == position.sessions {
            return Ok(touched);
        }
        let (batches, version) = lake
            .appended_since(
                TableKind::Sessions,
                position.sessions,
                &["visitor_id", "is_bot", "pageview_dwell"],
            )
            .await?;
        for batch in &batches {
            let (visitors, bots) = (strings(batch, "visitor_id")?, booleans(batch, "is_bot")?);
            let Some(dwell) = batch.column_by_name("pageview_dwell") else {
                continue;
            };
            let dwell = dwell.as_list::<i32>();
            for (row, visitor) in visitors.iter().enumerate() {
                let (Some(visitor), false) = (visitor, bots[row]) else {
                    continue;
                };
                let Some(state) = self.states.get_mut(visitor) else {
                    continue;
                };
                if dwell.is_null(row) {
                    continue;
                }
                let items = dwell.value(row);
                let items = items.as_struct();
                let ids =
                    cast(items.column(0), &DataType::Utf8).map_err(|e| Error::Query(e.into()))?;
                let ids = ids.as_string::<i32>();
                let ms = items.column(1).as_primitive::<Int64Type>();
                let mut settled = false;
                for i in 0..items.len() {
                    let dwell_ms = ms.is_valid(i).then(|| ms.value(i));
                    settled |= state.settle(ids.value(i), dwell_ms, &self.model);
                }
                if settled {
                    touched.insert(visitor.clone());
                }
            }
        }
        position.sessions = version;
        Ok(touched)
    }

    /// Drops erased subjects from the membership without a change (there is nobody
    /// left to tell about; the erasure removed their history), and returns the
    /// digests of every erased pseudonym so no change is decided for them, and
    /// whether `erasures` changed since the last call.
    async fn forget_erased(&mut self, lake: &Lake) -> Result<(HashSet<String>, bool)> {
        let version = lake.version(TableKind::Erasures)?;
        if version == 0 {
            return Ok((HashSet::new(), false));
        }
        let ctx = lake.session_context().await?;
        let erased = erased_digests(&ctx).await?;
        let changed = self.erasures_seen != Some(version);
        if changed {
            for members in self.members.values_mut() {
                members.retain(|s| !erased.contains(&id_digest(s)));
            }
            self.states.retain(|v, _| !erased.contains(&id_digest(v)));
            self.members.retain(|_, m| !m.is_empty());
            self.erasures_seen = Some(version);
        }
        Ok((erased, changed))
    }

    /// The profiles of `subjects` from the state (those with at least one visitor
    /// state) and, per configured segment, whether its condition holds, as of `now_ms`.
    async fn evaluate(
        &self,
        subjects: &[String],
        now_ms: i64,
    ) -> Result<BTreeMap<String, Evaluated>> {
        let mut rows = Vec::with_capacity(subjects.len());
        for subject in subjects {
            let visitors = self.identity.subjects().members(subject, &self.states);
            if visitors.is_empty() {
                continue;
            }
            let profile = fold(visitors, now_ms, &self.model);
            let consent = self.identity.consent(subject, self.lifecycle.double_opt_in);
            rows.push((subject.clone(), profile, consent.map(str::to_owned)));
        }
        let ctx = profiles_from_state(&rows, &self.lifecycle, &self.model).await?;
        let mut sql = String::from("SELECT subject_id, consent_marketing, consent_state");
        for (index, segment) in self.segments.iter().enumerate() {
            sql.push_str(&format!(
                ", COALESCE(({}), false) AS m{index}",
                segment.condition
            ));
        }
        sql.push_str(&format!(" FROM {PROFILES}"));
        let mut out = BTreeMap::new();
        for batch in &collect(&ctx, &sql).await? {
            let subjects = strings(batch, "subject_id")?;
            let consent = booleans(batch, "consent_marketing")?;
            let state = strings(batch, "consent_state")?;
            let matched: Vec<Vec<bool>> = (0..self.segments.len())
                .map(|index| booleans(batch, &format!("m{index}")))
                .collect::<Result<_, _>>()?;
            for (row, subject) in subjects.into_iter().enumerate() {
                if let Some(subject) = subject {
                    out.insert(
                        subject,
                        Evaluated {
                            consent: consent[row],
                            unsubscribed: state[row].as_deref() == Some("unsubscribed"),
                            matched: matched.iter().map(|m| m[row]).collect(),
                        },
                    );
                }
            }
        }
        Ok(out)
    }
}

/// One subject's evaluation.
#[derive(Debug)]
struct Evaluated {
    consent: bool,
    /// The consent ended with a one-click unsubscribe.
    unsubscribed: bool,
    /// Per configured segment, in order.
    matched: Vec<bool>,
}

/// The ledger entries after seq `after`, in order (redacted ones have no content).
async fn ledger_after(ctx: &SessionContext, after: i64) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for batch in &collect(
        ctx,
        &format!(
            "SELECT seq, CAST(at AS BIGINT) / 1000 AS at, kind, purpose, subject_id, visitor_id
             FROM ledger
             WHERE seq > {after} AND erased = false ORDER BY seq"
        ),
    )
    .await?
    {
        let (seq, at) = (int64s(batch, "seq")?, int64s(batch, "at")?);
        let kind = strings(batch, "kind")?;
        let purpose = strings(batch, "purpose")?;
        let subject = strings(batch, "subject_id")?;
        let visitor = strings(batch, "visitor_id")?;
        for i in 0..batch.num_rows() {
            out.push(Entry {
                seq: seq[i],
                at: at[i],
                kind: kind[i].clone().unwrap_or_default(),
                purpose: purpose[i].clone(),
                subject_id: subject[i].clone(),
                visitor_id: visitor[i].clone(),
            });
        }
    }
    Ok(out)
}

/// The last offset per partition of the events topic in `events`.
async fn current_positions(ctx: &SessionContext) -> Result<BTreeMap<i32, i64>> {
    let mut out = BTreeMap::new();
    for batch in &collect(
        ctx,
        "SELECT kafka_partition, max(kafka_offset) AS kafka_offset FROM events GROUP BY kafka_partition",
    )
    .await?
    {
        let (partition, offset) = (int32s(batch, "kafka_partition")?, int64s(batch, "kafka_offset")?);
        for (p, o) in partition.into_iter().zip(offset) {
            if let Some(p) = p {
                out.insert(p, o);
            }
        }
    }
    Ok(out)
}
