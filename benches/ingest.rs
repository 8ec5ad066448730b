//! End-to-end ingestion benchmark: HTTP `POST /v1/batch` into the Spur collector,
//! through validation, enrichment and the Kafka producer, until the broker has
//! acknowledged every record (the collector answers 2xx only then).
//!
//! For comparison the same load generator first drives a bare hyper HTTP/1 server
//! (same connection settings, reads the body, answers 202 `{"ok":true}`): the
//! difference is the collector's own cost plus the broker round trip. Both run in
//! this process and share the CPU with the load generator, so the figures are
//! relative, not a capacity estimate.
//!
//! Run: `cargo bench --bench ingest`. Environment:
//! - `SPUR_BENCH_SECONDS` (default 10): measured seconds per scenario, after 1 s warm-up;
//! - `SPUR_BENCH_CONNECTIONS` (default 32): concurrent keep-alive connections;
//! - `SPUR_BENCH_BROKERS`: a real Kafka-API broker (`host:port,...`); the collector
//!   creates its topics there. Without it, librdkafka's in-process mock cluster is used.
//!   Example: `SPUR_BENCH_BROKERS=127.0.0.1:9092 cargo bench --bench ingest`.

/// The binary's allocator (`src/main.rs`), so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use spur_collector::config::{Delivery, SiteConfig};
use spur_collector::metrics::EVENTS_ACCEPTED;
use spur_schemas::kafka::{KafkaSettings, TOPIC_DEAD_LETTER, TOPIC_EVENTS};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, sleep, timeout};

const WARMUP: Duration = Duration::from_secs(1);
/// Longer than the collector's acknowledgement deadline (5 s), so that it answers first.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const INTRO: &str = "\
POST /v1/batch per target and scenario: 1 event per request, then batches of 20 events.
baseline: a bare hyper HTTP/1 server that reads the body and answers 202 {\"ok\":true}, i.e.
          HTTP and load-generator cost only. collector: validation, scrubbing of personal
          data, enrichment, Kafka produce (acks=all), 202 once the broker acknowledged.
          no-scrub: the same collector with [collector.privacy.scrub] enabled = false.
          Everything shares this process's CPUs.
req/s and events/s count 2xx answers in the measured window; latency covers every answer
in it; non-2xx and errors (transport failures, timeouts) cover the whole run.";
/// A realistic page: digits in the path and title (sizes, prices, an order number),
/// so the scrubber has to look, but no personal data.
const URL: &str = "https://bench.example/products/winter-boots-4711?utm_source=newsletter";
const TITLE: &str =
    "Winter boots, size 42 - now 89,99 EUR (was 119,00) | Order 100234 | Bench Shop";
/// The same page as a site that leaks: an address in the path, a phone number in the
/// title.
const LEAKY_URL: &str = "https://bench.example/account/alice@example.com/orders";
const LEAKY_TITLE: &str = "Welcome back, alice@example.com | call +49 170 5550123 | Bench Shop";
const COLUMNS: &str = "target     scenario        req/s   events/s   p50 ms   p90 ms   p99 ms   max ms  non-2xx  errors";
const USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
    (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// What one load run saw. Throughput and latency cover responses that arrived in the
/// measured window; error counts and `acked_events` cover the whole run.
#[derive(Debug, Default)]
struct Tally {
    latencies_us: Vec<u64>,
    ok_requests: u64,
    ok_events: u64,
    acked_events: u64,
    non_2xx: u64,
    errors: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.ok_requests += other.ok_requests;
        self.ok_events += other.ok_events;
        self.acked_events += other.acked_events;
        self.non_2xx += other.non_2xx;
        self.errors += other.errors;
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    let parse = |v: String| {
        v.trim()
            .parse()
            .map_err(|_| anyhow!("{name}={v:?} is not a number"))
    };
    std::env::var(name).map_or(Ok(default), parse)
}

/// A batch of `n` pageviews with ids unique across the whole process.
fn batch_body(tag: usize, conn: usize, seq: &mut u64, n: usize) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let mut body = format!(
        r#"{{"site":"bench","consent":{{"analytics":true,"marketing":false}},"visitor_id":"bench-visitor-{conn:04}","sent_at":{now},"events":["#
    );
    for i in 0..n {
        *seq += 1;
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(
            body,
            r#"{sep}{{"type":"pageview","id":"evt{tag:03}-{conn:03}-{seq}","ts":{now},"url":"{URL}","title":"{TITLE}","topics":["boots","sale"]}}"#,
            seq = *seq
        );
    }
    body.push_str("]}");
    body
}

async fn connect(addr: SocketAddr) -> Result<client::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = client::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One load run against one target: where, how many events per request, and when.
#[derive(Debug, Clone, Copy)]
struct Run {
    addr: SocketAddr,
    /// Makes event ids unique across runs.
    tag: usize,
    events: usize,
    measure_from: Instant,
    end: Instant,
}

impl Run {
    /// A run that starts now: warm-up, then `measure`.
    fn new(addr: SocketAddr, tag: usize, events: usize, measure: Duration) -> Self {
        let measure_from = Instant::now() + WARMUP;
        let end = measure_from + measure;
        Self {
            addr,
            tag,
            events,
            measure_from,
            end,
        }
    }
}

/// One connection's loop: send until `end`, reconnecting after transport errors.
async fn connection(run: Run, conn: usize) -> Result<Tally> {
    let (mut tally, mut seq, mut sender) = (Tally::default(), 0, None);
    while Instant::now() < run.end {
        let Some(s) = sender.as_mut() else {
            match timeout(REQUEST_TIMEOUT, connect(run.addr)).await {
                Ok(Ok(s)) => sender = Some(s),
                _ => {
                    tally.errors += 1;
                    sleep(Duration::from_millis(50)).await;
                }
            }
            continue;
        };
        let body = batch_body(run.tag, conn, &mut seq, run.events);
        let req = Request::post("/v1/batch")
            .header(header::HOST, run.addr.to_string())
            .header(header::CONTENT_TYPE, "text/plain")
            .header(header::ORIGIN, "https://bench.example")
            .header(header::USER_AGENT, USER_AGENT)
            .body(Full::new(Bytes::from(body)))?;
        let started = Instant::now();
        let outcome = timeout(REQUEST_TIMEOUT, async {
            s.ready().await?;
            let response = s.send_request(req).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        })
        .await;
        let done = Instant::now();
        let measured = done >= run.measure_from && done < run.end;
        let Ok(Ok(status)) = outcome else {
            tally.errors += 1;
            sender = None;
            continue;
        };
        if measured {
            tally.latencies_us.push((done - started).as_micros() as u64);
        }
        if !status.is_success() {
            tally.non_2xx += 1;
            continue;
        }
        tally.acked_events += run.events as u64;
        if measured {
            tally.ok_requests += 1;
            tally.ok_events += run.events as u64;
        }
    }
    Ok(tally)
}

/// Drives `run.addr` with `conns` connections until `run.end`.
async fn load(run: Run, conns: usize) -> Result<Tally> {
    let tasks: Vec<_> = (0..conns)
        .map(|c| tokio::spawn(connection(run, c)))
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        total.merge(task.await.context("load task panicked")??);
    }
    Ok(total)
}

