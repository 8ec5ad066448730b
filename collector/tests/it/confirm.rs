//! Double opt-in link (`/v1/confirm?token=…`): opening it shows a page with a button
//! and produces nothing; the button's POST produces exactly one confirming record
//! after the broker acknowledged it; forged, altered and expired links get 403 pages
//! saying so and produce nothing; without a key the endpoint does not exist. Also: a
//! website cannot send the confirmation evidence through `/v1/batch`.

use std::time::Duration;

use serde_json::json;
use spur_collector::config::Config;
use spur_schemas::Secret;
use spur_schemas::confirm::{DOUBLE_OPT_IN_METHOD, token};

use crate::common::*;

const KEY: &str = "it-confirm-key-0123456789abcdef0123456789";
const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const FORM: &str = "application/x-www-form-urlencoded";

fn keyed() -> Config {
    let mut config = config();
    config.confirm.key = Some(Secret::new(KEY));
    config
}

/// A subject id unique to the calling test, so records can be told apart.
fn subject() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn now_secs() -> i64 {
    now_ms() / 1000
}

fn link_with(token: &str) -> String {
    format!("/v1/confirm?token={token}")
}

fn link(subject: &str, grant_seq: i64) -> String {
    let token = token(KEY.as_bytes(), subject, grant_seq, now_secs() + 3600).expect("token");
    link_with(&token)
}

/// What a browser sends: a GET to open the link, or the form's POST, from a client
/// address that must not be stored.
fn browser(method: &'static str, path: &str, body: &[u8]) -> Req {
    let mut req = Req {
        method,
        path: path.into(),
        headers: vec![
            ("accept".into(), BROWSER_ACCEPT.into()),
            ("user-agent".into(), UA_CHROME.into()),
            ("x-forwarded-for".into(), "198.51.100.30".into()),
        ],
        body: body.to_vec(),
    };
    if method == "POST" && !body.is_empty() {
        req = req.header("content-type", FORM);
    }
    req
}

/// The records on the events topic that name `subject`, read until `want` were seen or
/// `timeout` passed.
async fn records_of(
    h: &Harness,
    subject: &str,
    want: usize,
    timeout: Duration,
) -> Vec<serde_json::Value> {
    let brokers = h.kafka.brokers.clone();
    let subject = subject.to_owned();
    tokio::task::spawn_blocking(move || {
        read_topic(
            &brokers,
            spur_schemas::kafka::TOPIC_EVENTS,
            &subject,
            want,
            timeout,
        )
    })
    .await
    .expect("reader")
}

fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The headers every confirmation page carries.
fn assert_page(r: &Resp) {
    let h = |name: &str| r.headers.get(name).map(String::as_str).unwrap_or_default();
    assert_eq!(h("content-type"), "text/html; charset=utf-8");
    assert_eq!(h("cache-control"), "no-store");
    assert_eq!(h("referrer-policy"), "no-referrer");
    assert_eq!(h("x-robots-tag"), "noindex");
    let csp = h("content-security-policy");
    assert!(csp.starts_with("default-src 'none';"), "{csp}");
    assert!(csp.contains("form-action 'self'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    for header in [
        "set-cookie",
        "access-control-allow-origin",
        "access-control-allow-credentials",
    ] {
        assert!(!r.headers.contains_key(header), "{header}");
    }
    let body = text(r);
    for external in ["<script", "src=", "href=", "http://", "https://"] {
        assert!(!body.contains(external), "{external} in {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_the_link_shows_a_button_and_changes_nothing() {
    let h = Harness::start(keyed()).await;
    let who = subject();
    let path = link(&who, 17);
    for _ in 0..2 {
        let r = h.send(browser("GET", &path, b"")).await;
        assert_eq!(r.status, 200, "{}", text(&r));
        assert_page(&r);
        let body = text(&r);
        assert!(body.contains("Confirm your subscription"), "{body}");
        // The form posts to the page's own URL (token included) with a button.
        assert!(body.contains(r#"<form method="post">"#), "{body}");
        assert!(body.contains(r#"<button type="submit""#), "{body}");
        assert!(!body.contains("action="), "{body}");
    }
    let r = h.send(browser("HEAD", &path, b"")).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    // A client asking for JSON is told the link is valid.
    let r = h
        .send(Req::get(&path).header("accept", "application/json"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"valid": true}));

    let records = records_of(&h, &who, 1, Duration::from_secs(3)).await;
    assert!(records.is_empty(), "{records:?}");
    assert_eq!(
        h.metric(
            "spur_collector_requests_total",
            &[("endpoint", "confirm"), ("status", "200")]
        ),
        4.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_button_produces_one_acknowledged_confirmation() {
    let h = Harness::start(keyed()).await;
    let who = subject();
    // The page's form sends `confirm=yes`.
    let r = h
        .send(browser("POST", &link(&who, 42), b"confirm=yes"))
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_page(&r);
    assert!(text(&r).contains("Subscription confirmed"), "{}", text(&r));
    assert!(!text(&r).contains("<form"));

    // Wait for two for a while: there must be exactly one.
    let records = records_of(&h, &who, 2, Duration::from_secs(5)).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    let raw = record.to_string();
    for leak in [
        "198.51.100.30",
        "127.0.0.1",
        "Chrome",
        "Mozilla",
        "confirm=yes",
    ] {
        assert!(!raw.contains(leak), "{leak} in {raw}");
    }
    assert_eq!(record["v"], 1);
    assert_eq!(record["type"], "consent");
    assert_eq!(record["site_id"], "");
    assert_eq!(record["_key"], format!(":{who}"));
    assert_eq!(record["visitor"], json!({"kind": "subject", "id": who}));
    assert_eq!(record["data"]["purposes"], json!({"marketing": "granted"}));
    assert_eq!(
        record["data"]["evidence"],
        json!({"purposes": ["marketing"], "confirmation": true,
               "method": DOUBLE_OPT_IN_METHOD, "grant_seq": 42})
    );
    assert_eq!(record["geo"], json!({"country": null, "region": null}));
    assert_eq!(record["agent"]["browser"], "");
    assert!(record.get("page").is_none());
    let received = record["received_at"].as_i64().expect("ms");
    assert!((received - now_ms()).abs() < 60_000, "{received}");

    // An empty body is a confirmation too (a client without the form), and JSON
    // clients get JSON.
    let other = subject();
    let r = h
        .send(Req {
            method: "POST",
            ..Req::get(&link(&other, 5))
        })
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert!(text(&r).contains("Subscription confirmed"));
    let r = h
        .send(
            Req {
                method: "POST",
                ..Req::get(&link(&other, 5))
            }
            .header("accept", "application/json"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"confirmed": true}));
    let records = records_of(&h, &other, 3, Duration::from_secs(5)).await;
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(
        records
            .iter()
            .all(|r| r["data"]["evidence"]["grant_seq"] == 5)
    );

    assert_eq!(
        h.metric(
            "spur_collector_requests_total",
            &[("endpoint", "confirm"), ("status", "200")]
        ),
        3.0
    );
    for counter in [
        "spur_collector_events_received_total",
        "spur_collector_events_accepted_total",
    ] {
        assert_eq!(h.metric(counter, &[]), 0.0, "{counter}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_altered_and_expired_links_get_403_pages_and_produce_nothing() {
    let h = Harness::start(keyed()).await;
    let who = subject();
    let good = token(KEY.as_bytes(), &who, 9, now_secs() + 3600).expect("token");
    // One character changed: in the subject, the grant seq, the expiry and the tag.
    let mut invalid: Vec<String> = [0, 23, 38, good.len() - 1]
        .into_iter()
        .map(|at| {
            let mut bytes = good.clone().into_bytes();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            link_with(&String::from_utf8(bytes).expect("ascii"))
        })
        .collect();
    let other_key = token(
        b"another-key-of-sufficient-length-0123456789",
        &who,
        9,
        i64::MAX,
    )
    .expect("token");
    let unsubscribe = spur_schemas::unsubscribe::token(KEY.as_bytes(), &who).expect("token");
    invalid.extend([
        link_with(&other_key),
        link_with(&unsubscribe),
        link_with(&good[..40]),
        "/v1/confirm".to_owned(),
        "/v1/confirm?token=".to_owned(),
        "/v1/confirm?token=%00%ff".to_owned(),
    ]);
    let expired = token(KEY.as_bytes(), &who, 9, now_secs() - 1).expect("token");

    for method in ["GET", "POST"] {
        for path in &invalid {
            let r = h.send(browser(method, path, b"confirm=yes")).await;
            assert_eq!(r.status, 403, "{method} {path}: {}", text(&r));
            assert_page(&r);
            let body = text(&r);
            assert!(
                body.contains("This confirmation link is not valid."),
                "{body}"
            );
            assert!(!body.contains("<form"), "{body}");
        }
        let r = h
            .send(browser(method, &link_with(&expired), b"confirm=yes"))
            .await;
        assert_eq!(r.status, 403, "{method}: {}", text(&r));
        assert_page(&r);
        let body = text(&r);
        assert!(
            body.contains("This confirmation link has expired; sign up again to get a new one."),
            "{body}"
        );
    }
    // The JSON shape for clients that ask for it.
    let r = h
        .send(Req::get(&invalid[0]).header("accept", "application/json"))
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json(),
        json!({"error": "invalid_token", "message": "this confirmation link is not valid"})
    );
    let r = h
        .send(Req::get(&link_with(&expired)).header("accept", "application/json"))
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "expired_token");

    assert_eq!(
        h.metric(
            "spur_collector_requests_total",
            &[("endpoint", "confirm"), ("status", "403")]
        ),
        (2 * (invalid.len() + 1) + 2) as f64
    );
    let records = records_of(&h, &who, 1, Duration::from_secs(3)).await;
    assert!(records.is_empty(), "{records:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_and_bodies_are_refused_and_produce_nothing() {
    let h = Harness::start(keyed()).await;
    let who = subject();
    let path = link(&who, 3);
    for method in ["PUT", "DELETE", "OPTIONS", "PATCH"] {
        let r = h.send(browser(method, &path, b"")).await;
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(
            r.headers.get("allow").map(String::as_str),
            Some("GET, HEAD, POST")
        );
    }
    let r = h
        .send(
            browser("POST", &path, b"{\"confirm\":true}")
                .header("content-type", "application/json"),
        )
        .await;
    assert_eq!(r.status, 415, "{}", text(&r));
    assert_page(&r);
    let big = vec![b'a'; 4096];
    let r = h.send(browser("POST", &path, &big)).await;
    assert_eq!(r.status, 413, "{}", text(&r));
    let records = records_of(&h, &who, 1, Duration::from_secs(3)).await;
    assert!(records.is_empty(), "{records:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_broker_gets_503_with_retry_after_and_a_button_to_try_again() {
    let h = Harness::start(keyed()).await;
    let who = subject();
    h.mock.broker_down(1).expect("down");
    h.wait_ready(false).await;
    let r = h
        .send(browser("POST", &link(&who, 8), b"confirm=yes"))
        .await;
    assert_eq!(r.status, 503, "{}", text(&r));
    assert_eq!(r.headers.get("retry-after").map(String::as_str), Some("3"));
    assert_page(&r);
    assert!(text(&r).contains("<form method=\"post\">"), "{}", text(&r));

    // Back: the person's retry succeeds. A refusal while the broker is known down
    // enqueues nothing, so only a `not_acknowledged` one could add a record.
    h.mock.broker_up(1).expect("up");
    h.wait_ready(true).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut not_acknowledged = 0;
    loop {
        let r = h
            .send(
                browser("POST", &link(&who, 8), b"confirm=yes")
                    .header("accept", "application/json"),
            )
            .await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{:?}", r.body);
        if r.json()["error"] == "not_acknowledged" {
            not_acknowledged += 1;
        }
        assert!(std::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let records = records_of(&h, &who, 2 + not_acknowledged, Duration::from_secs(5)).await;
    assert!(
        (1..=1 + not_acknowledged).contains(&records.len()),
        "the acknowledged one, none from the refusal while down: {records:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_the_endpoint_is_404() {
    // Unsubscribe configured, confirm not: the keys are separate.
    let mut unsubscribe_only = config();
    unsubscribe_only.unsubscribe.key = Some(Secret::new(KEY));
    let h = Harness::start(unsubscribe_only).await;
    let who = subject();
    for method in ["GET", "POST"] {
        let r = h
            .send(
                Req {
                    method,
                    ..Req::get(&link(&who, 1))
                }
                .header("accept", "application/json"),
            )
            .await;
        assert_eq!(r.status, 404, "{method}");
        assert_eq!(r.json()["error"], "confirm_disabled");
        let r = h.send(browser(method, &link(&who, 1), b"")).await;
        assert_eq!(r.status, 404, "{method}");
        assert_page(&r);
    }
    let records = records_of(&h, &who, 1, Duration::from_secs(3)).await;
    assert!(records.is_empty(), "{records:?}");
    h.stop().await;

    // A key too short to be secret is a configuration error.
    let mut short = config();
    short.confirm.key = Some(Secret::new("0123456789"));
    let err = spur_collector::api::App::new(short, &Default::default()).expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("confirm.key"), "{text}");
    assert!(!text.contains("0123456789"), "{text}");
}

/// A website's `identify` and `consent` cannot confirm: `confirmation`, `method` and
/// `grant_seq` are cleared before the records are produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websites_cannot_send_the_confirmation_evidence() {
    let h = Harness::start(keyed()).await;
    let (visitor, a, b) = (format!("forger-{}", eid()), eid(), eid());
    let claim = json!({"purposes": ["marketing"], "text": "Send me news",
                       "confirmation": true, "method": DOUBLE_OPT_IN_METHOD, "grant_seq": 7});
    let body = json!({
        "site": "shop", "visitor_id": visitor,
        "consent": {"analytics": true, "marketing": true},
        "events": [
            {"type": "identify", "id": a, "email": "forger@example.com", "evidence": claim},
            {"type": "consent", "id": b, "purposes": {"marketing": "granted"}, "evidence": claim},
        ]
    });
    let r = h.send(Req::batch(body)).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.json()["accepted"], 2);
    let records = records_of(&h, &visitor, 2, Duration::from_secs(20)).await;
    assert_eq!(records.len(), 2, "{records:?}");
    for record in &records {
        assert_eq!(
            record["data"]["evidence"],
            json!({"purposes": ["marketing"], "text": "Send me news"}),
            "{record}"
        );
        let raw = record.to_string();
        assert!(!raw.contains("confirmation"), "{raw}");
        assert!(!raw.contains("grant_seq"), "{raw}");
        assert!(!raw.contains(DOUBLE_OPT_IN_METHOD), "{raw}");
    }
    h.stop().await;
}
