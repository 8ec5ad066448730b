//! The consume → process → commit loop, and the exactly-once protocol.
//!
//! One dedicated thread owns the Kafka consumer and drives the async lake through a
//! runtime handle, so the rebalance callback (which librdkafka runs inside `poll`) can
//! read the tables before partitions are assigned:
//!
//! - **Assign**: for each partition, read from the lake where `events` and `sessions`
//!   stand (their `txn` versions are the last Kafka offsets they contain), rebuild the
//!   open sessions and recent event ids, and assign the partition at the offset after
//!   the earlier of the two. Kafka's own committed offsets are never trusted for this.
//! - **Process**: decode, pseudonymise, de-duplicate by event id, sessionise. Rows for
//!   offsets that `events` already holds (a replay after a crash between the two
//!   commits) feed the sessioniser but are not written again.
//! - **Commit**: every `flush_interval` or `flush_max_events`: undecodable records to
//!   the dead-letter topic (acknowledged), then one Delta commit on `events` carrying
//!   the rows and a `txn` per partition, then one on `sessions` with the closed
//!   sessions, a `txn` per partition and the partition's watermark, and only then the
//!   Kafka offsets (for lag monitoring; not needed for correctness).
//! - **Revoke**: uncommitted work of revoked partitions is dropped; their next owner
//!   resumes from the tables.
//!
//! `kill -9` at any point therefore loses nothing and duplicates nothing: what a
//! commit made visible is never redone, what it did not is redone from Kafka.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use spur_keys::KeyRing;
use spur_keys::vault::Vault;
use spur_lake::model::{ContactRow, EventRow};
use spur_lake::positions::processor_app_id;
use spur_lake::{Lake, TableKind, id_digest, schema};
use spur_schemas::dead_letter::DeadLetter;
use spur_schemas::kafka::KafkaSettings;
use spur_schemas::record::SCHEMA_VERSION;
use spur_schemas::time::date;
use spur_telemetry::{Component, Health};
use tokio::runtime::Handle;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics;
use crate::restore;
use crate::sessions::Observed;
use crate::state::{PartitionState, PendingContact};
use crate::transform;

/// Where to start reading a partition: a little before its resume point, because some
/// brokers (tansu 0.6) answer a fetch inside a record batch with the *next* batch; the
/// records up to the resume point are skipped by `skip_through`.
fn start_offset(state: &PartitionState, config: &Config) -> Offset {
    state.resume_from().map_or(Offset::Beginning, |r| {
        Offset::Offset((r - i64::from(config.resume_rewind)).max(0))
    })
}

struct Shared {
    lake: Lake,
    parts: HashMap<i32, PartitionState>,
    /// Partitions whose work was discarded by fencing; reloaded after the flush.
    fenced: Vec<i32>,
    fatal: Option<String>,
    /// High watermark per partition, from librdkafka's periodic statistics.
    high: HashMap<i32, i64>,
    /// Digests of erased pseudonyms (table `erasures`): their events are dropped.
    erased: HashSet<String>,
    /// Version of `erasures` that `erased` reflects.
    erasures_seen: Option<i64>,
}