/// The `q` quantile (nearest rank) of sorted microseconds, in milliseconds.
fn pct(sorted_us: &[u64], q: f64) -> f64 {
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).max(1);
    sorted_us
        .get(rank - 1)
        .map_or(f64::NAN, |&us| us as f64 / 1000.0)
}

fn print_row(target: &str, scenario: &str, measure: Duration, mut t: Tally) {
    t.latencies_us.sort_unstable();
    let [p50, p90, p99, max] = [0.5, 0.9, 0.99, 1.0].map(|q| pct(&t.latencies_us, q));
    let [rps, eps] = [t.ok_requests, t.ok_events].map(|n| n as f64 / measure.as_secs_f64());
    let (non_2xx, errors) = (t.non_2xx, t.errors);
    println!(
        "{target:<10} {scenario:<10} {rps:>10.0} {eps:>10.0} {p50:>8.2} {p90:>8.2} {p99:>8.2} {max:>8.2} {non_2xx:>8} {errors:>7}"
    );
}

/// The baseline: a bare hyper HTTP/1 server with the collector's connection settings.
async fn baseline() -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut http = server::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(5))
            .max_buf_size(64 * 1024)
            .keep_alive(true);
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                req.into_body().collect().await?;
                let response = Response::builder()
                    .status(StatusCode::ACCEPTED)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from_static(br#"{"ok":true}"#)))?;
                Ok::<_, anyhow::Error>(response)
            });
            let conn = http.serve_connection(TokioIo::new(stream), service);
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    Ok((addr, task))
}

