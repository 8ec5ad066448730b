//! The sessioniser: groups one visitor's events into sessions. Pure: no I/O and no
//! clock; time comes only from the events, so a replay gives the same result.
//!
//! # Rules
//!
//! - **Watermark** `W`: the greatest `event_time` observed so far. It is the only notion
//!   of "now".
//! - A session **ends by inactivity** once `inactivity_ms` pass without an event: an
//!   event `t ≥ last_time` with `t - last_time ≥ inactivity_ms` starts a new session,
//!   and [`Sessioniser::close_idle`] closes every session with
//!   `last_time + inactivity_ms ≤ W` (`closed_by = "inactivity"`). Within a session,
//!   consecutive events (in time order) are always less than `inactivity_ms` apart.
//! - A session **never lasts more than `max_duration_ms`**: an event that would make
//!   `t - start_time` exceed it closes the session (`"max_duration"`) and starts the
//!   next one.
//! - The **session id** is the hex of the first 16 bytes of
//!   `SHA-256(site ‖ 0 ‖ visitor ‖ 0 ‖ event_id)` of the event that opened the session
//!   (the first one *observed*, which a late event may precede in time). The same
//!   events in the same order give the same ids. Event ids must be de-duplicated
//!   before they reach the sessioniser: a replayed first event would reuse an id.
//!
//! # Late and out-of-order events
//!
//! Every open session has a `floor`: the last time of the visitor's closed session
//! before it (or the late threshold below, when it opened). An event of a visitor with
//! an open session, earlier than that session's `last_time`,
//! - joins it if it is inside `[start_time, last_time]`, or if it is after `floor`,
//!   less than `inactivity_ms` before `start_time` and keeps the session within
//!   `max_duration_ms` (then `start_time` moves down to it);
//! - otherwise gets a **session of its own**, closed at once (`closed_by = "late"`,
//!   returned by the next `close_idle`); if it is after `floor` the floor moves up to it,
//!   so the open session can never grow over it.
//!
//! For a visitor without an open session (or whose session is idle, which counts as
//! closed) the **late threshold** is `L = max(W - inactivity_ms, evicted_until)`: an
//! event at or before `L` gets a `"late"` session of its own, a later one opens a
//! session with floor `L`.
//!
//! The result: sessions of one visitor never overlap, except a `"late"` session (always
//! one event, `start_time == end_time`) whose time falls inside an earlier session that
//! was already closed and may be written out. Placing it there would need the history
//! of every closed session; the sessioniser keeps only open ones.
//!
//! # Independence from batch boundaries
//!
//! An idle session (`last_time + inactivity_ms ≤ W`) is treated exactly as if
//! `close_idle` had already closed it. So every decision depends only on the events and
//! their order, never on when `close_idle` ran: cutting the same input into any batches
//! gives the same session ids and the same closed rows. The same holds across a
//! restart: call `close_idle`, store [`Sessioniser::open_sessions`],
//! [`Sessioniser::watermark`] and [`Sessioniser::evicted_until`], then feed them to
//! [`Sessioniser::restore`] and [`Sessioniser::restore_progress`].
//!
//! # Memory bound and eviction
//!
//! At most `max_open` sessions stay open. Each keeps its pageview and engagement
//! events (id, time, path, engaged time, scroll: what the closed row's
//! `pageview_dwell` is computed from, at most [`MAX_PAGE_EVENTS`]), so memory grows
//! with the events of open sessions, not only their number. When an event leaves more open, idle sessions
//! are closed first (as `"inactivity"`); if that is not enough, the session with the
//! oldest `last_time` (ties: smallest site, then visitor id) is closed as `"evicted"`,
//! and `evicted_until` rises to its `last_time`, so that a later event of that visitor
//! can never reopen the same time span (it is late instead). Eviction depends only on
//! the sessions that are not idle, so it too is independent of batch boundaries.
//!
//! [`Sessioniser::close_all`] closes everything (end of input): idle sessions as
//! `"inactivity"`, the others as `"flush"`.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use spur_lake::dwell::{PageEvent, pageview_dwell};
use spur_lake::model::SessionRow;

