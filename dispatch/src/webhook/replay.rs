//! `spur segments replay --webhook NAME`: the parked changes of one endpoint sent
//! again, in `seq` order, with their original ids, each removed from the parking
//! once delivered. The changes themselves come from table `segment_changes` through
//! the caller's loader (the segment service's own reading, so that the body is the
//! one live delivery sends); the parking file holds no body.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::Path;

use serde::Serialize;
use spur_audience::Change;
use tokio::sync::watch;
use tracing::{info, warn};

use super::config::WebhookConfig;
use super::delivery::{Endpoint, Outcome, Retry};
use super::state::{Parked, Parking, state_file};
use crate::error::{Error, Result};

/// Attempts per parked change during a replay (with the endpoint's backoff) before
/// the replay stops, leaving it and the rest parked.
pub const REPLAY_ATTEMPTS: u32 = 3;
/// Changes loaded from the lake at a time.
const CHUNK: usize = 500;

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Replayed {
    pub webhook: String,
    /// Parked changes delivered and removed from the parking.
    pub delivered: usize,
    /// Parked changes no longer in `segment_changes` (the subject was erased, or
    /// retention removed the rows): removed from the parking, not sent.
    pub gone: usize,
    /// Still parked when the replay ended.
    pub remaining: usize,
    /// Why the replay ended before the parking was empty: the change that could not
    /// be delivered and its last error, or a stop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// Replays the parking of webhook `config` under `state_dir`. `load` returns the
/// committed changes with the given seqs, in seq order, as live delivery sends them
/// (a seq without a row is left out).
///
/// Safe while the segment service runs (see the module documentation, "Parking and
/// replay"); a second replay of the same webhook at the same time is refused.
/// Stops at the first change that still fails after [`REPLAY_ATTEMPTS`] attempts,
/// or when `stop` is set; that is not an error: [`Replayed::stopped`] says why.
pub async fn replay<L>(
    config: &WebhookConfig,
    state_dir: &Path,
    load: L,
    mut stop: watch::Receiver<bool>,
) -> Result<Replayed>
where
    L: AsyncFn(&[i64]) -> Result<Vec<Change>>,
{
    let state = |e: std::io::Error| Error::State {
        path: state_dir.display().to_string(),
        source: e,
    };
    let endpoint = Endpoint::new(config.clone())?;
    let _replaying = exclusive(state_dir, &config.name)?;
    let mut parking = Parking::open(state_dir, &config.name).map_err(state)?;
    let mut replayed = Replayed {
        webhook: config.name.clone(),
        ..Replayed::default()
    };
    // The segment service may park more while this runs, always after what it
    // parked before: keep going past the last seq handled until nothing is left.
    let mut after = i64::MIN;
    'rounds: loop {
        parking.refresh().map_err(state)?;
        let round: Vec<Parked> = parking
            .entries()
            .filter(|e| e.seq > after)
            .take(CHUNK)
            .cloned()
            .collect();
        if round.is_empty() {
            break;
        }
        let seqs: Vec<i64> = round.iter().map(|e| e.seq).collect();
        let mut changes: HashMap<i64, Change> =
            load(&seqs).await?.into_iter().map(|c| (c.seq, c)).collect();
        for entry in round {
            after = entry.seq;
            let Some(change) = changes.remove(&entry.seq) else {
                warn!(webhook = %config.name, seq = entry.seq, change = %entry.id, "Parked change no longer in segment_changes (erased or past retention): dropped from the parking.");
                parking.remove(entry.seq).map_err(state)?;
                replayed.gone += 1;
                continue;
            };
            if change.id != entry.id {
                return Err(Error::Config(format!(
                    "parked change {} has id {} but segment_changes holds {} at that seq: this lake is not the one that decided it",
                    entry.seq, entry.id, change.id
                )));
            }
            match endpoint
                .deliver(&change, Retry::attempts(REPLAY_ATTEMPTS), &mut stop)
                .await
            {
                Outcome::Delivered { attempts } => {
                    parking.remove(entry.seq).map_err(state)?;
                    replayed.delivered += 1;
                    info!(webhook = %config.name, seq = entry.seq, change = %entry.id, attempts, "Parked change delivered.");
                }
                Outcome::Failed {
                    attempts, error, ..
                } => {
                    replayed.stopped = Some(format!(
                        "change {} (seq {}) failed {attempts} attempts, the last: {error}",
                        entry.id, entry.seq
                    ));
                    break 'rounds;
                }
                Outcome::Stopped => {
                    replayed.stopped = Some("stopped".to_owned());
                    break 'rounds;
                }
            }
        }
    }
    parking.refresh().map_err(state)?;
    replayed.remaining = parking.len();
    Ok(replayed)
}

/// Holds `webhook-<name>.replay.lock` exclusively for as long as the file is kept
/// open; refuses if another replay holds it.
pub(super) fn exclusive(state_dir: &Path, name: &str) -> Result<std::fs::File> {
    let state = |path: &Path, e: std::io::Error| Error::State {
        path: path.display().to_string(),
        source: e,
    };
    let path = state_file(state_dir, name, "replay.lock").map_err(|e| state(state_dir, e))?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| state(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(state(
            &path,
            std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!("another replay of webhook {name:?} is running and holds this lock"),
            ),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(state(&path, e)),
    }
}
