//! Lake rows as the processor writes them. [`event`] and [`session`] are the rows of
//! [`Fixture`](crate::Fixture); [`pageview`] and [`identify`] are the building
//! blocks of scripted histories.

use spur_lake::dwell::{PageEvent, pageview_dwell};
use spur_lake::model::{EventRow, SessionRow};
use spur_schemas::time::date;

/// The first day of the fixture lake.
pub const DAY0: &str = "2025-11-29";
/// The second day of the fixture lake.
pub const DAY1: &str = "2025-11-30";

/// Milliseconds of 2025-11-29T12:00:00Z.
const NOON: i64 = 1_764_417_600_000;
const DAY_MS: i64 = 86_400_000;

/// Event `n` of day `day` (0: [`DAY0`], 1: [`DAY1`]) of the fixture lake.
pub fn event(day: i64, n: i64) -> EventRow {
    let event_time = NOON + day * DAY_MS + n * 60_000;
    let identify = n % 3 == 2;
    EventRow {
        event_id: format!("ev-{day}-{n}"),
        site_id: if day == 1 && n % 2 == 1 {
            "blog"
        } else {
            "shop"
        }
        .into(),
        event_type: if identify { "identify" } else { "pageview" }.into(),
        event_time,
        received_at: event_time + 40,
        dt: date(event_time),
        visitor_id: format!("{:064x}", 0xabc0 + n % 3),
        visitor_kind: "persistent".into(),
        key_version: 1,
        session_id: format!("{:032x}", 0x5e55 + day * 10 + n / 2),
        consent_analytics: true,
        consent_marketing: n % 2 == 0,
        gpc: false,
        dnt: false,
        country: Some("DE".into()),
        region: None,
        browser: "Firefox".into(),
        browser_version: "133".into(),
        os: "Linux".into(),
        device: "pc".into(),
        is_bot: false,
        bot_reason: None,
        url: Some(format!("https://shop.example/p/{n}")),
        host: Some("shop.example".into()),
        path: Some(format!("/p/{n}")),
        referrer: None,
        title: Some(format!("Product {n}")),
        topics: if n % 2 == 0 {
            vec!["shoes".into(), "sale".into()]
        } else {
            Vec::new()
        },
        engaged_ms: (n % 2 == 1).then_some(1000 * n),
        scroll_pct: None,
        email_hash: identify.then(|| format!("{:064x}", 0xe0 + n)),
        form: identify.then(|| "newsletter".into()),
        consent_purposes: None,
        consent_evidence: None,
        name: None,
        props: None,
        time_flags: None,
        kafka_partition: 0,
        kafka_offset: day * 100 + n,
        redacted: Some(false),
    }
}

/// An event of `visitor` in `session` at `time`; a pageview unless changed.
pub fn pageview(
    id: &str,
    visitor: &str,
    session: &str,
    time: i64,
    path: &str,
    topics: &[&str],
) -> EventRow {
    let mut row = event(0, 0);
    row.event_id = id.into();
    row.event_type = "pageview".into();
    row.event_time = time;
    row.received_at = time + 40;
    row.dt = date(time);
    row.visitor_id = visitor.into();
    row.session_id = session.into();
    row.path = Some(path.into());
    row.url = Some(format!("https://shop.example{path}"));
    row.topics = topics.iter().map(|t| (*t).to_owned()).collect();
    row.engaged_ms = None;
    row.email_hash = None;
    row
}

/// An `identify` of `visitor` as `email_hash` at `time`, with the consent evidence
/// (analytics only) a form must send for the link to count.
pub fn identify(id: &str, visitor: &str, time: i64, email_hash: &str) -> EventRow {
    let mut row = pageview(id, visitor, "s-id", time, "/signup", &[]);
    row.event_type = "identify".into();
    row.email_hash = Some(email_hash.into());
    // The consent evidence a form must send for the link to count.
    row.consent_evidence = Some(
        r#"{"purposes":["analytics"],"text_id":"signup-v1","policy_version":"2025-01"}"#.into(),
    );
    row
}

/// Session `n` of day `day` of the fixture lake.
pub fn session(day: i64, n: i64) -> SessionRow {
    let start_time = NOON + day * DAY_MS + n * 1_000;
    let duration_ms = 60_000 * (n + 1);
    SessionRow {
        session_id: format!("{:032x}", 0x5e55 + day * 10 + n),
        site_id: "shop".into(),
        visitor_id: format!("{:064x}", 0xabc0 + n),
        dt: date(start_time),
        start_time,
        end_time: start_time + duration_ms,
        duration_ms,
        events: 2,
        pageviews: n + 2,
        engaged_ms: 0,
        entry_path: Some("/".into()),
        exit_path: (n % 2 == 0).then(|| "/cart".into()),
        is_bot: n == 1,
        country: Some("DE".into()),
        device: "mobile".into(),
        closed_by: "inactivity".into(),
        kafka_partition: 0,
        pageview_dwell: Vec::new(),
    }
}

/// The `sessions` rows the processor writes when the sessions of `events` close: one
/// per `session_id`, dwell times included ([`spur_lake::dwell`]), ordered by id.
pub fn closed_sessions(events: &[EventRow]) -> Vec<SessionRow> {
    let mut by_session: std::collections::BTreeMap<&str, Vec<&EventRow>> =
        std::collections::BTreeMap::new();
    for e in events {
        by_session.entry(e.session_id.as_str()).or_default().push(e);
    }
    by_session
        .into_iter()
        .map(|(session_id, mut rows)| {
            rows.sort_by_key(|r| (r.event_time, r.event_id.clone()));
            let first = rows[0];
            let start_time = first.event_time;
            let end_time = rows[rows.len() - 1].event_time;
            let views: Vec<&&EventRow> =
                rows.iter().filter(|r| r.event_type == "pageview").collect();
            let pages: Vec<PageEvent> = rows.iter().filter_map(|r| PageEvent::of(r)).collect();
            SessionRow {
                session_id: session_id.to_owned(),
                site_id: first.site_id.clone(),
                visitor_id: first.visitor_id.clone(),
                dt: date(start_time),
                start_time,
                end_time,
                duration_ms: end_time - start_time,
                events: rows.len() as i64,
                pageviews: views.len() as i64,
                engaged_ms: rows.iter().filter_map(|r| r.engaged_ms).sum(),
                entry_path: views.first().and_then(|r| r.path.clone()),
                exit_path: views.last().and_then(|r| r.path.clone()),
                is_bot: rows.iter().any(|r| r.is_bot),
                country: rows.iter().find_map(|r| r.country.clone()),
                device: first.device.clone(),
                closed_by: "inactivity".into(),
                kafka_partition: first.kafka_partition,
                pageview_dwell: pageview_dwell(&pages),
            }
        })
        .collect()
}
