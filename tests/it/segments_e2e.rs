//! The whole pipeline against a real broker: collector → processor → lake → segment
//! service → topic `spur.segments.v1`, with single opt-in (`lifecycle.double_opt_in =
//! false`; the double opt-in is `mailing_e2e`). A visitor signs up with marketing
//! consent and reads about boots: it enters `boot_fans`; it withdraws consent: it
//! leaves; it consents again: it re-enters, with a one-click unsubscribe link; the
//! link is used (RFC 8058 POST to the collector): it leaves, reason `unsubscribed`,
//! and more reading triggers nothing. Another visitor reads the same without
//! marketing consent and never appears. The latency from the collector's
//! acknowledgement to the change on the topic is printed.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::client::{Req, eid, read_topic};
use crate::harness::{Broker, Process, Spur, spur_once};

const TOPIC: &str = "spur.segments.v1";
const UNSUBSCRIBE_KEY: &str = "e2e-unsubscribe-key-0123456789abcdef0123456789abcdef";

fn pipeline_config(dir: &Path) -> String {
    // The harness appends this right after `[collector.privacy]`.
    format!(
        r#"
[unsubscribe]
key = "{UNSUBSCRIBE_KEY}"
url = "http://collector.example/v1/unsubscribe"

[lake]
root = "{lake}"

# Single opt-in here: this test is about segment changes on the topic; the double
# opt-in through the signed link is `mailing_e2e`.
[lifecycle]
double_opt_in = false

[keys]
dir = "{keys}"

[processor]
group_id = "segments-e2e"
flush_interval = "200ms"
listen = "127.0.0.1:0"

[segments]
interval = "200ms"
state_dir = "{state}"
listen = "127.0.0.1:0"
topic_partitions = 3

[[segments.define]]
name = "boot_fans"
where = "interest['boots'] >= 0.2"
"#,
        lake = dir.join("lake").display(),
        keys = dir.join("keys").display(),
        state = dir.join("state").display(),
    )
}

/// Four boots pages sent at once and a sign-up. The session is still open, so the
/// dwell times are unknown (weight 1 each): interest in boots 4 / 9 ≈ 0.44.
fn reading(visitor: &str, marketing: bool) -> serde_json::Value {
    let mut events: Vec<_> = (0..4)
        .map(|i| {
            serde_json::json!({"type": "pageview", "id": eid(),
                "url": format!("https://shop.example/boots/{i}"), "topics": ["boots"]})
        })
        .collect();
    let purposes = if marketing {
        serde_json::json!(["analytics", "marketing"])
    } else {
        serde_json::json!(["analytics"])
    };
    events.push(serde_json::json!({"type": "identify", "id": eid(),
        "url": "https://shop.example/newsletter",
        "email": format!("{visitor}@example.com"), "form": "newsletter",
        // Sent after the double opt-in click when marketing was asked for.
        "evidence": {"purposes": purposes, "text": "Send me news about boots",
                     "policy_version": "2026-01", "confirmation": marketing}}));
    serde_json::json!({"site": "shop", "visitor_id": visitor,
        "consent": {"analytics": true, "marketing": marketing}, "events": events})
}

