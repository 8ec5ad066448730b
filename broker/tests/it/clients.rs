//! librdkafka against the broker: idempotent produce, consumer groups, committed
//! offsets, and all of it across a restart on the same data directory.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message};

use crate::start;

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

fn consumer(bootstrap: &str, group: &str) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer")
}

async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin");
    let topic =
        NewTopic::new(name, partitions, TopicReplication::Fixed(1)).set("retention.ms", "86400000");
    let results = admin
        .create_topics(&[topic], &AdminOptions::new())
        .await
        .expect("create_topics");
    assert!(results[0].is_ok(), "{results:?}");
    // Creating it again is refused as Kafka does.
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let again = admin
        .create_topics(&[topic], &AdminOptions::new())
        .await
        .expect("create_topics");
    assert_eq!(
        again[0],
        Err((name.to_string(), RDKafkaErrorCode::TopicAlreadyExists))
    );
}

async fn produce(producer: &FutureProducer, topic: &str, range: std::ops::Range<u32>) {
    let sends = range.map(|i| {
        let key = format!("k{}", i % 7);
        let payload = format!("m{i}");
        async move {
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("acknowledged")
        }
    });
    futures::future::join_all(sends).await;
}

/// Reads until `want` distinct payloads arrived (or panics after a generous deadline),
/// committing as it goes.
async fn read(consumer: &StreamConsumer, want: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < want {
        assert!(
            Instant::now() < deadline,
            "only {} of {want} read",
            seen.len()
        );
        match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            Ok(Ok(m)) => {
                let payload =
                    String::from_utf8(m.payload().expect("payload").to_vec()).expect("utf8");
                seen.insert(payload);
                consumer
                    .commit_message(&m, CommitMode::Sync)
                    .expect("commit");
            }
            Ok(Err(e)) => panic!("consume failed: {e}"),
            Err(_) => {}
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_offsets_and_groups_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (bootstrap, stop, task) = start(dir.path()).await;
    create_topic(&bootstrap, "events", 3).await;
    let p = producer(&bootstrap);
    produce(&p, "events", 0..500).await;
    let c = consumer(&bootstrap, "g1");
    c.subscribe(&["events"]).expect("subscribe");
    let seen = read(&c, 500).await;
    assert_eq!(seen.len(), 500);
    drop(c);
    drop(p);
    let _ = stop.send(());
    task.await.expect("stopped");

    // Same directory, new process-equivalent: the group resumes after its commits.
    let (bootstrap, _stop, _task) = start(dir.path()).await;
    let p = producer(&bootstrap);
    produce(&p, "events", 500..600).await;
    let c = consumer(&bootstrap, "g1");
    c.subscribe(&["events"]).expect("subscribe");
    let seen = read(&c, 100).await;
    assert!(
        seen.iter()
            .all(|m| m[1..].parse::<u32>().expect("n") >= 500),
        "re-read committed records"
    );
    // Another group reads everything, both lives of the broker.
    let c2 = consumer(&bootstrap, "g2");
    c2.subscribe(&["events"]).expect("subscribe");
    assert_eq!(read(&c2, 600).await.len(), 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_shares_partitions_and_takes_over_from_a_member_that_leaves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (bootstrap, _stop, _task) = start(dir.path()).await;
    create_topic(&bootstrap, "shared", 4).await;
    let a = consumer(&bootstrap, "pair");
    let b = consumer(&bootstrap, "pair");
    a.subscribe(&["shared"]).expect("subscribe");
    b.subscribe(&["shared"]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Polling drives the rebalance.
        let _ = tokio::time::timeout(Duration::from_millis(200), a.recv()).await;
        let _ = tokio::time::timeout(Duration::from_millis(200), b.recv()).await;
        let (na, nb) = (
            a.assignment().expect("assignment").count(),
            b.assignment().expect("assignment").count(),
        );
        if na + nb == 4 && na > 0 && nb > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partitions never shared: {na} + {nb}"
        );
    }
    drop(b); // leaves the group
    let p = producer(&bootstrap);
    produce(&p, "shared", 0..200).await;
    assert_eq!(read(&a, 200).await.len(), 200, "a took over b's partitions");
    assert_eq!(a.assignment().expect("assignment").count(), 4);
}
