//! The segment service (`spur segments`): the [`Engine`] evaluating every
//! `segments.interval` (a sweep of every subject every `sweep_interval`, and at
//! start), and one delivery task per sink — the Kafka topic and each webhook — each
//! working through the committed changes in `seq` order from its own cursor.
//!
//! Delivery reads only committed changes: an [`Outbox`] in memory holds those not
//! yet delivered everywhere, filled at start from table `segment_changes` (from the
//! lowest sink position) and after each commit. A sink that fails retries; the others
//! go on. On shutdown the evaluation stops, the Kafka producer flushes and a webhook
//! waiting to retry gives up its wait (the change is sent again after the restart,
//! with the same `webhook-id`).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use spur_lake::Lake;
use spur_schemas::kafka::KafkaSettings;
use spur_telemetry::{Health, Metrics};
use tokio::sync::watch;
use tracing::{error, info, warn};

use spur_audience::{Change, ChangeKind, Engine, LifecycleConfig, ScoringConfig};
use spur_lake::read::{int64s, strings};
use spur_schemas::confirm::ConfirmConfig;
use spur_schemas::unsubscribe::UnsubscribeConfig;

use crate::config::SegmentsConfig;
use crate::contacts::Addresses;
use crate::error::{Error, Result};
use crate::metrics::{
    record_evaluation, record_evaluation_failure, record_kafka_delivered, record_kafka_failure,
    record_outbox_pending,
};
use crate::sink::{KafkaSink, KafkaSinkConfig};
use crate::webhook::{Replayed, WebhookSink};

pub use crate::outbox::Outbox;

/// What the segment service runs on: the lake, the audience rules it evaluates, the
/// sinks and the unsubscribe and confirmation links it adds (`[lake]`, `[scoring]`,
/// `[lifecycle]`, `[segments]`, `[unsubscribe]`, `[confirm]`).
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Root of the Delta tables (`lake.root`).
    pub lake: String,
    pub scoring: ScoringConfig,
    pub lifecycle: LifecycleConfig,
    pub segments: SegmentsConfig,
    pub unsubscribe: UnsubscribeConfig,
    /// The double opt-in links of `consent.confirmation_requested` (`[confirm]`).
    pub confirm: ConfirmConfig,
    /// The key directory (`keys.dir`): the contact vault that `contact.email` is
    /// opened from. Needed when a sink has `include_contact`.
    pub keys_dir: Option<PathBuf>,
}

