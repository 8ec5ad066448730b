//! From a decoded request to the records to produce: consent resolution, visitor id
//! choice, validation, time placement and record assembly. Pure functions over the
//! request's context; the HTTP layer ([`crate::api`]) supplies the context and sends
//! the result.
//!
//! The visitor-id rule: a request without `visitor_id` (the tracker before analytics
//! consent) gets the cookieless daily id. A request whose `visitor_id` is present but
//! malformed has each of its events dead-lettered as `invalid_visitor_id`: replacing
//! the id with the cookieless one would silently merge unrelated visitors under one
//! id, so the client is told instead (the 202's `dead_lettered`).

use serde_json::value::RawValue;
use spur_schemas::ReasonCode;
use spur_schemas::dead_letter::DeadLetter;
use spur_schemas::kafka::record_key;
use spur_schemas::record::{
    Agent, EventRecord, EventType, Geo, Payload, PrivacySignals, SCHEMA_VERSION, Visitor,
    VisitorKind,
};
use spur_schemas::wire::{ConsentAction, ConsentEvidence, ConsentFlags};

use crate::clock::{self, ClockRules};
use crate::config::DntPolicy;
use crate::scrub::Redactions;
use crate::sink::{Dest, Outgoing};
use crate::sites::Site;
use crate::validate::{self, Refusal, Rules};

/// The dead-letter detail of [`ReasonCode::InvalidVisitorId`]: the rule, never the id.
pub const INVALID_VISITOR_ID: &str = "visitor_id: not 8-64 of [A-Za-z0-9_-]";

/// The parts of a tracking request the shared path needs.
#[derive(Debug)]
pub struct Envelope {
    pub site: String,
    pub consent: Option<ConsentFlags>,
    pub visitor_id: Option<String>,
    pub sent_at: Option<serde_json::Number>,
    pub events: Vec<Box<RawValue>>,
}

/// The consent in force for a request, or `None` when the request must not be tracked
/// at all (`DNT: 1` under [`DntPolicy::Drop`]).
///
/// Absent flags mean no consent. `Sec-GPC: 1` removes the marketing purpose, and so
/// does `DNT: 1` under [`DntPolicy::NoMarketing`].
pub fn resolve_consent(
    flags: Option<ConsentFlags>,
    signals: PrivacySignals,
    dnt: DntPolicy,
) -> Option<ConsentFlags> {
    if signals.dnt && dnt == DntPolicy::Drop {
        return None;
    }
    let mut consent = flags.unwrap_or_default();
    if signals.gpc || (signals.dnt && dnt == DntPolicy::NoMarketing) {
        consent.marketing = false;
    }
    Some(consent)
}

/// What the request tells about its sender, after the IP was used and dropped.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub site: &'a Site,
    pub received_at: i64,
    pub sent_at: Option<serde_json::Number>,
    pub consent: ConsentFlags,
    pub signals: PrivacySignals,
    /// The tracker's visitor id as the request sent it (checked here, per event: see
    /// the visitor-id rule above).
    pub visitor_id: Option<String>,
    /// The cookieless id of this sender today.
    pub cookieless_id: String,
    pub geo: Geo,
    pub agent: Agent,
}

/// One event's fate.
#[derive(Debug, Clone)]
pub enum Item {
    /// Accepted, with what was scrubbed from it.
    Event(Box<EventRecord>, Redactions),
    Dead(DeadLetter),
}

impl Item {
    pub fn to_outgoing(&self) -> Outgoing {
        match self {
            Item::Event(record, _) => Outgoing {
                dest: Dest::Events,
                key: record_key(&record.site_id, &record.visitor.id),
                payload: serde_json::to_vec(record).expect("records serialise"),
            },
            Item::Dead(dl) => Outgoing {
                dest: Dest::DeadLetter,
                key: dl.site_id.clone().unwrap_or_default(),
                payload: serde_json::to_vec(dl).expect("dead letters serialise"),
            },
        }
    }

