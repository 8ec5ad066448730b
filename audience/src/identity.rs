//! Identity and marketing consent, each defined once in SQL over the ledger:
//!
//! - [`LINKS_SQL`], [`SUBJECTS_SQL`]: which person each visitor is, from the ledger's
//!   `link`/`unlink` entries (a split undoes a merge); scoring, profiles, segments,
//!   export and erasure all use them;
//! - [`consent_sql`]: the marketing-consent state the segment rules gate on.

use std::collections::{BTreeSet, HashMap};

macro_rules! links_sql {
    () => {
        "SELECT visitor_id, subject_id FROM (
            SELECT visitor_id, subject_id, kind, ROW_NUMBER() OVER (
                PARTITION BY visitor_id ORDER BY seq DESC) AS latest
            FROM ledger WHERE kind IN ('link', 'unlink') AND erased = false)
         WHERE latest = 1 AND kind = 'link'"
    };
}

/// The current link of each linked visitor: its latest `link` or `unlink` entry, if
/// that is a `link` (`visitor_id`, `subject_id`).
pub const LINKS_SQL: &str = links_sql!();

/// Who each visitor is (`visitor_id`, `subject_id`): the person it is linked to, else
/// itself (an anonymous subject). The one definition of a subject: scoring, profiles,
/// segments, export and erasure all use it.
pub const SUBJECTS_SQL: &str = concat!(
    "SELECT v.visitor_id, COALESCE(l.subject_id, v.visitor_id) AS subject_id
     FROM (SELECT DISTINCT visitor_id FROM events) v
     LEFT JOIN (",
    links_sql!(),
    ") l ON l.visitor_id = v.visitor_id"
);

/// Per subject, the state of its marketing consent (`subject_id`, `consent_state`):
/// `granted` (valid: may receive mailings), `pending` (granted, double opt-in not yet
/// confirmed), `withdrawn`, `unsubscribed`; subjects without any marketing entry are
/// absent. Entries count for the subject they name, else for the person their
/// visitor is linked to now, else for the visitor. Reads only the ledger. With `double_opt_in`, a grant is valid only after a
/// `confirm` that is later than every withdrawal.
pub fn consent_sql(double_opt_in: bool) -> String {
    format!(
        "SELECT subject_id, CASE
            WHEN last_any = 'withdraw' THEN 'withdrawn'
            WHEN last_any = 'unsubscribe' THEN 'unsubscribed'
            WHEN {} OR last_doi = 'confirm' THEN 'granted'
            ELSE 'pending' END AS consent_state
         FROM (
            SELECT subject_id,
                last_value(kind ORDER BY at, seq) AS last_any,
                last_value(kind ORDER BY at, seq)
                    FILTER (WHERE kind IN ('confirm', 'withdraw', 'unsubscribe')) AS last_doi
            FROM (
                SELECT COALESCE(c.subject_id, l.subject_id, c.visitor_id) AS subject_id,
                       c.kind, c.at, c.seq
                FROM ledger c LEFT JOIN ({LINKS_SQL}) l ON l.visitor_id = c.visitor_id
                WHERE c.purpose = 'marketing' AND c.erased = false
                  AND c.kind IN ('grant', 'confirm', 'withdraw', 'unsubscribe'))
            GROUP BY subject_id)",
        !double_opt_in
    )
}

/// A ledger entry as identity and consent read it (content of a redacted entry is
/// never read: erasures reload the [`Identity`] whole).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entry {
    pub seq: i64,
    /// The decision's time, ms (`consent_sql` orders by it, then by `seq`).
    pub at: i64,
    pub kind: String,
    pub purpose: Option<String>,
    pub subject_id: Option<String>,
    pub visitor_id: Option<String>,
}

/// The kinds of marketing entry [`consent_sql`] reads, in no meaningful order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Marketing {
    Grant,
    Confirm,
    Withdraw,
    Unsubscribe,
}

/// The latest marketing entry `(at, seq, kind)` of a set of entries, and the latest
/// one that is not a grant: all [`consent_sql`] needs of them, and the latest of a
/// union is the latest of the parts' latest.
#[derive(Clone, Copy, Debug, Default)]
struct Marks {
    any: Option<(i64, i64, Marketing)>,
    doi: Option<(i64, i64, Marketing)>,
}

impl Marks {
    fn merge(&mut self, other: Marks) {
        self.any = self.any.max(other.any);
        self.doi = self.doi.max(other.doi);
    }
}

/// Who each visitor is and every subject's marketing consent, kept up to date from
/// the ledger's entries in seq order: exactly what [`LINKS_SQL`] and [`consent_sql`]
/// compute over the whole ledger, at the cost of the new entries (the audience
/// engine's steps; a test checks the two agree on random ledgers). An erasure
/// redacts entries, which no new entry reports: the engine then builds it again from
/// the whole ledger.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    /// The last seq taken in.
    seq: i64,
    subjects: Subjects,
    /// Marketing entries that name their subject.
    named: HashMap<String, Marks>,
    /// Marketing entries that name only a visitor: they count for the person it is
    /// linked to now, else for the visitor.
    of_visitor: HashMap<String, Marks>,
}

impl Identity {
    /// The last ledger seq taken in (0: none).
    pub fn seq(&self) -> i64 {
        self.seq
    }

