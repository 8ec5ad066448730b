//! The `spur collect` binary against a real broker over TCP: records read back from the real
//! topics with every field; dead letters with reasons; counters add up; a canary IP
//! address appears in no record, dead letter or log line.

use std::time::Duration;

use serde_json::json;
use spur_schemas::kafka::{TOPIC_DEAD_LETTER, TOPIC_EVENTS};

use crate::client::{Req, eid, metric, now_ms, read_topic};
use crate::harness::{Broker, Spur};

/// An address from TEST-NET-3 that nothing else in the suite uses.
const CANARY_IP: &str = "203.0.113.199";
const CANARY_V6: &str = "2001:db8::dead:beef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_real_broker_and_no_ip_is_kept() {
    let dir = crate::harness::workdir();
    let (_broker, brokers) = Broker::shared_or_embedded(dir.path());
    let spur = Spur::start(dir.path(), &brokers, "").await;

    let sent_at = now_ms();
    let (a, b, c, bad, bad2, run) = (eid(), eid(), eid(), eid(), eid(), eid());
    let visitor = format!("e2e-{run}");
    let body = json!({
        "site": "shop", "sent_at": sent_at, "visitor_id": visitor,
        "consent": {"analytics": true, "marketing": true},
        "events": [
            {"type": "pageview", "id": a, "ts": sent_at - 200, "url": "https://shop.example/a?utm_medium=x&token=s3cret",
             "title": "A", "topics": ["boots"]},
            {"type": "engagement", "id": b, "url": "https://shop.example/a", "engaged_ms": 900},
            {"type": "consent", "id": c, "purposes": {"marketing": "withdrawn"}},
            {"type": "pageview", "id": bad, "url": "https://shop.example/", "scroll_pct": "x"},
            {"type": "identify", "id": bad2, "email": "broken"},
        ]
    });
    let resp = spur
        .send(
            Req::batch(body)
                .header("x-forwarded-for", CANARY_IP)
                .header("sec-gpc", "1"),
        )
        .await;
    assert_eq!(resp.status, 202, "{:?}", resp.body);
    assert_eq!(resp.json()["accepted"], 3);
    // The canary also arrives as the TCP-level client of an IPv6 forward and in a pixel.
    let v6 = Req::batch(
        json!({"site": "shop", "events": [{"type": "pageview", "url": format!("https://shop.example/v6-{run}")}]}),
    )
    .header("x-forwarded-for", CANARY_V6);
    assert_eq!(spur.send(v6).await.status, 202);
    let mut pixel = Req::get(&format!(
        "/p.gif?s=shop&u=https%3A%2F%2Fshop.example%2Fpx-{run}"
    ));
    pixel
        .headers
        .push(("x-forwarded-for".into(), CANARY_IP.into()));
    assert_eq!(spur.send(pixel).await.status, 200);

    let brokers = brokers.clone();
    let (events, dead) = tokio::task::spawn_blocking({
        let (run, bad, bad2) = (run.clone(), bad.clone(), bad2.clone());
        move || {
            let dead =
                |id: &str| read_topic(&brokers, TOPIC_DEAD_LETTER, id, 1, Duration::from_secs(30));
            (
                read_topic(&brokers, TOPIC_EVENTS, &run, 5, Duration::from_secs(30)),
                [dead(&bad), dead(&bad2)].concat(),
            )
        }
    })
    .await
    .expect("reader");
    assert_eq!(events.len(), 5, "{events:?}");
    let by_id = |id: &str| {
        events
            .iter()
            .find(|e| e["event_id"] == id)
            .cloned()
            .expect("record")
    };
    let pv = by_id(&a);
    assert_eq!(pv["v"], 1);
    assert_eq!(pv["_key"], format!("shop:{visitor}"));
    assert_eq!(pv["page"]["url"], "https://shop.example/a?utm_medium=x");
    assert_eq!(pv["page"]["topics"], json!(["boots"]));
    assert_eq!(
        pv["consent"],
        json!({"analytics": true, "marketing": false}),
        "GPC removes marketing"
    );
    assert_eq!(pv["signals"]["gpc"], true);
    assert_eq!(
        pv["event_time"].as_i64(),
        pv["received_at"].as_i64().map(|r| r - 200)
    );
    assert_eq!(by_id(&b)["data"]["engaged_ms"], 900);
    assert_eq!(
        by_id(&c)["data"]["purposes"],
        json!({"marketing": "withdrawn"})
    );
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["reason"], "invalid_field");
    assert_eq!(dead[0]["event_id"], bad.as_str());
    assert_eq!(dead[1]["reason"], "invalid_field");
    assert_eq!(dead[1]["event_type"], "identify");
    assert_eq!(dead[1]["detail"], "email: not an e-mail address");

    let metrics = String::from_utf8_lossy(&spur.send(Req::get("/metrics")).await.body).into_owned();
    let site = [("site", "shop")];
    let received = metric(&metrics, "spur_collector_events_received_total", &site);
    let accepted = metric(&metrics, "spur_collector_events_accepted_total", &site);
    let dead_n = metric(&metrics, "spur_collector_events_dead_lettered_total", &site);
    let dropped = metric(&metrics, "spur_collector_events_dropped_total", &site);
    assert_eq!((received, accepted, dead_n, dropped), (7.0, 5.0, 2.0, 0.0));

    let log = spur.stop();
    assert!(
        log.contains("collector listening"),
        "the log was captured:\n{log}"
    );
    let everything = [events, dead]
        .concat()
        .iter()
        .map(|v| v.to_string())
        .collect::<String>();
    for canary in [CANARY_IP, CANARY_V6, "s3cret"] {
        assert!(!everything.contains(canary), "{canary} reached Kafka");
        assert!(!log.contains(canary), "{canary} reached the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_prints_the_merged_config_with_secrets_redacted() {
    let dir = crate::harness::workdir();
    let addr = "127.0.0.1:9".parse().expect("addr");
    let extra = "[kafka.secret_properties]\n\"sasl.password\" = \"hunter2-secret\"\n";
    let config = crate::harness::spur_config(dir.path(), "127.0.0.1:1", addr, "");
    let text = std::fs::read_to_string(&config).expect("config") + extra;
    std::fs::write(&config, text).expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spur"))
        .args([
            "--config",
            config.to_str().expect("path"),
            "config",
            "check",
        ])
        .env("SPUR_COLLECTOR__LIMITS__MAX_EVENTS_PER_BATCH", "7")
        // Regression: `SPUR_IT_BROKERS` in CI's environment was read as a config key.
        .env("SPUR_IT_BROKERS", "not-a-config-key")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("max_events_per_batch = 7"),
        "env override applied:\n{stdout}"
    );
    assert!(
        stdout.contains("<redacted>") && !stdout.contains("hunter2"),
        "{stdout}"
    );

    std::fs::write(&config, "[collector]\nlisten_port = 1\n").expect("config");
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_spur"))
        .args([
            "--config",
            config.to_str().expect("path"),
            "config",
            "check",
        ])
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("listen_port"),
        "unknown keys are named"
    );
}