/// The consumer context: runs the rebalance protocol against the lake.
struct Ctx {
    shared: Arc<Mutex<Shared>>,
    handle: Handle,
    config: Config,
    topic: String,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl ClientContext for Ctx {
    /// librdkafka's own log (its `debug` property, e.g. `cgrp`, adds detail) goes to
    /// `tracing` under the target `librdkafka`.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(target: "librdkafka", fac, message)
            }
            L::Warning => tracing::warn!(target: "librdkafka", fac, message),
            _ => tracing::debug!(target: "librdkafka", fac, message),
        }
    }

    /// librdkafka's statistics (every `statistics.interval.ms`): the partitions' high
    /// watermarks, for the lag gauge.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut shared = lock(&self.shared);
        if let Some(topic) = statistics.topics.get(&self.topic) {
            for (partition, p) in &topic.partitions {
                if *partition >= 0 && p.hi_offset >= 0 {
                    shared.high.insert(*partition, p.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut shared = lock(&self.shared);
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                for partition in partitions {
                    let loaded = self.handle.block_on(restore::load(
                        &mut shared.lake,
                        &self.config,
                        &self.topic,
                        partition,
                    ));
                    match loaded {
                        Ok(state) => {
                            let offset = start_offset(&state, &self.config);
                            tracing::info!(
                                partition,
                                ?offset,
                                open_sessions = state.sessions.open_sessions().count(),
                                "partition assigned; resuming from the lake's position"
                            );
                            if let Err(e) = tpl.set_partition_offset(&self.topic, partition, offset)
                            {
                                shared.fatal = Some(format!(
                                    "cannot set offset of partition {partition}: {e}"
                                ));
                            }
                            shared.parts.insert(partition, state);
                        }
                        Err(e) => {
                            shared.fatal = Some(format!(
                                "cannot restore partition {partition} from the lake: {e}"
                            ));
                        }
                    }
                }
                gauges(&shared);
                drop(shared);
                if let Err(e) = consumer.assign(tpl) {
                    lock(&self.shared).fatal = Some(format!("assign failed: {e}"));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let mut shared = lock(&self.shared);
                for e in tpl.elements() {
                    if let Some(state) = shared.parts.remove(&e.partition()) {
                        tracing::info!(
                            partition = e.partition(),
                            uncommitted = state.rows.len(),
                            "partition revoked; its uncommitted work is left to the next owner"
                        );
                    }
                }
                gauges(&shared);
                drop(shared);
                let _ = consumer.unassign();
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                let _ = consumer.unassign();
            }
        }
    }
}

/// Runs the processor on the current (non-runtime) thread until `stop` is set. The
/// lake is driven through `handle`.
pub fn run_blocking(
    config: Config,
    kafka: KafkaSettings,
    handle: Handle,
    stop: Arc<AtomicBool>,
    health: Health,
) -> Result<()> {
    metrics::describe();
    // The poll loop turns at least every 100 ms; a flush may retry for ~20 s.
    let loop_health = health.register("consumer", Duration::from_secs(60));
    let lake_health = health.register("lake", Duration::MAX);
    let keys = Arc::new(KeyRing::load(&config.keys_dir)?);
    let lake = handle.block_on(Lake::open(&config.lake))?;
    let topic = kafka.topics.events.clone();
    let shared = Arc::new(Mutex::new(Shared {
        lake,
        parts: HashMap::new(),
        fenced: Vec::new(),
        fatal: None,
        high: HashMap::new(),
        erased: HashSet::new(),
        erasures_seen: None,
    }));
    let ctx = Ctx {
        shared: shared.clone(),
        handle: handle.clone(),
        config: config.clone(),
        topic: topic.clone(),
    };

    let mut client = spur_kafka::client_config(&kafka);
    client
        .set("group.id", &config.group_id)
        .set(
            "session.timeout.ms",
            config.session_timeout.as_millis().to_string(),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "range,roundrobin")
        .set("isolation.level", "read_committed");
    if !kafka.properties.contains_key("statistics.interval.ms") {
        // Feeds the lag gauge (see `Ctx::stats`).
        client.set("statistics.interval.ms", "5000");
    }
    let consumer: BaseConsumer<Ctx> = client.create_with_context(ctx)?;
    consumer.subscribe(&[topic.as_str()])?;
    let dead_letters: FutureProducer = {
        let mut p = spur_kafka::client_config(&kafka);
        p.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("client.id", "spur-processor");
        p.create()?
    };
    let out = Outputs {
        vault: Vault::new(&config.keys_dir),
        keys: keys.clone(),
        config: config.clone(),
        dead_letters,
        dead_letter_topic: kafka.topics.dead_letter.clone(),
        topic,
        handle,
        lake_health,
    };
    out.lake_health.healthy();

    tracing::info!(
        group = config.group_id,
        lake = config.lake,
        "processor started"
    );
    let mut last_flush = Instant::now();
    let mut last_gauges = Instant::now();
    let mut pending_dead: Vec<DeadLetter> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        loop_health.healthy();
        if last_gauges.elapsed() >= Duration::from_secs(1) {
            gauges(&lock(&shared));
            last_gauges = Instant::now();
        }
        if let Some(msg) = consumer.poll(Duration::from_millis(100)) {
            match msg {
                Ok(msg) => process(&mut lock(&shared), &msg, &keys, &mut pending_dead),
                Err(e) => tracing::warn!(error = %e, "consume error"),
            }
        }
        if let Some(fatal) = lock(&shared).fatal.take() {
            return Err(Error::Config(fatal));
        }
        let pending: usize = lock(&shared).parts.values().map(|p| p.rows.len()).sum();
        if pending >= config.flush_max_events || last_flush.elapsed() >= config.flush_interval {
            flush(&mut lock(&shared), &consumer, &out, &mut pending_dead)?;
            last_flush = Instant::now();
        }
    }
    flush(&mut lock(&shared), &consumer, &out, &mut pending_dead)?;
    tracing::info!("processor stopped");
    Ok(())
}