    /// Which visitors make up each subject.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// Takes in `entries` (in seq order; those at or before [`Identity::seq`] were
    /// taken in already and are skipped). Returns the subjects a visitor left or
    /// joined (a link to another person, a split).
    pub fn apply<'a>(&mut self, entries: impl IntoIterator<Item = &'a Entry>) -> BTreeSet<String> {
        let mut regrouped = BTreeSet::new();
        for entry in entries {
            if entry.seq <= self.seq {
                continue;
            }
            self.seq = entry.seq;
            match (entry.kind.as_str(), &entry.visitor_id, &entry.subject_id) {
                ("link", Some(visitor), Some(person)) => {
                    let before = self.subjects.subject_of(visitor).to_owned();
                    self.subjects.link(visitor, person);
                    if &before != person {
                        regrouped.insert(before);
                        regrouped.insert(person.clone());
                    }
                }
                ("link" | "unlink", Some(visitor), _) => {
                    let before = self.subjects.subject_of(visitor).to_owned();
                    self.subjects.unlink(visitor);
                    if &before != visitor {
                        regrouped.insert(before);
                        regrouped.insert(visitor.clone());
                    }
                }
                _ => {}
            }
            if entry.purpose.as_deref() != Some("marketing") {
                continue;
            }
            let kind = match entry.kind.as_str() {
                "grant" => Marketing::Grant,
                "confirm" => Marketing::Confirm,
                "withdraw" => Marketing::Withdraw,
                "unsubscribe" => Marketing::Unsubscribe,
                _ => continue,
            };
            let marks = match (&entry.subject_id, &entry.visitor_id) {
                (Some(subject), _) => self.named.entry(subject.clone()).or_default(),
                (None, Some(visitor)) => self.of_visitor.entry(visitor.clone()).or_default(),
                (None, None) => continue,
            };
            let mark = Some((entry.at, entry.seq, kind));
            marks.any = marks.any.max(mark);
            if kind != Marketing::Grant {
                marks.doi = marks.doi.max(mark);
            }
        }
        regrouped
    }

    /// The marketing-consent state of `subject` as [`consent_sql`] defines it
    /// (`granted`, `pending`, `withdrawn`, `unsubscribed`), `None` without any
    /// marketing entry.
    pub fn consent(&self, subject: &str, double_opt_in: bool) -> Option<&'static str> {
        let mut marks = self.named.get(subject).copied().unwrap_or_default();
        let linked = self.subjects.visitors_of.get(subject).into_iter().flatten();
        let own = (!self.subjects.person_of.contains_key(subject)).then_some(subject);
        for visitor in linked.map(String::as_str).chain(own) {
            if let Some(of) = self.of_visitor.get(visitor) {
                marks.merge(*of);
            }
        }
        let (_, _, last) = marks.any?;
        Some(match last {
            Marketing::Withdraw => "withdrawn",
            Marketing::Unsubscribe => "unsubscribed",
            _ if !double_opt_in || matches!(marks.doi, Some((_, _, Marketing::Confirm))) => {
                "granted"
            }
            _ => "pending",
        })
    }
}

/// Which visitors make up each subject: the identity ledger's links, inverted.
#[derive(Clone, Debug, Default)]
pub struct Subjects {
    /// Linked visitor → person.
    pub person_of: HashMap<String, String>,
    /// Person → its linked visitors.
    pub visitors_of: HashMap<String, Vec<String>>,
}

impl Subjects {
    pub fn new(links: impl IntoIterator<Item = (String, String)>) -> Subjects {
        let mut s = Subjects::default();
        for (visitor, person) in links {
            s.visitors_of
                .entry(person.clone())
                .or_default()
                .push(visitor.clone());
            s.person_of.insert(visitor, person);
        }
        for visitors in s.visitors_of.values_mut() {
            visitors.sort();
        }
        s
    }

    /// Links `visitor` to `person` (leaving the person it was linked to, if any).
    pub fn link(&mut self, visitor: &str, person: &str) {
        self.unlink(visitor);
        let visitors = self.visitors_of.entry(person.to_owned()).or_default();
        if let Err(at) = visitors.binary_search_by(|v| v.as_str().cmp(visitor)) {
            visitors.insert(at, visitor.to_owned());
        }
        self.person_of.insert(visitor.to_owned(), person.to_owned());
    }

    /// Undoes `visitor`'s link, if it has one: it is its own subject again.
    pub fn unlink(&mut self, visitor: &str) {
        let Some(person) = self.person_of.remove(visitor) else {
            return;
        };
        if let Some(visitors) = self.visitors_of.get_mut(&person) {
            visitors.retain(|v| v != visitor);
            if visitors.is_empty() {
                self.visitors_of.remove(&person);
            }
        }
    }

    /// The subject a visitor belongs to: its person, else itself.
    pub fn subject_of<'a>(&'a self, visitor: &'a str) -> &'a str {
        self.person_of.get(visitor).map_or(visitor, String::as_str)
    }

    /// The visitors of `subject` that have a state: its linked visitors, or itself
    /// when it is a visitor that is not linked to anyone.
    pub fn members<'a, T>(
        &'a self,
        subject: &'a str,
        states: &'a HashMap<String, T>,
    ) -> Vec<&'a T> {
        let linked = self.visitors_of.get(subject).map(Vec::as_slice);
        let own = (!self.person_of.contains_key(subject)).then_some(subject);
        linked
            .into_iter()
            .flatten()
            .map(String::as_str)
            .chain(own)
            .filter_map(|v| states.get(v))
            .collect()
    }
}

#[cfg(test)]
mod tests;
