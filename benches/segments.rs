//! Interest scoring and the incremental segment engine over a generated lake of N
//! events (default 10 million), next to DuckDB running the same SQL on the same Delta
//! tables in the same run.
//!
//! Phases, each timed, with the peak RSS of its process (`VmHWM`, reset before each
//! Spur phase; `spur score` and the restart with its sweep run in a process of their
//! own, as the command and a restarted service do, and so does DuckDB, in Python):
//! 1. **generate**: N events of V visitors over 30 days, written to a fresh lake with
//!    `Lake::append` as the processor writes them (zstd Parquet, `dt` partitions),
//!    each day's sessions (with their pageviews' dwell) after the day:
//!    ~80 % pageviews with one or two of 20 topics, ~12 % engagement, identify (30 %
//!    of visitors, half of them with marketing consent, evidence complete so the
//!    ledger links them), consent, purchases, 3 % bots. Segments run under single
//!    opt-in, so consenting subjects become members; the bench fails if none does.
//! 2. **spur score**: the closed-form interest SQL (`spur_audience::score::interest_sql`,
//!    per subject) on DataFusion, one commit to `scores` — and **DuckDB** running the
//!    same SQL text over the same files (the only dialect shim is the epoch function).
//!    Row counts and score sums must agree.
//! 3. **engine start (rebuild)**: `Engine::load` without a checkpoint computes every
//!    visitor's state from the lake, and the first step; then the checkpoint saved.
//! 4. **restart and sweep**: a new process loads the engine from the checkpoint, as
//!    the segment service does when it starts, and evaluates every subject from the
//!    state (3 segments); its peak RSS is the service's.
//! 5. **step**: `SPUR_BENCH_STEP` (10,000) new events and their closed sessions
//!    appended, then one step: from reading them to the changes committed.
//! 6. **latency**: on the big lake, events arrive at `SPUR_BENCH_RATE` (2,000) per
//!    second for `SPUR_BENCH_LATENCY_SECS` (60) seconds, committed to the lake every
//!    `SPUR_BENCH_FLUSH_MS` (1,000) as a processor with that `flush_interval` commits
//!    them (each commit's sessions right after it), while the engine steps every
//!    `SPUR_BENCH_INTERVAL_MS` (1,000; the service's `segments.interval`) as the
//!    segment service does. Each event's latency runs from the moment it arrived
//!    (spread evenly over its flush period) to the commit of the step that evaluated
//!    it (its changes, if any, are in that commit; publishing them is the outbox's
//!    next send). p50 / p99 / max are printed beside the floor that flush period and
//!    interval alone impose. Not included: collector → Kafka → processor hops (see
//!    `benches/process.rs`) and the outbox send.
//! 7. the same step against a history of a tenth of N (another lake): the ratio says
//!    whether a step's cost follows new events or history.
//!
//! Run: `cargo bench --bench segments`. Environment: `SPUR_BENCH_EVENTS` (default
//! 10,000,000), `SPUR_BENCH_VISITORS` (default 200,000), `SPUR_BENCH_STEP` (10,000),
//! `SPUR_BENCH_RATE`, `SPUR_BENCH_LATENCY_SECS`, `SPUR_BENCH_FLUSH_MS`,
//! `SPUR_BENCH_INTERVAL_MS` (phase 6; `SPUR_BENCH_LATENCY_SECS=0` skips it),
//! `RUST_LOG=spur_audience=debug` (each step's time by part on stderr),
//! `SPUR_BENCH_ONLY=score` (phases 1–2 only), `SPUR_BENCH_EXPLAIN=1` (DataFusion's
//! `EXPLAIN ANALYZE` of the score SQL on stderr),
//! `SPUR_BENCH_LAKE` (a directory to keep the generated lake in and reuse on the next
//! run; default a temporary directory), `SPUR_BENCH_PYTHON` (default `python3`; needs
//! `duckdb`, `deltalake` and `pyarrow`: `pip install duckdb 'deltalake[pyarrow]'`).