/// A one-off GET on a fresh connection.
async fn get(addr: SocketAddr, path: &str) -> Result<(StatusCode, String)> {
    let mut sender = connect(addr).await?;
    let req = Request::get(path)
        .header(header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))?;
    let response = timeout(REQUEST_TIMEOUT, sender.send_request(req)).await??;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The sum of a counter's series for site `bench` in a Prometheus text exposition.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(r#"site="bench""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn peak_rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status.lines().find_map(|l| l.strip_prefix("VmHWM:"));
    hwm.map_or_else(|| "unknown".to_owned(), |v| v.trim().to_owned())
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let seconds: u64 = env_or("SPUR_BENCH_SECONDS", 10)?;
    let conns: usize = env_or("SPUR_BENCH_CONNECTIONS", 32)?;
    let measure = Duration::from_secs(seconds.max(1));
    // The mock cluster lives until the end of `main`, after the collector has stopped.
    let (mock, brokers) = match std::env::var("SPUR_BENCH_BROKERS") {
        Ok(brokers) if !brokers.trim().is_empty() => (None, brokers),
        _ => {
            let mock =
                rdkafka::mocking::MockCluster::new(1).context("starting the mock cluster")?;
            mock.create_topic(TOPIC_EVENTS, 6, 1)?;
            mock.create_topic(TOPIC_DEAD_LETTER, 6, 1)?;
            let brokers = mock.bootstrap_servers();
            (Some(mock), brokers)
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(brokers, mock.is_some(), conns, measure))?;
    drop(runtime);
    drop(mock);
    Ok(())
}

async fn bench(brokers: String, mock: bool, conns: usize, measure: Duration) -> Result<()> {
    let config = spur_collector::Config {
        sites: vec![SiteConfig {
            id: "bench".to_owned(),
            hosts: vec!["bench.example".to_owned()],
        }],
        delivery: Delivery {
            create_topics: !mock,
            ..Delivery::default()
        },
        shutdown_grace: Duration::from_secs(5),
        ..spur_collector::Config::default()
    };
    let config_template = config.clone();
    let (collector_addr, stop_tx, collector) = start_collector(config, &brokers).await?;
    let (baseline_addr, baseline_task) = baseline().await?;
    let mut unscrubbed_config = config_template.clone();
    unscrubbed_config.privacy.scrub.enabled = false;
    let (plain_addr, plain_stop, plain) = start_collector(unscrubbed_config, &brokers).await?;

    let broker = if mock {
        "librdkafka mock cluster, 1 broker"
    } else {
        "SPUR_BENCH_BROKERS"
    };
    let secs = measure.as_secs();
    println!(
        "Spur ingestion benchmark: {conns} keep-alive connections, {secs} s measured after 1 s warm-up"
    );
    println!("broker:   {brokers} ({broker})\n{INTRO}\n\n{COLUMNS}");
    let mut acked = 0;
    let (mut acked_plain, mut eps) = (0, [[0.0; 3]; 2]);
    for (row, (scenario, events)) in [("1 event", 1), ("20 events", 20)].into_iter().enumerate() {
        let targets = [
            ("baseline", baseline_addr),
            ("collector", collector_addr),
            ("no-scrub", plain_addr),
        ];
        for (column, (target, addr)) in targets.into_iter().enumerate() {
            let tag = events * 10 + column;
            let t = load(Run::new(addr, tag, events, measure), conns).await?;
            match target {
                "collector" => acked += t.acked_events,
                "no-scrub" => acked_plain += t.acked_events,
                _ => {}
            }
            eps[row][column] = t.ok_events as f64 / measure.as_secs_f64();
            print_row(target, scenario, measure, t);
        }
    }
    baseline_task.abort();
    for (row, scenario) in ["1 event", "20 events"].into_iter().enumerate() {
        let [_, scrubbed, plain] = eps[row];
        println!(
            "scrubbing, {scenario}: collector {scrubbed:.0} events/s vs no-scrub {plain:.0} ({:+.1} %)",
            (scrubbed / plain - 1.0) * 100.0
        );
    }

    println!();
    let counted = check_accounting(collector_addr, "collector", acked).await?
        & check_accounting(plain_addr, "no-scrub", acked_plain).await?;
    stop(stop_tx, collector).await;
    stop(plain_stop, plain).await;
    println!();
    core_costs()?;
    println!("peak RSS (VmHWM) of the process: {}", peak_rss());
    if !counted {
        bail!("the collectors' accepted counters and the acknowledged events differ");
    }
    Ok(())
}

type Collector = tokio::task::JoinHandle<spur_collector::Result<()>>;