/// Most pageview and engagement events one open session keeps for its dwell times
/// (in arrival order, so a replay keeps the same ones). A session with more — a
/// crawler the bot rules missed — gets no dwell for the pageviews past it.
pub const MAX_PAGE_EVENTS: usize = 10_000;

/// 30 minutes.
pub const DEFAULT_INACTIVITY_MS: i64 = 30 * 60 * 1000;
/// 24 hours.
pub const DEFAULT_MAX_DURATION_MS: i64 = 24 * 60 * 60 * 1000;

/// When a session ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionRules {
    /// A gap of at least this long without events ends a session. At least 1 ms.
    pub inactivity_ms: i64,
    /// A session never spans more than this from its first to its last event.
    pub max_duration_ms: i64,
}

impl Default for SessionRules {
    fn default() -> Self {
        SessionRules {
            inactivity_ms: DEFAULT_INACTIVITY_MS,
            max_duration_ms: DEFAULT_MAX_DURATION_MS,
        }
    }
}

/// Why a session was closed: [`SessionRow::closed_by`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClosedBy {
    /// `inactivity_ms` passed without an event.
    Inactivity,
    /// The next event would have made it longer than `max_duration_ms`.
    MaxDuration,
    /// Closed early to keep at most `max_open` sessions in memory.
    Evicted,
    /// A single late event that could not join an open session.
    Late,
    /// Still open when [`Sessioniser::close_all`] was called.
    Flush,
}

impl ClosedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ClosedBy::Inactivity => "inactivity",
            ClosedBy::MaxDuration => "max_duration",
            ClosedBy::Evicted => "evicted",
            ClosedBy::Late => "late",
            ClosedBy::Flush => "flush",
        }
    }
}

/// What the sessioniser needs to know about one event.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    pub site_id: &'a str,
    /// The visitor pseudonym.
    pub visitor_id: &'a str,
    pub event_id: &'a str,
    pub event_time: i64,
    /// `pageview`, `engagement`, ...
    pub event_type: &'a str,
    pub path: Option<&'a str>,
    /// Visible time reported by an `engagement` event.
    pub engaged_ms: Option<i64>,
    /// Deepest scroll reported by an `engagement` event.
    pub scroll_pct: Option<i32>,
    pub is_bot: bool,
    pub country: Option<&'a str>,
    pub device: &'a str,
}

/// A session that may still grow. Serialisable so that it can be stored across a
/// restart and handed back to [`Sessioniser::restore`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenSession {
    pub session_id: String,
    pub site_id: String,
    pub visitor_id: String,
    pub start_time: i64,
    pub last_time: i64,
    /// Events at or before this time may not join: they would overlap an earlier,
    /// closed session of the visitor (see the module documentation).
    pub floor: i64,
    pub events: i64,
    pub pageviews: i64,
    pub engaged_ms: i64,
    /// Path of the earliest pageview (by event time; first observed on a tie).
    pub entry_path: Option<String>,
    /// Event time of `entry_path`'s pageview.
    pub entry_time: i64,
    /// Path of the latest pageview (by event time; last observed on a tie).
    pub exit_path: Option<String>,
    /// Event time of `exit_path`'s pageview.
    pub exit_time: i64,
    /// Any of its events came from a bot.
    pub is_bot: bool,
    /// The first country any of its events had.
    pub country: Option<String>,
    /// The device class of its first event.
    pub device: String,
    /// Its pageview and engagement events, for the dwell times written at close.
    pub pages: Vec<PageEvent>,
}

impl OpenSession {
    fn open(ev: &Observed<'_>, floor: i64) -> Self {
        let mut s = OpenSession {
            session_id: session_id(ev.site_id, ev.visitor_id, ev.event_id),
            site_id: ev.site_id.to_owned(),
            visitor_id: ev.visitor_id.to_owned(),
            start_time: ev.event_time,
            last_time: ev.event_time,
            floor,
            events: 0,
            pageviews: 0,
            engaged_ms: 0,
            entry_path: None,
            entry_time: ev.event_time,
            exit_path: None,
            exit_time: ev.event_time,
            is_bot: false,
            country: None,
            device: ev.device.to_owned(),
            pages: Vec::new(),
        };
        s.add(ev);
        s
    }

