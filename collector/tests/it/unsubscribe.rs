//! One-click unsubscribe (RFC 8058, `POST /v1/unsubscribe?token=…`): a valid token and
//! body give 200 and exactly one withdrawal on the events topic, after the broker
//! acknowledged it; forged tokens, opened links and wrong bodies change nothing; a
//! down broker gets 503 with `Retry-After`; without a key the endpoint does not exist.

use std::time::{Duration, Instant};

use serde_json::json;
use spur_collector::config::Config;
use spur_schemas::Secret;
use spur_schemas::unsubscribe::{UNSUBSCRIBE_METHOD, token};

use crate::common::*;

const KEY: &str = "it-unsubscribe-key-0123456789abcdef0123";
const UA_THUNDERBIRD: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.5.0";
const FORM: &str = "application/x-www-form-urlencoded";
const ONE_CLICK: &[u8] = b"List-Unsubscribe=One-Click";

fn keyed() -> Config {
    let mut config = config();
    config.unsubscribe.key = Some(Secret::new(KEY));
    config
}

/// A subject id unique to the calling test, so records can be told apart.
fn subject() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn link(subject: &str) -> String {
    let token = token(KEY.as_bytes(), subject).expect("token");
    format!("/v1/unsubscribe?token={token}")
}

/// The POST a mail client sends, from a client address that must not be stored.
fn one_click(path: &str, content_type: &str, body: &[u8]) -> Req {
    Req {
        method: "POST",
        path: path.into(),
        headers: vec![
            ("content-type".into(), content_type.into()),
            ("user-agent".into(), UA_THUNDERBIRD.into()),
            ("x-forwarded-for".into(), "198.51.100.20".into()),
        ],
        body: body.to_vec(),
    }
}

/// The records on the events topic that name `subject`, read until `want` were seen or
/// `timeout` passed.
async fn records_of(h: &Harness, subject: &str, want: usize, timeout: Duration) -> Vec<String> {
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
    .into_iter()
    .map(|r| r.to_string())
    .collect()
}

