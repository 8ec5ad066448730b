//! The outbox: the committed segment changes held in memory until every sink (the
//! Kafka topic and each webhook) is done with them, with each sink's position and a
//! signal of the latest `seq` for the delivery tasks waiting on new work.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use spur_audience::Change;
use tokio::sync::watch;

/// Committed changes not yet delivered by every sink.
#[derive(Debug)]
pub struct Outbox {
    inner: Mutex<OutboxInner>,
    latest: watch::Sender<i64>,
}

#[derive(Debug, Default)]
struct OutboxInner {
    changes: BTreeMap<i64, Change>,
    /// Per sink, every change up to this seq is done.
    positions: Vec<i64>,
}

impl Outbox {
    pub(crate) fn new(sinks: usize) -> Arc<Outbox> {
        Arc::new(Outbox {
            inner: Mutex::new(OutboxInner {
                changes: BTreeMap::new(),
                positions: vec![0; sinks],
            }),
            latest: watch::channel(0).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, changes: Vec<Change>) {
        let Some(last) = changes.last().map(|c| c.seq) else {
            return;
        };
        self.lock()
            .changes
            .extend(changes.into_iter().map(|c| (c.seq, c)));
        self.latest.send_replace(last);
    }

    /// Up to `limit` changes after `seq`, in order.
    pub(crate) fn after(&self, seq: i64, limit: usize) -> Vec<Change> {
        self.lock()
            .changes
            .range(seq + 1..)
            .take(limit)
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// Sink `sink` is done through `seq`: drops what every sink is done with.
    pub(crate) fn done(&self, sink: usize, seq: i64) {
        let mut inner = self.lock();
        if let Some(position) = inner.positions.get_mut(sink) {
            *position = (*position).max(seq);
        }
        let through = inner.positions.iter().copied().min().unwrap_or(seq);
        inner.changes.retain(|s, _| *s > through);
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().changes.len()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<i64> {
        self.latest.subscribe()
    }
}