    /// Counts `ev` in (the caller has decided that it belongs here).
    fn add(&mut self, ev: &Observed<'_>) {
        let t = ev.event_time;
        self.start_time = self.start_time.min(t);
        self.last_time = self.last_time.max(t);
        self.events += 1;
        if ev.event_type == "pageview" {
            self.pageviews += 1;
            if let Some(path) = ev.path {
                if self.entry_path.is_none() || t < self.entry_time {
                    self.entry_path = Some(path.to_owned());
                    self.entry_time = t;
                }
                if self.exit_path.is_none() || t >= self.exit_time {
                    self.exit_path = Some(path.to_owned());
                    self.exit_time = t;
                }
            }
        }
        if ev.event_type == "engagement" {
            let engaged = ev.engaged_ms.unwrap_or(0).max(0);
            self.engaged_ms = self.engaged_ms.saturating_add(engaged);
        }
        if matches!(ev.event_type, "pageview" | "engagement") && self.pages.len() < MAX_PAGE_EVENTS
        {
            self.pages.push(PageEvent {
                event_id: ev.event_id.to_owned(),
                time_ms: t,
                pageview: ev.event_type == "pageview",
                path: ev.path.map(str::to_owned),
                engaged_ms: ev.engaged_ms,
                scroll_pct: ev.scroll_pct,
            });
        }
        self.is_bot |= ev.is_bot;
        if self.country.is_none() {
            self.country = ev.country.map(str::to_owned);
        }
    }

    fn into_row(self, closed_by: ClosedBy) -> SessionRow {
        SessionRow {
            pageview_dwell: pageview_dwell(&self.pages),
            dt: utc_date(self.start_time),
            duration_ms: self.last_time.saturating_sub(self.start_time),
            session_id: self.session_id,
            site_id: self.site_id,
            visitor_id: self.visitor_id,
            start_time: self.start_time,
            end_time: self.last_time,
            events: self.events,
            pageviews: self.pageviews,
            engaged_ms: self.engaged_ms,
            entry_path: self.entry_path,
            exit_path: self.exit_path,
            is_bot: self.is_bot,
            country: self.country,
            device: self.device,
            closed_by: closed_by.as_str().to_owned(),
            // The caller knows the partition; the sessioniser does not.
            kafka_partition: 0,
        }
    }
}

/// Where an event goes relative to its visitor's open (not idle) session.
enum Placement {
    Join,
    /// Close the open session for this reason; the event opens the next one.
    Split(ClosedBy),
    /// A session of its own, closed at once.
    Late,
}

/// Open sessions keyed by `(site, visitor)`, and the rules that close them.
#[derive(Debug)]
pub struct Sessioniser {
    rules: SessionRules,
    max_open: usize,
    open: HashMap<(String, String), OpenSession>,
    /// The keys of `open` ordered by `(last_time, site, visitor)`: idle sessions and
    /// eviction candidates are at the front, so neither needs a full scan.
    by_last: BTreeSet<(i64, String, String)>,
    /// Closed rows not yet returned by `close_idle`.
    pending: Vec<SessionRow>,
    watermark: i64,
    evicted_until: i64,
}

impl Sessioniser {
    /// `max_open` is at least 1; `rules.inactivity_ms` at least 1 ms.
    pub fn new(rules: SessionRules, max_open: usize) -> Self {
        Sessioniser {
            rules: SessionRules {
                inactivity_ms: rules.inactivity_ms.max(1),
                max_duration_ms: rules.max_duration_ms.max(0),
            },
            max_open: max_open.max(1),
            open: HashMap::new(),
            by_last: BTreeSet::new(),
            pending: Vec::new(),
            watermark: i64::MIN,
            evicted_until: i64::MIN,
        }
    }

