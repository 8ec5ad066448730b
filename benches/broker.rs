//! Broker benchmark: the embedded broker (`spur broker`, in this process) with and
//! without `fsync`, next to `tansu` with in-memory storage (the external broker the
//! end-to-end suite used before; where it is installed) under the same clients.
//! librdkafka's mock cluster is not a baseline here: it refuses produces to a topic it
//! created (UnknownTopicOrPartition) in this set-up.
//!
//! Each broker gets the same load, produced as the collector produces (idempotent,
//! `acks=all`, lz4, `linger.ms=5`, keyed, ~300-byte JSON records over 6 partitions):
//! - **produce**: N records, at most `SPUR_BENCH_IN_FLIGHT` unacknowledged at a time;
//!   records/s and the latency of each acknowledgement (p50, p99);
//! - **consume**: a fresh group reads all N from the beginning (`read_committed`, as
//!   the processor does); records/s;
//! - **recover** (embedded only): the broker is stopped and opened again on its data
//!   directory; the time until it listens (scanning and checking the logs).
//!
//! The acknowledgement latency includes the time a record waits in the client behind
//! the others in flight: it is the latency a collector sees under that load.
//!
//! Run: `cargo bench --bench broker`. Environment: `SPUR_BENCH_EVENTS` (default
//! 200,000), `SPUR_BENCH_IN_FLIGHT` (default 1,000), `SPUR_TANSU` (default `tansu`
//! on the PATH; skipped with a note when absent).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[allow(dead_code)] // shared by the benchmarks; this one reads only the peak RSS
#[path = "support/proc.rs"]
mod proc;

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

const TOPIC: &str = "bench.events";
const PARTITIONS: i32 = 6;

fn env_or(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v:?}")),
        Err(_) => Ok(default),
    }
}

struct Figures {
    name: String,
    produce_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    consume_per_s: f64,
    recover: Option<Duration>,
}

async fn create_topic(brokers: &str) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let topic = NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(1));
    for result in admin.create_topics(&[topic], &AdminOptions::new()).await? {
        result.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    // Until the broker's metadata shows every partition (tansu: not at once).
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = probe
            .fetch_metadata(Some(TOPIC), Duration::from_secs(5))
            .is_ok_and(|m| {
                m.topics()
                    .iter()
                    .any(|t| t.error().is_none() && t.partitions().len() == PARTITIONS as usize)
            });
        if ready {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{TOPIC} never showed in the metadata"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn record(i: usize) -> (String, String) {
    let key = format!("demo:visitor-{}", i % 5_000);
    let payload = format!(
        r#"{{"v":1,"event_id":"ev-{i:012}","type":"pageview","site":"demo","visitor_id":"visitor-{}","received_at":"2026-12-04T12:00:00.000Z","url":"https://shop.example/products/{}","title":"Winter boots","topics":["boots","winter"],"country":"DE","browser":"Chrome","os":"Linux","device":"desktop","consent":{{"analytics":true,"marketing":false}}}}"#,
        i % 5_000,
        i % 50
    );
    (key, payload)
}

/// Produces `n` records with at most `in_flight` unacknowledged; returns records/s and
/// the sorted acknowledgement latencies.
async fn produce(brokers: &str, n: usize, in_flight: usize) -> Result<(f64, Vec<Duration>)> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(n);
    let mut pending = futures::stream::FuturesUnordered::new();
    use futures::StreamExt as _;
    for i in 0..n {
        if pending.len() >= in_flight
            && let Some(result) = pending.next().await
        {
            latencies.push(result?);
        }
        let producer = producer.clone();
        pending.push(async move {
            let (key, payload) = record(i);
            let sent = Instant::now();
            producer
                .send(
                    FutureRecord::to(TOPIC).key(&key).payload(&payload),
                    Duration::from_secs(60),
                )
                .await
                .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
            Ok::<_, anyhow::Error>(sent.elapsed())
        });
    }
    while let Some(result) = pending.next().await {
        latencies.push(result?);
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    Ok((rate, latencies))
}

/// A fresh group reads every record from the beginning; returns records/s.
fn consume(brokers: &str, n: usize) -> Result<f64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()?;
    consumer.subscribe(&[TOPIC])?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    let mut seen = 0usize;
    while seen < n {
        anyhow::ensure!(Instant::now() < deadline, "consumed {seen} of {n} in 300 s");
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            message?;
            seen += 1;
        }
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

/// Runs the load on `brokers`, whose topic exists already.
async fn measure(name: &str, brokers: &str, n: usize, in_flight: usize) -> Result<Figures> {
    let (produce_per_s, latencies) = produce(brokers, n, in_flight).await?;
    let brokers_owned = brokers.to_owned();
    let consume_per_s = tokio::task::spawn_blocking(move || consume(&brokers_owned, n)).await??;
    Ok(Figures {
        name: name.into(),
        produce_per_s,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        consume_per_s,
        recover: None,
    })
}

async fn embedded(fsync: bool, n: usize, in_flight: usize) -> Result<Figures> {
    let dir = tempfile::tempdir()?;
    let config = spur_broker::Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.path().to_path_buf(),
        fsync,
        ..spur_broker::Config::default()
    };
    let broker = spur_broker::Broker::bind(config.clone()).await?;
    let brokers = broker.bootstrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(broker.run(async move {
        let _ = stopped.await;
    }));
    create_topic(&brokers).await?;
    let name = format!("spur broker, fsync {}", if fsync { "on" } else { "off" });
    let mut figures = measure(&name, &brokers, n, in_flight).await?;
    let _ = stop.send(());
    task.await?;
    let started = Instant::now();
    let reopened = spur_broker::Broker::bind(config).await?;
    figures.recover = Some(started.elapsed());
    drop(reopened);
    Ok(figures)
}

async fn tansu(n: usize, in_flight: usize) -> Result<Option<Figures>> {
    let bin = std::env::var("SPUR_TANSU").unwrap_or_else(|_| "tansu".into());
    if std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .is_err()
    {
        println!("(tansu not installed: its row is skipped)");
        return Ok(None);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let mut child = std::process::Command::new(&bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "tansu did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let figures = measure(
        "tansu 0.6, memory",
        &format!("127.0.0.1:{port}"),
        n,
        in_flight,
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    figures.map(Some)
}

fn main() -> Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let n = env_or("SPUR_BENCH_EVENTS", 200_000)?;
    let in_flight = env_or("SPUR_BENCH_IN_FLIGHT", 1_000)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "broker benchmark: {n} records of ~300 bytes, {PARTITIONS} partitions, up to {in_flight} in flight"
    );
    let mut rows = Vec::new();
    rows.push(runtime.block_on(embedded(true, n, in_flight))?);
    rows.push(runtime.block_on(embedded(false, n, in_flight))?);
    match runtime.block_on(tansu(n, in_flight)) {
        Ok(Some(row)) => rows.push(row),
        Ok(None) => {}
        // Not a failure of the benchmark: the baseline could not take the load.
        Err(e) => println!("(tansu: no figures: {e:#})"),
    }
    println!(
        "\n| broker | produce records/s | ack p50 ms | ack p99 ms | consume records/s | reopen |\n|---|---|---|---|---|---|"
    );
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.1} | {:.1} | {:.0} | {} |",
            r.name,
            r.produce_per_s,
            r.p50_ms,
            r.p99_ms,
            r.consume_per_s,
            r.recover
                .map_or("—".to_string(), |d| format!("{:.2} s", d.as_secs_f64()))
        );
    }
    println!(
        "\npeak RSS of this process (broker, clients and all): {}",
        proc::proc_status("VmHWM")
    );
    Ok(())
}
