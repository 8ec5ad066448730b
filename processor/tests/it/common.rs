//! Fixtures: a mock cluster with the events topic, a producer of collector records,
//! and a processor run until the lake holds what is expected.

use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use spur_lake::Lake;
use spur_processor::config::Config;
use spur_processor::keys::KeyRing;
use spur_schemas::kafka::{KafkaSettings, record_key};
use spur_schemas::record::{
    Agent, DeviceClass, EventRecord, Geo, Page, Payload, PrivacySignals, SCHEMA_VERSION, Visitor,
    VisitorKind,
};
use spur_schemas::wire::ConsentFlags;

pub const PARTITIONS: i32 = 3;
pub const T0: i64 = 1_764_400_000_000; // 2025-11-29T07:06:40Z

pub struct Env {
    /// Kept alive: dropping it stops the broker.
    _mock: MockCluster<'static, DefaultProducerContext>,
    pub kafka: KafkaSettings,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let mock = MockCluster::new(1).expect("mock cluster");
        let kafka = KafkaSettings {
            brokers: mock.bootstrap_servers(),
            ..KafkaSettings::default()
        };
        mock.create_topic(&kafka.topics.events, PARTITIONS, 1)
            .expect("topic");
        mock.create_topic(&kafka.topics.dead_letter, 1, 1)
            .expect("topic");
        let dir = tempfile::tempdir().expect("tempdir");
        KeyRing::init(&dir.path().join("keys")).expect("keys");
        Env {
            _mock: mock,
            kafka,
            dir,
        }
    }

    pub fn config(&self, lake: &str, group: &str) -> Config {
        Config {
            lake: self.dir.path().join(lake).display().to_string(),
            keys_dir: self.dir.path().join("keys"),
            group_id: group.into(),
            flush_interval: Duration::from_millis(300),
            ..Config::default()
        }
    }

    pub async fn produce(&self, records: &[EventRecord]) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.kafka.brokers)
            .set("acks", "all")
            .create()
            .expect("producer");
        for r in records {
            let payload = serde_json::to_vec(r).expect("json");
            let key = record_key(&r.site_id, &r.visitor.id);
            producer
                .send(
                    FutureRecord::to(&self.kafka.topics.events)
                        .key(&key)
                        .payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .expect("produced");
        }
    }

    pub async fn produce_raw(&self, key: &str, payload: &[u8]) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.kafka.brokers)
            .create()
            .expect("producer");
        producer
            .send(
                FutureRecord::to(&self.kafka.topics.events)
                    .key(key)
                    .payload(payload),
                Duration::from_secs(10),
            )
            .await
            .expect("produced");
    }

    /// Every record on the dead-letter topic, as JSON.
    pub fn dead_letters(&self) -> Vec<serde_json::Value> {
        use rdkafka::Message;
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.kafka.brokers)
            .set("group.id", "dead-letter-reader")
            .create()
            .expect("consumer");
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.kafka.topics.dead_letter,
            0,
            rdkafka::Offset::Beginning,
        )
        .expect("partition");
        consumer.assign(&tpl).expect("assign");
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                out.push(serde_json::from_slice(m.payload().unwrap_or_default()).expect("json"));
            }
        }
        out
    }

    /// Runs a processor until the lake's `events` table holds `want` rows (or 60 s
    /// pass), then stops it gracefully.
    pub async fn process_until(&self, config: Config, want: usize) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let lake_path = config.lake.clone();
        let run = tokio::spawn(spur_processor::run(config, self.kafka.clone(), async {
            let _ = stopped.await;
        }));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if Path::new(&lake_path).exists()
                && count(&lake_path, "SELECT count(*) FROM events").await >= want as i64
            {
                break;
            }
            assert!(
                !run.is_finished(),
                "processor stopped early: {:?}",
                run.await
            );
            assert!(Instant::now() < deadline, "lake never reached {want} rows");
        }
        let _ = stop.send(());
        run.await.expect("join").expect("processor ran cleanly");
    }
}

/// The single number a query returns.
pub async fn count(lake: &str, sql: &str) -> i64 {
    let Ok(lake) = Lake::open(lake).await else {
        return 0;
    };
    let ctx = lake.session_context().await.expect("ctx");
    let batches = ctx
        .sql(sql)
        .await
        .expect("sql")
        .collect()
        .await
        .expect("collect");
    batches
        .first()
        .and_then(|b| {
            let col = datafusion::arrow::compute::cast(
                b.column(0),
                &datafusion::arrow::datatypes::DataType::Int64,
            )
            .ok()?;
            use datafusion::arrow::array::AsArray;
            Some(
                col.as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                    .value(0),
            )
        })
        .unwrap_or(0)
}

/// Rows of a query as JSON objects.
pub async fn rows(lake: &str, sql: &str) -> Vec<serde_json::Value> {
    let lake = Lake::open(lake).await.expect("lake");
    let ctx = lake.session_context().await.expect("ctx");
    let batches = ctx
        .sql(sql)
        .await
        .expect("sql")
        .collect()
        .await
        .expect("collect");
    let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
    for b in &batches {
        writer.write(b).expect("json");
    }
    writer.finish().expect("json");
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&bytes).expect("json rows")
    }
}

/// A collector record: `visitor` on `site`, at `T0 + minute` minutes.
pub fn record(id: &str, visitor: &str, minute: i64, payload: Payload) -> EventRecord {
    let t = T0 + minute * 60_000;
    EventRecord {
        v: SCHEMA_VERSION,
        event_id: id.into(),
        site_id: "shop".into(),
        received_at: t,
        event_time: t,
        client_ts: Some(t),
        clock_skew_ms: None,
        time_flags: vec![],
        visitor: Visitor {
            kind: VisitorKind::Persistent,
            id: visitor.into(),
        },
        consent: ConsentFlags {
            analytics: true,
            marketing: false,
        },
        signals: PrivacySignals::default(),
        geo: Geo {
            country: Some("DE".into()),
            region: None,
        },
        agent: Agent {
            browser: "Chrome".into(),
            browser_version: "131".into(),
            os: "Linux".into(),
            device: DeviceClass::Desktop,
            bot: None,
        },
        page: Some(Page {
            url: format!("https://shop.example/p{minute}"),
            host: "shop.example".into(),
            path: format!("/p{minute}"),
            referrer: None,
            title: None,
            topics: vec!["boots".into()],
        }),
        payload,
    }
}

/// A history: `visitors` visitors, each with `per` pageviews a minute apart, a
/// 2-hour gap after the first half (so two sessions each).
pub fn history(visitors: usize, per: i64) -> Vec<EventRecord> {
    let mut out = Vec::new();
    for m in 0..per {
        for v in 0..visitors {
            let minute = if m < per / 2 { m } else { m + 120 };
            out.push(record(
                &format!("ev-{v:04}-{m:04}"),
                &format!("visitor-{v:04}"),
                minute,
                Payload::Pageview,
            ));
        }
    }
    out
}
