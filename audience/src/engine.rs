//! [`Engine`]: segment membership, kept current by evaluating the subjects of new
//! events (a *step*) and, now and then, every subject (a *sweep*).
//!
//! **State** lives in the lake: table `segment_changes` is the membership history
//! (the latest change per segment and subject says whether it is a member), and each
//! commit to it carries, per Kafka partition of the events topic, the last event
//! offset its evaluation covered (`txn` app id `spur-segments-events-<partition>`).
//! Changes and the position they were decided at are one atomic commit, so after a
//! crash the engine resumes exactly where the last commit left it and re-decides the
//! rest identically: nothing is emitted twice, nothing is skipped.
//!
//! **A step** does nothing while the `events` table's version is unchanged; else it
//! finds the events past those offsets, takes their subjects (and their
//! visitor ids as subjects, so an anonymous subject that became identified leaves
//! its segments), rebuilds those subjects' profiles from their whole history and
//! compares each segment's condition with the current membership. **A sweep** does
//! the same for every subject and every current member: scores decay and conditions
//! on time change without new events.
//!
//! A subject is in a segment when its profile satisfies the segment's condition *and*
//! it has valid marketing consent (the consent ledger; changes go to the mailing
//! system). Erased subjects are dropped without a change. Exits say why:
//! `unsubscribed` (one-click unsubscribe), `consent_withdrawn`, `subject_merged` (an anonymous subject that is now part of an
//! identified one), `segment_removed` (no longer configured) or `no_longer_matched`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use datafusion::prelude::SessionContext;
use spur_lake::positions::{
    SEGMENTS_LEDGER_APP_ID, event_partitions, new_positions, past_positions, segments_app_id,
};
use spur_lake::read::{booleans, collect, int64s, quote, strings};
use spur_lake::{Lake, TableKind, erased_digests, id_digest, segment_changes_batch};
use tracing::{debug, info};

