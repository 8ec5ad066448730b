//! Events in, records out: every field as specified; invalid events dead-lettered
//! with their reason while the rest go through; the counters add up.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_lands_on_topics_with_every_field_and_counters_add_up() {
    let h = Harness::start(config()).await;
    let sent_at = now_ms();
    let ids: Vec<String> = (0..4).map(|_| eid()).collect();
    let body = json!({
        "site": "shop",
        "sent_at": sent_at,
        "consent": {"analytics": true, "marketing": true},
        "visitor_id": "visitor-0123456789",
        "events": [
            {"type": "pageview", "id": ids[0], "ts": sent_at - 1500,
             "url": "https://shop.example/boots?utm_source=mail&email=a%40b.c#top",
             "referrer": "https://search.example/?q=secret", "title": "Boots", "topics": ["Boots", "winter"]},
            {"type": "engagement", "id": ids[1], "ts": sent_at, "url": "https://shop.example/boots",
             "engaged_ms": 4200, "scroll_pct": 75},
            {"type": "identify", "id": ids[2], "email": "Alice@Example.com", "form": "newsletter",
             "evidence": {"purposes": ["marketing"], "text": "Send me news", "policy_version": "v3"}},
            {"type": "pageview", "id": ids[3], "url": "https://evil.example/"},
            {"type": "custom", "name": "x".repeat(100)},
        ]
    });
    let resp = h
        .send(Req::batch(body).header("x-forwarded-for", "198.51.100.20"))
        .await;
    assert_eq!(resp.status, 202, "{:?}", resp.body);
    let answer = resp.json();
    assert_eq!(answer["accepted"], 3);
    let dead = answer["dead_lettered"].as_array().expect("list");
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["index"], 3);
    assert_eq!(dead[0]["reason"], "host_not_allowed");
    assert_eq!(dead[1]["reason"], "invalid_field");

    let brokers = h.kafka.brokers.clone();
    let records = tokio::task::spawn_blocking(move || {
        read_topic(
            &brokers,
            spur_schemas::kafka::TOPIC_EVENTS,
            "visitor-0123456789",
            3,
            Duration::from_secs(20),
        )
    })
    .await
    .expect("reader");
    assert_eq!(records.len(), 3);
    let by_id = |id: &str| {
        records
            .iter()
            .find(|r| r["event_id"] == id)
            .expect("record present")
            .clone()
    };

    let pv = by_id(&ids[0]);
    assert_eq!(pv["v"], 1);
    assert_eq!(pv["type"], "pageview");
    assert_eq!(pv["site_id"], "shop");
    assert_eq!(pv["_key"], "shop:visitor-0123456789");
    assert_eq!(
        pv["visitor"],
        json!({"kind": "persistent", "id": "visitor-0123456789"})
    );
    assert_eq!(pv["consent"], json!({"analytics": true, "marketing": true}));
    assert_eq!(pv["signals"], json!({"gpc": false, "dnt": false}));
    assert_eq!(
        pv["page"]["url"],
        "https://shop.example/boots?utm_source=mail"
    );
    assert_eq!(pv["page"]["host"], "shop.example");
    assert_eq!(pv["page"]["path"], "/boots");
    assert_eq!(pv["page"]["referrer"], "https://search.example/");
    assert_eq!(pv["page"]["title"], "Boots");
    assert_eq!(pv["page"]["topics"], json!(["boots", "winter"]));
    assert_eq!(pv["agent"]["browser"], "Chrome");
    assert_eq!(pv["agent"]["device"], "desktop");
    assert_eq!(pv["agent"]["bot"], serde_json::Value::Null);
    let received = pv["received_at"].as_i64().expect("received_at");
    assert!((received - sent_at).abs() < 60_000);
    assert_eq!(
        pv["event_time"].as_i64(),
        Some(received - 1500),
        "placed by the offset from sent_at"
    );
    assert_eq!(pv["client_ts"].as_i64(), Some(sent_at - 1500));
    assert!(pv.get("time_flags").is_none());

    let eng = by_id(&ids[1]);
    assert_eq!(eng["type"], "engagement");
    assert_eq!(eng["data"], json!({"engaged_ms": 4200, "scroll_pct": 75}));

    let ident = by_id(&ids[2]);
    assert_eq!(ident["type"], "identify");
    assert_eq!(ident["data"]["email"], "alice@example.com");
    assert_eq!(ident["data"]["evidence"]["policy_version"], "v3");

    for r in &records {
        let text = r.to_string();
        assert!(!text.contains("198.51.100.20"), "no IP in records: {text}");
        assert!(!text.contains("secret"), "referrer query stripped");
    }

    let brokers = h.kafka.brokers.clone();
    let dead = tokio::task::spawn_blocking(move || {
        read_topic(
            &brokers,
            spur_schemas::kafka::TOPIC_DEAD_LETTER,
            "\"shop\"",
            2,
            Duration::from_secs(20),
        )
    })
    .await
    .expect("reader");
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["reason"], "host_not_allowed");
    assert_eq!(dead[0]["event_id"], ids[3].as_str());
    assert_eq!(dead[0]["event_type"], "pageview");
    assert_eq!(dead[0]["stage"], "collector");
    assert_eq!(dead[1]["reason"], "invalid_field");
    assert_eq!(dead[1]["detail"], "name: not 1-64 of [A-Za-z0-9_.:-/ ]");
    assert!(
        !dead.iter().any(|d| d.to_string().contains("evil.example")),
        "no values in dead letters"
    );

    // received = accepted + dead-lettered + dropped, per site.
    let site = [("site", "shop")];
    assert_eq!(h.metric("spur_collector_events_received_total", &site), 5.0);
    assert_eq!(h.metric("spur_collector_events_accepted_total", &site), 3.0);
    assert_eq!(
        h.metric("spur_collector_events_dead_lettered_total", &site),
        2.0
    );
    assert_eq!(h.metric("spur_collector_events_dropped_total", &site), 0.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounting_adds_up_across_refusals() {
    let mut cfg = config();
    cfg.limits.max_events_per_batch = 3;
    let h = Harness::start(cfg).await;
    let pv = || json!({"type": "pageview", "url": "https://shop.example/"});
    let mut sent = 0u32;
    let mut send = async |body: serde_json::Value, origin: &str| {
        sent += body["events"].as_array().map_or(0, |e| e.len() as u32);
        h.send(Req::batch(body).header("origin", origin))
            .await
            .status
    };
    assert_eq!(
        send(
            json!({"site": "shop", "events": [pv(), pv()]}),
            "https://shop.example"
        )
        .await,
        202
    );
    assert_eq!(
        send(
            json!({"site": "nope", "events": [pv()]}),
            "https://shop.example"
        )
        .await,
        403
    );
    assert_eq!(
        send(
            json!({"site": "shop", "events": [pv()]}),
            "https://evil.example"
        )
        .await,
        403
    );
    assert_eq!(
        send(
            json!({"site": "shop", "events": [pv(), pv(), pv(), pv()]}),
            "https://shop.example"
        )
        .await,
        413
    );
    assert_eq!(
        send(
            json!({"site": "shop", "events": [pv(), {"type": "nope"}]}),
            "https://shop.example"
        )
        .await,
        202
    );

    let m = |name: &str| h.metric(name, &[]);
    let received = m("spur_collector_events_received_total");
    let accepted = m("spur_collector_events_accepted_total");
    let dead = m("spur_collector_events_dead_lettered_total");
    let dropped = m("spur_collector_events_dropped_total");
    assert_eq!(received, f64::from(sent));
    assert_eq!(
        received,
        accepted + dead + dropped,
        "received = accepted + dead-lettered + dropped"
    );
    assert_eq!(accepted, 3.0);
    assert_eq!(dead, 1.0);
    assert_eq!(
        h.metric(
            "spur_collector_events_dropped_total",
            &[("reason", "unknown_site"), ("site", "unknown")]
        ),
        1.0
    );
    assert_eq!(
        h.metric(
            "spur_collector_events_dropped_total",
            &[("reason", "origin_not_allowed")]
        ),
        1.0
    );
    assert_eq!(
        h.metric(
            "spur_collector_events_dropped_total",
            &[("reason", "batch_too_large")]
        ),
        4.0
    );
    // A client cannot mint label values.
    assert!(!h.app.metrics.render().contains("nope"));
    h.stop().await;
}
