//! Decoding and validating one event: pure functions from bytes to a validated event
//! or a refusal with a [`ReasonCode`]. Refusal details name a field and an error class,
//! never a value, because they end up on the dead-letter topic.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::Value;
use spur_schemas::ReasonCode;
use spur_schemas::record::{EventType, Page, Payload};
use spur_schemas::wire::{ConsentEvidence, WireEvent};

use crate::scrub::{Field, Redactions, Scrubber, Scrubbers};
use crate::sites::Site;

const MAX_URL: usize = 2048;
const MAX_TITLE_CHARS: usize = 300;
const MAX_TOPICS: usize = 20;
const MAX_TOPIC_CHARS: usize = 64;
const MAX_NAME: usize = 64;
const MAX_PROPS: usize = 25;
const MAX_PROP_STRING: usize = 256;
const MAX_ENGAGED_MS: u64 = 24 * 3600 * 1000;
const MAX_EVIDENCE_TEXT: usize = 2000;
/// Purposes a consent can be given for.
pub const PURPOSES: [&str; 2] = ["analytics", "marketing"];

/// Fields of [`WireEvent`]; anything else in an error path is reported as `event`.
const FIELDS: [&str; 16] = [
    "type",
    "id",
    "ts",
    "url",
    "referrer",
    "title",
    "topics",
    "engaged_ms",
    "scroll_pct",
    "email",
    "form",
    "evidence",
    "purposes",
    "name",
    "props",
    "event",
];

/// Just the naming fields of an event, read leniently for a dead letter.
#[derive(serde::Deserialize)]
struct Named {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    id: Option<String>,
}

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: ReasonCode,
    pub detail: String,
    /// The event id, when it was well formed (for the dead letter).
    pub event_id: Option<String>,
    /// The event type, when it was known.
    pub event_type: Option<EventType>,
}

impl Refusal {
    fn new(reason: ReasonCode, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            event_id: None,
            event_type: None,
        }
    }
}

/// An event that passed validation, before enrichment.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEvent {
    /// The client's id, or `None` when the collector must assign one.
    pub id: Option<String>,
    pub ts: Option<serde_json::Number>,
    pub page: Option<Page>,
    pub payload: Payload,
    /// What [`crate::scrub`] replaced in the event's free text.
    pub redactions: Redactions,
}

/// Rules that come from configuration.
#[derive(Debug, Clone)]
pub struct Rules {
    pub max_event_bytes: usize,
    pub allowed_query_params: Vec<String>,
    /// Each site's scrubbing of personal data in free text.
    pub scrub: Scrubbers,
}