/// Waits for the `n`-th record of the topic (all of them, from the beginning).
fn wait_for_records(brokers: &str, n: usize) -> Vec<serde_json::Value> {
    read_topic(brokers, TOPIC, "segment.", n, Duration::from_secs(120))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_change_reaches_the_topic_within_seconds_of_the_event() {
    let dir = crate::harness::workdir();
    // A broker of its own: the shared one carries other tests' events.
    let broker = Broker::embedded(dir.path());
    let brokers = broker.brokers();
    let collector = Spur::start(dir.path(), &brokers, &pipeline_config(dir.path())).await;
    let keys = spur_once(dir.path(), &["keys", "init"]);
    assert!(keys.status.success(), "keys init: {keys:?}");
    let mut processor = Process::spawn(dir.path(), &["process"], "processor.log");
    let mut segments = Process::spawn(dir.path(), &["segments"], "segments.log");

    // The segment service needs the lake the processor creates: wait for its first
    // evaluation before starting the clock.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(dir.path().join("segments.log"))
        .unwrap_or_default()
        .contains("segment service started")
    {
        assert!(
            !segments.exited(),
            "segment service exited: {}",
            std::fs::read_to_string(dir.path().join("segments.log")).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "segment service never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let without = collector.send(Req::batch(reading("e2e-bob", false))).await;
    assert_eq!(without.status, 202);
    let with = collector.send(Req::batch(reading("e2e-alice", true))).await;
    assert_eq!(with.status, 202);
    let accepted = Instant::now();
    let records = tokio::task::spawn_blocking({
        let brokers = brokers.clone();
        move || wait_for_records(&brokers, 1)
    })
    .await
    .expect("reader");
    let enter_latency = accepted.elapsed();
    assert_eq!(
        records.len(),
        1,
        "no segment.entered; segments log:\n{}",
        std::fs::read_to_string(dir.path().join("segments.log")).unwrap_or_default()
    );
    assert_eq!(records[0]["type"], "segment.entered");
    assert_eq!(records[0]["data"]["segment"], "boot_fans");
    let alice = records[0]["data"]["subject_id"]
        .as_str()
        .expect("subject")
        .to_owned();
    assert!(
        alice.len() == 32 && alice.bytes().all(|b| b.is_ascii_hexdigit()),
        "an e-mail pseudonym, never the address: {alice}"
    );

    let withdraw = serde_json::json!({"site": "shop", "visitor_id": "e2e-alice",
        "consent": {"analytics": true, "marketing": false},
        "events": [{"type": "consent", "id": eid(), "purposes": {"marketing": "withdrawn"}}]});
    assert_eq!(collector.send(Req::batch(withdraw)).await.status, 202);
    let accepted = Instant::now();
    let records = tokio::task::spawn_blocking({
        let brokers = brokers.clone();
        move || wait_for_records(&brokers, 2)
    })
    .await
    .expect("reader");
    let exit_latency = accepted.elapsed();
    assert_eq!(records.len(), 2, "no segment.exited");
    assert_eq!(records[1]["type"], "segment.exited");
    assert_eq!(records[1]["data"]["reason"], "consent_withdrawn");
    assert_eq!(records[1]["data"]["subject_id"], alice.as_str());
    println!(
        "segment change latency (collector 202 → record on {TOPIC}; processor flush 200 ms, \
         segment interval 200 ms): entered {:.2} s, exited {:.2} s",
        enter_latency.as_secs_f64(),
        exit_latency.as_secs_f64()
    );

    // Consent again (confirmed): back in, with the one-click unsubscribe link.
    let regrant = serde_json::json!({"site": "shop", "visitor_id": "e2e-alice",
        "consent": {"analytics": true, "marketing": true},
        "events": [{"type": "consent", "id": eid(), "purposes": {"marketing": "granted"},
                    "evidence": {"purposes": ["marketing"], "confirmation": true}}]});
    assert_eq!(collector.send(Req::batch(regrant)).await.status, 202);
    let records = tokio::task::spawn_blocking({
        let brokers = brokers.clone();
        move || wait_for_records(&brokers, 3)
    })
    .await
    .expect("reader");
    assert_eq!(records.len(), 3, "no re-entry");
    assert_eq!(records[2]["type"], "segment.entered");
    let link = records[2]["data"]["unsubscribe_url"]
        .as_str()
        .expect("the change carries the unsubscribe link")
        .to_owned();
    let path = link
        .strip_prefix("http://collector.example")
        .expect("link under the configured base");

    // The mail client's one-click POST (RFC 8058).
    let mut post = Req::get(path);
    post.method = "POST";
    post.headers = vec![(
        "content-type".into(),
        "application/x-www-form-urlencoded".into(),
    )];
    post.body = b"List-Unsubscribe=One-Click".to_vec();
    let reply = collector.send(post).await;
    assert_eq!(reply.status, 200, "unsubscribe refused");
    let unsubscribed = Instant::now();
    let records = tokio::task::spawn_blocking({
        let brokers = brokers.clone();
        move || wait_for_records(&brokers, 4)
    })
    .await
    .expect("reader");
    assert_eq!(records.len(), 4, "no exit after the unsubscribe");
    assert_eq!(records[3]["type"], "segment.exited");
    assert_eq!(records[3]["data"]["reason"], "unsubscribed");
    assert_eq!(records[3]["data"]["subject_id"], alice.as_str());
    println!(
        "one-click unsubscribe: collector 200 → segment.exited on {TOPIC} in {:.2} s",
        unsubscribed.elapsed().as_secs_f64()
    );

    // More reading after the unsubscribe triggers no mailing change, nor does bob's
    // (he never had marketing consent).
    assert_eq!(
        collector
            .send(Req::batch(reading("e2e-alice-more", false)))
            .await
            .status,
        202
    );
    let more = serde_json::json!({"site": "shop", "visitor_id": "e2e-alice",
        "consent": {"analytics": true, "marketing": false},
        "events": [{"type": "pageview", "id": eid(),
                    "url": "https://shop.example/boots/9", "topics": ["boots"]}]});
    assert_eq!(collector.send(Req::batch(more)).await.status, 202);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = read_topic(&brokers, TOPIC, "segment.", 5, Duration::from_secs(3));
    assert_eq!(all.len(), 4, "unexpected changes: {all:?}");
    assert!(!segments.exited(), "segment service died");
    assert!(!processor.exited(), "processor died");
    segments.kill();
}