/// The binary's allocator (`src/main.rs`), so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use spur_audience::score::{Model, Per, ScoringConfig, interest_sql, score_all, write_scores};
use spur_audience::{Engine, LifecycleConfig, SegmentDef};
use spur_lake::model::EventRow;
use spur_lake::{Lake, TableKind};

#[path = "support/proc.rs"]
mod proc;
use proc::{cpu_seconds, proc_status, reset_peak_rss};

const DAY: i64 = 86_400_000;
/// 2026-11-01T00:00:00Z: the first event; as-of is 30 days later.
const START: i64 = 1_793_491_200_000;
const AS_OF: i64 = START + 30 * DAY;
const TOPICS: [&str; 20] = [
    "boots", "sandals", "sneakers", "jackets", "coats", "hats", "gloves", "socks", "bags", "belts",
    "watches", "glasses", "scarves", "shirts", "jeans", "dresses", "skirts", "suits", "sale",
    "new",
];
const BATCH: usize = 250_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .with_context(|| format!("{name}={v}")),
        Err(_) => Ok(default),
    }
}

/// Event `i` of `events` in the generated history: deterministic in `i`. Days follow
/// `i` (day `i · 30 / events`), so each day's events are generated together and its
/// sessions can be closed after it.
fn event(i: u64, visitors: u64, events: u64) -> EventRow {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1));
    let v = rng.below(visitors);
    let day = (i * 30 / events.max(1)) as i64;
    // Each visitor has one session a day; events of a session within 20 minutes.
    let time = START + day * DAY + ((v * 7919) % 600) as i64 * 60_000 + rng.below(1_200_000) as i64;
    let kind = rng.below(100);
    let identified = v % 10 < 3;
    let marketing = v.is_multiple_of(2);
    let bot = v % 100 < 3;
    let (event_type, name) = match kind {
        0..80 => ("pageview", None),
        80..92 => ("engagement", None),
        92..96 if identified => ("identify", None),
        96..98 if identified => ("consent", None),
        98..99 => ("custom", Some("purchase".to_owned())),
        _ => ("pageview", None),
    };
    let topic = |rng: &mut Rng| TOPICS[(v as usize + rng.below(3) as usize) % TOPICS.len()];
    let topics = if event_type == "pageview" {
        let mut t = vec![topic(&mut rng).to_owned()];
        if rng.below(3) == 0 {
            t.push("sale".to_owned());
        }
        t
    } else {
        Vec::new()
    };
    let path = format!("/{}/{}", TOPICS[(v % 20) as usize], rng.below(50));
    EventRow {
        event_id: format!("{i:016x}"),
        site_id: "shop".into(),
        event_type: event_type.into(),
        event_time: time,
        received_at: time + 50,
        dt: spur_schemas::time::date(time),
        visitor_id: format!("{:032x}", v.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        visitor_kind: "persistent".into(),
        key_version: 1,
        session_id: format!("{:016x}{:04}", v, day),
        consent_analytics: true,
        consent_marketing: marketing,
        gpc: false,
        dnt: false,
        country: Some(["DE", "FR", "NL", "AT", "IT"][(v % 5) as usize].into()),
        region: None,
        browser: "Firefox".into(),
        browser_version: "133".into(),
        os: "Linux".into(),
        device: "pc".into(),
        is_bot: bot,
        bot_reason: bot.then(|| "crawler".into()),
        url: Some(format!("https://shop.example{path}")),
        host: Some("shop.example".into()),
        path: Some(path),
        referrer: None,
        title: None,
        topics,
        engaged_ms: (event_type == "engagement").then(|| rng.below(120_000) as i64),
        scroll_pct: None,
        email_hash: (event_type == "identify").then(|| format!("{:032x}", v ^ 0xE)),
        form: (event_type == "identify").then(|| "newsletter".into()),
        consent_purposes: (event_type == "consent").then(|| {
            if rng.below(4) == 0 {
                r#"{"marketing":"withdrawn"}"#.into()
            } else {
                r#"{"marketing":"granted"}"#.into()
            }
        }),
        consent_evidence: (event_type == "identify").then(|| {
            if marketing {
                r#"{"purposes":["analytics","marketing"],"text_id":"nl-1","policy_version":"2026-01"}"#.into()
            } else {
                r#"{"purposes":["analytics"],"text_id":"nl-1","policy_version":"2026-01"}"#.into()
            }
        }),
        name,
        props: None,
        time_flags: None,
        kafka_partition: (v % 6) as i32,
        kafka_offset: i as i64,
        redacted: Some(false),
    }
}

