//! What an endpoint keeps on disk under `state_dir`: its [`Cursor`] (the last `seq`
//! handled, so that a restart resumes after it) and its [`Parking`] (the changes
//! delivery stopped retrying, for `spur segments replay`), both in files named by
//! `state_file`.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use spur_audience::Change;
use spur_audience::config::valid_name;
use spur_schemas::time::rfc3339_ms;

use super::delivery::Bound;

/// The last `seq` an endpoint handled (delivered or parked), in
/// `<state_dir>/webhook-<name>.cursor` as one decimal number, so that a restart
/// resumes after it. The file is replaced atomically and durably on every store.
///
/// Blocking file I/O: a few syscalls and two fsyncs per store.
#[derive(Debug)]
pub struct Cursor {
    path: PathBuf,
    seq: i64,
}

impl Cursor {
    /// Reads the cursor of endpoint `name`, creating `state_dir` if needed. A missing
    /// file is seq 0 (nothing handled yet); a file that does not hold a non-negative
    /// decimal number is an error, not 0, since 0 would resend every change.
    pub fn open(state_dir: &Path, name: &str) -> io::Result<Cursor> {
        let path = state_file(state_dir, name, "cursor")?;
        let seq = match fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|seq| *seq >= 0)
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "webhook cursor {} does not hold a sequence number; fix it, or delete it to resend from the start",
                            path.display()
                        ),
                    )
                })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(Cursor { path, seq })
    }

    /// The last seq handled; 0 when none was.
    pub fn seq(&self) -> i64 {
        self.seq
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `seq` as handled. When this returns, the new value survives a crash or
    /// power loss: it is written to a temporary file in the same directory, synced,
    /// renamed over the cursor, and the directory is synced. On error the file still
    /// holds the old value or the new one, never a mix.
    pub fn store(&mut self, seq: i64) -> io::Result<()> {
        spur_keys::files::replace_private(&self.path, format!("{seq}\n").as_bytes())?;
        self.seq = seq;
        Ok(())
    }
}

/// Why a change is parked: a bound of its own delivery ([`Bound`]), or an earlier
/// parked change of the same subject it must not overtake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParkReason {
    /// Retried until `max_age` after it was decided.
    MaxAge,
    /// `max_attempts` attempts failed; also every line of the old give-up log.
    MaxAttempts,
    /// Not attempted: an earlier change of the same subject is parked (`behind`).
    SubjectParked,
}

impl ParkReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ParkReason::MaxAge => "max_age",
            ParkReason::MaxAttempts => "max_attempts",
            ParkReason::SubjectParked => "subject_parked",
        }
    }
}

impl From<Bound> for ParkReason {
    fn from(bound: Bound) -> ParkReason {
        match bound {
            Bound::MaxAge => ParkReason::MaxAge,
            Bound::MaxAttempts => ParkReason::MaxAttempts,
        }
    }
}

/// One parked change: what identifies it and why it is parked, never its body (the
/// body may carry contact data; replay rebuilds it from table `segment_changes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    pub seq: i64,
    /// The change id, `chg_…`: the `webhook-id` replay sends again.
    pub id: String,
    pub segment: String,
    pub subject_id: String,
    /// `segment.entered` or `segment.exited`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Lines of the old give-up log have none: they gave up on `max_attempts`.
    #[serde(default = "max_attempts_reason")]
    pub reason: ParkReason,
    /// For [`ParkReason::SubjectParked`]: the seq of the earlier parked change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind: Option<i64>,
    /// When the first attempt started (RFC 3339); none when never attempted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_attempt_at: Option<String>,
    #[serde(default)]
    pub attempts: u32,
    /// The last attempt's error; none when never attempted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was parked (RFC 3339).
    pub at: String,
}

fn max_attempts_reason() -> ParkReason {
    ParkReason::MaxAttempts
}

impl Parked {
    /// The entry for `change`, parked now.
    pub fn new(change: &Change, reason: ParkReason) -> Parked {
        Parked {
            seq: change.seq,
            id: change.id.clone(),
            segment: change.segment.clone(),
            subject_id: change.subject_id.clone(),
            kind: change.change.event_type().to_owned(),
            reason,
            behind: None,
            first_attempt_at: None,
            attempts: 0,
            error: None,
            at: rfc3339_ms(chrono::Utc::now().timestamp_millis()),
        }
    }
}