    /// Assigns `ev` to a session and returns the session's id.
    pub fn observe(&mut self, ev: &Observed<'_>) -> String {
        let t = ev.event_time;
        let key = (ev.site_id.to_owned(), ev.visitor_id.to_owned());
        // An idle session is closed now, whether or not `close_idle` has run since it
        // went idle: this is what makes results independent of batch boundaries.
        if self
            .open
            .get(&key)
            .is_some_and(|s| self.is_idle(s.last_time))
            && let Some(s) = self.remove(&key)
        {
            self.pending.push(s.into_row(ClosedBy::Inactivity));
        }
        let late_threshold = self.late_threshold();
        let placement = self.open.get(&key).map(|s| self.place(s, t));
        let id = match placement {
            Some(Placement::Join) => self.join(&key, ev),
            Some(Placement::Split(reason)) => {
                let closed = self
                    .remove(&key)
                    .expect("the session that was just placed against is open");
                let floor = late_threshold.max(closed.last_time);
                self.pending.push(closed.into_row(reason));
                self.open_session(key, ev, floor)
            }
            Some(Placement::Late) => {
                if let Some(s) = self.open.get_mut(&key) {
                    // The open session may never grow over the late one.
                    s.floor = s.floor.max(t);
                }
                self.late(ev)
            }
            None if t > late_threshold => self.open_session(key, ev, late_threshold),
            None => self.late(ev),
        };
        self.watermark = self.watermark.max(t);
        self.enforce_bound();
        id
    }

    /// Closes (and returns) the sessions idle at the watermark, plus those closed since
    /// the last call (split, evicted, late). Sorted by start time, then id.
    pub fn close_idle(&mut self) -> Vec<SessionRow> {
        while let Some((last, _, _)) = self.by_last.first()
            && self.is_idle(*last)
        {
            let s = self.pop_oldest().expect("the index is not empty");
            self.pending.push(s.into_row(ClosedBy::Inactivity));
        }
        self.take_pending()
    }

    /// Closes and returns every session: the end of the input.
    pub fn close_all(&mut self) -> Vec<SessionRow> {
        while let Some(s) = self.pop_oldest() {
            let by = if self.is_idle(s.last_time) {
                ClosedBy::Inactivity
            } else {
                ClosedBy::Flush
            };
            self.pending.push(s.into_row(by));
        }
        self.take_pending()
    }

    /// The open sessions, in no particular order. Call [`Self::close_idle`] first when
    /// storing them for a restart, so that no closed row is lost.
    pub fn open_sessions(&self) -> impl Iterator<Item = &OpenSession> {
        self.open.values()
    }

    /// Puts back a session stored before a restart. The watermark rises to its
    /// `last_time`. Should the visitor already have an open session (a caller bug),
    /// the one with the earlier `last_time` is closed as `"flush"`, so that no event
    /// goes unaccounted.
    pub fn restore(&mut self, s: OpenSession) {
        self.watermark = self.watermark.max(s.last_time);
        let key = (s.site_id.clone(), s.visitor_id.clone());
        let keep = match self.remove(&key) {
            Some(existing) if existing.last_time > s.last_time => {
                self.pending.push(s.into_row(ClosedBy::Flush));
                existing
            }
            Some(existing) => {
                self.pending.push(existing.into_row(ClosedBy::Flush));
                s
            }
            None => s,
        };
        self.insert(key, keep);
    }

    /// Puts back the watermark and eviction floor stored before a restart (both only
    /// ever rise).
    pub fn restore_progress(&mut self, watermark: i64, evicted_until: i64) {
        self.watermark = self.watermark.max(watermark);
        self.evicted_until = self.evicted_until.max(evicted_until);
    }

    /// The greatest event time observed (`i64::MIN` before the first event).
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The greatest `last_time` of an evicted session (`i64::MIN` if none was).
    pub fn evicted_until(&self) -> i64 {
        self.evicted_until
    }

    fn is_idle(&self, last_time: i64) -> bool {
        last_time.saturating_add(self.rules.inactivity_ms) <= self.watermark
    }

