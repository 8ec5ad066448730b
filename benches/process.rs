//! Processor benchmark: N collector records on the events topic, consumed by the Spur
//! processor (decode, pseudonymise, de-duplicate, sessionise, Delta commits with the
//! Kafka offsets) until the lake's `events` table holds all N rows.
//!
//! For comparison a bare librdkafka consumer (`BaseConsumer`, its own group, every
//! partition assigned from the beginning) first reads the same N records and does
//! nothing with them: the difference is the processor's own cost. Both share this
//! process's CPUs with the broker (when it is the in-process mock cluster) and with the
//! lake poller, so the figures are relative, not a capacity estimate.
//!
//! The records look like the collector's: 80 % persistent visitors with analytics
//! consent, 20 % cookieless without; 70 % pageviews and 30 % engagement events; a few
//! bots, several countries, browsers and devices. Event times are spread evenly over
//! 4 hours; each visitor comes twice, about 2 hours apart, for a few minutes each
//! time, so most sessions close by inactivity during the run. They are produced as the
//! collector does (keyed `site:visitor`, lz4, `acks=all`, idempotent), batched by
//! librdkafka.
//!
//! The processor's throughput is N divided by the time from its start (group join and
//! lake set-up included) until a query sees N rows; the lake is polled every second
//! with `SELECT count(*) FROM events`, so the figure is up to a second pessimistic.
//! Peak RSS is the process's high-water mark (`VmHWM`): it covers the mock broker,
//! which keeps the topic in memory, as well as the benchmark itself. Where the
//! kernel allows it (`/proc/self/clear_refs`), the mark is reset before the processor
//! starts, so that its figure is the peak of that phase alone.
//!
//! Run: `cargo bench --bench process`. Environment:
//! - `SPUR_BENCH_EVENTS` (default 1,000,000): records produced and processed. The mock
//!   cluster keeps only the last ~5 MB (compressed) of each partition, about 250,000
//!   of these records over the 6 partitions; beyond that the benchmark stops with an
//!   error after producing, and needs a real broker;
//! - `SPUR_BENCH_VISITORS` (default 50,000): distinct visitors;
//! - `SPUR_BENCH_TIMEOUT_SECS` (default 120 + 1 ms per event): limit of each phase;
//! - `SPUR_BENCH_BROKERS`: a real Kafka-API broker (`host:port,...`); the benchmark
//!   creates topics of its own there (`spur.events.v1.bench-<id>`, 6 partitions, and a
//!   dead-letter topic) and deletes them at the end. Without it, librdkafka's
//!   in-process mock cluster is used, with `spur.events.v1` and `spur.deadletter.v1`.
//!   Example, with tansu (as in the end-to-end suite) storing in memory:
//!   `tansu broker --listener-url tcp://127.0.0.1:9092 --advertised-listener-url
//!   tcp://127.0.0.1:9092 --storage-engine memory://tansu/ &` then
//!   `SPUR_BENCH_BROKERS=127.0.0.1:9092 cargo bench --bench process`.

/// The binary's allocator (`src/main.rs`), so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/proc.rs"]
mod proc;
use proc::{cpu_seconds, proc_status, reset_peak_rss};

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use spur_keys::KeyRing;
use spur_lake::{Lake, TableKind};
use spur_schemas::kafka::{
    HEADER_CONTENT_TYPE, HEADER_SCHEMA, KafkaSettings, TOPIC_DEAD_LETTER, TOPIC_EVENTS, Topics,
    record_key,
};
use spur_schemas::record::{
    Agent, DeviceClass, EventRecord, Geo, Page, Payload, PrivacySignals, SCHEMA_VERSION, Visitor,
    VisitorKind,
};
use spur_schemas::wire::ConsentFlags;

const PARTITIONS: i32 = 6;
/// 2025-11-29T07:06:40Z: the 4-hour span stays within one day (one `dt` partition).
const T0: i64 = 1_764_400_000_000;
const SPAN_MS: i64 = 4 * 3600 * 1000;
const POLL_EVERY: Duration = Duration::from_secs(1);
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
const INTRO: &str = "\
baseline:  a bare librdkafka BaseConsumer (own group, all partitions assigned from the
           beginning) that reads every record and does nothing with it.