/// Runs the segment service until `shutdown` resolves, with the operator endpoints
/// on `listener`.
pub async fn run(
    config: Config,
    kafka: KafkaSettings,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    config.lifecycle.validate()?;
    config.segments.validate()?;
    config.unsubscribe.validate().map_err(Error::Config)?;
    config.confirm.validate().map_err(Error::Config)?;
    let health = Health::default();
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let local = listener.local_addr().ok();
    info!(addr = ?local, "segment service operator endpoints listening");
    let mut ops_stop = stop_rx.clone();
    let ops = tokio::spawn(spur_telemetry::serve(
        listener,
        health.clone(),
        metrics.handle(),
        async move {
            let _ = ops_stop.wait_for(|stop| *stop).await;
        },
    ));

    let mut lake = Lake::open(&config.lake).await?;
    let segments = &config.segments;
    let mut engine =
        Engine::load(&lake, &config.lifecycle, &segments.define, &config.scoring).await?;

    let sink_config = KafkaSinkConfig {
        topic: kafka.topics.segment_changes.clone(),
        partitions: segments.topic_partitions,
        replication: segments.topic_replication,
        ack_timeout: segments.ack_timeout,
        include_contact: segments.include_contact,
    };
    let sink = KafkaSink::connect(&kafka, sink_config.clone()).await?;
    let mut webhooks = Vec::new();
    for hook in &segments.webhooks {
        webhooks.push(WebhookSink::open(hook, &segments.state_dir)?);
    }

    // The outbox starts at the lowest sink position.
    let outbox = Outbox::new(1 + webhooks.len());
    let from = webhooks
        .iter()
        .map(WebhookSink::position)
        .fold(sink.done_through(), i64::min);
    outbox.done(0, sink.done_through());
    for (index, webhook) in webhooks.iter().enumerate() {
        outbox.done(index + 1, webhook.position());
    }
    let addresses = contact_sinks(&config)
        .then(|| {
            let dir = config.keys_dir.as_deref().ok_or_else(|| {
                Error::Config("include_contact needs keys.dir (the contact vault)".into())
            })?;
            Addresses::open(dir)
        })
        .transpose()?;
    outbox.push(
        outgoing(
            &config,
            &lake,
            addresses.as_ref(),
            load_changes(&lake, from).await?,
        )
        .await,
    );
    info!(
        pending = outbox.len(),
        from,
        next_seq = engine.next_seq(),
        "segment service started"
    );

    let mut tasks = Vec::new();
    let kafka_health = health.register("kafka", Duration::from_secs(60));
    tasks.push(tokio::spawn(kafka_task(
        sink,
        kafka.clone(),
        sink_config,
        outbox.clone(),
        stop_rx.clone(),
        metrics.clone(),
        kafka_health,
    )));
    for (index, webhook) in webhooks.into_iter().enumerate() {
        tasks.push(tokio::spawn(webhook.run(
            index + 1,
            outbox.clone(),
            stop_rx.clone(),
            metrics.clone(),
            health.clone(),
        )));
    }

    let evaluation = health.register(
        "evaluation",
        segments.interval.max(Duration::from_secs(30)) * 4,
    );
    tokio::pin!(shutdown);
    let mut next_sweep = Instant::now();
    let mut reload = false;
    loop {
        let started = Instant::now();
        let full = started >= next_sweep;
        let kind = if full { "sweep" } else { "step" };
        let result = async {
            if reload {
                lake.refresh().await?;
                engine = Engine::load(&lake, &config.lifecycle, &segments.define, &config.scoring)
                    .await?;
            }
            engine
                .step(&mut lake, chrono::Utc::now().timestamp_millis(), full)
                .await
        }
        .await;
        match result {
            Ok(summary) => {
                reload = false;
                evaluation.healthy();
                if full {
                    next_sweep = started + segments.sweep_interval;
                }
                record_evaluation(&metrics, kind, started, &summary, &engine, &segments.define);
                if !summary.changes.is_empty() {
                    info!(
                        kind,
                        changes = summary.changes.len(),
                        subjects = summary.subjects,
                        events = summary.events,
                        "segment changes committed"
                    );
                }
                outbox.push(outgoing(&config, &lake, addresses.as_ref(), summary.changes).await);
                record_outbox_pending(&metrics, outbox.len());
                // After the changes are on their way: a checkpoint only shortens the
                // catch-up of a restart, and a failed one leaves the previous one.
                let now = chrono::Utc::now().timestamp_millis();
                if (full || engine.checkpoint_due(now))
                    && let Err(e) = engine.checkpoint(&mut lake, now).await
                {
                    warn!(error = %e, "audience state checkpoint failed; a restart reads more events");
                }
            }
            Err(e) => {
                reload = true;
                error!(error = %e, source = ?std::error::Error::source(&e), kind, "segment evaluation failed");
                evaluation.unhealthy(format!("evaluation failed: {e}"));
                record_evaluation_failure(&metrics);
            }
        }
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(segments.interval.saturating_sub(started.elapsed())) => {}
        }
    }

    info!("segment service stopping");
    stop_tx.send_replace(true);
    for task in tasks {
        if let Err(e) = task.await {
            warn!(error = %e, "delivery task ended abnormally");
        }
    }
    let _ = ops.await;
    Ok(())
}

/// What every sink sends for committed `changes`: the changes with the links
/// added at send time. Live delivery and `spur segments replay` both go through it.
///
/// The address is opened from the vault here, never stored with the change. If the
/// lake cannot be read for it, the changes go without addresses (logged): they are
/// committed already, and holding them back would stall every sink.
async fn outgoing(
    config: &Config,
    lake: &Lake,
    addresses: Option<&Addresses>,
    changes: Vec<Change>,
) -> Vec<Change> {
    let mut changes: Vec<Change> = changes
        .into_iter()
        .map(|c| {
            c.with_unsubscribe(&config.unsubscribe)
                .with_confirm_link(&config.confirm)
        })
        .collect();
    if let Some(addresses) = addresses
        && let Err(e) = addresses.add(lake, &mut changes).await
    {
        error!(error = %e, changes = changes.len(), "addresses could not be read; these changes go without contact.email");
    }
    changes
}

/// Whether any sink sends `contact.email`.
fn contact_sinks(config: &Config) -> bool {
    config.segments.include_contact || config.segments.webhooks.iter().any(|w| w.include_contact)
}

/// `spur segments replay --webhook NAME`: delivers the changes webhook `name` parked,
/// read again from table `segment_changes` as live delivery reads them (see
/// [`crate::webhook`], "Parking and replay"). Safe while the service runs.
pub async fn replay(config: &Config, name: &str, stop: watch::Receiver<bool>) -> Result<Replayed> {
    config.segments.validate()?;
    config.unsubscribe.validate().map_err(Error::Config)?;
    let hook = config
        .segments
        .webhooks
        .iter()
        .find(|hook| hook.name == name)
        .ok_or_else(|| Error::Config(format!("segments.webhooks has no webhook {name:?}")))?;
    let lake = Lake::open(&config.lake).await?;
    let addresses = match (&config.keys_dir, hook.include_contact) {
        (Some(dir), true) => Some(Addresses::open(dir)?),
        _ => None,
    };
    let load = async |seqs: &[i64]| {
        let changes = load_changes_at(&lake, seqs).await?;
        Ok(outgoing(config, &lake, addresses.as_ref(), changes).await)
    };
    crate::webhook::replay(hook, &config.segments.state_dir, load, stop).await
}