    /// Events of a visitor without an open session at or before this time are late.
    fn late_threshold(&self) -> i64 {
        self.watermark
            .saturating_sub(self.rules.inactivity_ms)
            .max(self.evicted_until)
    }

    fn place(&self, s: &OpenSession, t: i64) -> Placement {
        let SessionRules {
            inactivity_ms,
            max_duration_ms,
        } = self.rules;
        if t >= s.last_time {
            if t.saturating_sub(s.last_time) >= inactivity_ms {
                Placement::Split(ClosedBy::Inactivity)
            } else if t.saturating_sub(s.start_time) > max_duration_ms {
                Placement::Split(ClosedBy::MaxDuration)
            } else {
                Placement::Join
            }
        } else if t >= s.start_time
            || (t > s.floor
                && s.start_time.saturating_sub(t) < inactivity_ms
                && s.last_time.saturating_sub(t) <= max_duration_ms)
        {
            Placement::Join
        } else {
            Placement::Late
        }
    }

    fn join(&mut self, key: &(String, String), ev: &Observed<'_>) -> String {
        let s = self
            .open
            .get_mut(key)
            .expect("a join is only placed against an open session");
        let before = s.last_time;
        s.add(ev);
        let (after, id) = (s.last_time, s.session_id.clone());
        if after != before {
            let entry = self
                .by_last
                .take(&(before, key.0.clone(), key.1.clone()))
                .expect("every open session is indexed by its last_time");
            self.by_last.insert((after, entry.1, entry.2));
        }
        id
    }

    fn open_session(&mut self, key: (String, String), ev: &Observed<'_>, floor: i64) -> String {
        let s = OpenSession::open(ev, floor);
        let id = s.session_id.clone();
        self.insert(key, s);
        id
    }

    fn late(&mut self, ev: &Observed<'_>) -> String {
        let s = OpenSession::open(ev, ev.event_time);
        let id = s.session_id.clone();
        self.pending.push(s.into_row(ClosedBy::Late));
        id
    }

    fn insert(&mut self, key: (String, String), s: OpenSession) {
        self.by_last
            .insert((s.last_time, key.0.clone(), key.1.clone()));
        self.open.insert(key, s);
    }

    fn remove(&mut self, key: &(String, String)) -> Option<OpenSession> {
        let s = self.open.remove(key)?;
        self.by_last
            .remove(&(s.last_time, key.0.clone(), key.1.clone()));
        Some(s)
    }

    fn pop_oldest(&mut self) -> Option<OpenSession> {
        let (_, site, visitor) = self.by_last.pop_first()?;
        let s = self
            .open
            .remove(&(site, visitor))
            .expect("the index lists only open sessions");
        Some(s)
    }

    /// Keeps at most `max_open` sessions open (see the module documentation).
    fn enforce_bound(&mut self) {
        while self.open.len() > self.max_open {
            let Some(s) = self.pop_oldest() else { break };
            // Idle sessions sort before every other one, so they go first.
            let by = if self.is_idle(s.last_time) {
                ClosedBy::Inactivity
            } else {
                self.evicted_until = self.evicted_until.max(s.last_time);
                ClosedBy::Evicted
            };
            self.pending.push(s.into_row(by));
        }
    }

    fn take_pending(&mut self) -> Vec<SessionRow> {
        let mut rows = std::mem::take(&mut self.pending);
        rows.sort_by(|a, b| (a.start_time, &a.session_id).cmp(&(b.start_time, &b.session_id)));
        rows
    }
}

/// `hex(SHA-256(site ‖ 0 ‖ visitor ‖ 0 ‖ event_id)[..16])`.
pub fn session_id(site_id: &str, visitor_id: &str, first_event_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(site_id.as_bytes());
    h.update([0]);
    h.update(visitor_id.as_bytes());
    h.update([0]);
    h.update(first_event_id.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// `YYYY-MM-DD` in UTC. Times beyond chrono's range (±262,000 years) clamp to it
/// instead of failing: a corrupt time must not stop the pipeline.
fn utc_date(ms: i64) -> String {
    let at = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(if ms < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    });
    at.format("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests;