/// Partitions, open sessions and per-partition lag (from librdkafka's statistics: no
/// broker round trip).
fn gauges(shared: &Shared) {
    ::metrics::gauge!(metrics::PARTITIONS).set(shared.parts.len() as f64);
    let open: usize = shared
        .parts
        .values()
        .map(|p| p.sessions.open_sessions().count())
        .sum();
    ::metrics::gauge!(metrics::OPEN_SESSIONS).set(open as f64);
    for (partition, state) in &shared.parts {
        if let Some(&high) = shared.high.get(partition) {
            let next = state.events_done.map_or(0, |done| done + 1);
            ::metrics::gauge!(metrics::LAG, "partition" => partition.to_string())
                .set((high - next).max(0) as f64);
        }
    }
}

fn process(
    shared: &mut Shared,
    msg: &BorrowedMessage<'_>,
    keys: &KeyRing,
    dead: &mut Vec<DeadLetter>,
) {
    let partition = msg.partition();
    let offset = msg.offset();
    let Some(state) = shared.parts.get_mut(&partition) else {
        return; // not (or no longer) ours
    };
    if state.processed.is_some_and(|p| offset <= p)
        || state.skip_through.is_some_and(|s| offset <= s)
    {
        return; // delivered again after a seek, or read again from before the resume point
    }
    state.processed = Some(offset);
    let replay = state.events_done.is_some_and(|done| offset <= done);
    if replay {
        metrics::record("replayed");
    }
    let record = match transform::decode(msg.payload().unwrap_or_default()) {
        Ok(record) => record,
        Err(why) => {
            if !replay {
                metrics::record("dead_letter");
                dead.push(DeadLetter {
                    v: SCHEMA_VERSION,
                    reason: why.reason,
                    detail: why.detail,
                    stage: "processor".into(),
                    site_id: None,
                    event_id: None,
                    event_type: None,
                    index: 0,
                    size: msg.payload_len() as u64,
                    received_at: msg.timestamp().to_millis().unwrap_or_default(),
                });
            }
            return;
        }
    };
    let contact = transform::contact_of(&record).map(zeroize::Zeroizing::new);
    let row = transform::to_row(record, keys, partition, offset);
    if is_erased(&shared.erased, &row) {
        // Erased (GDPR Art. 17): nothing of it is stored again. The offset still
        // advances with the partition's next commit.
        metrics::record("erased");
        return;
    }
    let Some(state) = shared.parts.get_mut(&partition) else {
        return;
    };
    let mut row = row;
    let watermark = state.sessions.watermark().max(row.event_time);
    if !state
        .recent
        .insert(&row.event_id, row.event_time, watermark)
    {
        if !replay {
            metrics::record("duplicate");
        }
        return; // a retry of an event already processed
    }
    row.session_id = state.sessions.observe(&Observed {
        site_id: &row.site_id,
        visitor_id: &row.visitor_id,
        event_id: &row.event_id,
        event_time: row.event_time,
        event_type: &row.event_type,
        path: row.path.as_deref(),
        engaged_ms: row.engaged_ms,
        scroll_pct: row.scroll_pct,
        is_bot: row.is_bot,
        country: row.country.as_deref(),
        device: &row.device,
    });
    if !replay {
        metrics::record("row");
        if let (Some(address), Some(subject)) = (contact, &row.email_hash) {
            state.contacts.push(PendingContact {
                subject_id: subject.clone(),
                event_id: row.event_id.clone(),
                site_id: row.site_id.clone(),
                at: row.event_time,
                address,
            });
        }
        state.rows.push(row);
    }
}

