//! Incremental audience state: what the segment rules need to know about each visitor,
//! kept current event by event so that no step re-reads history. Pure: no I/O, no
//! clock. [`store`] reads and writes it (table `audience_state`) and holds the
//! rebuild SQL that computes the same state from scratch.
//!
//! **Per visitor, not per subject.** Events belong to visitors; a subject (a person,
//! or an anonymous visitor) is the set of visitors the identity ledger links to it
//! ([`crate::identity`]). A subject's profile is the [`fold`] of its visitors' states
//! at evaluation time, so a merge (a new `link`) folds the visitor's state into the
//! person and a split (`unlink`) restores it, exactly, without moving any state.
//!
//! **Interest** is a sum of decayed contributions, so it updates in O(1) per view:
//! each visitor keeps, per topic, `raw` as of its reference time `ref`, and
//!
//! ```text
//! raw(t) = raw(ref) · 2^(−(t − ref) / half_life)           (t ≥ ref)
//! add a view at v ≤ ref:   raw(ref) += w · 2^(−(ref − v) / half_life)
//! add a view at v > ref:   raw(v) = raw(ref) · 2^(−(v − ref) / half_life) + w; ref = v
//! ```
//!
//! with the weights and decay of [`crate::score`]. A view whose dwell is not yet known
//! (its session is open) counts with the unknown-dwell weight 1 and waits in
//! `pending`; when its session closes the dwell arrives and the difference
//! `(w(dwell) − 1) · decay` is added. Evaluated at `t < ref` (a view later than the
//! evaluation time, a clock ahead) the state reads as of `ref`.
//!
//! **Counts and times** (`events`, `pageviews`, `purchases`, first/last seen and
//! purchase, `identified`, the latest `country`) are plain running aggregates over
//! the visitor's human events. `sessions` counts distinct session ids: a visitor's
//! sessions never overlap, so an event of a session not among its
//! [`RECENT_SESSIONS`] latest ones is a new session.

pub mod store;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use crate::score::Model;

/// Session ids remembered per visitor for counting distinct sessions.
pub const RECENT_SESSIONS: usize = 16;

/// One topic's interest of one visitor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopicState {
    /// Σ weight · decay of the views, as of the visitor's `interest_ref`.
    pub raw: f64,
    pub views: i64,
    /// Time of the latest view, ms.
    pub last_view: i64,
}

/// A view counted with the unknown-dwell weight, waiting for its session to close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingView {
    pub event_id: String,
    pub time_ms: i64,
    /// Its topics (page topics ∪ URL rules), as counted.
    pub topics: Vec<String>,
}

/// Everything the segment rules need to know about one visitor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VisitorState {
    pub identified: bool,
    pub first_seen: Option<i64>,
    pub last_seen: Option<i64>,
    pub events: i64,
    pub pageviews: i64,
    pub sessions: i64,
    /// The latest distinct session ids, newest last.
    pub recent_sessions: Vec<String>,
    pub purchases: i64,
    pub first_purchase: Option<i64>,
    pub last_purchase: Option<i64>,
    /// The country of the latest event that had one: (time, event id, country).
    pub country: Option<(i64, String, String)>,
    /// Reference time of every topic's `raw`, ms.
    pub interest_ref: i64,
    pub interest: BTreeMap<String, TopicState>,
    pub pending: Vec<PendingView>,
}

/// A human event, as the state needs it.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    pub event_id: &'a str,
    pub time_ms: i64,
    pub event_type: &'a str,
    pub session_id: &'a str,
    /// An `identify` with an e-mail pseudonym.
    pub identifies: bool,
    /// A purchase (`lifecycle.purchase_events`).
    pub purchase: bool,
    pub country: Option<&'a str>,
    /// For a pageview: its topics (see [`Model::topics`]).
    pub topics: Vec<String>,
}