processor: spur_processor::run (fresh group, empty lake, flush_max_events 50000,
           flush_interval 2 s) from its start until SELECT count(*) FROM events = N
           (polled every 1 s). Everything shares this process's CPUs; CPU s is the
           whole process's user+system time in the phase (broker and poller included).";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    let parse = |v: String| {
        v.trim()
            .replace('_', "")
            .parse()
            .map_err(|_| anyhow!("{name}={v:?} is not a number"))
    };
    std::env::var(name).map_or(Ok(default), parse)
}

/// A fixed-seed generator (splitmix64): the same records on every run.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The records of the run: record `i` of `n` happens at `T0 + i * SPAN_MS / n`.
#[derive(Debug)]
struct Records {
    n: u64,
    visitors: u64,
    /// How many visitors are on the site at one moment.
    window: u64,
    rng: Rng,
}

impl Records {
    fn new(n: u64, visitors: u64) -> Self {
        Self {
            n,
            visitors,
            window: (visitors / 25).max(1),
            rng: Rng(0x5eed),
        }
    }

    fn record(&mut self, i: u64) -> EventRecord {
        let t = T0 + (i128::from(i) * i128::from(SPAN_MS) / i128::from(self.n.max(1))) as i64;
        // The crowd of active visitors slides over all visitors twice during the span.
        let base = (u128::from(i) * 2 * u128::from(self.visitors) / u128::from(self.n.max(1)))
            as u64
            % self.visitors;
        let v = (base + self.rng.next() % self.window) % self.visitors;
        let h = mix(v ^ 0xa5a5_a5a5);
        let r = self.rng.next();
        let persistent = !h.is_multiple_of(5);
        let visitor = if persistent {
            Visitor {
                kind: VisitorKind::Persistent,
                id: format!("{:016x}", mix(h)),
            }
        } else {
            Visitor {
                kind: VisitorKind::Cookieless,
                id: format!("{:016x}{:016x}", mix(h), mix(h ^ 1)),
            }
        };
        let bot = h % 50 == 7;
        let (browser, os, device) = match (h >> 8) % 6 {
            _ if bot => ("Googlebot", "unknown", DeviceClass::Bot),
            0 | 1 => ("Chrome", "Windows 10", DeviceClass::Desktop),
            2 => ("Safari", "iOS", DeviceClass::Mobile),
            3 => ("Chrome", "Android", DeviceClass::Mobile),
            4 => ("Firefox", "Linux", DeviceClass::Desktop),
            _ => ("Safari", "iPadOS", DeviceClass::Tablet),
        };
        let country = ["DE", "FR", "NL", "AT", "US", "GB", "PL", "IT"][((h >> 16) % 8) as usize];
        let product = (r >> 8) % 500;
        let payload = if r % 10 < 7 {
            Payload::Pageview
        } else {
            Payload::Engagement {
                engaged_ms: (r >> 20) % 120_000,
                scroll_pct: Some(((r >> 40) % 101) as u8),
            }
        };
        let referrer = r
            .is_multiple_of(7)
            .then(|| "https://www.google.com/".to_owned());
        EventRecord {
            v: SCHEMA_VERSION,
            event_id: format!("{i:010}-{:08x}", r >> 32),
            site_id: "shop".into(),
            received_at: t,
            event_time: t,
            client_ts: Some(t - 40),
            clock_skew_ms: Some(-40),
            time_flags: vec![],
            visitor,
            consent: ConsentFlags {
                analytics: persistent,
                marketing: persistent && h.is_multiple_of(3),
            },
            signals: PrivacySignals::default(),
            geo: Geo {
                country: Some(country.into()),
                region: None,
            },
            agent: Agent {
                browser: browser.into(),
                browser_version: "131".into(),
                os: os.into(),
                device,
                bot: bot.then(|| "crawler".into()),
            },
            page: Some(Page {
                url: format!("https://shop.example/products/{product}?utm_source=newsletter"),
                host: "shop.example".into(),
                path: format!("/products/{product}"),
                referrer,
                title: Some(format!("Product {product} | Shop")),
                topics: vec!["boots".into(), format!("size-{}", 36 + product % 10)],
            }),
            redacted: false,
            payload,
        }
    }
}