/// Whether `id` is acceptable as a client-chosen id (event or visitor): 8 to 64 of
/// `[A-Za-z0-9_-]`.
pub fn valid_id(id: &str) -> bool {
    (8..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The error class of a serde_json error, without the offending value.
pub fn json_error_class(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "wrong type or value",
        serde_json::error::Category::Eof => "unexpected end",
    }
}

/// Decodes and validates one raw event of `site`.
pub fn validate(raw: &[u8], site: &Site, rules: &Rules) -> Result<ValidEvent, Refusal> {
    if raw.len() > rules.max_event_bytes {
        return Err(Refusal::new(
            ReasonCode::Size,
            format!(
                "event of {} bytes exceeds {}",
                raw.len(),
                rules.max_event_bytes
            ),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(raw);
    let wire: WireEvent = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e
            .path()
            .iter()
            .next()
            .map(|seg| seg.to_string())
            .filter(|s| FIELDS.contains(&s.as_str()))
            .unwrap_or_else(|| "event".to_owned());
        let syntax = matches!(
            e.inner().classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        );
        let reason = if field == "event" || syntax {
            ReasonCode::Malformed
        } else {
            ReasonCode::InvalidField
        };
        let mut refusal = Refusal::new(reason, format!("{field}: {}", json_error_class(e.inner())));
        // Name the event in its dead letter when its id and type are readable.
        if let Ok(named) = serde_json::from_slice::<Named>(raw) {
            refusal.event_id = named.id.filter(|id| valid_id(id));
            refusal.event_type = named.kind.as_deref().and_then(EventType::parse);
        }
        refusal
    })?;
    let id = match wire.id.as_deref() {
        Some(id) if valid_id(id) => Some(id.to_owned()),
        Some(_) => {
            return Err(Refusal::new(
                ReasonCode::InvalidField,
                "id: not 8-64 of [A-Za-z0-9_-]",
            ));
        }
        None => None,
    };
    let Some(kind) = wire.kind.as_deref() else {
        return Err(with_id(
            Refusal::new(ReasonCode::MissingField, "type"),
            &id,
            None,
        ));
    };
    let Some(kind) = EventType::parse(kind) else {
        return Err(with_id(
            Refusal::new(ReasonCode::UnknownType, "type"),
            &id,
            None,
        ));
    };
    let mut redactions = Redactions::default();
    let scrub = Scrub {
        scrubber: rules.scrub.for_site(&site.id),
        tally: &mut redactions,
    };
    let (page, payload, ts) =
        validate_typed(wire, kind, site, rules, scrub).map_err(|r| with_id(r, &id, Some(kind)))?;
    Ok(ValidEvent {
        id,
        ts,
        page,
        payload,
        redactions,
    })
}

fn with_id(mut r: Refusal, id: &Option<String>, kind: Option<EventType>) -> Refusal {
    r.event_id = id.clone();
    r.event_type = kind;
    r
}

fn missing(field: &str) -> Refusal {
    Refusal::new(ReasonCode::MissingField, field)
}

fn invalid(field: &str, why: &str) -> Refusal {
    Refusal::new(ReasonCode::InvalidField, format!("{field}: {why}"))
}

type Typed = (Option<Page>, Payload, Option<serde_json::Number>);

/// A site's scrubber and the tally of one event.
struct Scrub<'a> {
    scrubber: &'a Scrubber,
    tally: &'a mut Redactions,
}

impl Scrub<'_> {
    fn text(&mut self, text: &str, field: Field) -> String {
        self.scrubber.text(text, field, self.tally).into_owned()
    }
}

fn validate_typed(
    wire: WireEvent,
    kind: EventType,
    site: &Site,
    rules: &Rules,
    mut scrub: Scrub<'_>,
) -> Result<Typed, Refusal> {
    let needs_page = matches!(kind, EventType::Pageview | EventType::Engagement);
    let page = match wire.url.as_deref() {
        Some(url) => Some(page(url, &wire, site, rules, &mut scrub)?),
        None if needs_page => return Err(missing("url")),
        None => None,
    };
    let payload = match kind {
        EventType::Pageview => Payload::Pageview,
        EventType::Engagement => {
            let engaged_ms = wire.engaged_ms.ok_or_else(|| missing("engaged_ms"))?;
            if engaged_ms > MAX_ENGAGED_MS {
                return Err(invalid("engaged_ms", "more than 24 hours"));
            }
            let scroll_pct = match wire.scroll_pct {
                Some(p) if p > 100 => return Err(invalid("scroll_pct", "more than 100")),
                Some(p) => Some(p as u8),
                None => None,
            };
            Payload::Engagement {
                engaged_ms,
                scroll_pct,
            }
        }
        EventType::Identify => {
            let email = wire.email.as_deref().ok_or_else(|| missing("email"))?;
            Payload::Identify {
                email: email_address(email)?,
                form: short_name("form", wire.form.as_deref())?
                    .map(|form| scrub.text(&form, Field::Name)),
                evidence: evidence(wire.evidence)?,
            }
        }
        EventType::Consent => {
            let purposes = wire.purposes.ok_or_else(|| missing("purposes"))?;
            if purposes.is_empty() {
                return Err(missing("purposes"));
            }
            if purposes.keys().any(|p| !PURPOSES.contains(&p.as_str())) {
                return Err(invalid("purposes", "unknown purpose"));
            }
            Payload::Consent {
                purposes,
                evidence: evidence(wire.evidence)?,
            }
        }
        EventType::Custom => {
            let name = short_name("name", wire.name.as_deref())?.ok_or_else(|| missing("name"))?;
            let mut props = props(wire.props.unwrap_or_default())?;
            scrub.scrubber.props(&mut props, scrub.tally);
            Payload::Custom {
                name: scrub.text(&name, Field::Name),
                props,
            }
        }
    };
    Ok((page, payload, wire.ts))
}

