//! Live delivery to one endpoint inside the segment service: [`WebhookSink`] works
//! through the outbox in `seq` order from its cursor, delivers each wanted change
//! (retrying until `max_age`), parks what it could not deliver and what must not
//! overtake a parked change of the same subject, and reports its parked count as a
//! metric and on `/readyz`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use spur_audience::Change;
use spur_schemas::time::rfc3339_ms;
use spur_telemetry::{Component, Health, Metrics};
use tokio::sync::watch;
use tracing::{error, warn};

use super::config::WebhookConfig;
use super::delivery::{Endpoint, Outcome, Retry};
use super::state::{Cursor, ParkReason, Parked, Parking};
use crate::error::{Error, Result};
use crate::metrics::{record_webhook_delivered, record_webhook_parked, record_webhook_parked_now};
use crate::outbox::Outbox;

/// Changes taken from the outbox at a time.
const BATCH: usize = 100;
/// How long an idle task waits before looking again (for a replay's removals, too).
const IDLE: Duration = Duration::from_secs(10);
/// The pause after a state file could not be written, before trying again.
const STATE_RETRY: Duration = Duration::from_secs(5);

/// One webhook of the segment service, ready to run: its endpoint, its cursor and
/// its parking.
#[derive(Debug)]
pub(crate) struct WebhookSink {
    endpoint: Endpoint,
    cursor: Cursor,
    parking: Parking,
}

impl WebhookSink {
    /// The endpoint of `config`, with its state files under `state_dir`.
    pub(crate) fn open(config: &WebhookConfig, state_dir: &Path) -> Result<WebhookSink> {
        let state = |e: std::io::Error| Error::State {
            path: state_dir.display().to_string(),
            source: e,
        };
        let cursor = Cursor::open(state_dir, &config.name).map_err(state)?;
        let parking = Parking::open(state_dir, &config.name).map_err(state)?;
        Ok(WebhookSink {
            endpoint: Endpoint::new(config.clone())?,
            cursor,
            parking,
        })
    }

    /// Every change up to this seq is delivered or parked.
    pub(crate) fn position(&self) -> i64 {
        self.cursor.seq()
    }

    /// Delivers from the outbox (sink number `index`) until `stop`. Registers the
    /// health component `webhook:<name>`: fine while nothing is parked; with parked
    /// changes, or a state file that cannot be written, `/readyz` names the problem.
    pub(crate) async fn run(
        mut self,
        index: usize,
        outbox: Arc<Outbox>,
        mut stop: watch::Receiver<bool>,
        metrics: Arc<Metrics>,
        health: Health,
    ) {
        let sink = format!("webhook:{}", self.endpoint.name());
        // Health names are static; one per configured webhook and service start.
        let name: &'static str = Box::leak(sink.clone().into_boxed_str());
        let config = self.endpoint.config();
        // One delivery can take until `max_age` after the change was decided, plus
        // the last wait and attempt: only past that is silence a problem.
        let component = health.register(
            name,
            config.max_age + config.max_backoff + config.timeout + IDLE * 6,
        );
        let mut latest = outbox.subscribe();
        // Skipped changes (segments this webhook does not want) move the cursor in
        // memory; it is stored before the next delivery or when idle.
        let mut position = self.cursor.seq();
        self.report(&component, &metrics, &sink);
        loop {
            self.refresh(&component, &metrics, &sink);
            let batch = outbox.after(position, BATCH);
            if batch.is_empty() {
                if position > self.cursor.seq() && !self.store(position) {
                    component.unhealthy(format!(
                        "cannot store the cursor {}",
                        self.cursor.path().display()
                    ));
                } else {
                    self.report(&component, &metrics, &sink);
                }
                if !wait_for_work(&mut latest, &mut stop, position).await {
                    break;
                }
                continue;
            }
            for change in batch {
                if !self.endpoint.config().wants(&change.segment) {
                    position = change.seq;
                    outbox.done(index, position);
                    continue;
                }
                self.refresh(&component, &metrics, &sink);
                let Some(parked) = self.handle(&change, &mut stop, &metrics, &sink).await else {
                    return;
                };
                if let Some(entry) = parked {
                    let (reason, attempts) = (entry.reason, entry.attempts);
                    if let Err(e) = self.parking.park(entry) {
                        // Not recorded: do not move past it; try again after a pause.
                        error!(webhook = %self.endpoint.name(), change = %change.id, error = %e, path = %self.parking.path().display(), "Cannot park a webhook delivery.");
                        component.unhealthy(format!(
                            "cannot write the parking file {}: {e}",
                            self.parking.path().display()
                        ));
                        if !pause(&mut stop).await {
                            return;
                        }
                        break;
                    }
                    record_webhook_parked(&metrics, &sink, reason, attempts);
                    self.report(&component, &metrics, &sink);
                }
                position = change.seq;
                if !self.store(position) {
                    component.unhealthy(format!(
                        "cannot store the cursor {}",
                        self.cursor.path().display()
                    ));
                    if !pause(&mut stop).await {
                        return;
                    }
                }
                outbox.done(index, position);
            }
        }
    }