    pub fn dead_letter_reason(&self) -> Option<ReasonCode> {
        match self {
            Item::Event(..) => None,
            Item::Dead(dl) => Some(dl.reason),
        }
    }
}

/// The visitor an event is attributed to. The tracker's persistent id only with
/// analytics consent; a consent event also carries it without (a withdrawal must name
/// whom it concerns); otherwise the cookieless id.
fn visitor(ctx: &Context<'_>, payload: &Payload) -> Visitor {
    match &ctx.visitor_id {
        Some(id) if ctx.consent.analytics || payload.event_type() == EventType::Consent => {
            Visitor {
                kind: VisitorKind::Persistent,
                id: id.clone(),
            }
        }
        _ => Visitor {
            kind: VisitorKind::Cookieless,
            id: ctx.cookieless_id.clone(),
        },
    }
}

/// Validates and assembles every event of a request.
pub fn build(
    ctx: &Context<'_>,
    events: &[Box<RawValue>],
    rules: &Rules,
    clock_rules: ClockRules,
) -> Vec<Item> {
    events
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            let bytes = raw.get().as_bytes();
            let checked =
                validate::validate(bytes, ctx.site, rules).and_then(|ev| match &ctx.visitor_id {
                    Some(id) if !validate::valid_id(id) => Err(Refusal {
                        reason: ReasonCode::InvalidVisitorId,
                        detail: INVALID_VISITOR_ID.to_owned(),
                        event_id: ev.id,
                        event_type: Some(ev.payload.event_type()),
                    }),
                    _ => Ok(ev),
                });
            match checked {
                Ok(ev) => {
                    let placement = clock::place(
                        ctx.received_at,
                        ctx.sent_at.as_ref(),
                        ev.ts.as_ref(),
                        clock_rules,
                    );
                    let redactions = ev.redactions;
                    let record = EventRecord {
                        v: SCHEMA_VERSION,
                        event_id: ev.id.unwrap_or_else(new_event_id),
                        site_id: ctx.site.id.clone(),
                        received_at: ctx.received_at,
                        event_time: placement.event_time,
                        client_ts: placement.client_ts,
                        clock_skew_ms: placement.clock_skew_ms,
                        time_flags: placement.flags,
                        visitor: visitor(ctx, &ev.payload),
                        consent: ctx.consent,
                        signals: ctx.signals,
                        geo: ctx.geo.clone(),
                        agent: ctx.agent.clone(),
                        page: ev.page,
                        redacted: !redactions.is_empty(),
                        payload: ev.payload,
                    };
                    Item::Event(Box::new(record), redactions)
                }
                Err(refusal) => Item::Dead(DeadLetter {
                    v: SCHEMA_VERSION,
                    reason: refusal.reason,
                    detail: refusal.detail,
                    stage: "collector".into(),
                    site_id: Some(ctx.site.id.clone()),
                    event_id: refusal.event_id,
                    event_type: refusal.event_type.map(|t| t.as_str().to_owned()),
                    index: index as u32,
                    size: bytes.len() as u64,
                    received_at: ctx.received_at,
                }),
            }
        })
        .collect()
}

/// A decision about marketing made outside any site, by the person the token of
/// `/v1/unsubscribe` or `/v1/confirm` names: visitor kind [`VisitorKind::Subject`]
/// (the processor stores the id unchanged), an empty `site_id` (an e-mail belongs to
/// no site) and nothing of the request — no IP, no user agent (the mail client's),
/// no geography. `evidence` says how it was made (its `method`).
pub fn subject_marketing_record(
    subject_id: String,
    action: ConsentAction,
    evidence: ConsentEvidence,
    now: i64,
) -> EventRecord {
    EventRecord {
        v: SCHEMA_VERSION,
        event_id: new_event_id(),
        site_id: String::new(),
        received_at: now,
        event_time: now,
        client_ts: None,
        clock_skew_ms: None,
        time_flags: Vec::new(),
        visitor: Visitor {
            kind: VisitorKind::Subject,
            id: subject_id,
        },
        consent: ConsentFlags {
            analytics: false,
            marketing: action == ConsentAction::Granted,
        },
        signals: PrivacySignals::default(),
        geo: Geo::default(),
        agent: Agent::default(),
        page: None,
        redacted: false,
        payload: Payload::Consent {
            purposes: [(MARKETING.to_owned(), action)].into(),
            evidence: Some(evidence),
        },
    }
}

