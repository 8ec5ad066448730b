//! The broker dies mid-test: the collector answers 503 with `Retry-After` within its
//! bound, `/readyz` turns 503; the broker comes back (same SQLite storage): 2xx again,
//! and every event that ever got a 2xx is on the topic.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use spur_schemas::kafka::TOPIC_EVENTS;

use crate::client::{Req, eid, read_topic};
use crate::harness::{Broker, Spur, pageview};

fn batch(id: &str) -> Req {
    Req::batch(serde_json::json!({"site": "shop", "events": [pageview(id, "shop.example")]}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stopped_then_back_loses_no_acknowledged_event() {
    let dir = crate::harness::workdir();
    let mut broker = Broker::embedded(dir.path());
    let spur = Spur::start(dir.path(), &broker.brokers(), "").await;
    let mut acked = Vec::new();
    for _ in 0..20 {
        let id = eid();
        assert_eq!(spur.send(batch(&id)).await.status, 202);
        acked.push(id);
    }

    broker.kill();
    let mut refusals = 0;
    for _ in 0..10 {
        let id = eid();
        let started = Instant::now();
        let r = spur.send(batch(&id)).await;
        // The configured ack timeout is 3 s; allow generous slack for a loaded machine.
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "hung for {:?}",
            started.elapsed()
        );
        match r.status {
            202 => acked.push(id),
            503 => {
                assert_eq!(r.headers.get("retry-after").map(String::as_str), Some("2"));
                refusals += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refusals > 0, "a dead broker must be visible to clients");
    spur.wait_ready(false).await;

    broker.restart();
    spur.wait_ready(true).await;
    for _ in 0..20 {
        let id = eid();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if spur.send(batch(&id)).await.status == 202 {
                acked.push(id.clone());
                break;
            }
            assert!(Instant::now() < deadline, "collector never recovered");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    let brokers = broker.brokers();
    let want = acked.len();
    let seen = tokio::task::spawn_blocking(move || {
        read_topic(
            &brokers,
            TOPIC_EVENTS,
            "\"shop\"",
            want * 4,
            Duration::from_secs(20),
        )
    })
    .await
    .expect("reader");
    let seen: HashSet<&str> = seen.iter().filter_map(|r| r["event_id"].as_str()).collect();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !seen.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events missing: {missing:?}",
        missing.len(),
        acked.len()
    );
    spur.stop();
}