impl VisitorState {
    /// Counts one human event in.
    pub fn observe(&mut self, ev: &Observed<'_>, model: &Model) {
        let t = ev.time_ms;
        self.identified |= ev.identifies;
        self.first_seen = Some(self.first_seen.map_or(t, |f| f.min(t)));
        self.last_seen = Some(self.last_seen.map_or(t, |l| l.max(t)));
        self.events += 1;
        if !self.recent_sessions.iter().any(|s| s == ev.session_id) {
            self.sessions += 1;
            self.recent_sessions.push(ev.session_id.to_owned());
            if self.recent_sessions.len() > RECENT_SESSIONS {
                self.recent_sessions.remove(0);
            }
        }
        if ev.purchase {
            self.purchases += 1;
            self.first_purchase = Some(self.first_purchase.map_or(t, |f| f.min(t)));
            self.last_purchase = Some(self.last_purchase.map_or(t, |l| l.max(t)));
        }
        if let Some(country) = ev.country {
            let newer = self
                .country
                .as_ref()
                .is_none_or(|(at, id, _)| (t, ev.event_id) > (*at, id.as_str()));
            if newer {
                self.country = Some((t, ev.event_id.to_owned(), country.to_owned()));
            }
        }
        if ev.event_type == "pageview" {
            self.pageviews += 1;
            if !ev.topics.is_empty() {
                self.add_view(t, &ev.topics, model.weight(None), true, model);
                self.pending.push(PendingView {
                    event_id: ev.event_id.to_owned(),
                    time_ms: t,
                    topics: ev.topics.clone(),
                });
            }
        }
    }

    /// The dwell of a pageview is known (its session closed): a pending view gets
    /// the weight of that dwell instead of the unknown-dwell weight. Returns whether
    /// the view was pending here.
    pub fn settle(&mut self, event_id: &str, dwell_ms: Option<i64>, model: &Model) -> bool {
        let Some(at) = self.pending.iter().position(|p| p.event_id == event_id) else {
            return false;
        };
        let view = self.pending.swap_remove(at);
        let delta = model.weight(dwell_ms) - model.weight(None);
        if delta != 0.0 {
            self.add_view(view.time_ms, &view.topics, delta, false, model);
        }
        true
    }

    /// Drops pending views older than `before_ms`: their sessions closed long ago
    /// without a dwell for them (past the sessioniser's per-session bound), so they
    /// keep the unknown-dwell weight.
    pub fn expire_pending(&mut self, before_ms: i64) {
        self.pending.retain(|p| p.time_ms >= before_ms);
    }

    /// Adds `weight` for a view at `time_ms` to each of `topics`; `count` when it is a
    /// new view (not a correction).
    fn add_view(
        &mut self,
        time_ms: i64,
        topics: &[String],
        weight: f64,
        count: bool,
        model: &Model,
    ) {
        if time_ms > self.interest_ref {
            let factor = model.decay(self.interest_ref, time_ms);
            for topic in self.interest.values_mut() {
                topic.raw *= factor;
            }
            self.interest_ref = time_ms;
        }
        let contribution = weight * model.decay(time_ms, self.interest_ref);
        for name in topics {
            let topic = self.interest.entry(name.clone()).or_default();
            topic.raw += contribution;
            if count {
                topic.views += 1;
                topic.last_view = topic.last_view.max(time_ms);
            }
        }
    }
}

/// A subject's profile: the fold of its visitors' states.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    pub identified: bool,
    pub first_seen: Option<i64>,
    pub last_seen: Option<i64>,
    pub events: i64,
    pub pageviews: i64,
    pub sessions: i64,
    pub purchases: i64,
    pub first_purchase: Option<i64>,
    pub last_purchase: Option<i64>,
    pub country: Option<String>,
    /// Per topic: raw interest as of the evaluation time, views and latest view.
    pub interest: BTreeMap<String, TopicState>,
}

/// Folds the states of one subject's visitors into its profile as of `at_ms`.
pub fn fold<'a>(
    visitors: impl IntoIterator<Item = &'a VisitorState>,
    at_ms: i64,
    model: &Model,
) -> Profile {
    let mut p = Profile::default();
    let mut country: Option<&(i64, String, String)> = None;
    let min = |a: Option<i64>, b: Option<i64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let max = |a: Option<i64>, b: Option<i64>| a.max(b);
    for v in visitors {
        p.identified |= v.identified;
        p.first_seen = min(p.first_seen, v.first_seen);
        p.last_seen = max(p.last_seen, v.last_seen);
        p.events += v.events;
        p.pageviews += v.pageviews;
        p.sessions += v.sessions;
        p.purchases += v.purchases;
        p.first_purchase = min(p.first_purchase, v.first_purchase);
        p.last_purchase = max(p.last_purchase, v.last_purchase);
        if let Some(c) = &v.country
            && country.is_none_or(|best| (c.0, &c.1) > (best.0, &best.1))
        {
            country = Some(c);
        }
        let factor = if at_ms > v.interest_ref {
            model.decay(v.interest_ref, at_ms)
        } else {
            1.0
        };
        for (name, topic) in &v.interest {
            let into = p.interest.entry(name.clone()).or_default();
            into.raw += topic.raw * factor;
            into.views += topic.views;
            into.last_view = into.last_view.max(topic.last_view);
        }
    }
    p.country = country.map(|c| c.2.clone());
    p
}