struct Outputs {
    /// Seals addresses into `contacts` at each commit.
    vault: Vault,
    keys: Arc<KeyRing>,
    config: Config,
    dead_letters: FutureProducer,
    dead_letter_topic: String,
    topic: String,
    handle: Handle,
    lake_health: Component,
}

/// Commits everything processed: dead letters, `events`, `sessions`, Kafka offsets.
/// Whether a row belongs to an erased subject (its visitor id or e-mail pseudonym
/// has an erased digest).
fn is_erased(erased: &HashSet<String>, row: &EventRow) -> bool {
    !erased.is_empty()
        && (erased.contains(&id_digest(&row.visitor_id))
            || row
                .email_hash
                .as_deref()
                .is_some_and(|e| erased.contains(&id_digest(e))))
}

fn flush(
    shared: &mut Shared,
    consumer: &BaseConsumer<Ctx>,
    out: &Outputs,
    dead: &mut Vec<DeadLetter>,
) -> Result<()> {
    // New erasures apply from the next record on; rows of the subject already
    // buffered are dropped before they are written.
    let seen = shared.erasures_seen;
    let update = match out.handle.block_on(shared.lake.erased_since(seen)) {
        Ok(update) => update,
        Err(e) => {
            // Storage trouble shows in the commits below; the last list stays in force.
            tracing::warn!(error = %e, "reading the erasure list failed");
            None
        }
    };
    if let Some((version, erased)) = update {
        shared.erasures_seen = Some(version);
        shared.erased = erased;
        if !shared.erased.is_empty() {
            let erased = &shared.erased;
            for state in shared.parts.values_mut() {
                state.rows.retain(|row| !is_erased(erased, row));
                state
                    .closed
                    .retain(|s| !erased.contains(&id_digest(&s.visitor_id)));
            }
        }
    }
    if !dead.is_empty() {
        let sends = dead.iter().map(|dl| {
            let payload = serde_json::to_vec(dl).expect("dead letters serialise");
            let producer = out.dead_letters.clone();
            let topic = out.dead_letter_topic.clone();
            async move {
                producer
                    .send(
                        FutureRecord::<(), _>::to(&topic).payload(&payload),
                        Duration::from_secs(30),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e)
            }
        });
        for result in out.handle.block_on(futures::future::join_all(sends)) {
            result?;
        }
        for dl in dead.iter() {
            ::metrics::counter!(metrics::DEAD_LETTERED, "reason" => dl.reason.as_str())
                .increment(1);
        }
        tracing::warn!(count = dead.len(), "undecodable records dead-lettered");
        dead.clear();
    }
    let dirty: Vec<i32> = shared
        .parts
        .iter()
        .filter(|(_, s)| s.dirty())
        .map(|(p, _)| *p)
        .collect();
    if dirty.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    for p in &dirty {
        let state = shared.parts.get_mut(p).expect("dirty partitions exist");
        for mut s in state.sessions.close_idle() {
            s.kafka_partition = *p;
            state.closed.push(s);
        }
    }
    let (n_rows, n_sessions) = dirty.iter().fold((0, 0), |(r, c), p| {
        let state = &shared.parts[p];
        (r + state.rows.len(), c + state.closed.len())
    });
    // A failed commit leaves the tables as they were; retry with backoff. Before each
    // retry the tables are asked whether the commit landed after all (a lost answer),
    // so nothing is written twice.
    let mut delay = Duration::from_millis(500);
    for attempt in 1.. {
        match commit_tables(shared, out, &dirty) {
            Ok(()) => {
                out.lake_health.healthy();
                break;
            }
            Err(e) if attempt <= out.config.commit_retries => {
                out.lake_health
                    .unhealthy(format!("lake commits failing: {e}"));
                tracing::warn!(error = %e, attempt, ?delay, "lake commit failed; retrying");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(15));
                reconcile(shared, out, &dirty)?;
            }
            Err(e) => return Err(e),
        }
    }

    let mut offsets = TopicPartitionList::new();
    for p in &dirty {
        // A partition fenced off during the commit is gone from `parts`.
        if let Some(done) = shared.parts.get(p).and_then(|s| s.processed) {
            let _ = offsets.add_partition_offset(&out.topic, *p, Offset::Offset(done + 1));
        }
    }
    // Fenced partitions: if the group still gives them to us, continue from what the
    // lake holds now (a later fence or revoke settles it otherwise). Seeking discards
    // what librdkafka had already fetched for them.
    for p in std::mem::take(&mut shared.fenced) {
        let state =
            out.handle
                .block_on(restore::load(&mut shared.lake, &out.config, &out.topic, p))?;
        let offset = start_offset(&state, &out.config);
        if let Err(e) = consumer.seek(&out.topic, p, offset, Duration::from_secs(10)) {
            tracing::warn!(partition = p, error = %e, "could not seek a reloaded partition; leaving it idle");
            continue;
        }
        shared.parts.insert(p, state);
    }
    if let Err(e) = consumer.commit(&offsets, CommitMode::Async) {
        // Only lag monitoring depends on it: the lake holds the truth.
        tracing::debug!(error = %e, "kafka offset commit failed");
    }
    metrics::flushed(started.elapsed());
    tracing::info!(
        rows = n_rows,
        sessions = n_sessions,
        partitions = dirty.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "committed to the lake"
    );
    Ok(())
}