/// Counts delivery reports.
#[derive(Debug, Default)]
struct Acks {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Produces `n` records; returns the JSON bytes produced.
fn produce(brokers: &str, topic: &str, n: u64, visitors: u64, limit: Duration) -> Result<u64> {
    let deadline = Instant::now() + limit;
    let producer: BaseProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("client.id", "spur-bench-producer")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "100000")
        .set("queue.buffering.max.kbytes", "65536")
        .set("message.timeout.ms", "60000")
        .create_with_context(Acks::default())
        .context("creating the producer")?;
    let version = SCHEMA_VERSION.to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: HEADER_SCHEMA,
            value: Some(version.as_str()),
        })
        .insert(Header {
            key: HEADER_CONTENT_TYPE,
            value: Some("application/json"),
        });
    let mut records = Records::new(n, visitors);
    let mut bytes = 0;
    for i in 0..n {
        let r = records.record(i);
        let payload = serde_json::to_vec(&r)?;
        bytes += payload.len() as u64;
        let key = record_key(&r.site_id, &r.visitor.id);
        let mut record = BaseRecord::to(topic)
            .key(&key)
            .payload(&payload)
            .headers(headers.clone());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(5));
                    if Instant::now() > deadline {
                        bail!("producing did not finish within {limit:?} ({i} of {n} enqueued)");
                    }
                }
                Err((e, _)) => bail!("record {i} refused by the kafka client: {e}"),
            }
        }
        if i % 1024 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    let left = deadline.saturating_duration_since(Instant::now());
    producer
        .flush(left)
        .with_context(|| format!("flushing the producer (limit {limit:?})"))?;
    let ctx = producer.context();
    let (ok, failed) = (
        ctx.ok.load(Ordering::Relaxed),
        ctx.failed.load(Ordering::Relaxed),
    );
    if failed > 0 || ok != n {
        let first = ctx
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        bail!("{ok} of {n} records acknowledged, {failed} failed (first error: {first:?})");
    }
    Ok(bytes)
}

/// What the bare consumer saw.
#[derive(Debug)]
struct Baseline {
    elapsed: Duration,
    records: u64,
    bytes: u64,
    high_watermarks: i64,
}

/// Reads `n` records of `topic` with a bare consumer, from the beginning of every
/// partition, and nothing else.
fn baseline(brokers: &str, topic: &str, n: u64, limit: Duration) -> Result<Baseline> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("spur-bench-raw-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .context("creating the baseline consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .context("fetching the topic's metadata")?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        bail!("topic {topic} has no partitions");
    }
    let (mut high_watermarks, mut removed) = (0, 0);
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .with_context(|| format!("fetching the watermarks of partition {p}"))?;
        high_watermarks += high - low;
        removed += low;
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    if removed > 0 {
        bail!(
            "the broker already removed {removed} of the {n} records from the start of the \
             topic's partitions (librdkafka's mock cluster keeps only the last ~5 MB of each \
             partition, about 250,000 of these records in all): lower SPUR_BENCH_EVENTS or \
             use a real broker (SPUR_BENCH_BROKERS)"
        );
    }
    let started = Instant::now();
    consumer.assign(&tpl)?;
    let (mut records, mut bytes) = (0, 0);
    while records < n {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                records += 1;
                bytes += msg.payload_len() as u64;
            }
            Some(Err(e)) => bail!("baseline consumer: {e}"),
            None => {}
        }
        if started.elapsed() > limit {
            bail!("the baseline consumer read {records} of {n} records within {limit:?}");
        }
    }
    Ok(Baseline {
        elapsed: started.elapsed(),
        records,
        bytes,
        high_watermarks,
    })
}