    /// Delivers `change` or says how to park it: `Some(None)` delivered,
    /// `Some(Some(entry))` to park, `None` stopped. A subject with a parked change
    /// gets its later changes parked behind it, unattempted (the ordering rule of
    /// the module documentation).
    async fn handle(
        &self,
        change: &Change,
        stop: &mut watch::Receiver<bool>,
        metrics: &Metrics,
        sink: &str,
    ) -> Option<Option<Parked>> {
        if let Some(first) = self.parking.first_of(&change.subject_id) {
            warn!(webhook = %self.endpoint.name(), change = %change.id, behind = first, "Webhook change parked behind an earlier parked change of its subject.");
            return Some(Some(Parked {
                behind: Some(first),
                ..Parked::new(change, ParkReason::SubjectParked)
            }));
        }
        let retry = Retry::live(self.endpoint.config(), change);
        match self.endpoint.deliver(change, retry, stop).await {
            Outcome::Delivered { attempts } => {
                record_webhook_delivered(metrics, sink, attempts);
                Some(None)
            }
            Outcome::Failed {
                attempts,
                first_attempt_ms,
                bound,
                error,
            } => {
                error!(webhook = %self.endpoint.name(), change = %change.id, attempts, bound = bound.as_str(), error, "Webhook change parked: run `spur segments replay` once the receiver is back.");
                Some(Some(Parked {
                    first_attempt_at: Some(rfc3339_ms(first_attempt_ms)),
                    attempts,
                    error: Some(error),
                    ..Parked::new(change, bound.into())
                }))
            }
            Outcome::Stopped => None,
        }
    }

    /// Reads the parking file again if a replay or an erasure changed it.
    fn refresh(&mut self, component: &Component, metrics: &Metrics, sink: &str) {
        match self.parking.refresh() {
            Ok(false) => {}
            Ok(true) => self.report(component, metrics, sink),
            Err(e) => {
                error!(webhook = %self.endpoint.name(), error = %e, path = %self.parking.path().display(), "Cannot read the parking file.");
                component.unhealthy(format!(
                    "cannot read the parking file {}: {e}",
                    self.parking.path().display()
                ));
            }
        }
    }

    /// The parked count, as a gauge and as a note in `/readyz` (the service stays
    /// ready: new changes keep flowing; the parked ones wait for the operator).
    fn report(&self, component: &Component, metrics: &Metrics, sink: &str) {
        let parked = self.parking.len();
        record_webhook_parked_now(metrics, sink, parked);
        if parked == 0 {
            component.healthy();
        } else {
            component.healthy_noting(format!(
                "{parked} changes parked; deliver them with `spur segments replay --webhook {}`",
                self.endpoint.name()
            ));
        }
    }

    /// Stores the cursor; false (logged) if the disk refused.
    fn store(&mut self, seq: i64) -> bool {
        match self.cursor.store(seq) {
            Ok(()) => true,
            Err(e) => {
                error!(error = %e, path = %self.cursor.path().display(), "Cannot store a webhook cursor.");
                false
            }
        }
    }
}

/// Waits until the outbox has something after `seq`, `stop` is set, or [`IDLE`]
/// passes. Returns false on stop.
async fn wait_for_work(
    latest: &mut watch::Receiver<i64>,
    stop: &mut watch::Receiver<bool>,
    seq: i64,
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
        () = tokio::time::sleep(IDLE) => true,
    }
}

/// Waits [`STATE_RETRY`]; false if `stop` came first.
async fn pause(stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => false,
        () = tokio::time::sleep(STATE_RETRY) => true,
    }
}
