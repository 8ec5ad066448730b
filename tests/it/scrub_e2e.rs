//! Personal data typed into free text, end to end: a website sends an e-mail address
//! in a URL path, a title and a referrer, a phone number in the title, and an
//! address, IBAN and card number in a purchase's properties. `spur collect` →
//! the broker → `spur process` → the lake: no topic record and no lake column holds any of
//! them, the events themselves are stored (marker in the path, the purchase value),
//! flagged `redacted`, and counted by field and kind.

use std::path::Path;
use std::time::{Duration, Instant};

use datafusion::arrow::util::pretty::pretty_format_batches;
use serde_json::json;
use spur_lake::Lake;
use spur_schemas::kafka::{TOPIC_DEAD_LETTER, TOPIC_EVENTS};

use crate::client::{Req, eid, metric, read_topic};
use crate::harness::{Broker, Process, Spur, spur_once};

/// Every spelling of the personal data the site sends, as it could survive.
const SECRETS: &[&str] = &[
    "alice@example.com",
    "alice%40example.com",
    "alice",
    "+49 170 5550123",
    "170 5550123",
    "5550123",
    "DE89 3704 0044 0532 0130 00",
    "DE89370400440532013000",
    "4111 1111 1111 1111",
    "4111111111111111",
];

fn config(dir: &Path) -> String {
    format!(
        "\n[lake]\nroot = \"{}\"\n\n[keys]\ndir = \"{}\"\n\n[processor]\ngroup_id = \"scrub-e2e\"\nflush_interval = \"300ms\"\nlisten = \"127.0.0.1:0\"\n",
        dir.join("lake").display(),
        dir.join("keys").display()
    )
}

