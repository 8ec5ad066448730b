//! Consent at the door: no analytics consent means no persistent id; a malformed
//! visitor id is dead-lettered, never replaced; `Sec-GPC` and DNT remove the marketing
//! purpose; unknown sites and foreign origins are refused, forged origins do not
//! smuggle in foreign pages.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

async fn records_for(h: &Harness, marker: &str, want: usize) -> Vec<serde_json::Value> {
    let brokers = h.kafka.brokers.clone();
    let marker = marker.to_owned();
    tokio::task::spawn_blocking(move || {
        read_topic(
            &brokers,
            spur_schemas::kafka::TOPIC_EVENTS,
            &marker,
            want,
            Duration::from_secs(20),
        )
    })
    .await
    .expect("reader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_analytics_consent_there_is_no_persistent_id() {
    let h = Harness::start(config()).await;
    let (a, b, c) = (eid(), eid(), eid());
    let pv = |id: &str| json!({"type": "pageview", "id": id, "url": "https://shop.example/"});
    // No consent object at all, and an explicit refusal: the client's id is ignored.
    for (consent, id) in [
        (None, &a),
        (Some(json!({"analytics": false, "marketing": true})), &b),
    ] {
        let mut body =
            json!({"site": "shop", "visitor_id": "tracker-id-should-vanish", "events": [pv(id)]});
        if let Some(consent) = consent {
            body["consent"] = consent;
        }
        assert_eq!(
            h.send(Req::batch(body).header("x-forwarded-for", "203.0.113.5"))
                .await
                .status,
            202
        );
    }
    // With consent the id is kept.
    let body = json!({"site": "shop", "visitor_id": "tracker-id-kept-01", "consent": {"analytics": true}, "events": [pv(&c)]});
    assert_eq!(h.send(Req::batch(body)).await.status, 202);

    for id in [&a, &b] {
        let r = records_for(&h, id, 1).await;
        assert_eq!(r.len(), 1, "{id}");
        assert_eq!(r[0]["visitor"]["kind"], "cookieless");
        let vid = r[0]["visitor"]["id"].as_str().expect("id");
        assert_eq!(vid.len(), 32);
        assert!(!r[0].to_string().contains("tracker-id-should-vanish"));
        assert!(!r[0].to_string().contains("203.0.113.5"));
    }
    // Same sender, same day: the two cookieless ids agree.
    let first = records_for(&h, &a, 1).await;
    let second = records_for(&h, &b, 1).await;
    assert_eq!(first[0]["visitor"]["id"], second[0]["visitor"]["id"]);
    assert_eq!(
        second[0]["consent"]["marketing"], true,
        "marketing consent is independent of analytics"
    );
    let with = records_for(&h, &c, 1).await;
    assert_eq!(
        with[0]["visitor"],
        json!({"kind": "persistent", "id": "tracker-id-kept-01"})
    );
    h.stop().await;
}

/// Regression (issue 11): a `visitor_id` that is present but malformed was silently
/// replaced by the cookieless id, merging unrelated visitors. Each event is now
/// dead-lettered as `invalid_visitor_id`, with or without analytics consent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_visitor_id_is_dead_lettered_not_merged() {
    let h = Harness::start(config()).await;
    let (a, b, c, d) = (eid(), eid(), eid(), eid());
    let pv = |id: &str| json!({"type": "pageview", "id": id, "url": "https://shop.example/"});
    let cases = [
        (json!({"analytics": true}), "short", &a, &b),
        (json!({"analytics": false}), "bad id with spaces", &c, &d),
    ];
    for (consent, visitor, first, second) in &cases {
        let body = json!({"site": "shop", "consent": consent, "visitor_id": visitor,
                          "events": [pv(first), pv(second), {"type": "pageview", "url": "https://evil.example/"}]});
        let r = h.send(Req::batch(body)).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        let answer = r.json();
        assert_eq!(answer["accepted"], 0, "{answer}");
        assert_eq!(
            answer["dead_lettered"],
            json!([
                {"index": 0, "reason": "invalid_visitor_id", "detail": "visitor_id: not 8-64 of [A-Za-z0-9_-]"},
                {"index": 1, "reason": "invalid_visitor_id", "detail": "visitor_id: not 8-64 of [A-Za-z0-9_-]"},
                {"index": 2, "reason": "host_not_allowed", "detail": "url: host not registered for the site"},
            ])
        );
    }
    let brokers = h.kafka.brokers.clone();
    let produced = tokio::task::spawn_blocking(move || {
        read_topic(
            &brokers,
            spur_schemas::kafka::TOPIC_EVENTS,
            "\"shop\"",
            usize::MAX,
            Duration::from_secs(3),
        )
    })
    .await
    .expect("reader");
    for id in [&a, &b, &c, &d] {
        assert!(
            !produced.iter().any(|r| r["event_id"] == id.as_str()),
            "{id} produced"
        );
    }
    // On the dead-letter topic, named by event id, without the visitor id.
    let brokers = h.kafka.brokers.clone();
    let marker = a.clone();
    let dead = tokio::task::spawn_blocking(move || {
        read_topic(
            &brokers,
            spur_schemas::kafka::TOPIC_DEAD_LETTER,
            &marker,
            1,
            Duration::from_secs(20),
        )
    })
    .await
    .expect("reader");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["reason"], "invalid_visitor_id");
    assert_eq!(dead[0]["event_type"], "pageview");
    assert_eq!(dead[0]["site_id"], "shop");
    assert!(!dead[0].to_string().contains("short"), "{}", dead[0]);
    assert_eq!(
        h.metric(
            "spur_collector_events_dead_lettered_total",
            &[("site", "shop"), ("reason", "invalid_visitor_id")]
        ),
        4.0
    );
    let site = [("site", "shop")];
    assert_eq!(h.metric("spur_collector_events_received_total", &site), 6.0);
    assert_eq!(
        h.metric("spur_collector_events_dead_lettered_total", &site),
        6.0
    );

    // No visitor id at all (the tracker before analytics consent), or null: the
    // cookieless id, as before.
    let (e, f) = (eid(), eid());
    for (id, body) in [
        (&e, json!({"site": "shop", "events": [pv(&e)]})),
        (
            &f,
            json!({"site": "shop", "visitor_id": null, "events": [pv(&f)]}),
        ),
    ] {
        let r = h.send(Req::batch(body)).await;
        assert_eq!(r.json()["accepted"], 1, "{:?}", r.body);
        let records = records_for(&h, id, 1).await;
        assert_eq!(records[0]["visitor"]["kind"], "cookieless");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpc_and_dnt_remove_the_marketing_purpose() {
    let h = Harness::start(config()).await;
    let (a, b, c) = (eid(), eid(), eid());
    let all = json!({"analytics": true, "marketing": true});
    for (id, header) in [
        (&a, ("sec-gpc", "1")),
        (&b, ("dnt", "1")),
        (&c, ("x-none", "1")),
    ] {
        let body = json!({"site": "shop", "consent": all, "visitor_id": "visitor-gpc-test",
                          "events": [{"type": "pageview", "id": id, "url": "https://shop.example/"}]});
        assert_eq!(
            h.send(Req::batch(body).header(header.0, header.1))
                .await
                .status,
            202
        );
    }
    let gpc = records_for(&h, &a, 1).await;
    assert_eq!(
        gpc[0]["consent"],
        json!({"analytics": true, "marketing": false})
    );
    assert_eq!(gpc[0]["signals"]["gpc"], true);
    let dnt = records_for(&h, &b, 1).await;
    assert_eq!(
        dnt[0]["consent"]["marketing"], false,
        "default DNT policy: no marketing"
    );
    assert_eq!(dnt[0]["signals"]["dnt"], true);
    let plain = records_for(&h, &c, 1).await;
    assert_eq!(plain[0]["consent"]["marketing"], true);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnt_drop_policy_stores_nothing() {
    let mut cfg = config();
    cfg.privacy.dnt = spur_collector::config::DntPolicy::Drop;
    let h = Harness::start(cfg).await;
    let id = eid();
    let body = json!({"site": "shop", "events": [{"type": "pageview", "id": id, "url": "https://shop.example/"}]});
    let resp = h.send(Req::batch(body).header("dnt", "1")).await;
    assert_eq!(resp.status, 202);
    assert_eq!(resp.json()["accepted"], 0);
    assert!(records_for(&h, &id, 1).await.is_empty());
    assert_eq!(
        h.metric(
            "spur_collector_events_dropped_total",
            &[("reason", "do_not_track")]
        ),
        1.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sites_and_foreign_origins_are_refused() {
    let h = Harness::start(config()).await;
    let pv = json!({"type": "pageview", "url": "https://shop.example/"});
    let unknown = h
        .send(Req::batch(json!({"site": "other", "events": [pv]})))
        .await;
    assert_eq!(unknown.status, 403);
    assert_eq!(unknown.json()["error"], "unknown_site");

    for origin in [
        "https://evil.example",
        "null",
        "https://shop.example.evil.example",
    ] {
        let r = h
            .send(Req::batch(json!({"site": "shop", "events": [pv]})).header("origin", origin))
            .await;
        assert_eq!(r.status, 403, "{origin}");
        assert_eq!(r.json()["error"], "origin_not_allowed");
    }
    // Without Origin, the Referer decides.
    let mut req = Req::batch(json!({"site": "shop", "events": [pv]}))
        .header("referer", "https://evil.example/x");
    req.headers.retain(|(k, _)| k != "origin");
    assert_eq!(h.send(req).await.status, 403);

    // A forged, allowed Origin does not make a foreign page acceptable.
    let id = eid();
    let forged = json!({"site": "shop", "events": [{"type": "pageview", "id": id, "url": "https://evil.example/"}]});
    let r = h.send(Req::batch(forged)).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["accepted"], 0);
    assert_eq!(r.json()["dead_lettered"][0]["reason"], "host_not_allowed");
    assert!(records_for(&h, &id, 1).await.is_empty());
    // Subdomain wildcard.
    let sub = json!({"site": "shop", "events": [{"type": "pageview", "url": "https://de.shop.example/"}]});
    assert_eq!(
        h.send(Req::batch(sub).header("origin", "https://de.shop.example"))
            .await
            .json()["accepted"],
        1
    );
    h.stop().await;
}