fn segments() -> Vec<SegmentDef> {
    let def = |name: &str, condition: &str| SegmentDef {
        name: name.into(),
        condition: condition.into(),
    };
    vec![
        def("boot_fans", "interest['boots'] >= 0.5"),
        def(
            "sale_hunters",
            "interest['sale'] >= 0.6 AND pageviews >= 20",
        ),
        def(
            "customers_de",
            "stage IN ('customer', 'retained') AND country = 'DE'",
        ),
    ]
}

/// The portable workload: every subject's interest by the closed-form SQL, summed.
/// `ms` is each engine's epoch-milliseconds expression of a timestamp.
fn workload_sql(ms: &dyn Fn(&str) -> String) -> Result<String> {
    let model = Model::new(&ScoringConfig::default())?;
    Ok(format!(
        "SELECT count(*) AS rows, sum(score) AS score_sum, sum(raw) AS raw_sum, \
                sum(views) AS views FROM ({})",
        interest_sql(&model, AS_OF, Per::Subject, ms)
    ))
}

const DUCKDB_SCRIPT: &str = r#"
import json, os, sys, time
import duckdb, deltalake
root, sql = sys.argv[1], sys.stdin.read()
con = duckdb.connect()
con.execute("SET threads TO 2")
started = time.monotonic()
# Every Delta table of the lake (the workload reads `events`, `sessions` for dwell and,
# for identity, `ledger`).
for name in sorted(os.listdir(root)):
    if os.path.isdir(os.path.join(root, name, "_delta_log")):
        con.register(name, deltalake.DeltaTable(os.path.join(root, name)).to_pyarrow_dataset())
row = con.execute(sql).fetchone()
elapsed = time.monotonic() - started
# VmHWM of this process image (ru_maxrss would include the parent's peak, inherited
# across fork and exec).
hwm = next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"elapsed": elapsed, "row": [float(x) if x is not None else None for x in row],
                  "maxrss_kb": int(hwm)}))
"#;

fn line(phase: &str, seconds: f64, cpu: f64, rss: &str, extra: &str) {
    println!("{phase:<34} {seconds:>9.1} {cpu:>8.1} {rss:>14}  {extra}");
}