/// The purpose `/v1/unsubscribe` withdraws and `/v1/confirm` confirms.
pub const MARKETING: &str = "marketing";

/// A random, unguessable event id for events the client did not name.
pub fn new_event_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SiteConfig;
    use crate::sites::Sites;
    use std::time::Duration;

    #[test]
    fn consent_signals() {
        let all = Some(ConsentFlags {
            analytics: true,
            marketing: true,
        });
        let none = PrivacySignals::default();
        let gpc = PrivacySignals {
            gpc: true,
            dnt: false,
        };
        let dnt = PrivacySignals {
            gpc: false,
            dnt: true,
        };
        assert_eq!(
            resolve_consent(None, none, DntPolicy::Ignore),
            Some(ConsentFlags::default())
        );
        assert_eq!(resolve_consent(all, none, DntPolicy::Ignore), all);
        assert_eq!(
            resolve_consent(all, gpc, DntPolicy::Ignore),
            Some(ConsentFlags {
                analytics: true,
                marketing: false
            })
        );
        assert_eq!(resolve_consent(all, dnt, DntPolicy::Ignore), all);
        assert_eq!(
            resolve_consent(all, dnt, DntPolicy::NoMarketing),
            Some(ConsentFlags {
                analytics: true,
                marketing: false
            })
        );
        assert_eq!(resolve_consent(all, dnt, DntPolicy::Drop), None);
    }

    #[test]
    fn persistent_id_only_with_analytics_consent() {
        let sites = Sites::new(&[SiteConfig {
            id: "shop".into(),
            hosts: vec!["shop.example".into()],
        }])
        .expect("sites");
        let mut ctx = Context {
            site: sites.get("shop").expect("site"),
            received_at: 1_764_426_000_000,
            sent_at: None,
            consent: ConsentFlags::default(),
            signals: PrivacySignals::default(),
            visitor_id: Some("visitor-1234".into()),
            cookieless_id: "c".repeat(32),
            geo: Geo::default(),
            agent: Agent::default(),
        };
        let events: Vec<Box<RawValue>> = [
            r#"{"type":"pageview","url":"https://shop.example/"}"#,
            r#"{"type":"consent","purposes":{"analytics":"withdrawn"}}"#,
            r#"{"type":"pageview"}"#,
        ]
        .iter()
        .map(|s| RawValue::from_string((*s).to_owned()).expect("json"))
        .collect();
        let rules = Rules {
            max_event_bytes: 4096,
            allowed_query_params: vec![],
            scrub: Default::default(),
        };
        let clock_rules = ClockRules {
            skew_tolerance: Duration::from_secs(60),
            max_age: Duration::from_secs(3600),
        };
        let kinds = |items: &[Item]| -> Vec<Option<VisitorKind>> {
            items
                .iter()
                .map(|i| match i {
                    Item::Event(r, _) => Some(r.visitor.kind),
                    Item::Dead(_) => None,
                })
                .collect()
        };
        let without = build(&ctx, &events, &rules, clock_rules);
        assert_eq!(
            kinds(&without),
            vec![
                Some(VisitorKind::Cookieless),
                Some(VisitorKind::Persistent),
                None
            ]
        );
        assert_eq!(
            without[2].dead_letter_reason(),
            Some(ReasonCode::MissingField)
        );
        ctx.consent.analytics = true;
        let with = build(&ctx, &events, &rules, clock_rules);
        assert_eq!(
            kinds(&with),
            vec![
                Some(VisitorKind::Persistent),
                Some(VisitorKind::Persistent),
                None
            ]
        );
        match &with[0] {
            Item::Event(r, _) => assert_eq!(r.event_id.len(), 32),
            Item::Dead(_) => panic!("accepted"),
        }
    }

    /// Regression: a malformed `visitor_id` was silently replaced by the cookieless
    /// id, merging unrelated visitors (issue 11). It is now dead-lettered per event.
    #[test]
    fn a_malformed_visitor_id_is_dead_lettered_not_replaced() {
        let sites = Sites::new(&[SiteConfig {
            id: "shop".into(),
            hosts: vec!["shop.example".into()],
        }])
        .expect("sites");
        let events: Vec<Box<RawValue>> = [
            r#"{"type":"pageview","id":"evt-00000001","url":"https://shop.example/"}"#,
            r#"{"type":"consent","purposes":{"analytics":"granted"}}"#,
            r#"{"type":"pageview"}"#,
        ]
        .iter()
        .map(|s| RawValue::from_string((*s).to_owned()).expect("json"))
        .collect();
        let rules = Rules {
            max_event_bytes: 4096,
            allowed_query_params: vec![],
            scrub: Default::default(),
        };
        let clock_rules = ClockRules {
            skew_tolerance: Duration::from_secs(60),
            max_age: Duration::from_secs(3600),
        };
        let build_with = |visitor_id: Option<&str>, analytics: bool| {
            let ctx = Context {
                site: sites.get("shop").expect("site"),
                received_at: 1_764_426_000_000,
                sent_at: None,
                consent: ConsentFlags {
                    analytics,
                    marketing: false,
                },
                signals: PrivacySignals::default(),
                visitor_id: visitor_id.map(str::to_owned),
                cookieless_id: "c".repeat(32),
                geo: Geo::default(),
                agent: Agent::default(),
            };
            build(&ctx, &events, &rules, clock_rules)
        };
        let long = "v".repeat(65);
        for bad in ["short", "", "has space1", "visitor.id.1", long.as_str()] {
            for analytics in [true, false] {
                let items = build_with(Some(bad), analytics);
                let dead: Vec<&DeadLetter> = items
                    .iter()
                    .map(|i| match i {
                        Item::Dead(dl) => dl,
                        Item::Event(r, _) => panic!("{bad:?} accepted as {:?}", r.visitor),
                    })
                    .collect();
                assert_eq!(dead[0].reason, ReasonCode::InvalidVisitorId, "{bad:?}");
                assert_eq!(dead[0].detail, INVALID_VISITOR_ID);
                assert_eq!(dead[0].event_id.as_deref(), Some("evt-00000001"));
                assert_eq!(dead[0].event_type.as_deref(), Some("pageview"));
                assert_eq!(dead[1].reason, ReasonCode::InvalidVisitorId);
                assert_eq!(dead[1].event_type.as_deref(), Some("consent"));
                // An event that is itself broken keeps its own reason.
                assert_eq!(dead[2].reason, ReasonCode::MissingField);
                for dl in &dead {
                    let json = serde_json::to_string(dl).expect("json");
                    assert!(
                        bad.is_empty() || !json.contains(bad),
                        "the id must not be echoed: {json}"
                    );
                }
            }
        }
        // No id at all: the cookieless id, as before analytics consent.
        let none = build_with(None, false);
        assert!(
            matches!(&none[0], Item::Event(r, _) if r.visitor.kind == VisitorKind::Cookieless
                && r.visitor.id == "c".repeat(32))
        );
        // The bounds themselves are fine.
        for good in ["12345678", &"v".repeat(64)[..]] {
            let items = build_with(Some(good), true);
            assert!(
                matches!(&items[0], Item::Event(r, _) if r.visitor.kind == VisitorKind::Persistent
                    && r.visitor.id == good),
                "{good}"
            );
        }
    }
}