/// The changes an endpoint parked, for `spur segments replay`: one JSON object per
/// line in `<state_dir>/webhook-<name>.parked.jsonl`, in the order they were parked
/// (which is `seq` order):
///
/// ```json
/// {"seq":42,"id":"chg_…","segment":"fans","subject_id":"…","type":"segment.entered",
///  "reason":"max_age","first_attempt_at":"2026-11-29T12:00:00.120Z","attempts":880,
///  "error":"HTTP 500 Internal Server Error","at":"2026-12-02T12:00:00.004Z"}
/// ```
///
/// Every change to the file is made holding an exclusive lock on
/// `webhook-<name>.parked.jsonl.lock` (`flock`), by the segment service (appends),
/// replay (removals) and erasure (`spur subject erase` removes a subject's lines),
/// so that no process loses another's write. Appends are synced; removals rewrite
/// the file to a temporary one, sync it and rename it over the file.
///
/// A file of the old give-up log, `webhook-<name>.failed.jsonl` (a subset of these
/// fields), is folded in when the parking is opened, then deleted.
///
/// Blocking file I/O; each operation reads the whole file, which holds few lines.
#[derive(Debug)]
pub struct Parking {
    dir: PathBuf,
    path: PathBuf,
    lock: PathBuf,
    entries: BTreeMap<i64, Parked>,
    /// Parked changes per subject.
    subjects: HashMap<String, usize>,
    /// Length and modification time of the file when last read.
    seen: Option<(u64, Option<SystemTime>)>,
}