/// Starts a collector on a free port and waits until it is ready.
async fn start_collector(
    config: spur_collector::Config,
    brokers: &str,
) -> Result<(SocketAddr, tokio::sync::oneshot::Sender<()>, Collector)> {
    let kafka = KafkaSettings {
        brokers: brokers.to_owned(),
        ..KafkaSettings::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let collector = tokio::spawn(spur_collector::run(config, kafka, listener, async move {
        let _ = stop_rx.await;
    }));
    let ready_by = Instant::now() + Duration::from_secs(30);
    while !matches!(get(addr, "/readyz").await, Ok((StatusCode::OK, _))) {
        if collector.is_finished() {
            bail!(
                "the collector stopped before becoming ready: {:?}",
                collector.await
            );
        }
        if Instant::now() > ready_by {
            bail!("the collector was not ready within 30 s (broker {brokers})");
        }
        sleep(Duration::from_millis(100)).await;
    }
    Ok((addr, stop_tx, collector))
}

/// The collector's accepted counter against what the load generator saw
/// acknowledged: whether they agree.
async fn check_accounting(addr: SocketAddr, target: &str, acked: u64) -> Result<bool> {
    let (status, metrics) = get(addr, "/metrics").await?;
    if status != StatusCode::OK {
        bail!("GET /metrics answered {status}");
    }
    let accepted = counter(&metrics, EVENTS_ACCEPTED);
    println!(
        "{target}: {EVENTS_ACCEPTED}{{site=\"bench\"}} = {accepted}; events acknowledged to the load generator = {acked}"
    );
    if accepted != acked {
        println!(
            "WARNING: the collector's accepted counter and the acknowledged events differ by {}",
            accepted.abs_diff(acked)
        );
        for line in metrics
            .lines()
            .filter(|l| l.starts_with("spur_collector_events_") && l.contains(r#"site="bench""#))
        {
            println!("  {line}");
        }
    }
    Ok(accepted == acked)
}

async fn stop(stop_tx: tokio::sync::oneshot::Sender<()>, collector: Collector) {
    let _ = stop_tx.send(());
    match timeout(Duration::from_secs(15), collector).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => println!("WARNING: the collector stopped with an error: {e:#}"),
        Ok(Err(e)) => println!("WARNING: the collector task failed: {e}"),
        Err(_) => println!("WARNING: the collector did not stop within 15 s"),
    }
}

/// The pure core alone, one thread, no HTTP or Kafka: `validate` (decoding, checks,
/// URL stripping, scrubbing) of one event, with scrubbing on and off, for a clean
/// page and for one that leaks an address and a phone number.
fn core_costs() -> Result<()> {
    use spur_collector::scrub::Scrubbers;
    use spur_collector::sites::Sites;
    use spur_collector::validate::{Rules, validate};

    let iterations: u32 = env_or("SPUR_BENCH_CORE_ITERATIONS", 200_000)?;
    let sites = Sites::new(&[SiteConfig {
        id: "bench".to_owned(),
        hosts: vec!["bench.example".to_owned()],
    }])?;
    let site = sites.get("bench").context("site")?;
    let on = Rules {
        max_event_bytes: 8192,
        allowed_query_params: vec!["utm_*".to_owned()],
        scrub: Scrubbers::default(),
    };
    let off = Rules {
        scrub: Scrubbers::new(
            &spur_collector::config::ScrubConfig {
                enabled: false,
                ..Default::default()
            },
            &[],
        )
        .map_err(|e| anyhow!(e))?,
        ..on.clone()
    };
    let event = |url: &str, title: &str| {
        format!(
            r#"{{"type":"pageview","id":"evt-core-0001","url":"{url}","title":"{title}","topics":["boots","sale"],"referrer":"https://search.example/results/winter-boots"}}"#
        )
    };
    let (clean, leaky) = (event(URL, TITLE), event(LEAKY_URL, LEAKY_TITLE));
    println!(
        "pure core, one thread, {iterations} events each (validate(): decode, check, strip, scrub):"
    );
    let per_event = |name: &str, body: &str, rules: &Rules| -> Result<f64> {
        let started = std::time::Instant::now();
        for _ in 0..iterations {
            let ev = validate(body.as_bytes(), site, rules).map_err(|r| anyhow!("{r:?}"))?;
            std::hint::black_box(ev);
        }
        let ns = started.elapsed().as_nanos() as f64 / f64::from(iterations);
        println!(
            "  {name:<28} {ns:>8.0} ns/event {:>10.0} events/s",
            1e9 / ns
        );
        Ok(ns)
    };
    let plain = per_event("clean page, scrub off", &clean, &off)?;
    let scrubbed = per_event("clean page, scrub on", &clean, &on)?;
    let leaky_plain = per_event("leaky page, scrub off", &leaky, &off)?;
    let leaky_scrubbed = per_event("leaky page, scrub on", &leaky, &on)?;
    println!(
        "  scrubbing costs {:+.1} % on a clean page, {:+.1} % on a leaky one",
        (scrubbed / plain - 1.0) * 100.0,
        (leaky_scrubbed / leaky_plain - 1.0) * 100.0
    );
    let ev = validate(leaky.as_bytes(), site, &on).map_err(|r| anyhow!("{r:?}"))?;
    let page = ev.page.context("page")?;
    if page.path != "/account/[email]/orders" || ev.redactions.is_empty() {
        bail!("the leaky page was not scrubbed: {page:?}");
    }
    Ok(())
}