/// Opens the lake at `root`, generating `events` events of `visitors` visitors and
/// their sessions into it first unless it holds them already.
async fn generate(root: &str, events: u64, visitors: u64) -> Result<Lake> {
    // A kept lake: what earlier runs added after the history goes (the tables the
    // engine writes, the events and sessions of steps and of the latency phase).
    for kind in TableKind::ALL {
        if !matches!(kind, TableKind::Events | TableKind::Sessions) {
            let dir = std::path::Path::new(root).join(kind.name());
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
        }
    }
    let mut lake = Lake::open(root).await?;
    let ctx = lake.session_context().await?;
    let have = count(&ctx, "SELECT count(*) FROM events").await?;
    if have > 0 && count(&ctx, "SELECT count(*) FROM sessions").await? == 0 {
        bail!("{root} has no sessions (made by an older bench): remove it");
    }
    let history = count(
        &ctx,
        &format!("SELECT count(*) FROM events WHERE kafka_offset < {events}"),
    )
    .await?;
    if have > 0 && history == events as i64 {
        use datafusion::prelude::{col, lit};
        let after = spur_schemas::time::date(AS_OF);
        lake.delete(
            TableKind::Events,
            col("kafka_offset").gt_eq(lit(events as i64)),
        )
        .await?;
        lake.delete(TableKind::Sessions, col("dt").gt_eq(lit(after)))
            .await?;
        return Ok(lake);
    }
    if have != 0 {
        bail!("{root} holds {have} events, not {events}: remove it or unset SPUR_BENCH_LAKE");
    }
    reset_peak_rss();
    let (started, cpu) = (Instant::now(), cpu_seconds());
    for day in 0..30 {
        let (first, end) = (day * events / 30, (day + 1) * events / 30);
        let rows: Vec<EventRow> = (first..end).map(|n| event(n, visitors, events)).collect();
        for chunk in rows.chunks(BATCH) {
            lake.append(TableKind::Events, spur_lake::events_batch(chunk)?, &[])
                .await?;
        }
        // The day's sessions close after it, with their pageviews' dwell, as the
        // processor writes them.
        spur_testkit::append_closed_sessions(&mut lake, &rows).await?;
    }
    line(
        &format!("generate {events} events"),
        started.elapsed().as_secs_f64(),
        cpu_seconds() - cpu,
        &proc_status("VmHWM"),
        &format!("{} files", lake.file_count(TableKind::Events)),
    );
    Ok(lake)
}

/// Phases 3–5 on a generated lake of `events` events; returns the step's seconds.
/// With `require_members`, fails when the sweep leaves every segment empty.
async fn engine_phases(
    lake: &mut Lake,
    events: u64,
    visitors: u64,
    step: u64,
    require_members: bool,
    latency: Option<&Latency>,
) -> Result<f64> {
    let (lifecycle, scoring) = engine_config();
    reset_peak_rss();
    let (started, cpu) = (Instant::now(), cpu_seconds());
    let mut engine = Engine::load(lake, &lifecycle, &segments(), &scoring).await?;
    let first = engine.step(lake, AS_OF, false).await?;
    line(
        "engine start: state rebuilt, 1st step",
        started.elapsed().as_secs_f64(),
        cpu_seconds() - cpu,
        &proc_status("VmHWM"),
        &format!(
            "{} visitors, {} changes",
            engine.states().len(),
            first.changes.len()
        ),
    );

    reset_peak_rss();
    let (started, cpu) = (Instant::now(), cpu_seconds());
    engine.checkpoint(lake, AS_OF).await?;
    line(
        "checkpoint (table audience_state)",
        started.elapsed().as_secs_f64(),
        cpu_seconds() - cpu,
        &proc_status("VmHWM"),
        &format!("{} visitors", engine.states().len()),
    );

    // 4. A restart from the checkpoint and a sweep, in a process of their own: the
    // segment service's footprint, not what the rebuild above left allocated. Then
    // this process reloads too (the child's sweep committed).
    drop(engine);
    for child in in_child("sweep", lake.root())? {
        line(
            &child.phase,
            child.elapsed,
            child.cpu,
            &format!("{} kB", child.peak_kb),
            &child.notes,
        );
        if require_members && child.members == Some(0) {
            bail!("every segment is empty: the generated consent made nobody a member");
        }
    }
    let mut engine = Engine::load(lake, &lifecycle, &segments(), &scoring).await?;
    // Its first step reads the ledger whole once (as the service's first step does).
    engine.step(lake, AS_OF, false).await?;

    // New events on the next day, and their sessions closed.
    let rows: Vec<EventRow> = (events..events + step)
        .map(|n| event(n, visitors, events))
        .collect();
    append_closed(lake, &rows).await?;
    reset_peak_rss();
    let (started, cpu) = (Instant::now(), cpu_seconds());
    let stepped = engine.step(lake, AS_OF + DAY, false).await?;
    let seconds = started.elapsed().as_secs_f64();
    line(
        &format!("step: {step} new events"),
        seconds,
        cpu_seconds() - cpu,
        &proc_status("VmHWM"),
        &format!(
            "{} events, {} subjects, {} changes committed",
            stepped.events,
            stepped.subjects,
            stepped.changes.len()
        ),
    );
    if stepped.events != step {
        bail!("the step read {} events, not {step}", stepped.events);
    }
    if let Some(latency) = latency {
        latency_phase(&mut engine, lake, latency, events + step, visitors, events).await?;
    }
    Ok(seconds)
}

