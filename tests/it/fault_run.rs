//! The combined fault run, split across processes (`spur collect`, `spur process`, a
//! durable broker): four senders post for ~40 s while the processor is killed -9 three
//! times (once while it is still joining its group), the collector once and the
//! broker once, each restarted at once. Within a minute of the last restart the lake
//! holds every acknowledged event exactly once.
//!
//! The broker is `spur broker`, the embedded broker `spur up` runs: this run is its
//! acceptance test. tansu 0.6 with SQLite storage failed it 2 times in 3 (after a
//! broker kill its fetches stalled; a group whose leader died inside JoinGroup never
//! rebalanced) — ARCHITECTURE.md, "The embedded broker".

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::client::{Req, eid, try_send};
use crate::harness::{Broker, Process, Spur, pageview, spur_once};
use crate::processor_e2e::{ASSIGNED, check_exactly_once, count_in, lake_rows, processor_config};

/// The processor's log line once it has subscribed (its first poll joins the group).
const STARTED: &str = "processor started";

/// Posts batches of 5 pageviews of visitor `sender`-`n` to `site` (on `host`) until
/// `stop`; returns the acknowledged ids and every id sent.
pub(crate) async fn sender(
    addr: std::net::SocketAddr,
    (site, host): (&str, &str),
    sender: usize,
    stop: Arc<AtomicBool>,
) -> (Vec<String>, Vec<String>) {
    let (mut acked, mut sent) = (Vec::new(), Vec::new());
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let ids: Vec<String> = (0..5).map(|_| eid()).collect();
        sent.extend(ids.iter().cloned());
        let events: Vec<_> = ids.iter().map(|id| pageview(id, host)).collect();
        let body = serde_json::json!({"site": site,
            "visitor_id": format!("fault-visitor-{sender}-{:02}", n % 10),
            "consent": {"analytics": true}, "events": events});
        match try_send(
            addr,
            Req::batch(body).header("origin", &format!("https://{host}")),
        )
        .await
        {
            Ok(r) if r.status == 202 => acked.extend(ids),
            // Refused (503 while the broker is away) or no collector: not acknowledged.
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (acked, sent)
}

/// Stops the [`sender`]s and gathers what they had acknowledged and sent.
pub(crate) async fn stop_senders(
    stop: &AtomicBool,
    senders: Vec<tokio::task::JoinHandle<(Vec<String>, Vec<String>)>>,
) -> (Vec<String>, Vec<String>) {
    stop.store(true, Ordering::Relaxed);
    let (mut acked, mut sent) = (Vec::new(), Vec::new());
    for s in senders {
        let (a, t) = s.await.expect("sender");
        acked.extend(a);
        sent.extend(t);
    }
    println!("{} events acknowledged of {} sent", acked.len(), sent.len());
    (acked, sent)
}

/// Waits until the processor's log reports one more assignment than `before`.
async fn wait_assigned(p: &mut Process, before: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while count_in(&p.log, ASSIGNED) == before {
        assert!(!p.exited(), "{what}: processor died by itself");
        assert!(Instant::now() < deadline, "{what}: no partition assigned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_kills_of_processor_collector_and_broker() {
    let dir = crate::harness::workdir();
    let mut broker = Broker::embedded(dir.path());
    let run = eid();
    let mut spur = Spur::start(
        dir.path(),
        &broker.brokers(),
        &processor_config(dir.path(), "lake", &format!("fault-{run}")),
    )
    .await;
    assert!(spur_once(dir.path(), &["keys", "init"]).status.success());
    let log = dir.path().join("processor.log");
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..4)
        .map(|i| tokio::spawn(sender(spur.addr, ("shop", "shop.example"), i, stop.clone())))
        .collect();
    let at =
        |seconds: u64| tokio::time::sleep_until((started + Duration::from_secs(seconds)).into());

    let mut p = Process::spawn(dir.path(), &["process"], "processor.log");
    wait_assigned(&mut p, 0, "first start").await;
    at(6).await;
    println!("{:?}: processor killed while it works", started.elapsed());
    p.kill();
    let (assigned, starts) = (count_in(&log, ASSIGNED), count_in(&log, STARTED));
    p = Process::spawn(dir.path(), &["process"], "processor.log");
    // Killed again while it joins the group: it has subscribed, no partition yet.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count_in(&log, STARTED) == starts {
        assert!(
            Instant::now() < deadline && !p.exited(),
            "processor did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!(
        "{:?}: processor killed while it joins (assigned: {})",
        started.elapsed(),
        count_in(&log, ASSIGNED) > assigned
    );
    p.kill();
    p = Process::spawn(dir.path(), &["process"], "processor.log");
    at(14).await;
    println!("{:?}: collector killed", started.elapsed());
    spur.restart();
    at(20).await;
    println!("{:?}: broker killed", started.elapsed());
    broker.restart();
    at(28).await;
    let assigned = count_in(&log, ASSIGNED);
    println!("{:?}: processor killed", started.elapsed());
    p.kill();
    p = Process::spawn(dir.path(), &["process"], "processor.log");
    let last_restart = Instant::now();
    at(40).await;
    let (acked, sent) = stop_senders(&stop, senders).await;
    assert!(acked.len() >= 2_000, "too little traffic: {}", acked.len());
    wait_assigned(&mut p, assigned, "last start").await;

    let lake = dir.path().join("lake");
    let deadline = last_restart + Duration::from_secs(60);
    let (rows, map) = loop {
        let (rows, map) = lake_rows(&lake).await;
        let missing = acked.iter().filter(|id| !map.contains_key(*id)).count();
        if missing == 0 || Instant::now() > deadline {
            println!(
                "{:?} after the last restart: {missing} acknowledged events not in the lake",
                last_restart.elapsed()
            );
            break (rows, map);
        }
        assert!(
            !p.exited(),
            "processor exited; log:\n{}",
            std::fs::read_to_string(&p.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(p.terminate(), "graceful stop");
    check_exactly_once(rows, &map, &acked, &sent);
    spur.stop();
}
