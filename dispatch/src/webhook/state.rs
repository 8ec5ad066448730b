//! What an endpoint keeps on disk under `state_dir`: its [`Cursor`] (the last `seq`
//! handled, so that a restart resumes after it) and its [`GiveUpLog`] (the changes
//! delivery gave up on), both in files named by `state_file`.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::Serialize;

use spur_audience::Change;
use spur_audience::config::valid_name;
use spur_schemas::time::rfc3339_ms;

/// The last `seq` an endpoint handled (delivered or given up), in
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

/// The changes an endpoint gave up on, one JSON object per line in
/// `<state_dir>/webhook-<name>.failed.jsonl`, for the operator to inspect and replay:
///
/// ```json
/// {"id":"chg_…","seq":42,"segment":"fans","subject_id":"…","type":"segment.entered",
///  "attempts":15,"error":"HTTP 500 Internal Server Error","at":"2026-11-29T12:34:56.789Z"}
/// ```
///
/// `at` is when delivery gave up. Blocking file I/O, synced on every append.
#[derive(Debug)]
pub struct GiveUpLog {
    dir: PathBuf,
    path: PathBuf,
}

impl GiveUpLog {
    /// The log of endpoint `name`, creating `state_dir` if needed; the file itself is
    /// created by the first append.
    pub fn open(state_dir: &Path, name: &str) -> io::Result<GiveUpLog> {
        Ok(GiveUpLog {
            dir: state_dir.to_owned(),
            path: state_file(state_dir, name, "failed.jsonl")?,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line for `change` and syncs it to disk before returning.
    pub fn append(&self, change: &Change, attempts: u32, error: &str) -> io::Result<()> {
        #[derive(Serialize)]
        struct Line<'a> {
            id: &'a str,
            seq: i64,
            segment: &'a str,
            subject_id: &'a str,
            #[serde(rename = "type")]
            kind: &'static str,
            attempts: u32,
            error: &'a str,
            at: String,
        }
        let mut line = serde_json::to_vec(&Line {
            id: &change.id,
            seq: change.seq,
            segment: &change.segment,
            subject_id: &change.subject_id,
            kind: change.change.event_type(),
            attempts,
            error,
            at: rfc3339_ms(chrono::Utc::now().timestamp_millis()),
        })
        .map_err(io::Error::other)?;
        line.push(b'\n');
        let created = !self.path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        // One write per line: concurrent appends cannot interleave within a line.
        file.write_all(&line)?;
        file.sync_data()?;
        if created {
            spur_keys::files::sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// `<state_dir>/webhook-<name>.<suffix>`, after checking the name cannot escape the
/// directory and creating the directory.
fn state_file(state_dir: &Path, name: &str, suffix: &str) -> io::Result<PathBuf> {
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
    fn give_up_log_appends_one_json_line_per_change() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let log = GiveUpLog::open(dir.path(), "crm")?;
        let first = change();
        let second = Change::new(
            43,
            "boot_fans",
            "subject-2",
            ChangeKind::Exited,
            "consent_withdrawn",
            0,
        );
        log.append(&first, 15, "HTTP 500 Internal Server Error")?;
        log.append(&second, 3, "request failed: \"quoted\"\nnewline")?;

        let text = fs::read_to_string(dir.path().join("webhook-crm.failed.jsonl"))?;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["id"], first.id.as_str());
        assert_eq!(lines[0]["seq"], 42);
        assert_eq!(lines[0]["segment"], "boot_fans");
        assert_eq!(lines[0]["subject_id"], "subject-1");
        assert_eq!(lines[0]["type"], "segment.entered");
        assert_eq!(lines[0]["attempts"], 15);
        assert_eq!(lines[0]["error"], "HTTP 500 Internal Server Error");
        assert!(lines[0]["at"].as_str().is_some_and(|at| at.ends_with('Z')));
        assert_eq!(lines[1]["type"], "segment.exited");
        assert_eq!(lines[1]["error"], "request failed: \"quoted\"\nnewline");
        Ok(())
    }
}