use crate::change::{Change, ChangeKind, grant_reason};
use crate::config::{LifecycleConfig, SegmentDef};
use crate::error::{Error, Result};
use crate::identity::SUBJECTS_SQL;
use crate::ledger::Ledger;
use crate::profile::{PROFILES, profiles};
use crate::score::{Model, ScoringConfig};

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
    /// Version of `ledger` the last successful step looked at.
    ledger_version_seen: Option<i64>,
    /// Subject → when its last confirmation request was decided, ms.
    requested: HashMap<String, i64>,
}

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
        let engine = Engine {
            ledger_seen,
            ledger_version_seen: None,
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
        engine.check_conditions(&ctx).await?;
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
    async fn check_conditions(&self, lake: &SessionContext) -> Result<()> {
        let ctx = profiles(lake, &self.lifecycle, &self.model, 0, Some(&[])).await?;
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

    /// `kafka_offset` beyond the engine's position in the row's partition.
    fn new_rows(&self) -> String {
        past_positions(&self.watermarks)
    }

    /// Evaluates the subjects of events past the position (`full = false`) or every
    /// subject (`full = true`) as of `now_ms`, and commits the resulting changes with
    /// the new position in one commit. On error nothing changed: call
    /// [`Engine::load`] again before the next step (another writer may have
    /// committed).
    pub async fn step(&mut self, lake: &mut Lake, now_ms: i64, full: bool) -> Result<StepSummary> {
        // Links and consents first: the profiles below read them.
        self.ledger.step(lake, now_ms).await?;
        let erased = self.forget_erased(lake).await?;
        let events_version = lake.version(TableKind::Events)?;
        let ledger_version = lake.version(TableKind::Ledger)?;
        let ledger_changed = self.ledger_version_seen != Some(ledger_version);
        if !full && self.events_seen == Some(events_version) && !ledger_changed {
            return Ok(StepSummary::default());
        }
        let ctx = lake.session_context().await?;
        let new_rows = self.new_rows();
        let (marks, events) = new_positions(&ctx, &new_rows).await?;
        // Ledger entries past the position: operator entries (a withdrawal by the
        // mailer, a split) come without any event, and grants may need a request.
        let entries = if ledger_changed || full {
            ledger_after(&ctx, self.ledger_seen).await?
        } else {
            Vec::new()
        };
        if !full && marks.is_empty() && entries.is_empty() {
            self.events_seen = Some(events_version);
            self.ledger_version_seen = Some(ledger_version);
            return Ok(StepSummary::default());
        }

        // The subjects to evaluate.
        let affected: Option<BTreeSet<String>> = if full {
            None
        } else {
            let mut set = BTreeSet::new();
            for batch in &collect(
                &ctx,
                &format!(
                    "SELECT DISTINCT s.subject_id AS subject_id, e.visitor_id AS visitor_id
                     FROM events e JOIN ({SUBJECTS_SQL}) s ON s.visitor_id = e.visitor_id
                     WHERE {new_rows}"
                ),
            )
            .await?
            {
                set.extend(strings(batch, "subject_id")?.into_iter().flatten());
                set.extend(strings(batch, "visitor_id")?.into_iter().flatten());
            }
            set.extend(entries.iter().filter_map(|e| e.subject_id.clone()));
            Some(set)
        };
        let list: Option<Vec<String>> = affected.as_ref().map(|s| s.iter().cloned().collect());
        let profiles_ctx =
            profiles(&ctx, &self.lifecycle, &self.model, now_ms, list.as_deref()).await?;
        let evaluation = self.evaluate(&profiles_ctx).await?;

        // Candidates: the evaluated subjects, and for a sweep every current member.
        let mut candidates: BTreeSet<String> = match affected {
            Some(set) => set,
            None => evaluation.keys().cloned().collect(),
        };
        if full {
            for members in self.members.values() {
                candidates.extend(members.iter().cloned());
            }
        }
        candidates.retain(|s| !erased.contains(&id_digest(s)));
        let vanished: Vec<String> = candidates
            .iter()
            .filter(|s| !evaluation.contains_key(*s) && self.is_member_anywhere(s))
            .cloned()
            .collect();
        let merged = merged_visitors(&ctx, &vanished).await?;

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
                            None if merged.contains(subject) => "subject_merged",
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
            let confirmed = evaluation.get(*subject).is_some_and(|p| p.consent);
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

        let mut watermarks = self.watermarks.clone();
        watermarks.extend(marks.iter().map(|(p, o)| (*p, *o)));
        let ledger_seen = entries.last().map_or(self.ledger_seen, |e| e.seq);
        let summary_subjects = evaluation.len();
        if changes.is_empty() && watermarks == self.watermarks {
            // Entries that decided nothing need no commit: after a restart they are
            // read again and decide nothing again.
            self.events_seen = Some(events_version);
            self.ledger_version_seen = Some(ledger_version);
            self.ledger_seen = ledger_seen;
            return Ok(StepSummary {
                full,
                subjects: summary_subjects,
                events,
                ..StepSummary::default()
            });
        }
        let rows: Vec<_> = changes.iter().map(Change::to_row).collect();
        let batch = segment_changes_batch(&rows)?;
        let mut txns: Vec<(String, i64)> = marks
            .iter()
            .map(|(p, o)| (segments_app_id(*p), *o))
            .collect();
        txns.push((SEGMENTS_LEDGER_APP_ID.to_owned(), ledger_seen));
        let version = lake.append(TableKind::SegmentChanges, batch, &txns).await?;

        // Committed: now the in-memory state follows.
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
        self.events_seen = Some(events_version);
        self.ledger_version_seen = Some(ledger_version);
        self.ledger_seen = ledger_seen;
        debug!(
            full,
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
            version: Some(version),
        })
    }

    /// Drops erased subjects from the membership without a change (there is nobody
    /// left to tell about; the erasure removed their history), and returns the
    /// digests of every erased pseudonym so no change is decided for them.
    async fn forget_erased(&mut self, lake: &Lake) -> Result<HashSet<String>> {
        let version = lake.version(TableKind::Erasures)?;
        if version == 0 {
            return Ok(HashSet::new());
        }
        let ctx = lake.session_context().await?;
        let erased = erased_digests(&ctx).await?;
        if self.erasures_seen != Some(version) {
            for members in self.members.values_mut() {
                members.retain(|s| !erased.contains(&id_digest(s)));
            }
            self.members.retain(|_, m| !m.is_empty());
            self.erasures_seen = Some(version);
        }
        Ok(erased)
    }

    fn is_member_anywhere(&self, subject: &str) -> bool {
        self.members.values().any(|m| m.contains(subject))
    }

    /// Every profile's consent and, per configured segment, whether its condition
    /// holds.
    async fn evaluate(&self, ctx: &SessionContext) -> Result<BTreeMap<String, Evaluated>> {
        let mut sql = String::from("SELECT subject_id, consent_marketing, consent_state");
        for (index, segment) in self.segments.iter().enumerate() {
            sql.push_str(&format!(
                ", COALESCE(({}), false) AS m{index}",
                segment.condition
            ));
        }
        sql.push_str(&format!(" FROM {PROFILES}"));
        let mut out = BTreeMap::new();
        for batch in &collect(ctx, &sql).await? {
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

/// A ledger entry as the engine reads it.
#[derive(Debug)]
struct Entry {
    seq: i64,
    kind: String,
    purpose: Option<String>,
    subject_id: Option<String>,
}

/// The ledger entries after seq `after`, in order (redacted ones have no content).
async fn ledger_after(ctx: &SessionContext, after: i64) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for batch in &collect(
        ctx,
        &format!(
            "SELECT seq, kind, purpose, subject_id FROM ledger
             WHERE seq > {after} AND erased = false ORDER BY seq"
        ),
    )
    .await?
    {
        let seq = int64s(batch, "seq")?;
        let kind = strings(batch, "kind")?;
        let purpose = strings(batch, "purpose")?;
        let subject = strings(batch, "subject_id")?;
        for i in 0..batch.num_rows() {
            out.push(Entry {
                seq: seq[i],
                kind: kind[i].clone().unwrap_or_default(),
                purpose: purpose[i].clone(),
                subject_id: subject[i].clone(),
            });
        }
    }
    Ok(out)
}

/// Those of `subjects` that are visitor ids now belonging to an identified subject.
async fn merged_visitors(ctx: &SessionContext, subjects: &[String]) -> Result<HashSet<String>> {
    if subjects.is_empty() {
        return Ok(HashSet::new());
    }
    let list: Vec<String> = subjects.iter().map(|s| quote(s)).collect();
    let mut merged = HashSet::new();
    for batch in &collect(
        ctx,
        &format!(
            "SELECT visitor_id FROM ({SUBJECTS_SQL}) WHERE subject_id <> visitor_id
             AND visitor_id IN ({})",
            list.join(", ")
        ),
    )
    .await?
    {
        merged.extend(strings(batch, "visitor_id")?.into_iter().flatten());
    }
    Ok(merged)
}