/// The single integer a query returns.
async fn scalar(lake: &Lake, sql: &str) -> Result<i64> {
    use datafusion::arrow::array::AsArray as _;
    use datafusion::arrow::datatypes::{DataType, Int64Type};
    let ctx = lake.session_context().await?;
    let batches = ctx.sql(sql).await?.collect().await?;
    let batch = batches.first().context("the query returned no batch")?;
    let col = datafusion::arrow::compute::cast(batch.column(0), &DataType::Int64)?;
    Ok(col.as_primitive::<Int64Type>().value(0))
}

/// Whether the processor has created both tables (opening the lake before would race
/// it to create them).
fn tables_exist(lake: &Path) -> bool {
    ["events", "sessions"].iter().all(|t| {
        lake.join(t)
            .join("_delta_log")
            .join("00000000000000000000.json")
            .exists()
    })
}

/// Number and bytes of `*.parquet` files, and bytes of all files, under `dir`.
fn disk_usage(dir: &Path) -> Result<(u64, u64, u64)> {
    let (mut files, mut parquet, mut total) = (0, 0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
                continue;
            }
            total += meta.len();
            if entry.path().extension().is_some_and(|e| e == "parquet") {
                files += 1;
                parquet += meta.len();
            }
        }
    }
    Ok((files, parquet, total))
}

/// What the processor phase produced.
#[derive(Debug)]
struct Processed {
    elapsed: Duration,
    /// When a poll first saw rows, and how many.
    first_rows: Option<(Duration, i64)>,
    events_rows: i64,
    sessions_rows: i64,
    events_version: i64,
    sessions_version: i64,
}

async fn process(kafka: KafkaSettings, dir: &Path, n: u64, limit: Duration) -> Result<Processed> {
    let keys_dir = dir.join("keys");
    KeyRing::init(&keys_dir).context("creating the HMAC keys")?;
    let lake_dir = dir.join("lake");
    let lake_root = lake_dir.display().to_string();
    let config = spur_processor::Config {
        lake: lake_root.clone(),
        keys_dir,
        group_id: format!("spur-bench-{}", uuid::Uuid::new_v4()),
        flush_interval: Duration::from_secs(2),
        flush_max_events: 50_000,
        listen: "127.0.0.1:0".parse().context("address")?,
        ..spur_processor::Config::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let mut run = tokio::spawn(spur_processor::run(config, kafka, async move {
        let _ = stop_rx.await;
    }));
    let (mut first_rows, mut last_report) = (None, Instant::now());
    let elapsed = loop {
        tokio::select! {
            result = &mut run => bail!("the processor stopped early: {result:?}"),
            () = tokio::time::sleep(POLL_EVERY) => {}
        }
        let rows = if tables_exist(&lake_dir) {
            let lake = Lake::open(&lake_root).await.context("opening the lake")?;
            scalar(&lake, "SELECT count(*) FROM events")
                .await
                .context("counting the lake's events")?
        } else {
            0
        };
        if rows > 0 && first_rows.is_none() {
            first_rows = Some((started.elapsed(), rows));
        }
        if rows >= n as i64 {
            break started.elapsed();
        }
        if started.elapsed() > limit {
            let _ = stop_tx.send(());
            bail!("the lake held {rows} of {n} rows after {limit:?}");
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!(
                "  … {:>4.0} s: {rows} rows in the lake, {:.0} events/s so far",
                started.elapsed().as_secs_f64(),
                rows as f64 / started.elapsed().as_secs_f64()
            );
        }
    };
    let _ = stop_tx.send(());
    match tokio::time::timeout(STOP_TIMEOUT, run).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => bail!("the processor stopped with an error: {e}"),
        Ok(Err(e)) => bail!("the processor task failed: {e}"),
        Err(_) => bail!("the processor did not stop within {STOP_TIMEOUT:?}"),
    }
    let lake = Lake::open(&lake_root).await?;
    Ok(Processed {
        elapsed,
        first_rows,
        events_rows: scalar(&lake, "SELECT count(*) FROM events").await?,
        sessions_rows: scalar(&lake, "SELECT count(*) FROM sessions").await?,
        events_version: lake.version(TableKind::Events)?,
        sessions_version: lake.version(TableKind::Sessions)?,
    })
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

async fn create_topics(brokers: &str, events: &str, dead_letter: &str) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let topics = [
        NewTopic::new(events, PARTITIONS, TopicReplication::Fixed(1)),
        NewTopic::new(dead_letter, 1, TopicReplication::Fixed(1)),
    ];
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = tokio::time::timeout(
        Duration::from_secs(60),
        admin.create_topics(&topics, &options),
    )
    .await
    .context("creating the topics timed out")??;
    for result in results {
        if let Err((topic, code)) = result {
            bail!("could not create topic {topic}: {code}");
        }
    }
    Ok(())
}

