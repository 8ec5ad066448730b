//! What the processor holds per assigned Kafka partition between Delta commits: the
//! sessioniser, the recent event ids for de-duplication, the rows waiting for the next
//! commit, and where the tables stand.

use std::collections::{HashSet, VecDeque};

use crate::sessions::Sessioniser;
use spur_lake::model::{EventRow, SessionRow};

/// Event ids seen recently, by event time, for collapsing client retries. Bounded by
/// a time window (relative to the newest event time seen) and a count.
#[derive(Debug, Default)]
pub struct RecentIds {
    ids: HashSet<String>,
    order: VecDeque<(i64, String)>,
    window_ms: i64,
    max: usize,
}

impl RecentIds {
    pub fn new(window_ms: i64, max: usize) -> Self {
        Self {
            window_ms,
            max,
            ..Self::default()
        }
    }

    /// Records `id`; `false` when it was already seen (a duplicate).
    pub fn insert(&mut self, id: &str, event_time: i64, watermark: i64) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        self.ids.insert(id.to_owned());
        self.order.push_back((event_time, id.to_owned()));
        while let Some((t, _)) = self.order.front() {
            if self.order.len() > self.max || *t < watermark - self.window_ms {
                if let Some((_, old)) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            } else {
                break;
            }
        }
        true
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// One assigned partition.
#[derive(Debug)]
pub struct PartitionState {
    pub partition: i32,
    pub sessions: Sessioniser,
    pub recent: RecentIds,
    /// Last offset whose row is in the `events` table (`None`: nothing yet).
    pub events_done: Option<i64>,
    /// Last offset whose effects on sessions are in the `sessions` table.
    pub sessions_done: Option<i64>,
    /// Last offset processed in memory (committed or not).
    pub processed: Option<i64>,
    /// Offsets up to here are already reflected in both tables: ignored when they are
    /// read again (the consumer starts a little before the resume point, see
    /// [`crate::config::Config::resume_rewind`]).
    pub skip_through: Option<i64>,
    pub rows: Vec<EventRow>,
    /// Addresses of `rows`' identify events, sealed into `contacts` at the commit.
    pub contacts: Vec<PendingContact>,
    pub closed: Vec<SessionRow>,
}

/// An address waiting for the next commit, which seals it into table `contacts`
/// (`spur_keys::vault`). The clear text lives only in memory, zeroed on drop.
pub struct PendingContact {
    pub subject_id: String,
    pub event_id: String,
    pub site_id: String,
    pub at: i64,
    pub address: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for PendingContact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingContact")
            .field("event_id", &self.event_id)
            .finish_non_exhaustive()
    }
}

impl PartitionState {
    /// The offset to resume consuming from: the earlier of the two tables' positions,
    /// so that both catch up; rows already in `events` are not written again.
    pub fn resume_from(&self) -> Option<i64> {
        match (self.events_done, self.sessions_done) {
            (Some(e), Some(s)) => Some(e.min(s) + 1),
            (None, _) | (_, None) => None,
        }
    }

    /// Whether there is anything the next commit must carry for this partition.
    pub fn dirty(&self) -> bool {
        self.processed
            .is_some_and(|p| Some(p) > self.events_done || Some(p) > self.sessions_done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_collapse_retries_within_the_window() {
        let mut ids = RecentIds::new(1000, 100);
        assert!(ids.insert("a", 0, 0));
        assert!(!ids.insert("a", 10, 10), "retry collapsed");
        assert!(ids.insert("b", 5000, 5000));
        assert!(
            ids.insert("a", 5001, 5001),
            "outside the window: remembered no more"
        );
        let mut bounded = RecentIds::new(i64::MAX / 2, 2);
        for id in ["x", "y", "z"] {
            bounded.insert(id, 0, 0);
        }
        assert_eq!(bounded.len(), 2);
    }
}
