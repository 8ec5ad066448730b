//! A slow or absent broker: 503 with `Retry-After` within the configured bound, never a
//! hang; `/readyz` follows the broker; after it returns, every event that got a 2xx is
//! on the topic.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

fn batch(id: &str) -> Req {
    Req::batch(
        json!({"site": "shop", "events": [{"type": "pageview", "id": id, "url": "https://shop.example/"}]}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_broker_gets_503_within_the_ack_timeout() {
    let h = Harness::start(config()).await;
    let ack_timeout = h.app.config.delivery.ack_timeout;
    h.mock
        .broker_round_trip_time(1, Duration::from_secs(30))
        .expect("rtt");
    let started = Instant::now();
    let r = h.send(batch(&eid())).await;
    let elapsed = started.elapsed();
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.headers.get("retry-after").map(String::as_str), Some("3"));
    assert_eq!(r.json()["error"], "not_acknowledged");
    // Generous: the point is that the request is bounded by the ack timeout (2 s), not
    // by the broker's 30 s.
    assert!(
        elapsed < ack_timeout + Duration::from_secs(10),
        "answered after {elapsed:?}"
    );
    assert!(
        h.metric(
            "spur_collector_events_dropped_total",
            &[("reason", "not_acknowledged")]
        ) >= 1.0
    );
    h.mock
        .broker_round_trip_time(1, Duration::ZERO)
        .expect("rtt");
    h.wait_ready(true).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if h.send(batch(&eid())).await.status == 202 {
            break;
        }
        assert!(Instant::now() < deadline, "collector never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_then_back_loses_no_acknowledged_event() {
    let h = Harness::start(config()).await;
    let mut acked = Vec::new();
    for _ in 0..5 {
        let id = eid();
        assert_eq!(h.send(batch(&id)).await.status, 202);
        acked.push(id);
    }
    h.mock.broker_down(1).expect("down");
    h.wait_ready(false).await;
    let mut refused = 0;
    for _ in 0..5 {
        let id = eid();
        let started = Instant::now();
        let r = h.send(batch(&id)).await;
        assert!(started.elapsed() < Duration::from_secs(15), "bounded");
        match r.status {
            202 => acked.push(id),
            503 => {
                assert!(r.headers.contains_key("retry-after"));
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(refused > 0, "a down broker must be visible to clients");
    h.mock.broker_up(1).expect("up");
    h.wait_ready(true).await;
    for _ in 0..5 {
        let id = eid();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if h.send(batch(&id)).await.status == 202 {
                acked.push(id.clone());
                break;
            }
            assert!(Instant::now() < deadline, "never recovered");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let brokers = h.kafka.brokers.clone();
    let seen = tokio::task::spawn_blocking(move || {
        read_topic(
            &brokers,
            spur_schemas::kafka::TOPIC_EVENTS,
            "shop",
            usize::MAX,
            Duration::from_secs(8),
        )
    })
    .await
    .expect("reader");
    let seen: std::collections::HashSet<String> = seen
        .iter()
        .filter_map(|r| r["event_id"].as_str().map(str::to_owned))
        .collect();
    for id in &acked {
        assert!(seen.contains(id), "acknowledged event {id} missing");
    }
    h.stop().await;
}

/// Regression: with the broker unreachable at start-up, topic creation blocked the
/// collector from listening at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_listening_without_a_broker() {
    let mut cfg = config();
    cfg.delivery.create_topics = true;
    cfg.delivery.ack_timeout = Duration::from_secs(1);
    let kafka = spur_schemas::kafka::KafkaSettings {
        brokers: "127.0.0.1:1".into(),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(spur_collector::run(cfg, kafka, listener, async {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = try_send(addr, Req::get("/livez")).await {
            assert_eq!(r.status, 200);
            break;
        }
        assert!(Instant::now() < deadline, "never listened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = try_send(addr, Req::get("/readyz")).await.expect("readyz");
    assert_eq!(ready.status, 503);
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
}