async fn delete_topics(brokers: &str, topics: &[&str]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    tokio::time::timeout(
        Duration::from_secs(60),
        admin.delete_topics(topics, &options),
    )
    .await
    .context("deleting the topics timed out")??;
    Ok(())
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let n: u64 = env_or("SPUR_BENCH_EVENTS", 1_000_000)?;
    let visitors: u64 = env_or("SPUR_BENCH_VISITORS", 50_000)?;
    if n == 0 || visitors == 0 {
        bail!("SPUR_BENCH_EVENTS and SPUR_BENCH_VISITORS must be positive");
    }
    let limit = Duration::from_secs(env_or("SPUR_BENCH_TIMEOUT_SECS", 120 + n / 1000)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    // The mock cluster lives until the end of `main`, after the processor has stopped.
    let (mock, kafka) = match std::env::var("SPUR_BENCH_BROKERS") {
        Ok(brokers) if !brokers.trim().is_empty() => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let topics = Topics {
                events: format!("{TOPIC_EVENTS}.bench-{}", &id[..8]),
                dead_letter: format!("{TOPIC_DEAD_LETTER}.bench-{}", &id[..8]),
                ..Topics::default()
            };
            runtime.block_on(create_topics(&brokers, &topics.events, &topics.dead_letter))?;
            let kafka = KafkaSettings {
                brokers,
                topics,
                ..KafkaSettings::default()
            };
            (None, kafka)
        }
        _ => {
            let mock =
                rdkafka::mocking::MockCluster::new(1).context("starting the mock cluster")?;
            mock.create_topic(TOPIC_EVENTS, PARTITIONS, 1)?;
            mock.create_topic(TOPIC_DEAD_LETTER, 1, 1)?;
            let kafka = KafkaSettings {
                brokers: mock.bootstrap_servers(),
                ..KafkaSettings::default()
            };
            (Some(mock), kafka)
        }
    };
    let result = bench(&runtime, &kafka, mock.is_some(), n, visitors, limit);
    if mock.is_none() {
        let topics = [
            kafka.topics.events.as_str(),
            kafka.topics.dead_letter.as_str(),
        ];
        if let Err(e) = runtime.block_on(delete_topics(&kafka.brokers, &topics)) {
            eprintln!("WARNING: could not delete the benchmark's topics {topics:?}: {e:#}");
        }
    }
    drop(runtime);
    drop(mock);
    result
}

