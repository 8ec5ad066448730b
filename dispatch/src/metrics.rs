//! The segment service's metrics: their names, and one function per place the
//! service records them, each through the service's own recorder
//! ([`Metrics::with`]). Labels: `kind` (`sweep` or `step`), a change's `change` and
//! `reason` (for parked changes: why parked), `segment` (a defined segment's name)
//! and `sink` (`kafka` or `webhook:<name>`); never a subject.

use std::time::Instant;

use spur_audience::{Engine, SegmentDef, StepSummary};
use spur_telemetry::Metrics;

use crate::webhook::ParkReason;

/// Evaluations that succeeded, by `kind`.
const EVALUATIONS: &str = "spur_segments_evaluations_total";
/// How long a successful evaluation took, by `kind`.
const EVALUATION_DURATION: &str = "spur_segments_evaluation_duration_seconds";
/// Evaluations that failed (the next one reloads the engine).
const EVALUATION_FAILURES: &str = "spur_segments_evaluation_failures_total";
/// New events the evaluations covered.
const EVENTS_EVALUATED: &str = "spur_segments_events_evaluated_total";
/// Changes committed, by `change` and `reason`.
const CHANGES: &str = "spur_segments_changes_total";
/// Members of each defined segment after the last evaluation, by `segment`.
const MEMBERS: &str = "spur_segments_members";
/// Committed changes not yet delivered by every sink.
const OUTBOX_PENDING: &str = "spur_segments_outbox_pending";
/// Changes delivered, by `sink`.
const DELIVERED: &str = "spur_segments_delivered_total";
/// Failed delivery attempts, by `sink`.
const DELIVERY_FAILURES: &str = "spur_segments_delivery_failures_total";
/// Changes a webhook parked, by `sink` and `reason` (`max_age`, `max_attempts`,
/// `subject_parked`).
const PARKED: &str = "spur_segments_parked_total";
/// Changes parked now, waiting for `spur segments replay`, by `sink`.
const WEBHOOK_PARKED: &str = "spur_segments_webhook_parked";

/// A successful evaluation of `kind` that started at `started`: its count and
/// duration, the events it covered, the changes it committed, and then each defined
/// segment's members in `engine`.
pub(crate) fn record_evaluation(
    metrics: &Metrics,
    kind: &'static str,
    started: Instant,
    summary: &StepSummary,
    engine: &Engine,
    segments: &[SegmentDef],
) {
    metrics.with(|| {
        metrics::counter!(EVALUATIONS, "kind" => kind).increment(1);
        metrics::histogram!(EVALUATION_DURATION, "kind" => kind)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!(EVENTS_EVALUATED).increment(summary.events);
        for change in &summary.changes {
            metrics::counter!(
                CHANGES,
                "change" => change.change.as_str(),
                "reason" => change.reason.clone()
            )
            .increment(1);
        }
        for segment in segments {
            let members = engine.members(&segment.name).count();
            metrics::gauge!(MEMBERS, "segment" => segment.name.clone()).set(members as f64);
        }
    });
}

/// The outbox holds `pending` changes.
pub(crate) fn record_outbox_pending(metrics: &Metrics, pending: usize) {
    metrics.with(|| {
        metrics::gauge!(OUTBOX_PENDING).set(pending as f64);
    });
}

/// An evaluation failed.
pub(crate) fn record_evaluation_failure(metrics: &Metrics) {
    metrics.with(|| {
        metrics::counter!(EVALUATION_FAILURES).increment(1);
    });
}

/// The Kafka sink produced `produced` changes.
pub(crate) fn record_kafka_delivered(metrics: &Metrics, produced: usize) {
    metrics.with(|| {
        metrics::counter!(DELIVERED, "sink" => "kafka").increment(produced as u64);
    });
}

/// Producing a batch to the Kafka sink failed.
pub(crate) fn record_kafka_failure(metrics: &Metrics) {
    metrics.with(|| {
        metrics::counter!(DELIVERY_FAILURES, "sink" => "kafka").increment(1);
    });
}

/// Webhook `sink` delivered a change on attempt number `attempts`: one delivery,
/// and the attempts before it as failures.
pub(crate) fn record_webhook_delivered(metrics: &Metrics, sink: &str, attempts: u32) {
    metrics.with(|| {
        metrics::counter!(DELIVERED, "sink" => sink.to_owned()).increment(1);
        metrics::counter!(DELIVERY_FAILURES, "sink" => sink.to_owned())
            .increment(u64::from(attempts.saturating_sub(1)));
    });
}

/// Webhook `sink` parked a change for `reason` after `attempts` failed attempts (none
/// when parked behind an earlier change of its subject).
pub(crate) fn record_webhook_parked(
    metrics: &Metrics,
    sink: &str,
    reason: ParkReason,
    attempts: u32,
) {
    metrics.with(|| {
        metrics::counter!(PARKED, "sink" => sink.to_owned(), "reason" => reason.as_str())
            .increment(1);
        metrics::counter!(DELIVERY_FAILURES, "sink" => sink.to_owned())
            .increment(u64::from(attempts));
    });
}

/// Webhook `sink` has `parked` changes parked now.
pub(crate) fn record_webhook_parked_now(metrics: &Metrics, sink: &str, parked: usize) {
    metrics.with(|| {
        metrics::gauge!(WEBHOOK_PARKED, "sink" => sink.to_owned()).set(parked as f64);
    });
}