impl Parking {
    /// The parking of endpoint `name`, creating `state_dir` if needed, folding in an
    /// old give-up log, and reading the file.
    pub fn open(state_dir: &Path, name: &str) -> io::Result<Parking> {
        let path = state_file(state_dir, name, "parked.jsonl")?;
        let mut lock = path.clone().into_os_string();
        lock.push(".lock");
        let mut parking = Parking {
            dir: state_dir.to_owned(),
            path,
            lock: lock.into(),
            entries: BTreeMap::new(),
            subjects: HashMap::new(),
            seen: None,
        };
        let old = state_file(state_dir, name, "failed.jsonl")?;
        if old.exists() {
            let _lock = parking.locked()?;
            parking.read()?;
            let given_up = parse(&fs::read_to_string(&old)?, &old)?;
            for entry in given_up.into_values() {
                parking.entries.entry(entry.seq).or_insert(entry);
            }
            parking.write()?;
            fs::remove_file(&old)?;
            spur_keys::files::sync_dir(&parking.dir)?;
        }
        let _lock = parking.locked()?;
        parking.read()?;
        Ok(parking)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parked changes, by `seq`, as last read.
    pub fn entries(&self) -> impl Iterator<Item = &Parked> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first parked change of `subject_id`, as last read: later changes of the
    /// subject must be parked behind it.
    pub fn first_of(&self, subject_id: &str) -> Option<i64> {
        if !self.subjects.contains_key(subject_id) {
            return None;
        }
        self.entries
            .values()
            .find(|e| e.subject_id == subject_id)
            .map(|e| e.seq)
    }

    /// Reads the file again if another process (replay, erasure) changed it since
    /// the last read. Returns whether it did.
    pub fn refresh(&mut self) -> io::Result<bool> {
        if self.stamp()? == self.seen {
            return Ok(false);
        }
        let _lock = self.locked()?;
        self.read()?;
        Ok(true)
    }

    /// Appends `entry` and syncs it, unless its `seq` is already parked (a restart
    /// between parking and the cursor store parks the change again).
    pub fn park(&mut self, entry: Parked) -> io::Result<()> {
        let _lock = self.locked()?;
        self.read()?;
        if self.entries.contains_key(&entry.seq) {
            return Ok(());
        }
        let mut line = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let created = !self.path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(&line)?;
        file.sync_data()?;
        if created {
            spur_keys::files::sync_dir(&self.dir)?;
        }
        drop(file);
        self.insert(entry);
        self.seen = self.stamp()?;
        Ok(())
    }

    /// Removes the change `seq` (delivered by replay, or gone from the lake). When
    /// this returns, the removal survives a crash. Removing what is not there is not
    /// an error.
    pub fn remove(&mut self, seq: i64) -> io::Result<()> {
        let _lock = self.locked()?;
        self.read()?;
        if self.entries.remove(&seq).is_some() {
            self.write()?;
            self.index();
        }
        Ok(())
    }

    /// An exclusive lock on the lock file, held until the guard is dropped.
    fn locked(&self) -> io::Result<fs::File> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)?;
        file.lock()?;
        Ok(file)
    }

    fn stamp(&self) -> io::Result<Option<(u64, Option<SystemTime>)>> {
        match fs::metadata(&self.path) {
            Ok(meta) => Ok(Some((meta.len(), meta.modified().ok()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads the file (the caller holds the lock).
    fn read(&mut self) -> io::Result<()> {
        let seen = self.stamp()?;
        self.entries = match fs::read_to_string(&self.path) {
            Ok(text) => parse(&text, &self.path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        self.index();
        self.seen = seen;
        Ok(())
    }

    /// Replaces the file with the entries (the caller holds the lock).
    fn write(&mut self) -> io::Result<()> {
        let mut text = Vec::new();
        for entry in self.entries.values() {
            serde_json::to_writer(&mut text, entry).map_err(io::Error::other)?;
            text.push(b'\n');
        }
        spur_keys::files::replace_private(&self.path, &text)?;
        self.seen = self.stamp()?;
        Ok(())
    }

    fn insert(&mut self, entry: Parked) {
        *self.subjects.entry(entry.subject_id.clone()).or_default() += 1;
        self.entries.insert(entry.seq, entry);
    }

    fn index(&mut self) {
        self.subjects.clear();
        for entry in self.entries.values() {
            *self.subjects.entry(entry.subject_id.clone()).or_default() += 1;
        }
    }
}

/// The entries of a parking file (or an old give-up log), by seq; a line that does
/// not parse is an error naming the file and the line, not skipped: it may be a
/// change nobody would then replay.
fn parse(text: &str, path: &Path) -> io::Result<BTreeMap<i64, Parked>> {
    let mut entries = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry: Parked = serde_json::from_str(line).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} line {}: {e}", path.display(), number + 1),
            )
        })?;
        entries.entry(entry.seq).or_insert(entry);
    }
    Ok(entries)
}

/// `<state_dir>/webhook-<name>.<suffix>`, after checking the name cannot escape the
/// directory and creating the directory.
pub(super) fn state_file(state_dir: &Path, name: &str, suffix: &str) -> io::Result<PathBuf> {
    if !valid_name(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "webhook name {name:?} cannot name a state file: use 1 to 64 of A-Z, a-z, 0-9, '_' and '-'"
            ),
        ));
    }
    fs::create_dir_all(state_dir)?;
    Ok(state_dir.join(format!("webhook-{name}.{suffix}")))
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;
    use spur_audience::ChangeKind;

    use super::*;
    use crate::webhook::config::test_support::change;

    #[test]
    fn cursor_starts_at_zero_and_survives_a_reopen() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state");

        let mut cursor = Cursor::open(&state, "crm")?;
        assert_eq!(cursor.seq(), 0);
        assert!(state.is_dir(), "the state directory is created");
        cursor.store(41)?;
        cursor.store(42)?;
        assert_eq!(cursor.seq(), 42);

        assert_eq!(Cursor::open(&state, "crm")?.seq(), 42);
        assert_eq!(
            fs::read_to_string(state.join("webhook-crm.cursor"))?,
            "42\n"
        );
        assert_eq!(
            Cursor::open(&state, "other")?.seq(),
            0,
            "one cursor per name"
        );
        let mut names: Vec<_> = fs::read_dir(&state)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        assert_eq!(names, ["webhook-crm.cursor"], "no temporary file is left");
        Ok(())
    }

    #[test]
    fn a_corrupt_cursor_is_an_error_not_zero() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        for text in ["forty-two", "", "-3", "4 2"] {
            fs::write(dir.path().join("webhook-crm.cursor"), text)?;
            let error = Cursor::open(dir.path(), "crm")
                .err()
                .with_context(|| format!("{text:?} was accepted"))?;
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        }
        let error = Cursor::open(dir.path(), "../crm")
            .err()
            .context("a name with a path was accepted")?;
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        Ok(())
    }

    #[test]
    fn parking_appends_once_per_seq_and_removes_durably() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut parking = Parking::open(dir.path(), "crm")?;
        assert!(parking.is_empty());
        let first = change();
        let second = Change::new(
            43,
            "boot_fans",
            "subject-2",
            ChangeKind::Exited,
            "consent_withdrawn",
            0,
        );
        let mut entry = Parked::new(&first, ParkReason::MaxAge);
        entry.attempts = 15;
        entry.first_attempt_at = Some("2026-11-29T12:00:00.000Z".into());
        entry.error = Some("request failed: \"quoted\"\nnewline".into());
        parking.park(entry.clone())?;
        parking.park(entry.clone())?;
        parking.park(Parked {
            behind: Some(42),
            ..Parked::new(&second, ParkReason::SubjectParked)
        })?;
        assert_eq!(parking.len(), 2, "a seq is parked once");
        assert_eq!(parking.first_of("subject-1"), Some(42));
        assert_eq!(parking.first_of("subject-3"), None);

        let text = fs::read_to_string(dir.path().join("webhook-crm.parked.jsonl"))?;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["id"], first.id.as_str());
        assert_eq!(lines[0]["seq"], 42);
        assert_eq!(lines[0]["subject_id"], "subject-1");
        assert_eq!(lines[0]["type"], "segment.entered");
        assert_eq!(lines[0]["reason"], "max_age");
        assert_eq!(lines[0]["attempts"], 15);
        assert_eq!(lines[0]["error"], "request failed: \"quoted\"\nnewline");
        assert!(lines[0]["at"].as_str().is_some_and(|at| at.ends_with('Z')));
        assert_eq!(lines[1]["reason"], "subject_parked");
        assert_eq!(lines[1]["behind"], 42);
        assert!(
            !text.contains("\"data\"") && !text.contains("matched"),
            "no body in the parking file: {text}"
        );

        // Another process (replay) removes one; this one notices.
        let mut other = Parking::open(dir.path(), "crm")?;
        assert_eq!(
            other.entries().collect::<Vec<_>>(),
            parking.entries().collect::<Vec<_>>()
        );
        other.remove(42)?;
        other.remove(42)?;
        assert!(parking.refresh()?, "the change is seen");
        assert!(!parking.refresh()?, "nothing changed since");
        assert_eq!(parking.entries().map(|e| e.seq).collect::<Vec<_>>(), [43]);
        assert_eq!(parking.first_of("subject-1"), None);
        assert_eq!(Parking::open(dir.path(), "crm")?.len(), 1, "durable");
        Ok(())
    }

    #[test]
    fn an_old_give_up_log_is_folded_into_the_parking() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let old = dir.path().join("webhook-crm.failed.jsonl");
        fs::write(
            &old,
            "{\"id\":\"chg_a\",\"seq\":7,\"segment\":\"fans\",\"subject_id\":\"s\",\
             \"type\":\"segment.entered\",\"attempts\":15,\"error\":\"HTTP 500\",\
             \"at\":\"2026-11-29T12:34:56.789Z\"}\n",
        )?;
        let parking = Parking::open(dir.path(), "crm")?;
        let entries: Vec<&Parked> = parking.entries().collect();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].seq, 7);
        assert_eq!(entries[0].reason, ParkReason::MaxAttempts);
        assert_eq!(entries[0].error.as_deref(), Some("HTTP 500"));
        assert!(!old.exists(), "the old log is gone once folded in");
        assert_eq!(Parking::open(dir.path(), "crm")?.len(), 1);

        fs::write(dir.path().join("webhook-crm.parked.jsonl"), "{not json\n")?;
        let error = Parking::open(dir.path(), "crm")
            .err()
            .context("a corrupt line was skipped")?;
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("line 1"), "{error}");
        Ok(())
    }
}
