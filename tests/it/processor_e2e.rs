//! The processor against a real broker (`spur broker`; the pair test: tansu): SIGKILLed at random moments while
//! events flow, restarted each time, and two processors of one group with one of them
//! stopped and started again and again. In the end the lake holds every acknowledged
//! event exactly once; a replay from offset 0 into an empty lake gives the same rows
//! and the same session ids.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::array::AsArray;
use spur_lake::Lake;

use crate::client::{Req, eid, try_send};
use crate::harness::{Broker, Process, Spur, pageview, spur_once};

/// A small xorshift generator: reproducible from the seed printed by the test.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

pub(crate) fn processor_config(dir: &Path, lake: &str, group: &str) -> String {
    format!(
        "\n[lake]\nroot = \"{}\"\n\n[keys]\ndir = \"{}\"\n\n[processor]\ngroup_id = \"{group}\"\nflush_interval = \"400ms\"\nsession_timeout = \"6s\"\nlisten = \"127.0.0.1:0\"\n",
        dir.join(lake).display(),
        dir.join("keys").display()
    )
}

/// Posts batches of 5 pageviews from 20 visitors until `batches` were sent; returns
/// the acknowledged ids and every id sent.
async fn load(
    addr: std::net::SocketAddr,
    batches: usize,
    pause: Duration,
) -> (Vec<String>, Vec<String>) {
    let (acked, sent) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    for i in 0..batches {
        let ids: Vec<String> = (0..5).map(|_| eid()).collect();
        sent.lock().expect("lock").extend(ids.iter().cloned());
        let events: Vec<_> = ids.iter().map(|id| pageview(id, "shop.example")).collect();
        let body = serde_json::json!({"site": "shop", "visitor_id": format!("e2e-visitor-{:02}", i % 20),
                                      "consent": {"analytics": true}, "events": events});
        if let Ok(r) = try_send(addr, Req::batch(body)).await
            && r.status == 202
        {
            acked.lock().expect("lock").extend(ids);
        }
        tokio::time::sleep(pause).await;
    }
    let acked = acked.lock().expect("lock").clone();
    let sent = sent.lock().expect("lock").clone();
    (acked, sent)
}

/// event id → session id, as the lake holds them (an id twice would be a bug).
pub(crate) async fn lake_rows(lake: &Path) -> (usize, BTreeMap<String, String>) {
    let Ok(lake) = Lake::open(&lake.display().to_string()).await else {
        return (0, BTreeMap::new());
    };
    let ctx = lake.session_context().await.expect("ctx");
    let batches = ctx
        .sql("SELECT arrow_cast(event_id, 'Utf8'), arrow_cast(session_id, 'Utf8') FROM events")
        .await
        .expect("sql")
        .collect()
        .await
        .expect("rows");
    let mut rows = 0;
    let mut map = BTreeMap::new();
    for b in &batches {
        let (ids, sessions) = (
            b.column(0).as_string::<i32>(),
            b.column(1).as_string::<i32>(),
        );
        for i in 0..b.num_rows() {
            rows += 1;
            map.insert(ids.value(i).to_owned(), sessions.value(i).to_owned());
        }
    }
    (rows, map)
}

