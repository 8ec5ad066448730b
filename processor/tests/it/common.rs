//! Fixtures: a mock cluster with the events topic, a producer of collector records,
//! a processor run until the lake holds what is expected (or left running), the
//! group's committed offsets, a lake partition that cannot be written, and a count of
//! the processor's failed lake commits taken from its log.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use spur_keys::KeyRing;
use spur_lake::Lake;
use spur_processor::config::Config;
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
            listen: "127.0.0.1:0".parse().expect("address"),
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

    /// Starts a processor in the background; it runs until [`Running::stop`] (or until
    /// it fails).
    pub fn start(&self, config: Config) -> Running {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(spur_processor::run(config, self.kafka.clone(), async {
            let _ = stopped.await;
        }));
        Running {
            stop: Some(stop),
            task,
        }
    }

    /// The end offset (high watermark) of each partition of the events topic.
    pub fn end_offsets(&self) -> Vec<i64> {
        let consumer = self.offsets_reader("end-offsets-reader");
        (0..PARTITIONS)
            .map(|p| {
                consumer
                    .fetch_watermarks(&self.kafka.topics.events, p, Duration::from_secs(10))
                    .expect("watermarks")
                    .1
            })
            .collect()
    }

    /// The offsets `group` has committed in Kafka for each partition of the events
    /// topic (the next offset to read), `None` where it committed nothing.
    pub fn committed(&self, group: &str) -> Vec<Option<i64>> {
        let consumer = self.offsets_reader(group);
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition(&self.kafka.topics.events, p);
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        (0..PARTITIONS)
            .map(|p| {
                let e = committed
                    .find_partition(&self.kafka.topics.events, p)
                    .expect("partition");
                match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                }
            })
            .collect()
    }

    /// A consumer of `group` that never subscribes: it only asks for offsets, so it
    /// does not join the group.
    fn offsets_reader(&self, group: &str) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.kafka.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer")
    }

    /// Runs a processor until the lake's `events` table holds `want` rows (or 60 s
    /// pass), then stops it gracefully.
    pub async fn process_until(&self, config: Config, want: usize) {
        let lake_path = config.lake.clone();
        let run = self.start(config);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if Path::new(&lake_path).exists()
                && count(&lake_path, "SELECT count(*) FROM events").await >= want as i64
            {
                break;
            }
            if !run.is_running() {
                panic!("processor stopped early: {:?}", run.stop().await);
            }
            assert!(Instant::now() < deadline, "lake never reached {want} rows");
        }
        run.stop().await.expect("processor ran cleanly");
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
        redacted: false,
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

/// A processor started by [`Env::start`].
pub struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<spur_processor::Result<()>>,
}

impl Running {
    /// Whether it is still running (it has not returned, with an error or otherwise).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Stops it gracefully and returns what it returned.
    pub async fn stop(mut self) -> spur_processor::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.expect("join")
    }

    /// Waits for it to return by itself (60 s at most).
    pub async fn exited(mut self) -> spur_processor::Result<()> {
        tokio::time::timeout(Duration::from_secs(60), &mut self.task)
            .await
            .expect("the processor did not exit")
            .expect("join")
    }
}

/// Polls `check` until it holds; panics after 60 s (a "did not hang" bound).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Makes one day partition of a lake table unwritable: every append with a row for
/// that day fails (before its commit) until the blocker is dropped. Tests run as root,
/// for whom permission bits do not bind, so a regular file is put where the
/// partition's directory would be created. The table must not have the day yet.
pub struct Blocker {
    in_the_way: PathBuf,
}

impl Blocker {
    pub fn install(table_dir: &Path, day: &str) -> Blocker {
        let in_the_way = table_dir.join(format!("dt={day}"));
        assert!(
            !in_the_way.exists(),
            "{} exists already: it cannot be blocked",
            in_the_way.display()
        );
        std::fs::write(&in_the_way, b"not a directory").expect("blocker");
        Blocker { in_the_way }
    }
}

impl Drop for Blocker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.in_the_way);
    }
}

static FAILED_COMMITS: AtomicUsize = AtomicUsize::new(0);

/// How many times the processors of this test binary have logged a failed lake commit
/// that they will retry. The first call installs the global `tracing` subscriber that
/// counts them; tests that compare counts must not run at the same time as each other.
pub fn failed_commits() -> usize {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(CommitFailureCounter)
            .expect("no other global subscriber in this test binary");
    });
    FAILED_COMMITS.load(Ordering::SeqCst)
}

/// A `tracing` subscriber that only counts the consumer's "lake commit failed;
/// retrying" warnings.
struct CommitFailureCounter;

const RETRY_MESSAGE: &str = "lake commit failed; retrying";

impl tracing::Subscriber for CommitFailureCounter {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.is_event()
            && *metadata.level() == tracing::Level::WARN
            && metadata.target() == "spur_processor::consumer"
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        struct Message(bool);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" && format!("{value:?}") == RETRY_MESSAGE {
                    self.0 = true;
                }
            }
        }
        let mut message = Message(false);
        event.record(&mut message);
        if message.0 {
            FAILED_COMMITS.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}
