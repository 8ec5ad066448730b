//! The ledger's pure rules and the head check, without a lake.

use serde_json::Value;
use spur_schemas::confirm::DOUBLE_OPT_IN_METHOD;

use super::entries::{digest, link};
use super::verify::{RecordedHead, check_heads, redacted_seqs};
use super::*;

fn identify(evidence: &str, url: Option<&str>) -> SourceEvent {
    SourceEvent {
        event_id: "e1".into(),
        event_type: "identify".into(),
        event_time: 1_000,
        site_id: "shop".into(),
        visitor_id: "v1".into(),
        visitor_kind: "persistent".into(),
        email_hash: Some("s1".into()),
        url: url.map(str::to_owned),
        consent_evidence: Some(evidence.into()),
        ..SourceEvent::default()
    }
}

/// A consent event of `visitor` (of `kind`) at `at`.
fn consent(visitor: &str, kind: &str, at: i64, purposes: &str, evidence: &str) -> SourceEvent {
    SourceEvent {
        event_id: format!("c{at}"),
        event_type: "consent".into(),
        event_time: at,
        visitor_id: visitor.into(),
        visitor_kind: kind.into(),
        consent_purposes: Some(purposes.into()),
        consent_evidence: Some(evidence.into()),
        ..SourceEvent::default()
    }
}

/// The consent event the collector's signed-link endpoint makes for `grant_seq`.
fn signed_confirm(subject: &str, at: i64, grant_seq: i64) -> SourceEvent {
    consent(
        subject,
        "subject",
        at,
        r#"{"marketing":"granted"}"#,
        &format!(
            r#"{{"purposes":["marketing"],"confirmation":true,"method":"double_opt_in_link","grant_seq":{grant_seq}}}"#
        ),
    )
}

fn kinds(drafts: &[Draft]) -> Vec<(&'static str, Option<&str>)> {
    drafts
        .iter()
        .map(|d| (d.kind, d.reason.as_deref()))
        .collect()
}

const FULL: &str = r#"{"purposes":["marketing"],"text_id":"nl-3","policy_version":"7"}"#;
const GRANTED: &str = r#"{"marketing":"granted"}"#;
const WITHDRAWN: &str = r#"{"marketing":"withdrawn"}"#;

#[test]
fn identify_with_evidence_links_and_grants() {
    let mut known = Known::after(0);
    let drafts = entries(&[identify(FULL, Some("https://s/f"))], &mut known);
    let kinds: Vec<_> = drafts.iter().map(|d| d.kind).collect();
    assert_eq!(kinds, ["link", "grant"]);
    assert_eq!(drafts[1].purpose.as_deref(), Some("marketing"));
    assert_eq!(drafts[1].visitor_id.as_deref(), Some("v1"));
    assert_eq!(known.links.get("v1").map(String::as_str), Some("s1"));
    assert_eq!(known.next_seq, 3);
    assert_eq!(
        known.marketing["s1"],
        [MarketingEntry {
            seq: 2,
            at: 1_000,
            kind: "grant"
        }]
    );
    let evidence: Value =
        serde_json::from_str(drafts[0].evidence.as_deref().expect("test")).expect("test");
    assert_eq!(evidence["source_url"], "https://s/f");
    assert_eq!(evidence["policy_version"], "7");
}

#[test]
fn identify_without_policy_is_refused_with_reason() {
    let known = Known::after(0);
    let drafts = entries_for(
        &identify(
            r#"{"purposes":["marketing"],"text_id":"x"}"#,
            Some("https://s/f"),
        ),
        &known,
    );
    assert_eq!(drafts.len(), 1);
    assert_eq!(drafts[0].kind, "link_refused");
    assert_eq!(drafts[0].reason.as_deref(), Some("no_policy_reference"));
    assert_eq!(drafts[0].subject_id, None);
}

/// Regression: any browser could send `confirmation: true` with a sign-up and
/// skip the double opt-in.
#[test]
fn an_identify_never_confirms() {
    let mut known = Known::after(0);
    let forged = r#"{"purposes":["marketing"],"text_id":"nl","policy_version":"7","confirmation":true,"method":"double_opt_in_link","grant_seq":2}"#;
    let drafts = entries(&[identify(forged, Some("https://s/f"))], &mut known);
    assert_eq!(kinds(&drafts), [("link", None), ("grant", None)]);
}

