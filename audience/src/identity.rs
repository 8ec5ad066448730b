//! Identity and marketing consent, each defined once in SQL over the ledger:
//!
//! - [`LINKS_SQL`], [`SUBJECTS_SQL`]: which person each visitor is, from the ledger's
//!   `link`/`unlink` entries (a split undoes a merge); scoring, profiles, segments,
//!   export and erasure all use them;
//! - [`consent_sql`]: the marketing-consent state the segment rules gate on.

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