/// Committed changes with `seq` after `after`, in order.
pub async fn load_changes(lake: &Lake, after: i64) -> Result<Vec<Change>> {
    select_changes(lake, &format!("seq > {after}")).await
}

/// The committed changes with these seqs that are still in the table, in order.
pub async fn load_changes_at(lake: &Lake, seqs: &[i64]) -> Result<Vec<Change>> {
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = seqs.iter().map(i64::to_string).collect();
    select_changes(lake, &format!("seq IN ({})", list.join(","))).await
}

async fn select_changes(lake: &Lake, filter: &str) -> Result<Vec<Change>> {
    let ctx = lake.session_context().await?;
    let batches = ctx
        .sql(&format!(
            "SELECT change_id, seq, segment, subject_id, change, reason,
                    CAST(at AS BIGINT) / 1000 AS at_ms
             FROM segment_changes WHERE {filter} ORDER BY seq"
        ))
        .await
        .map_err(Error::Query)?
        .collect()
        .await
        .map_err(Error::Query)?;
    let mut out = Vec::new();
    for batch in &batches {
        read_changes(batch, &mut out)?;
    }
    Ok(out)
}

fn read_changes(batch: &RecordBatch, out: &mut Vec<Change>) -> Result<()> {
    let (seq, at) = (int64s(batch, "seq")?, int64s(batch, "at_ms")?);
    let ids = strings(batch, "change_id")?;
    let segments = strings(batch, "segment")?;
    let subjects = strings(batch, "subject_id")?;
    let kinds = strings(batch, "change")?;
    let reasons = strings(batch, "reason")?;
    for row in 0..batch.num_rows() {
        let kind = kinds[row]
            .as_deref()
            .and_then(ChangeKind::parse)
            .ok_or_else(|| {
                Error::Config(format!(
                    "segment_changes row {} has no valid change",
                    seq[row]
                ))
            })?;
        out.push(Change {
            id: ids[row].clone().unwrap_or_default(),
            seq: seq[row],
            segment: segments[row].clone().unwrap_or_default(),
            subject_id: subjects[row].clone().unwrap_or_default(),
            change: kind,
            reason: reasons[row].clone().unwrap_or_default(),
            unsubscribe_url: None,
            confirm_url: None,
            confirm_expires_at: None,
            contact: None,
            at_ms: at[row],
        });
    }
    Ok(())
}

/// Waits until the outbox has something after `seq`, `stop` is set, or `idle`
/// passes. Returns false on stop.
async fn wait_for_work(
    latest: &mut watch::Receiver<i64>,
    stop: &mut watch::Receiver<bool>,
    seq: i64,
    idle: Duration,
) -> bool {
    if *stop.borrow() {
        return false;
    }
    if *latest.borrow_and_update() > seq {
        return true;
    }
    tokio::select! {
        _ = stop.wait_for(|s| *s) => false,
        _ = latest.changed() => true,
        () = tokio::time::sleep(idle) => true,
    }
}

const KAFKA_BATCH: usize = 500;

async fn kafka_task(
    mut sink: KafkaSink,
    kafka: KafkaSettings,
    config: KafkaSinkConfig,
    outbox: Arc<Outbox>,
    mut stop: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    health: spur_telemetry::Component,
) {
    let mut latest = outbox.subscribe();
    let mut position = sink.done_through();
    let mut failures = 0u32;
    loop {
        let batch = outbox.after(position, KAFKA_BATCH);
        if batch.is_empty() {
            health.healthy();
            if !wait_for_work(&mut latest, &mut stop, position, Duration::from_secs(10)).await {
                break;
            }
            continue;
        }
        let last = batch.last().map_or(position, |c| c.seq);
        match sink.send(&batch).await {
            Ok(produced) => {
                failures = 0;
                position = last;
                outbox.done(0, position);
                health.healthy();
                record_kafka_delivered(&metrics, produced);
            }
            Err(e) => {
                failures += 1;
                warn!(error = %e, failures, "producing segment changes failed; rebuilding the producer");
                health.unhealthy(format!("producing segment changes: {e}"));
                record_kafka_failure(&metrics);
                let pause = Duration::from_millis(500 * u64::from(failures.min(20)));
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    () = tokio::time::sleep(pause) => {}
                }
                // What landed is learnt from the topic itself.
                match KafkaSink::connect(&kafka, config.clone()).await {
                    Ok(fresh) => sink = fresh,
                    Err(e) => warn!(error = %e, "reconnecting to kafka failed"),
                }
            }
        }
    }
    sink.flush();
}