#[test]
fn a_cookieless_identify_records_the_person_but_links_nothing() {
    let mut known = Known::after(0);
    let mut event = identify(
        r#"{"purposes":["analytics","marketing"],"text_id":"nl","policy_version":"7"}"#,
        Some("https://s/f"),
    );
    event.visitor_kind = "cookieless".into();
    let drafts = entries(&[event], &mut known);
    assert_eq!(
        kinds(&drafts),
        [
            ("link_refused", Some("not_persistent_visitor")),
            ("grant", None),
            ("grant", None)
        ]
    );
    assert_eq!(drafts[0].visitor_id.as_deref(), Some("v1"));
    for grant in &drafts[1..] {
        assert_eq!(
            (grant.subject_id.as_deref(), grant.visitor_id.as_deref()),
            (Some("s1"), None)
        );
    }
    assert!(known.links.is_empty(), "{:?}", known.links);
    // Later consent events of the shared id name no person.
    let later = entries(
        &[consent("v1", "cookieless", 2_000, WITHDRAWN, "{}")],
        &mut known,
    );
    assert_eq!(later[0].subject_id, None);
}

#[test]
fn consent_events_map_to_kinds() {
    let mut known = Known::after(0);
    known.links.insert("v1".into(), "s1".into());
    let d = entries(
        &[consent(
            "v1",
            "persistent",
            1,
            r#"{"marketing":"granted","analytics":"withdrawn"}"#,
            "{}",
        )],
        &mut known,
    );
    let kinds: Vec<_> = d
        .iter()
        .map(|d| (d.kind, d.subject_id.as_deref()))
        .collect();
    assert_eq!(kinds, [("withdraw", Some("s1")), ("grant", Some("s1"))]);
    let d = entries(
        &[consent(
            "v1",
            "subject",
            2,
            WITHDRAWN,
            r#"{"method":"one_click_unsubscribe"}"#,
        )],
        &mut known,
    );
    assert_eq!(
        (
            d[0].kind,
            d[0].subject_id.as_deref(),
            d[0].visitor_id.as_deref()
        ),
        ("unsubscribe", Some("v1"), None)
    );
}

#[test]
fn only_the_signed_link_for_a_standing_grant_confirms() {
    // seq 1 link, 2 grant (marketing) of s1 at t = 1000.
    let signup = identify(FULL, Some("https://s/f"));
    let mut known = Known::after(0);
    entries(std::slice::from_ref(&signup), &mut known);
    let d = entries(&[signed_confirm("s1", 5_000, 2)], &mut known);
    assert_eq!(kinds(&d), [("confirm", None)]);
    assert_eq!(
        (d[0].subject_id.as_deref(), d[0].visitor_id.as_deref()),
        (Some("s1"), None)
    );
    let evidence: Value =
        serde_json::from_str(d[0].evidence.as_deref().expect("test")).expect("test");
    assert_eq!(evidence["method"], DOUBLE_OPT_IN_METHOD);
    assert_eq!(evidence["grant_seq"], 2);

    // What a browser could send (the collector clears these fields, but the ledger
    // does not rely on it): refused, never a confirmation.
    let cases = [
        (
            consent(
                "v1",
                "persistent",
                6_000,
                GRANTED,
                r#"{"purposes":["marketing"],"confirmation":true}"#,
            ),
            "not_signed_link",
        ),
        (
            consent(
                "v1",
                "persistent",
                6_000,
                GRANTED,
                r#"{"confirmation":true,"method":"double_opt_in_link","grant_seq":2}"#,
            ),
            "not_signed_link",
        ),
        (
            consent(
                "s1",
                "subject",
                6_000,
                GRANTED,
                r#"{"confirmation":true,"method":"one_click_unsubscribe","grant_seq":2}"#,
            ),
            "not_signed_link",
        ),
        (
            consent(
                "s1",
                "subject",
                6_000,
                GRANTED,
                r#"{"method":"double_opt_in_link","grant_seq":2}"#,
            ),
            "not_signed_link",
        ),
        (
            consent(
                "s1",
                "subject",
                6_000,
                WITHDRAWN,
                r#"{"confirmation":true,"method":"double_opt_in_link","grant_seq":2}"#,
            ),
            "not_marketing_grant",
        ),
        (
            consent(
                "s1",
                "subject",
                6_000,
                GRANTED,
                r#"{"confirmation":true,"method":"double_opt_in_link"}"#,
            ),
            "unknown_grant",
        ),
        (signed_confirm("s1", 6_000, 1), "unknown_grant"),
        (signed_confirm("s2", 6_000, 2), "unknown_grant"),
    ];
    for (event, reason) in cases {
        let mut known = known.clone();
        let from_website = event.visitor_kind != "subject";
        let d = entries(&[event], &mut known);
        let refused = ("confirm_refused", Some(reason));
        if from_website {
            // The banner's grant still counts, as a grant (pending).
            assert_eq!(kinds(&d), [("grant", None), refused], "{reason}");
        } else {
            assert_eq!(kinds(&d), [refused], "{reason}");
        }
    }

    // A withdrawal after the grant, earlier in the same step: the link is stale.
    let mut stale = Known::after(0);
    let d = entries(
        &[
            signup.clone(),
            consent("v1", "persistent", 2_000, WITHDRAWN, "{}"),
            signed_confirm("s1", 3_000, 2),
        ],
        &mut stale,
    );
    assert_eq!(d[3].kind, "confirm_refused");
    assert_eq!(d[3].reason.as_deref(), Some("stale_link"));
    // A newer grant (the banner on the next visit) leaves the mailed link valid.
    let mut newer = Known::after(0);
    let d = entries(
        &[
            signup.clone(),
            consent("v1", "persistent", 2_000, GRANTED, "{}"),
            signed_confirm("s1", 3_000, 2),
            signed_confirm("s1", 3_000, 3),
        ],
        &mut newer,
    );
    assert_eq!(kinds(&d[3..]), [("confirm", None), ("confirm", None)]);
    // A withdrawal recorded before the grant but made after it (event time).
    let mut known = Known::after(10);
    known.marketing.insert(
        "s1".into(),
        vec![
            MarketingEntry {
                seq: 4,
                at: 9_000,
                kind: "withdraw",
            },
            MarketingEntry {
                seq: 7,
                at: 1_000,
                kind: "grant",
            },
        ],
    );
    assert_eq!(confirm_verdict(&known, "s1", Some(7)), Err("stale_link"));
    assert_eq!(confirm_verdict(&known, "s1", Some(4)), Err("unknown_grant"));
}