async fn wait_for_rows(
    lake: &Path,
    want: usize,
    procs: &mut [&mut Process],
) -> (usize, BTreeMap<String, String>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (rows, map) = lake_rows(lake).await;
        if map.len() >= want || Instant::now() > deadline {
            return (rows, map);
        }
        for p in procs.iter_mut() {
            assert!(
                !p.exited(),
                "processor exited; log:\n{}",
                std::fs::read_to_string(&p.log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The processor's log line for a partition it now owns.
pub(crate) const ASSIGNED: &str = "partition assigned";

pub(crate) fn count_in(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log).map_or(0, |s| s.matches(needle).count())
}

pub(crate) fn check_exactly_once(
    rows: usize,
    lake: &BTreeMap<String, String>,
    acked: &[String],
    sent: &[String],
) {
    if let Ok(keep) = std::env::var("SPUR_KEEP_MISSING") {
        let missing: Vec<&String> = acked.iter().filter(|id| !lake.contains_key(*id)).collect();
        std::fs::write(keep, format!("{missing:?}")).ok();
    }
    let sent: HashSet<&str> = sent.iter().map(String::as_str).collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !lake.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events missing from the lake",
        missing.len()
    );
    assert_eq!(rows, lake.len(), "duplicated rows in the lake");
    assert!(
        lake.keys().all(|id| sent.contains(id.as_str())),
        "rows that were never sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processor_killed_at_random_loses_and_duplicates_nothing() {
    let dir = crate::harness::workdir();
    // A broker of its own: on a shared one, other tests' traffic on the same topic
    // would flow through these processors too.
    let broker = Broker::embedded(dir.path());
    let brokers = broker.brokers();
    let run = eid();
    let spur = Spur::start(
        dir.path(),
        &brokers,
        &processor_config(dir.path(), "lake", &format!("crash-{run}")),
    )
    .await;
    assert!(spur_once(dir.path(), &["keys", "init"]).status.success());
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64)
        | 1;
    println!("random seed {seed}");
    let mut rng = Rng(seed);

    // About a minute of traffic: the ten rounds (each waits for its assignment,
    // which takes a session timeout after a kill) happen while it flows.
    let traffic = tokio::spawn(load(spur.addr, 400, Duration::from_millis(120)));
    let log = dir.path().join("processor.log");
    for round in 0..10 {
        let assigned = count_in(&log, ASSIGNED);
        let mut p = Process::spawn(dir.path(), &["process"], "processor.log");
        // Killed at a random moment once it owns its partitions, i.e. while it reads,
        // writes the lake or commits. A kill while it joins the group is the fault
        // run's (fault_run.rs).
        // Generous: after a kill the group waits a session timeout (6 s) and then
        // rebalances, which on 2 busy cores (CI runs two suites at once) once took
        // over a minute.
        let deadline = Instant::now() + Duration::from_secs(150);
        while count_in(&log, ASSIGNED) == assigned {
            assert!(!p.exited(), "round {round}: processor died by itself");
            assert!(
                Instant::now() < deadline,
                "round {round}: no partition assigned"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(2500))).await;
        assert!(!p.exited(), "round {round}: processor died by itself");
        p.kill();
    }
    let (acked, sent) = traffic.await.expect("load");
    assert!(acked.len() >= 1000, "too little traffic: {}", acked.len());
    let mut last = Process::spawn(dir.path(), &["process"], "processor.log");
    let lake = dir.path().join("lake");
    let (rows, map) = wait_for_rows(&lake, acked.len(), &mut [&mut last]).await;
    assert!(last.terminate(), "graceful stop");
    check_exactly_once(rows, &map, &acked, &sent);

    // Replay from offset 0 into an empty lake (new group): same rows, same sessions.
    std::fs::write(
        dir.path().join("spur.toml"),
        std::fs::read_to_string(dir.path().join("spur.toml"))
            .expect("config")
            .replace(&format!("crash-{run}"), &format!("replay-{run}"))
            .replace(
                &format!("{}\"", lake.display()),
                &format!("{}\"", dir.path().join("replay").display()),
            ),
    )
    .expect("config");
    let mut replay = Process::spawn(dir.path(), &["process"], "replay.log");
    let (replay_rows, replay_map) =
        wait_for_rows(&dir.path().join("replay"), map.len(), &mut [&mut replay]).await;
    assert!(replay.terminate());
    assert_eq!(replay_rows, rows);
    assert_eq!(
        replay_map, map,
        "replay gives the same event → session mapping"
    );
    spur.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processors_with_repeated_rebalances_write_ground_truth() {
    let dir = crate::harness::workdir();
    // A broker of its own: on a shared one, other tests' traffic on the same topic
    // would flow through these processors too. `tansu`, not the embedded broker: the
    // one end-to-end test that keeps Spur's use of consumer groups and idempotent
    // producers standard Kafka, not whatever its own broker happens to accept.
    let Some(broker) = Broker::tansu(dir.path()) else {
        return;
    };
    let brokers = broker.brokers();
    let run = eid();
    let spur = Spur::start(
        dir.path(),
        &brokers,
        &processor_config(dir.path(), "lake", &format!("pair-{run}")),
    )
    .await;
    assert!(spur_once(dir.path(), &["keys", "init"]).status.success());

    let mut steady = Process::spawn(dir.path(), &["process"], "steady.log");
    let traffic = tokio::spawn(load(spur.addr, 300, Duration::from_millis(40)));
    for _ in 0..4 {
        let flappy = Process::spawn(dir.path(), &["process"], "flappy.log");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(flappy.terminate(), "graceful stop during rebalances");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (acked, sent) = traffic.await.expect("load");
    let lake = dir.path().join("lake");
    let (rows, map) = wait_for_rows(&lake, acked.len(), &mut [&mut steady]).await;
    assert!(steady.terminate());
    check_exactly_once(rows, &map, &acked, &sent);
    spur.stop();
}