/// The two Delta commits of a flush; each partition's position moves only once its
/// commit succeeded.
fn commit_tables(shared: &mut Shared, out: &Outputs, dirty: &[i32]) -> Result<()> {
    // Fencing: a partition whose table position moved under us belongs to another
    // processor now (we were dropped from the group without a revoke); our work on it
    // is discarded rather than written twice.
    let mut dirty = dirty.to_vec();
    for p in dirty.clone() {
        let app = processor_app_id("events", &out.topic, p);
        let in_table = out
            .handle
            .block_on(shared.lake.txn_version(TableKind::Events, &app))?;
        if in_table != shared.parts[&p].events_done {
            tracing::warn!(
                partition = p,
                ?in_table,
                "partition written by another processor; dropping our work and reloading it"
            );
            shared.parts.remove(&p);
            shared.fenced.push(p);
            dirty.retain(|d| *d != p);
        }
    }
    let dirty = dirty.as_slice();
    let behind: Vec<i32> = dirty
        .iter()
        .copied()
        .filter(|p| shared.parts[p].processed > shared.parts[p].events_done)
        .collect();
    if !behind.is_empty() {
        // Sealed addresses first: an identify row in `events` always has its address
        // in `contacts`. A crash between the two commits writes the addresses again
        // on replay (readers take one row per event id); none is ever missing.
        let contacts = behind
            .iter()
            .flat_map(|p| shared.parts[p].contacts.iter())
            .map(|c| {
                Ok(ContactRow {
                    address: out
                        .vault
                        .seal(&out.keys, &c.subject_id, &c.event_id, &c.address)?,
                    subject_id: c.subject_id.clone(),
                    event_id: c.event_id.clone(),
                    site_id: c.site_id.clone(),
                    recorded_at: c.at,
                    dt: date(c.at),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if !contacts.is_empty() {
            append(
                shared,
                out,
                TableKind::Contacts,
                schema::contacts_batch(&contacts)?,
                &[],
            )?;
        }
        let rows: Vec<_> = behind
            .iter()
            .flat_map(|p| shared.parts[p].rows.iter().cloned())
            .collect();
        let txns: Vec<_> = behind
            .iter()
            .filter_map(|p| {
                Some((
                    processor_app_id("events", &out.topic, *p),
                    shared.parts[p].processed?,
                ))
            })
            .collect();
        append(
            shared,
            out,
            TableKind::Events,
            schema::events_batch(&rows)?,
            &txns,
        )?;
        for p in &behind {
            let state = shared.parts.get_mut(p).expect("dirty partitions exist");
            state.events_done = state.processed;
            state.rows.clear();
            state.contacts.clear();
        }
    }
    // Sessions still open when their visitor was erased close later: dropped here.
    let closed: Vec<_> = dirty
        .iter()
        .flat_map(|p| shared.parts[p].closed.iter().cloned())
        .filter(|s| shared.erased.is_empty() || !shared.erased.contains(&id_digest(&s.visitor_id)))
        .collect();
    let mut txns = Vec::new();
    for p in dirty {
        let state = &shared.parts[p];
        if let Some(processed) = state.processed {
            txns.push((processor_app_id("sessions", &out.topic, *p), processed));
            txns.push((
                processor_app_id("watermark", &out.topic, *p),
                state.sessions.watermark(),
            ));
            txns.push((
                processor_app_id("evicted", &out.topic, *p),
                state.sessions.evicted_until(),
            ));
        }
    }
    append(
        shared,
        out,
        TableKind::Sessions,
        schema::sessions_batch(&closed)?,
        &txns,
    )?;
    for p in dirty {
        let state = shared.parts.get_mut(p).expect("dirty partitions exist");
        state.sessions_done = state.processed;
        state.closed.clear();
    }
    Ok(())
}

/// One Delta commit, counted in the metrics.
fn append(
    shared: &mut Shared,
    out: &Outputs,
    kind: TableKind,
    batch: RecordBatch,
    txns: &[(String, i64)],
) -> Result<()> {
    let (rows, files_before) = (batch.num_rows(), shared.lake.file_count(kind));
    let table = kind.name();
    match out.handle.block_on(shared.lake.append(kind, batch, txns)) {
        Ok(_) => {
            // Exact unless another writer committed to the table in between.
            let files = shared.lake.file_count(kind).saturating_sub(files_before);
            ::metrics::counter!(metrics::ROWS_WRITTEN, "table" => table).increment(rows as u64);
            ::metrics::counter!(metrics::FILES_WRITTEN, "table" => table).increment(files as u64);
            Ok(())
        }
        Err(e) => {
            ::metrics::counter!(metrics::COMMIT_FAILURES, "table" => table).increment(1);
            Err(e.into())
        }
    }
}

/// After a failed commit: asks the tables where they stand, so that a commit which
/// landed although its answer was lost is not made again.
fn reconcile(shared: &mut Shared, out: &Outputs, dirty: &[i32]) -> Result<()> {
    // The handles may be stale (a commit landed although its answer was lost).
    out.handle.block_on(shared.lake.refresh())?;
    for p in dirty {
        let events = out.handle.block_on(shared.lake.txn_version(
            TableKind::Events,
            &processor_app_id("events", &out.topic, *p),
        ))?;
        let sessions = out.handle.block_on(shared.lake.txn_version(
            TableKind::Sessions,
            &processor_app_id("sessions", &out.topic, *p),
        ))?;
        let Some(state) = shared.parts.get_mut(p) else {
            continue;
        };
        if events.is_some() && events == state.processed && state.events_done != events {
            state.events_done = events;
            state.rows.clear();
            state.contacts.clear();
        }
        if sessions.is_some() && sessions == state.processed && state.sessions_done != sessions {
            state.sessions_done = sessions;
            state.closed.clear();
        }
    }
    Ok(())
}