fn page(
    raw: &str,
    wire: &WireEvent,
    site: &Site,
    rules: &Rules,
    scrub: &mut Scrub<'_>,
) -> Result<Page, Refusal> {
    if raw.len() > MAX_URL {
        return Err(invalid("url", "too long"));
    }
    let mut url = url::Url::parse(raw).map_err(|_| invalid("url", "not an absolute url"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("url", "not http or https"));
    }
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    if !site.allows_host(&host) {
        return Err(Refusal::new(
            ReasonCode::HostNotAllowed,
            "url: host not registered for the site",
        ));
    }
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| query_param_allowed(k, &rules.allowed_query_params))
        .map(|(k, v)| (k.into_owned(), scrub.text(&v, Field::Query)))
        .collect();
    url.set_fragment(None);
    url.set_query(None);
    if !kept.is_empty() {
        url.query_pairs_mut().extend_pairs(kept);
    }
    let _ = url.set_username("");
    let _ = url.set_password(None);
    if let Cow::Owned(path) = scrub.scrubber.path(url.path(), Field::Path, scrub.tally) {
        url.set_path(&path);
    }
    let mut topics = topics(wire.topics.as_deref())?;
    for topic in &mut topics {
        if let Cow::Owned(clean) = scrub.scrubber.text(topic, Field::Topics, scrub.tally) {
            *topic = clean;
        }
    }
    Ok(Page {
        path: url.path().to_owned(),
        url: url.to_string(),
        host,
        referrer: wire.referrer.as_deref().and_then(|r| referrer(r, scrub)),
        // Scrubbed before it is cut, so that a cut cannot hide half an address.
        title: wire.title.as_deref().map(|t| {
            scrub
                .text(t, Field::Title)
                .chars()
                .take(MAX_TITLE_CHARS)
                .collect()
        }),
        topics,
    })
}

fn query_param_allowed(key: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|a| match a.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => key == a,
    })
}

/// A referrer reduced to scheme, host and scrubbed path; anything unparseable is
/// dropped.
fn referrer(raw: &str, scrub: &mut Scrub<'_>) -> Option<String> {
    let url = url::Url::parse(raw).ok()?;
    if !matches!(url.scheme(), "http" | "https") || raw.len() > MAX_URL {
        return None;
    }
    let path = scrub
        .scrubber
        .path(url.path(), Field::Referrer, scrub.tally);
    Some(format!("{}://{}{path}", url.scheme(), url.host_str()?))
}

