//! `kill -9` of the collector under load: every event that got a 2xx is on the topic,
//! because the 2xx is only sent once the broker acknowledged it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spur_schemas::kafka::TOPIC_EVENTS;

use crate::client::{Req, eid, read_topic, try_send};
use crate::harness::{Broker, Spur, pageview};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_collector_loses_no_acknowledged_event() {
    let dir = crate::harness::workdir();
    let (_broker, brokers) = Broker::shared_or_embedded(dir.path());
    let mut spur = Spur::start(dir.path(), &brokers, "").await;
    let run = eid();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (acked, addr, run) = (acked.clone(), spur.addr, run.clone());
        clients.push(tokio::spawn(async move {
            // Bounded: at most 2000 requests per client; stops at the first failure
            // (the collector is gone).
            for _ in 0..2000 {
                let ids: Vec<String> = (0..5).map(|_| eid()).collect();
                let events: Vec<_> = ids.iter().map(|id| pageview(id, "shop.example")).collect();
                let body = serde_json::json!({"site": "shop", "visitor_id": format!("crash-{run}"),
                                              "consent": {"analytics": true}, "events": events});
                match try_send(addr, Req::batch(body)).await {
                    Ok(r) if r.status == 202 => acked.lock().expect("lock").extend(ids),
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        }));
    }
    // Let traffic build up, then kill without warning.
    for _ in 0..200 {
        if acked.lock().expect("lock").len() >= 500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    spur.kill();
    for c in clients {
        c.await.expect("client");
    }
    let acked: Vec<String> = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 500, "load was too light: {}", acked.len());

    let marker = format!("crash-{run}");
    let want = acked.len();
    let seen = tokio::task::spawn_blocking(move || {
        read_topic(
            &brokers,
            TOPIC_EVENTS,
            &marker,
            want + 1000,
            Duration::from_secs(15),
        )
    })
    .await
    .expect("reader");
    let seen: HashSet<&str> = seen.iter().filter_map(|r| r["event_id"].as_str()).collect();
    let missing = acked
        .iter()
        .filter(|id| !seen.contains(id.as_str()))
        .count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged events lost",
        acked.len()
    );
}