/// What a phase run in a child process reports (one JSON line each on its stdout).
#[derive(serde::Serialize, serde::Deserialize)]
struct ChildPhase {
    phase: String,
    elapsed: f64,
    cpu: f64,
    /// `VmHWM` of the child, reset before the phase.
    peak_kb: u64,
    notes: String,
    /// `spur score`'s result row (count, score sum, raw sum, views).
    row: Option<Vec<f64>>,
    /// Members of all segments after a sweep.
    members: Option<usize>,
}

impl ChildPhase {
    /// Times `run` from now, with this process's CPU and (reset) peak RSS.
    async fn measure<T>(
        phase: &str,
        run: impl std::future::Future<Output = Result<T>>,
    ) -> Result<(T, ChildPhase)> {
        reset_peak_rss();
        let (started, cpu) = (Instant::now(), cpu_seconds());
        let out = run.await?;
        let peak_kb = proc_status("VmHWM")
            .split_whitespace()
            .next()
            .and_then(|kb| kb.parse().ok())
            .unwrap_or(0);
        Ok((
            out,
            ChildPhase {
                phase: phase.to_owned(),
                elapsed: started.elapsed().as_secs_f64(),
                cpu: cpu_seconds() - cpu,
                peak_kb,
                notes: String::new(),
                row: None,
                members: None,
            },
        ))
    }

    fn print(&self) -> Result<()> {
        println!("{}", serde_json::to_string(self)?);
        Ok(())
    }
}

/// Runs `phase` on the lake at `root` in a process of its own (this executable again,
/// with `SPUR_BENCH_CHILD`), so that its peak RSS is that of a process doing only that
/// — as the command or a restarted service does — and not what earlier phases left
/// allocated; DuckDB is measured in a process of its own too.
fn in_child(phase: &str, root: &str) -> Result<Vec<ChildPhase>> {
    let output = std::process::Command::new(std::env::current_exe()?)
        .env("SPUR_BENCH_CHILD", phase)
        .env("SPUR_BENCH_CHILD_LAKE", root)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("starting the {phase} phase's process"))?;
    if !output.status.success() {
        bail!("the {phase} phase's process failed: {}", output.status);
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).with_context(|| format!("phase {phase} printed {l}")))
        .collect()
}

/// A phase in a child process ([`in_child`]): prints its [`ChildPhase`] lines.
async fn child(phase: &str, root: &str) -> Result<()> {
    let mut lake = Lake::open(root).await?;
    match phase {
        "score" => {
            if std::env::var_os("SPUR_BENCH_EXPLAIN").is_some() {
                // Where the SQL's time goes, by operator (run before the timed phase).
                let model = Model::new(&ScoringConfig::default())?;
                let ctx = spur_audience::score::interest_session(&lake.session_context().await?);
                let sql = interest_sql(
                    &model,
                    AS_OF,
                    Per::Subject,
                    &spur_audience::score::datafusion_ms,
                );
                for batch in ctx
                    .sql(&format!("EXPLAIN ANALYZE {sql}"))
                    .await?
                    .collect()
                    .await?
                {
                    eprintln!(
                        "{}",
                        datafusion::arrow::util::pretty::pretty_format_batches(&[batch])?
                    );
                }
            }
            let (scores, mut report) = ChildPhase::measure("spur score (closed-form SQL)", async {
                let model = Model::new(&ScoringConfig::default())?;
                let ctx = lake.session_context().await?;
                let scores = score_all(&ctx, &model, AS_OF).await?;
                write_scores(&mut lake, &scores, AS_OF).await?;
                Ok(scores)
            })
            .await?;
            let row = vec![
                scores.len() as f64,
                scores.iter().map(|s| s.score).sum::<f64>(),
                scores.iter().map(|s| s.raw).sum::<f64>(),
                scores.iter().map(|s| s.views).sum::<i64>() as f64,
            ];
            report.notes = format!("{} scores; {row:?}", scores.len());
            report.row = Some(row);
            report.print()
        }
        "sweep" => {
            let (lifecycle, scoring) = engine_config();
            let (mut engine, mut report) =
                ChildPhase::measure("restart: engine from checkpoint", async {
                    Ok(Engine::load(&lake, &lifecycle, &segments(), &scoring).await?)
                })
                .await?;
            report.notes = format!("{} visitors", engine.states().len());
            report.print()?;
            let (sweep, mut report) =
                ChildPhase::measure("sweep over the state (3 segments)", async {
                    Ok(engine.step(&mut lake, AS_OF, true).await?)
                })
                .await?;
            let members: Vec<String> = segments()
                .iter()
                .map(|s| format!("{} {}", s.name, engine.members(&s.name).count()))
                .collect();
            report.notes = format!("{} subjects; {}", sweep.subjects, members.join(", "));
            report.members = Some(
                segments()
                    .iter()
                    .map(|s| engine.members(&s.name).count())
                    .sum(),
            );
            report.print()
        }
        other => bail!("no benchmark phase {other}"),
    }
}