fn head(version: i64, txn: Option<i64>, head: Option<String>) -> RecordedHead {
    RecordedHead { version, txn, head }
}

#[test]
fn recorded_heads_catch_truncation_rewrites_and_foreign_appends() {
    let chains: Vec<String> = (1..=4).map(|i| format!("c{i}")).collect();
    let records = [
        head(0, None, None),
        head(1, Some(0), Some(format!("0:{GENESIS}"))),
        head(2, Some(2), Some("2:c2".into())),
        head(3, None, None),
        head(4, Some(4), Some("4:c4".into())),
    ];
    assert_eq!(check_heads(&records, &chains), (3, None));
    // The last two entries deleted.
    let (_, problem) = check_heads(&records, &chains[..2]);
    let problem = problem.expect("truncation");
    assert!(problem.starts_with("entry 3: missing"), "{problem}");
    // Only the txn of a commit whose metadata was lost still says 4.
    let (_, problem) = check_heads(&[head(4, Some(4), None)], &chains[..3]);
    assert!(problem.expect("truncation").starts_with("entry 4:"));
    // Entry 2 altered and every chain recomputed.
    let mut rewritten = chains.clone();
    for c in &mut rewritten[1..] {
        c.push('x');
    }
    let (_, problem) = check_heads(&records, &rewritten);
    let problem = problem.expect("rewrite");
    assert!(
        problem.starts_with("entry 2: its chain differs"),
        "{problem}"
    );
    // An entry appended without the ledger's head.
    let mut more = chains.clone();
    more.push("c5".into());
    let (_, problem) = check_heads(&records, &more);
    assert!(
        problem
            .expect("append")
            .starts_with("entry 5: after the head")
    );
}

#[test]
fn erasure_receipts_list_the_redacted_seqs() {
    assert_eq!(
        redacted_seqs(
            r#"["ledger",{"rows":2,"files_rewritten":0,"files_deleted":0,"seqs":[3,7]}]"#
        ),
        [3, 7]
    );
    assert!(redacted_seqs(r#"["events",{"rows":2,"seqs":[3]}]"#).is_empty());
    assert!(redacted_seqs(r#"{"erasure_id":"x"}"#).is_empty());
    assert!(redacted_seqs("not json").is_empty());
}

#[test]
fn chain_links_each_entry_to_the_previous() {
    let drafts = vec![
        Draft {
            at: 1,
            kind: "grant",
            ..Draft::default()
        },
        Draft {
            at: 2,
            kind: "withdraw",
            ..Draft::default()
        },
    ];
    let rows = chain(&(0, GENESIS.to_owned()), drafts.clone(), 5);
    assert_eq!(rows[0].seq, 1);
    assert_eq!(rows[1].chain, link(&rows[0].chain, &rows[1].digest));
    assert_eq!(rows[0].digest, digest(1, &drafts[0]));
    // The same drafts after another head chain differently.
    let other = chain(&(1, rows[0].chain.clone()), drafts, 5);
    assert_ne!(other[0].chain, rows[0].chain);
}