fn bench(
    runtime: &tokio::runtime::Runtime,
    kafka: &KafkaSettings,
    mock: bool,
    n: u64,
    visitors: u64,
    limit: Duration,
) -> Result<()> {
    let topic = kafka.topics.events.as_str();
    let broker = if mock {
        "librdkafka mock cluster, 1 broker, in this process"
    } else {
        "SPUR_BENCH_BROKERS"
    };
    println!(
        "Spur processor benchmark: {n} events, {visitors} visitors, event times over 4 h, phase limit {} s",
        limit.as_secs()
    );
    println!("broker:   {} ({broker})", kafka.brokers);
    println!("topic:    {topic} ({PARTITIONS} partitions)\n{INTRO}\n");

    let (cpu, started) = (cpu_seconds(), Instant::now());
    let bytes = produce(&kafka.brokers, topic, n, visitors, limit)?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "produce:   {n} records ({:.0} MB JSON) in {secs:.1} s = {:.0} records/s \
         (BaseProducer, lz4, acks=all, idempotent, linger 5 ms; CPU {:.1} s)",
        mb(bytes),
        n as f64 / secs,
        cpu_seconds() - cpu
    );
    println!(
        "           VmHWM {}, VmRSS {} after producing",
        proc_status("VmHWM"),
        proc_status("VmRSS")
    );

    let cpu = cpu_seconds();
    let raw = baseline(&kafka.brokers, topic, n, limit)?;
    let raw_cpu = cpu_seconds() - cpu;
    if raw.high_watermarks != n as i64 {
        println!(
            "note: the partitions' watermarks span {} offsets for the {n} records produced \
             (the baseline read {}; tansu 0.6 reports lower high watermarks)",
            raw.high_watermarks, raw.records
        );
    }
    let raw_eps = raw.records as f64 / raw.elapsed.as_secs_f64();
    let hwm_baseline = proc_status("VmHWM");
    let rss_baseline = proc_status("VmRSS");

    let dir = tempfile::tempdir()?;
    let reset = reset_peak_rss();
    let rss_start = proc_status("VmRSS");
    let cpu = cpu_seconds();
    let done = runtime.block_on(process(kafka.clone(), dir.path(), n, limit))?;
    let proc_cpu = cpu_seconds() - cpu;
    let hwm_processor = proc_status("VmHWM");
    let proc_eps = n as f64 / done.elapsed.as_secs_f64();
    let (files, parquet, total) = disk_usage(&dir.path().join("lake"))?;

    println!(
        "\nphase         elapsed s     events/s       MB/s      CPU s\n\
         baseline   {:>12.1} {:>12.0} {:>10.1} {:>10.1}\n\
         processor  {:>12.1} {:>12.0} {:>10.1} {:>10.1}",
        raw.elapsed.as_secs_f64(),
        raw_eps,
        mb(raw.bytes) / raw.elapsed.as_secs_f64(),
        raw_cpu,
        done.elapsed.as_secs_f64(),
        proc_eps,
        mb(bytes) / done.elapsed.as_secs_f64(),
        proc_cpu,
    );
    println!("processor/baseline throughput: {:.3}", proc_eps / raw_eps);
    if let Some((at, rows)) = done.first_rows {
        // Start-up (group join, lake creation, first flush) excluded.
        let rest = done.elapsed.saturating_sub(at).as_secs_f64();
        let steady = if rest > 0.0 && rows < n as i64 {
            format!("{:.0} events/s", (n as i64 - rows) as f64 / rest)
        } else {
            "-".to_owned()
        };
        println!(
            "processor: first rows visible after {:.1} s ({rows} rows); from then on {steady}",
            at.as_secs_f64()
        );
    }
    println!(
        "\nlake:      events {} rows, table version {}; sessions {} rows, table version {} \
         (version 0 creates a table: the version is the number of commits after it)",
        done.events_rows, done.events_version, done.sessions_rows, done.sessions_version
    );
    println!(
        "           {files} Parquet files, {:.1} MB; {:.1} MB on disk in all (Delta logs included)",
        mb(parquet),
        mb(total)
    );
    println!(
        "\npeak RSS (VmHWM, process-wide: benchmark, producer, consumers, lake poller{}):",
        if mock {
            ", mock broker and its log"
        } else {
            ""
        }
    );
    println!("           after the baseline:         {hwm_baseline} (VmRSS then {rss_baseline})");
    if reset {
        println!(
            "           processor phase:            {hwm_processor} (mark reset at its start, VmRSS {rss_start})"
        );
    } else {
        println!(
            "           after the processor:        {hwm_processor} (could not reset it before the phase)"
        );
    }
    println!("VmRSS at the end: {}", proc_status("VmRSS"));
    if done.events_rows != n as i64 {
        bail!(
            "the events table holds {} rows, {n} were produced",
            done.events_rows
        );
    }
    Ok(())
}