fn assert_no_client_data(record: &str) {
    for leak in [
        "198.51.100.20",
        "127.0.0.1",
        "Thunderbird",
        "Mozilla",
        "Gecko",
    ] {
        assert!(!record.contains(leak), "{leak} in {record}");
    }
    // Nothing shaped like a dotted IPv4 address anywhere.
    let dotted = record
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .any(|w| w.split('.').count() == 4 && w.split('.').all(|p| !p.is_empty()));
    assert!(!dotted, "an IPv4-looking value in {record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_token_gives_200_and_one_acknowledged_withdrawal() {
    let h = Harness::start(keyed()).await;
    let who = subject();
    let r = h.send(one_click(&link(&who), FORM, ONE_CLICK)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json(), json!({"unsubscribed": true}));
    for header in [
        "set-cookie",
        "access-control-allow-origin",
        "access-control-allow-credentials",
    ] {
        assert!(!r.headers.contains_key(header), "{header}");
    }

    // Wait for two for a while: there must be exactly one.
    let records = records_of(&h, &who, 2, Duration::from_secs(5)).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let raw = &records[0];
    assert_no_client_data(raw);
    let record: serde_json::Value = serde_json::from_str(raw).expect("json");
    assert_eq!(record["v"], 1);
    assert_eq!(record["type"], "consent");
    assert_eq!(record["site_id"], "");
    assert_eq!(record["_key"], format!(":{who}"));
    assert_eq!(record["visitor"], json!({"kind": "subject", "id": who}));
    assert_eq!(
        record["data"]["purposes"],
        json!({"marketing": "withdrawn"})
    );
    assert_eq!(
        record["data"]["evidence"],
        json!({"purposes": ["marketing"], "method": UNSUBSCRIBE_METHOD})
    );
    assert_eq!(
        record["consent"],
        json!({"analytics": false, "marketing": false})
    );
    assert_eq!(record["geo"], json!({"country": null, "region": null}));
    assert_eq!(record["agent"]["browser"], "");
    assert_eq!(record["agent"]["bot"], serde_json::Value::Null);
    assert!(record.get("page").is_none());
    assert_eq!(record["received_at"], record["event_time"]);
    let received = record["received_at"].as_i64().expect("ms");
    assert!((received - now_ms()).abs() < 60_000, "{received}");
    assert_eq!(record["event_id"].as_str().map(str::len), Some(32));

    // Counted as requests of its own endpoint; the per-site event accounting (received
    // = accepted + dead-lettered + dropped) is untouched, as there is no site.
    assert_eq!(
        h.metric(
            "spur_collector_requests_total",
            &[("endpoint", "unsubscribe"), ("status", "200")]
        ),
        1.0
    );
    for counter in [
        "spur_collector_events_received_total",
        "spur_collector_events_accepted_total",
        "spur_collector_events_dropped_total",
        "spur_collector_events_dead_lettered_total",
    ] {
        assert_eq!(h.metric(counter, &[]), 0.0, "{counter}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_and_repeated_posts_each_give_a_withdrawal() {
    let h = Harness::start(keyed()).await;
    let who = subject();
    let multipart = b"--b0undary\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--b0undary--\r\n";
    let r = h
        .send(one_click(
            &link(&who),
            "multipart/form-data; boundary=b0undary",
            multipart,
        ))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Idempotent for the subject: a repeat is one more withdrawal, not an error.
    let r = h.send(one_click(&link(&who), FORM, ONE_CLICK)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let records = records_of(&h, &who, 3, Duration::from_secs(5)).await;
    assert_eq!(records.len(), 2, "{records:?}");
    let ids: std::collections::HashSet<String> = records
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(r).expect("json");
            assert_eq!(v["data"]["purposes"]["marketing"], "withdrawn");
            v["event_id"].as_str().expect("id").to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 2, "each withdrawal has its own event id");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_missing_tokens_get_403_and_produce_nothing() {
    let h = Harness::start(keyed()).await;
    let who = subject();
    let good = token(KEY.as_bytes(), &who).expect("token");
    // One character changed, at the start (the subject) and at the end (the tag).
    let mut forged = Vec::new();
    for at in [0, good.len() / 2, good.len() - 1] {
        let mut bytes = good.clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        forged.push(String::from_utf8(bytes).expect("ascii"));
    }
    let other_key = token(b"another-key-of-sufficient-length-0123456789", &who).expect("token");
    let mut paths: Vec<String> = forged
        .iter()
        .chain([&other_key])
        .map(|t| format!("/v1/unsubscribe?token={t}"))
        .collect();
    paths.extend([
        "/v1/unsubscribe".to_owned(),
        "/v1/unsubscribe?token=".to_owned(),
        format!("/v1/unsubscribe?token={good}="),
        format!("/v1/unsubscribe?token={who}"),
        "/v1/unsubscribe?token=%00%ff".to_owned(),
    ]);
    let mut answers = Vec::new();
    for path in &paths {
        let r = h.send(one_click(path, FORM, ONE_CLICK)).await;
        assert_eq!(r.status, 403, "{path}: {:?}", r.body);
        answers.push(r.body);
    }
    // One answer for every kind of bad token: nothing tells which part was wrong.
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    let body: serde_json::Value = serde_json::from_slice(&answers[0]).expect("json");
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(
        h.metric(
            "spur_collector_requests_total",
            &[("endpoint", "unsubscribe"), ("status", "403")]
        ),
        paths.len() as f64
    );
    let records = records_of(&h, &who, 1, Duration::from_secs(3)).await;
    assert!(records.is_empty(), "{records:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_the_link_does_not_unsubscribe() {
    let h = Harness::start(keyed()).await;
    let who = subject();
    for method in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"] {
        let r = h
            .send(Req {
                method,
                ..Req::get(&link(&who))
            })
            .await;
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.headers.get("allow").map(String::as_str), Some("POST"));
        assert!(!r.headers.contains_key("access-control-allow-origin"));
        if method == "GET" {
            assert_eq!(r.json()["error"], "method_not_allowed");
        }
    }
    let records = records_of(&h, &who, 1, Duration::from_secs(3)).await;
    assert!(records.is_empty(), "{records:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bodies_get_400_or_413_and_produce_nothing() {
    let h = Harness::start(keyed()).await;
    let who = subject();
    let path = link(&who);
    for (content_type, body) in [
        (FORM, &b""[..]),
        (FORM, b"List-Unsubscribe=Two-Clicks"),
        (FORM, b"Unsubscribe=One-Click"),
        ("application/json", b"{\"List-Unsubscribe\":\"One-Click\"}"),
        ("text/plain", ONE_CLICK),
        ("multipart/form-data", ONE_CLICK),
        (
            "multipart/form-data; boundary=b",
            b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nOne-Click\r\n--b--\r\n",
        ),
    ] {
        let r = h.send(one_click(&path, content_type, body)).await;
        assert_eq!(r.status, 400, "{content_type} {body:?}");
        assert_eq!(r.json()["error"], "not_one_click");
    }
    let mut big = ONE_CLICK.to_vec();
    big.extend(std::iter::repeat_n(b'&', 2000));
    let r = h.send(one_click(&path, FORM, &big)).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "body_too_large");
    let records = records_of(&h, &who, 1, Duration::from_secs(3)).await;
    assert!(records.is_empty(), "{records:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_trouble_gets_503_with_retry_after() {
    let h = Harness::start(keyed()).await;
    let who = subject();

    // Slow broker: no acknowledgement within the ack timeout.
    h.mock
        .broker_round_trip_time(1, Duration::from_secs(30))
        .expect("rtt");
    let started = Instant::now();
    let r = h.send(one_click(&link(&who), FORM, ONE_CLICK)).await;
    assert!(started.elapsed() < Duration::from_secs(12), "bounded");
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.json()["error"], "not_acknowledged");
    assert_eq!(r.headers.get("retry-after").map(String::as_str), Some("3"));
    h.mock
        .broker_round_trip_time(1, Duration::ZERO)
        .expect("rtt");
    h.wait_ready(true).await;

    // Broker down: refused at once, nothing enqueued.
    h.mock.broker_down(1).expect("down");
    h.wait_ready(false).await;
    let r = h.send(one_click(&link(&who), FORM, ONE_CLICK)).await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.json()["error"], "broker_unavailable");
    assert_eq!(r.headers.get("retry-after").map(String::as_str), Some("3"));

    // Back: the mail client's retry succeeds and the withdrawal is stored.
    h.mock.broker_up(1).expect("up");
    h.wait_ready(true).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = h.send(one_click(&link(&who), FORM, ONE_CLICK)).await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{:?}", r.body);
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // At least the acknowledged one; the slow broker's record may have landed too
    // (the same at-least-once as tracking events).
    let records = records_of(&h, &who, 1, Duration::from_secs(20)).await;
    assert!(!records.is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_the_endpoint_is_404() {
    let h = Harness::start(config()).await;
    let who = subject();
    for method in ["POST", "GET"] {
        let r = h
            .send(Req {
                method,
                ..one_click(&link(&who), FORM, ONE_CLICK)
            })
            .await;
        assert_eq!(r.status, 404, "{method}");
        assert_eq!(r.json()["error"], "unsubscribe_disabled");
    }
    h.stop().await;

    // A key too short to be secret is a configuration error, not a weak endpoint.
    let mut short = config();
    short.unsubscribe.key = Some(Secret::new("0123456789"));
    let err = spur_collector::api::App::new(short, &Default::default()).expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("unsubscribe.key"), "{text}");
    assert!(
        !text.contains("0123456789"),
        "the key must not be shown: {text}"
    );
}