/// A query's rows over the lake, as a text table, and their number; `None` while
/// the lake cannot be read yet.
async fn lake_text(lake: &Path, sql: &str) -> Option<(usize, String)> {
    let lake = Lake::open(&lake.display().to_string()).await.ok()?;
    let ctx = lake.session_context().await.ok()?;
    let batches = ctx.sql(sql).await.ok()?.collect().await.ok()?;
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    let text = pretty_format_batches(&batches).ok()?.to_string();
    Some((rows, text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_in_free_text_reaches_no_topic_and_no_lake_column() {
    let dir = crate::harness::workdir();
    let broker = Broker::embedded(dir.path());
    let brokers = broker.brokers();
    let collector = Spur::start(dir.path(), &brokers, &config(dir.path())).await;
    let keys = spur_once(dir.path(), &["keys", "init"]);
    assert!(keys.status.success(), "keys init: {keys:?}");
    let mut processor = Process::spawn(dir.path(), &["process"], "processor.log");

    let (view, purchase, signup) = (eid(), eid(), eid());
    let body = json!({
        "site": "shop", "visitor_id": "scrub-e2e-visitor",
        "consent": {"analytics": true, "marketing": false},
        "events": [
            {"type": "pageview", "id": view,
             "url": "https://shop.example/account/alice@example.com/orders?utm_content=alice%40example.com",
             "title": "Welcome back, alice@example.com | call +49 170 5550123",
             "referrer": "https://webmail.example/mail/alice@example.com/inbox",
             "topics": ["account"]},
            {"type": "custom", "id": purchase, "name": "purchase",
             "url": "https://shop.example/checkout/done",
             "props": {"contact": "alice@example.com", "iban": "DE89 3704 0044 0532 0130 00",
                       "note": "card 4111 1111 1111 1111", "value": 42}},
            // An identify keeps its address (pseudonymised downstream by design),
            // its other free text is scrubbed like any event's.
            {"type": "identify", "id": signup, "email": "alice@example.com", "form": "newsletter",
             "url": "https://shop.example/newsletter/alice@example.com",
             "title": "Thanks alice@example.com"},
        ]
    });
    let resp = collector.send(Req::batch(body)).await;
    assert_eq!(resp.status, 202, "{:?}", resp.body);
    assert_eq!(resp.json()["accepted"], 3, "{:?}", resp.body);

    // 1. The raw topic: three records, none with the data, the first two flagged.
    let records = tokio::task::spawn_blocking({
        let brokers = brokers.clone();
        move || read_topic(&brokers, TOPIC_EVENTS, "", 3, Duration::from_secs(30))
    })
    .await
    .expect("reader");
    assert_eq!(records.len(), 3, "{records:?}");
    let by_id = |id: &str| {
        records
            .iter()
            .find(|r| r["event_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no record {id}"))
    };
    let v = by_id(&view);
    assert_eq!(v["page"]["path"], "/account/[email]/orders", "{v}");
    assert_eq!(
        v["page"]["title"], "Welcome back, [email] | call [phone]",
        "{v}"
    );
    assert_eq!(
        v["page"]["referrer"],
        "https://webmail.example/mail/[email]/inbox"
    );
    assert_eq!(v["redacted"], true);
    let p = by_id(&purchase);
    assert_eq!(
        p["data"]["props"],
        json!({"contact": "[email]", "note": "card [card]", "value": 42}),
        "{p}"
    );
    assert_eq!(p["redacted"], true);
    let s = by_id(&signup);
    assert_eq!(s["page"]["title"], "Thanks [email]", "{s}");
    assert_eq!(s["page"]["path"], "/newsletter/[email]", "{s}");
    for record in &records {
        let mut text = record.to_string();
        if record["event_id"] == signup.as_str() {
            // The one field that keeps the address: identify's `email`.
            assert_eq!(record["data"]["email"], "alice@example.com");
            text = text.replace("\"email\":\"alice@example.com\"", "");
        }
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret:?} on the topic: {text}");
        }
    }
    let dead = tokio::task::spawn_blocking({
        let brokers = brokers.clone();
        move || read_topic(&brokers, TOPIC_DEAD_LETTER, "", 1, Duration::from_secs(3))
    })
    .await
    .expect("reader");
    assert!(dead.is_empty(), "dead letters: {dead:?}");

    // 2. The lake: every column of every row, the identify's address pseudonymised.
    let lake = dir.path().join("lake");
    let deadline = Instant::now() + Duration::from_secs(120);
    let text = loop {
        if let Some((3, text)) = lake_text(&lake, "SELECT * FROM events").await {
            break text;
        }
        assert!(
            Instant::now() < deadline && !processor.exited(),
            "the lake never held 3 events; processor log:\n{}",
            std::fs::read_to_string(dir.path().join("processor.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret:?} in the lake:\n{text}");
    }
    let (_, stored) = lake_text(
        &lake,
        "SELECT path, redacted, props FROM events WHERE event_type <> 'identify' ORDER BY path",
    )
    .await
    .expect("lake");
    assert!(stored.contains("/account/[email]/orders"), "{stored}");
    assert!(stored.contains("\"value\":42"), "{stored}");
    assert!(!stored.contains("false"), "{stored}");

    // 3. The counters say where and what, never the value.
    let metrics =
        String::from_utf8_lossy(&collector.send(Req::get("/metrics")).await.body).into_owned();
    let count = |field: &str, kind: &str| {
        metric(
            &metrics,
            "spur_collector_redactions_total",
            &[("field", field), ("kind", kind)],
        )
    };
    assert_eq!(count("path", "email"), 2.0, "{metrics}");
    assert_eq!(count("query", "email"), 1.0);
    assert_eq!(count("title", "email"), 2.0);
    assert_eq!(count("title", "phone"), 1.0);
    assert_eq!(count("referrer", "email"), 1.0);
    assert_eq!(count("props", "email"), 1.0);
    assert_eq!(count("props", "card"), 1.0);
    assert_eq!(count("props", "property"), 1.0);
    assert!(!metrics.contains("alice"));
    processor.kill();
}