/// The segment engine's settings in this benchmark.
fn engine_config() -> (LifecycleConfig, ScoringConfig) {
    let lifecycle = LifecycleConfig {
        // Single opt-in: the generated sign-ups' marketing grants count at once
        // (under double opt-in they would wait for the confirmation link's click,
        // which a generated history cannot make).
        double_opt_in: false,
        ..LifecycleConfig::default()
    };
    (lifecycle, ScoringConfig::default())
}

/// Appends `rows` to `events`, then their sessions, closed, to `sessions` (two
/// commits, as the processor writes them).
async fn append_closed(lake: &mut Lake, rows: &[EventRow]) -> Result<()> {
    lake.append(TableKind::Events, spur_lake::events_batch(rows)?, &[])
        .await?;
    spur_testkit::append_closed_sessions(lake, rows).await
}

/// Phase 6's settings.
struct Latency {
    root: String,
    rate: u64,
    seconds: u64,
    flush: Duration,
    interval: Duration,
}

/// Phase 6: events arrive at `rate` per second and are committed every `flush` by
/// another `Lake` (the processor's role) while `engine` steps every `interval`.
async fn latency_phase(
    engine: &mut Engine,
    lake: &mut Lake,
    latency: &Latency,
    first: u64,
    visitors: u64,
    events: u64,
) -> Result<()> {
    // Arrival instants of the committed events not yet evaluated, in commit order
    // (one writer, so a step covers a prefix of them).
    let arrived: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
    let started = Instant::now();
    let clock = move |at: Instant| AS_OF + DAY + at.duration_since(started).as_millis() as i64;
    let writer = {
        let (arrived, root) = (arrived.clone(), latency.root.clone());
        let (rate, seconds, flush) = (latency.rate, latency.seconds, latency.flush);
        tokio::spawn(async move {
            let mut lake = Lake::open(&root).await?;
            let mut tick = tokio::time::interval(flush);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let (mut from, mut n, mut sent) = (Instant::now(), first, 0u64);
            while started.elapsed().as_secs() < seconds {
                tick.tick().await;
                let to = Instant::now();
                // The events that arrived since the last commit, evenly over the period.
                let due = (rate as f64 * to.duration_since(started).as_secs_f64()) as u64;
                let count = due.saturating_sub(sent);
                let span = to.duration_since(from);
                let mut times = Vec::with_capacity(count as usize);
                let rows: Vec<EventRow> = (0..count)
                    .map(|k| {
                        let at = from + span.mul_f64(k as f64 / count as f64);
                        times.push(at);
                        let mut row = event(n + k, visitors, events);
                        row.event_time = clock(at);
                        row.received_at = row.event_time;
                        row.dt = spur_schemas::time::date(row.event_time);
                        row
                    })
                    .collect();
                arrived.lock().expect("arrivals").extend(times);
                append_closed(&mut lake, &rows).await?;
                (from, n, sent) = (to, n + count, sent + count);
            }
            anyhow::Ok(sent)
        })
    };

    reset_peak_rss();
    let cpu = cpu_seconds();
    let mut waits: Vec<f64> = Vec::new();
    let (mut steps, mut changes) = (0u64, 0usize);
    let mut tick = tokio::time::interval(latency.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = Duration::from_secs(latency.seconds * 10 + 60);
    loop {
        tick.tick().await;
        let done = writer.is_finished();
        let stepped = engine.step(lake, clock(Instant::now()), false).await?;
        let committed = Instant::now();
        let mut queue = arrived.lock().expect("arrivals");
        if stepped.events as usize > queue.len() {
            bail!(
                "a step evaluated {} events, {} had arrived",
                stepped.events,
                queue.len()
            );
        }
        for at in queue.drain(..stepped.events as usize) {
            waits.push(committed.duration_since(at).as_secs_f64());
        }
        steps += u64::from(stepped.events > 0);
        changes += stepped.changes.len();
        if done && queue.is_empty() {
            break;
        }
        if started.elapsed() > deadline {
            bail!(
                "{} events still unevaluated after {deadline:?}",
                queue.len()
            );
        }
    }
    let sent = writer.await??;
    if waits.len() as u64 != sent {
        bail!("{} events committed, {} evaluated", sent, waits.len());
    }
    waits.sort_by(f64::total_cmp);
    let at = |q: f64| waits[((waits.len() - 1) as f64 * q).round() as usize];
    let floor = latency.flush.as_secs_f64() / 2.0 + latency.interval.as_secs_f64() / 2.0;
    line(
        &format!("latency: {} ev/s, {} s", latency.rate, latency.seconds),
        started.elapsed().as_secs_f64(),
        cpu_seconds() - cpu,
        &proc_status("VmHWM"),
        &format!(
            "event -> step committed: p50 {:.2} s, p99 {:.2} s, max {:.2} s over {} events \
             ({steps} steps, {changes} changes); flush {:?} + interval {:?} alone: mean {floor:.2} s",
            at(0.5),
            at(0.99),
            at(1.0),
            waits.len(),
            latency.flush,
            latency.interval,
        ),
    );
    Ok(())
}

fn main() -> Result<()> {
    if let Ok(phase) = std::env::var("SPUR_BENCH_CHILD") {
        let root = std::env::var("SPUR_BENCH_CHILD_LAKE").context("SPUR_BENCH_CHILD_LAKE")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        return runtime.block_on(child(&phase, &root));
    }
    let events = env_u64("SPUR_BENCH_EVENTS", 10_000_000)?;
    let visitors = env_u64("SPUR_BENCH_VISITORS", 200_000)?;
    let step = env_u64("SPUR_BENCH_STEP", 10_000)?;
    let latency_seconds = env_u64("SPUR_BENCH_LATENCY_SECS", 60)?;
    let rate = env_u64("SPUR_BENCH_RATE", 2_000)?;
    let flush = Duration::from_millis(env_u64("SPUR_BENCH_FLUSH_MS", 1_000)?.max(1));
    let interval = Duration::from_millis(env_u64("SPUR_BENCH_INTERVAL_MS", 1_000)?.max(1));
    let python = std::env::var("SPUR_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let temp = tempfile::tempdir()?;
    let root = match std::env::var("SPUR_BENCH_LAKE") {
        Ok(dir) if !dir.is_empty() => dir,
        _ => temp.path().to_str().context("temp dir")?.to_owned(),
    };
    // `RUST_LOG=spur_audience=debug` shows where a step's time goes.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "Spur scoring and segment benchmark: {events} events, {visitors} visitors, 30 days, lake {root}"
    );
    println!(
        "\n{:<34} {:>9} {:>8} {:>14}  notes",
        "phase", "elapsed s", "CPU s", "peak RSS"
    );

    // 1, 2: the lake, then `spur score`'s SQL on DataFusion in a process of its own.
    runtime.block_on(generate(&root, events, visitors))?;
    let (spur_seconds, spur_row) = {
        let report = in_child("score", &root)?
            .pop()
            .context("the score phase reported nothing")?;
        line(
            &report.phase,
            report.elapsed,
            report.cpu,
            &format!("{} kB", report.peak_kb),
            &report.notes,
        );
        (report.elapsed, report.row.context("no score row")?)
    };

    // 2b. the same SQL on DuckDB
    let sql = workload_sql(&|t| format!("epoch_ms({t})"))?;
    let cpu_before = children_cpu();
    let mut child = std::process::Command::new(&python)
        .args(["-c", DUCKDB_SCRIPT, &root])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {python} (needs duckdb and deltalake)"))?;
    use std::io::Write as _;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(sql.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "DuckDB run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .with_context(|| format!("DuckDB printed no result: {stdout}"))?;
    let duck_seconds = result["elapsed"].as_f64().unwrap_or(f64::NAN);
    line(
        "same SQL: DuckDB (Python)",
        duck_seconds,
        children_cpu() - cpu_before,
        &format!("{} kB", result["maxrss_kb"]),
        &format!(
            "result {}; Spur/DuckDB time {:.2}x",
            result["row"],
            spur_seconds / duck_seconds
        ),
    );
    // The two engines ran one SQL text over the same files: they must agree.
    let duck: Vec<Option<f64>> = serde_json::from_value(result["row"].clone())
        .with_context(|| format!("DuckDB's row is not numbers: {}", result["row"]))?;
    let agree = duck.len() == spur_row.len()
        && duck.iter().zip(&spur_row).all(|(a, b)| match a {
            None => b.is_nan(),
            Some(a) => (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0),
        });
    if !agree {
        bail!("Spur {spur_row:?} and DuckDB {duck:?} disagree");
    }

    if std::env::var("SPUR_BENCH_ONLY").is_ok_and(|only| only == "score") {
        return Ok(());
    }

    // 3–5 on this lake, 6 on a lake of a tenth of the history.
    let big = runtime.block_on(async {
        let mut lake = Lake::open(&root).await?;
        let latency = Latency {
            root: root.clone(),
            rate,
            seconds: latency_seconds,
            flush,
            interval,
        };
        let latency = (latency_seconds > 0).then_some(&latency);
        engine_phases(&mut lake, events, visitors, step, true, latency).await
    })?;
    let small_events = (events / 10).max(step);
    println!("\nthe same against a history of {small_events} events:");
    let small_dir = tempfile::tempdir()?;
    let small_root = small_dir.path().to_str().context("temp dir")?.to_owned();
    let small = runtime.block_on(async {
        let mut lake = generate(&small_root, small_events, visitors).await?;
        engine_phases(&mut lake, small_events, visitors, step, false, None).await
    })?;
    println!(
        "\nstep against {events} events / against {small_events}: {:.2}x (1.0: a step costs what is new)",
        big / small
    );
    println!(
        "\nelapsed: wall clock of the phase; CPU s: user+system of this process (DuckDB: of the\n\
         Python child, including its start and the Delta log read); peak RSS: VmHWM reset\n\
         before each Spur phase (so it includes what earlier phases of the same process left\n\
         allocated; score and restart/sweep run in processes of their own), and the Python\n\
         process's own VmHWM for DuckDB. Both engines use 2 threads on this 2-core machine."
    );
    Ok(())
}

async fn count(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Result<i64> {
    let batches = ctx.sql(sql).await?.collect().await?;
    let column = cast(batches[0].column(0), &DataType::Int64)?;
    Ok(column.as_primitive::<Int64Type>().value(0))
}

/// User + system CPU seconds of this process's waited-for children.
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (tick(13), tick(14)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}