/// Topics trimmed and lower-cased; empty entries (from `"a,,b"` in a meta tag) are
/// skipped, duplicates removed.
fn topics(raw: Option<&[String]>) -> Result<Vec<String>, Refusal> {
    let raw = raw.unwrap_or_default();
    if raw.len() > MAX_TOPICS {
        return Err(invalid("topics", "too many"));
    }
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for t in raw {
        let t = t.trim().to_lowercase();
        if t.chars().count() > MAX_TOPIC_CHARS {
            return Err(invalid("topics", "too long"));
        }
        if !t.is_empty() && !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

fn email_address(raw: &str) -> Result<String, Refusal> {
    spur_schemas::identify::normalized_email(raw)
        .ok_or_else(|| invalid("email", "not an e-mail address"))
}

fn short_name(field: &str, raw: Option<&str>) -> Result<Option<String>, Refusal> {
    match raw {
        None => Ok(None),
        Some(s)
            if (1..=MAX_NAME).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.:-/ ".contains(&b)) =>
        {
            Ok(Some(s.to_owned()))
        }
        Some(_) => Err(invalid(field, "not 1-64 of [A-Za-z0-9_.:-/ ]")),
    }
}

fn evidence(raw: Option<ConsentEvidence>) -> Result<Option<ConsentEvidence>, Refusal> {
    let Some(mut e) = raw else { return Ok(None) };
    // Only the collector says how a decision was made outside the site's own form
    // (one-click unsubscribe): a website cannot claim it. Ignored, as unknown fields
    // were before the field existed.
    e.method = None;
    // Nor can it confirm a double opt-in: only the signed link's POST on
    // `/v1/confirm` does (`spur_schemas::confirm`).
    e.confirmation = false;
    e.grant_seq = None;
    if e.purposes.iter().any(|p| !PURPOSES.contains(&p.as_str())) {
        return Err(invalid("evidence", "unknown purpose"));
    }
    let texts = [&e.text, &e.text_id, &e.policy_version, &e.policy_url];
    if texts
        .iter()
        .any(|t| t.as_ref().is_some_and(|t| t.len() > MAX_EVIDENCE_TEXT))
    {
        return Err(invalid("evidence", "text too long"));
    }
    Ok(Some(e))
}

fn props(raw: BTreeMap<String, Value>) -> Result<BTreeMap<String, Value>, Refusal> {
    if raw.len() > MAX_PROPS {
        return Err(invalid("props", "too many"));
    }
    for (k, v) in &raw {
        if k.is_empty() || k.len() > MAX_NAME {
            return Err(invalid("props", "key empty or too long"));
        }
        let ok = match v {
            Value::Null | Value::Bool(_) | Value::Number(_) => true,
            Value::String(s) => s.len() <= MAX_PROP_STRING,
            Value::Array(_) | Value::Object(_) => false,
        };
        if !ok {
            return Err(invalid(
                "props",
                "values must be short strings, numbers or booleans",
            ));
        }
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SiteConfig;
    use crate::sites::Sites;

    fn site() -> Site {
        let sites = Sites::new(&[SiteConfig {
            id: "shop".into(),
            hosts: vec!["shop.example".into()],
        }])
        .expect("valid");
        sites.get("shop").cloned().expect("registered")
    }

    fn rules() -> Rules {
        Rules {
            max_event_bytes: 1024,
            allowed_query_params: vec!["utm_*".into()],
            scrub: Scrubbers::default(),
        }
    }

    fn check(json: &str) -> Result<ValidEvent, Refusal> {
        validate(json.as_bytes(), &site(), &rules())
    }

    fn reason(json: &str) -> (ReasonCode, String) {
        let r = check(json).expect_err("refused");
        (r.reason, r.detail)
    }

    #[test]
    fn accepts_a_pageview_and_strips_the_url() {
        let ev = check(
            r#"{"type":"pageview","id":"evt-0001","url":"https://u:p@shop.example/a?email=x%40y.z&utm_source=nl#frag",
                "referrer":"https://search.example/q?secret=1","topics":[" Boots ","boots","","Sale"],"title":"<script>x</script>"}"#,
        )
        .expect("valid");
        let page = ev.page.expect("page");
        assert_eq!(page.url, "https://shop.example/a?utm_source=nl");
        assert_eq!(page.path, "/a");
        assert_eq!(page.referrer.as_deref(), Some("https://search.example/q"));
        assert_eq!(page.topics, vec!["boots", "sale"]);
        assert_eq!(page.title.as_deref(), Some("<script>x</script>"));
        assert_eq!(ev.id.as_deref(), Some("evt-0001"));
    }

    #[test]
    fn refuses_with_reason_codes() {
        let big = format!(
            r#"{{"type":"pageview","url":"https://shop.example/","title":"{}"}}"#,
            "x".repeat(2000)
        );
        let cases: Vec<(String, ReasonCode, &str)> = vec![
            (big, ReasonCode::Size, "exceeds"),
            ("[1,2]".into(), ReasonCode::Malformed, "event:"),
            ("{\"type\":".into(), ReasonCode::Malformed, "unexpected end"),
            (r#"{"url":"https://shop.example/"}"#.into(), ReasonCode::MissingField, "type"),
            (r#"{"type":"hack"}"#.into(), ReasonCode::UnknownType, "type"),
            (r#"{"type":"pageview"}"#.into(), ReasonCode::MissingField, "url"),
            (r#"{"type":"pageview","url":"https://evil.example/"}"#.into(), ReasonCode::HostNotAllowed, "url"),
            (r#"{"type":"pageview","url":"javascript:alert(1)"}"#.into(), ReasonCode::InvalidField, "url"),
            (r#"{"type":"pageview","url":"https://shop.example/","ts":"soon"}"#.into(), ReasonCode::InvalidField, "ts"),
            (r#"{"type":"pageview","url":"https://shop.example/","id":"short"}"#.into(), ReasonCode::InvalidField, "id"),
            (r#"{"type":"engagement","url":"https://shop.example/"}"#.into(), ReasonCode::MissingField, "engaged_ms"),
            (r#"{"type":"engagement","url":"https://shop.example/","engaged_ms":-1}"#.into(), ReasonCode::InvalidField, "engaged_ms"),
            (r#"{"type":"engagement","url":"https://shop.example/","engaged_ms":5,"scroll_pct":101}"#.into(), ReasonCode::InvalidField, "scroll_pct"),
            (r#"{"type":"identify","email":"not-an-address"}"#.into(), ReasonCode::InvalidField, "email"),
            (r#"{"type":"consent","purposes":{"selling":"granted"}}"#.into(), ReasonCode::InvalidField, "purposes"),
            (r#"{"type":"consent","purposes":{"marketing":"maybe"}}"#.into(), ReasonCode::InvalidField, "purposes"),
            (r#"{"type":"custom","name":"x","props":{"a":{"b":1}}}"#.into(), ReasonCode::InvalidField, "props"),
            (r#"{"type":"custom"}"#.into(), ReasonCode::MissingField, "name"),
            (r#"{"type":"pageview","type":"custom","url":"https://shop.example/"}"#.into(), ReasonCode::Malformed, "event"),
        ];
        for (json, code, detail) in cases {
            let (got, got_detail) = reason(&json);
            assert_eq!(got, code, "{json}");
            assert!(got_detail.contains(detail), "{json}: {got_detail}");
        }
    }

    #[test]
    fn details_never_echo_values() {
        let r =
            check(r#"{"type":"pageview","url":"https://shop.example/","ts":"alice@example.com"}"#)
                .expect_err("refused");
        assert!(!r.detail.contains("alice"), "{}", r.detail);
        let r = check(r#"{"type":"custom","name":"x","props":{"alice@example.com":[1]}}"#)
            .expect_err("refused");
        assert!(!r.detail.contains("alice"), "{}", r.detail);
    }

    #[test]
    fn normalises_identify() {
        let ev = check(
            r#"{"type":"identify","email":" Alice@Example.COM ","form":"newsletter",
                "evidence":{"purposes":["marketing"],"text":"Send me news","policy_version":"2026-01"}}"#,
        )
        .expect("valid");
        match ev.payload {
            Payload::Identify {
                email,
                form,
                evidence,
            } => {
                assert_eq!(email, "alice@example.com");
                assert_eq!(form.as_deref(), Some("newsletter"));
                assert_eq!(evidence.expect("evidence").purposes, vec!["marketing"]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn websites_cannot_claim_a_one_click_unsubscribe() {
        let ev = check(
            r#"{"type":"consent","purposes":{"marketing":"withdrawn"},
                "evidence":{"purposes":["marketing"],"method":"one_click_unsubscribe"}}"#,
        )
        .expect("valid");
        match ev.payload {
            Payload::Consent { evidence, .. } => {
                let evidence = evidence.expect("evidence");
                assert_eq!(evidence.purposes, vec!["marketing"]);
                assert_eq!(evidence.method, None);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Only the signed link's POST on `/v1/confirm` confirms a double opt-in: a
    /// website's `identify` or `consent` claiming `confirmation`, the link's `method`
    /// or a `grant_seq` keeps its other evidence and loses those three.
    #[test]
    fn websites_cannot_confirm_a_double_opt_in() {
        let claim = r#""evidence":{"purposes":["marketing"],"text":"Send me news",
            "confirmation":true,"method":"double_opt_in_link","grant_seq":7}"#;
        for json in [
            format!(r#"{{"type":"consent","purposes":{{"marketing":"granted"}},{claim}}}"#),
            format!(r#"{{"type":"identify","email":"a@shop.example",{claim}}}"#),
        ] {
            let evidence = match check(&json).expect("valid").payload {
                Payload::Consent { evidence, .. } | Payload::Identify { evidence, .. } => {
                    evidence.expect("evidence")
                }
                other => panic!("unexpected {other:?}"),
            };
            assert!(!evidence.confirmation, "{json}");
            assert_eq!(evidence.method, None, "{json}");
            assert_eq!(evidence.grant_seq, None, "{json}");
            assert_eq!(evidence.purposes, vec!["marketing"]);
            assert_eq!(evidence.text.as_deref(), Some("Send me news"));
            let serialised = serde_json::to_value(&evidence).expect("json");
            assert_eq!(
                serialised,
                serde_json::json!({"purposes": ["marketing"], "text": "Send me news"})
            );
        }
    }

    /// The issue's example: personal data in the URL path, title, referrer and
    /// properties is replaced by markers; the events are kept.
    #[test]
    fn scrubs_personal_data_from_free_text() {
        let ev = check(
            r#"{"type":"pageview","url":"https://shop.example/account/alice@example.com/orders?utm_term=alice%40example.com",
                "title":"Welcome back, alice@example.com | call +49 170 5550123",
                "referrer":"https://webmail.example/u/alice@example.com/inbox?x=1",
                "topics":["Account"]}"#,
        )
        .expect("valid");
        let page = ev.page.expect("page");
        assert_eq!(page.path, "/account/[email]/orders");
        assert_eq!(
            page.url,
            "https://shop.example/account/[email]/orders?utm_term=%5Bemail%5D"
        );
        assert_eq!(
            page.title.as_deref(),
            Some("Welcome back, [email] | call [phone]")
        );
        assert_eq!(
            page.referrer.as_deref(),
            Some("https://webmail.example/u/[email]/inbox")
        );
        let r = ev.redactions;
        assert_eq!(r.count(Field::Path, crate::scrub::Kind::Email), 1);
        assert_eq!(r.count(Field::Query, crate::scrub::Kind::Email), 1);
        assert_eq!(r.count(Field::Referrer, crate::scrub::Kind::Email), 1);
        assert_eq!(r.count(Field::Title, crate::scrub::Kind::Phone), 1);

        let ev = check(
            r#"{"type":"custom","name":"purchase","props":{"contact":"alice@example.com",
                "iban":"DE89 3704 0044 0532 0130 00","note":"card 4111 1111 1111 1111","value":42}}"#,
        )
        .expect("valid");
        match ev.payload {
            Payload::Custom { name, props } => {
                assert_eq!(name, "purchase");
                assert_eq!(
                    serde_json::to_value(&props).expect("json"),
                    serde_json::json!({"contact": "[email]", "note": "card [card]", "value": 42})
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!ev.redactions.is_empty());

        // A clean event has nothing to report.
        let ev =
            check(r#"{"type":"pageview","url":"https://shop.example/p/4711","title":"Boots"}"#)
                .expect("valid");
        assert!(ev.redactions.is_empty());
    }
}
