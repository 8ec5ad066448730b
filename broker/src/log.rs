//! One partition's log on disk: segment files of record batches stored verbatim
//! (`<base offset>.log`, 20 digits), an index in memory rebuilt by scanning them on
//! open, and the idempotent producers' recent sequences, also rebuilt from the
//! batches themselves — so what survives a crash is exactly what is in the files.
//!
//! Recovery: a batch cut short or failing its CRC at the tail of the newest segment
//! (a write interrupted by a crash) is truncated away; it was never acknowledged,
//! because an answer is only sent after the write (and, with `fsync`, the sync).
//! Damage anywhere else is refused with the file and position: offsets after it
//! would no longer be contiguous, and silently dropping acknowledged data is worse
//! than stopping.
//!
//! Retention: the newest segment is rolled when it reaches `segment_bytes` or, for a
//! topic with `retention.ms`, when it is older than a tenth of that (between a
//! minute and a day); a segment is deleted once its last write is older than the
//! retention. The newest segment is never deleted: its name keeps the next offset
//! across restarts even when every record has expired.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::batch::{self, HEADER_LEN, Header};

/// How many batches per producer and partition are remembered to recognise a
/// retried one (the limit of `max.in.flight.requests.per.connection` with
/// idempotence).
const RECENT_BATCHES: usize = 5;

#[derive(Debug, Clone, Copy)]
struct Entry {
    base: i64,
    last: i64,
    max_timestamp: i64,
    pos: u64,
    len: u32,
}

#[derive(Debug)]
struct Segment {
    base: i64,
    path: PathBuf,
    file: Arc<File>,
    size: u64,
    entries: Vec<Entry>,
    first_append: SystemTime,
    last_append: SystemTime,
}

#[derive(Debug, Default)]
struct Producer {
    epoch: i16,
    /// (first sequence, last sequence, base offset) of the latest batches.
    recent: VecDeque<(i32, i32, i64)>,
}

/// A range of one segment file to send to a consumer.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub file: Arc<File>,
    pub pos: u64,
    pub len: usize,
}

/// The outcome of appending one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Written at this base offset.
    New(i64),
    /// A retry of a batch already in the log, at this base offset: not written again.
    Duplicate(i64),
}

/// Why a producer's batch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("producer epoch {got} is older than the current {current}")]
    StaleEpoch { got: i16, current: i16 },
    #[error("sequence {got} where {expected} was expected")]
    OutOfOrder { got: i32, expected: i32 },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is damaged at byte {pos} (not at the end of the newest segment): {reason}")]
    Damaged {
        path: PathBuf,
        pos: u64,
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    segments: Vec<Segment>,
    next_offset: i64,
    producers: HashMap<i64, Producer>,
    segment_bytes: u64,
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`, scanning its segments. Returns how many
    /// bytes of a torn tail were cut off.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(PartitionLog, u64), Error> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut bases: Vec<(i64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let path = entry.map_err(io_err(dir))?.path();
            let base = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<i64>().ok());
            if let Some(base) = base {
                bases.push((base, path));
            }
        }
        bases.sort_by_key(|(base, _)| *base);
        let mut log = PartitionLog {
            dir: dir.to_path_buf(),
            segments: Vec::new(),
            next_offset: 0,
            producers: HashMap::new(),
            segment_bytes,
        };
        let mut cut = 0;
        let count = bases.len();
        for (i, (base, path)) in bases.into_iter().enumerate() {
            if i > 0 && base != log.next_offset {
                return Err(Error::Damaged {
                    path,
                    pos: 0,
                    reason: format!("starts at offset {base}, {} expected", log.next_offset),
                });
            }
            cut += log.load_segment(base, path, i + 1 == count)?;
        }
        if log.segments.is_empty() {
            log.roll(SystemTime::now())?;
        }
        Ok((log, cut))
    }

    fn load_segment(&mut self, base: i64, path: PathBuf, newest: bool) -> Result<u64, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let meta = file.metadata().map_err(io_err(&path))?;
        let size = meta.len();
        let mtime = meta.modified().unwrap_or_else(|_| SystemTime::now());
        let mut entries = Vec::new();
        let mut pos = 0u64;
        let mut expected = base;
        let mut header_buf = [0u8; HEADER_LEN];
        let mut damage: Option<String> = None;
        while pos < size {
            if size - pos < HEADER_LEN as u64 {
                damage = Some("a batch header is cut short".into());
                break;
            }
            file.read_exact_at(&mut header_buf, pos)
                .map_err(io_err(&path))?;
            let header = match Header::parse(&header_buf) {
                Ok(h) => h,
                Err(e) => {
                    damage = Some(e.to_string());
                    break;
                }
            };
            if pos + header.len as u64 > size {
                damage = Some("a batch is cut short".into());
                break;
            }
            if header.base_offset != expected {
                damage = Some(format!(
                    "batch at offset {}, {expected} expected",
                    header.base_offset
                ));
                break;
            }
            if newest {
                let mut whole = vec![0u8; header.len];
                file.read_exact_at(&mut whole, pos).map_err(io_err(&path))?;
                if let Err(e) = batch::check_crc(&whole) {
                    damage = Some(e.to_string());
                    break;
                }
            }
            entries.push(Entry {
                base: header.base_offset,
                last: header.last_offset(),
                max_timestamp: header.max_timestamp,
                pos,
                len: header.len as u32,
            });
            self.remember(&header);
            expected = header.last_offset() + 1;
            pos += header.len as u64;
        }
        let mut cut = 0;
        if let Some(reason) = damage {
            if !newest {
                return Err(Error::Damaged { path, pos, reason });
            }
            tracing::warn!(
                segment = %path.display(), at = pos, bytes = size - pos, %reason,
                "cutting off the torn end of the log (a write interrupted by a crash; never acknowledged)"
            );
            file.set_len(pos).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
            cut = size - pos;
        }
        let first_append = entries
            .first()
            .and_then(|e| {
                let ms = u64::try_from(e.max_timestamp).ok()?;
                Some(UNIX_EPOCH + Duration::from_millis(ms))
            })
            .map_or(mtime, |t| t.min(mtime));
        self.segments.push(Segment {
            base,
            path,
            file: Arc::new(file),
            size: pos,
            entries,
            first_append,
            last_append: mtime,
        });
        self.next_offset = expected;
        Ok(cut)
    }

    /// Starts a new, empty segment at the next offset.
    fn roll(&mut self, now: SystemTime) -> Result<(), Error> {
        if self
            .segments
            .last()
            .is_some_and(|s| s.base == self.next_offset)
        {
            return Ok(()); // already empty
        }
        let path = self.dir.join(format!("{:020}.log", self.next_offset));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            base: self.next_offset,
            path,
            file: Arc::new(file),
            size: 0,
            entries: Vec::new(),
            first_append: now,
            last_append: now,
        });
        Ok(())
    }

    pub fn log_start(&self) -> i64 {
        self.segments.first().map_or(self.next_offset, |s| s.base)
    }

    /// The next offset to be written: the high watermark (there are no replicas and
    /// no transactions, so it is also the last stable offset).
    pub fn log_end(&self) -> i64 {
        self.next_offset
    }

    /// The highest producer id in the log (-1 when none): new ids start above it.
    pub fn max_producer_id(&self) -> i64 {
        self.producers.keys().copied().max().unwrap_or(-1)
    }

    fn remember(&mut self, header: &Header) {
        if !header.idempotent() {
            return;
        }
        let p = self.producers.entry(header.producer_id).or_default();
        if header.producer_epoch != p.epoch {
            p.epoch = header.producer_epoch;
            p.recent.clear();
        }
        p.recent.push_back((
            header.base_sequence,
            header.last_sequence(),
            header.base_offset,
        ));
        while p.recent.len() > RECENT_BATCHES {
            p.recent.pop_front();
        }
    }

    /// Checks an idempotent producer's batch against what it sent before.
    fn check_sequence(&self, header: &Header) -> Result<Option<i64>, Refused> {
        if !header.idempotent() {
            return Ok(None);
        }
        let Some(p) = self.producers.get(&header.producer_id) else {
            // Unknown: a new producer, or one whose batches have all expired.
            return Ok(None);
        };
        if header.producer_epoch < p.epoch {
            return Err(Refused::StaleEpoch {
                got: header.producer_epoch,
                current: p.epoch,
            });
        }
        if header.producer_epoch > p.epoch {
            return if header.base_sequence == 0 {
                Ok(None)
            } else {
                Err(Refused::OutOfOrder {
                    got: header.base_sequence,
                    expected: 0,
                })
            };
        }
        if let Some(&(_, _, offset)) = p.recent.iter().find(|(first, last, _)| {
            *first == header.base_sequence && *last == header.last_sequence()
        }) {
            return Ok(Some(offset));
        }
        let expected = p.recent.back().map_or(
            0,
            |(_, last, _)| if *last == i32::MAX { 0 } else { last + 1 },
        );
        if header.base_sequence == expected {
            Ok(None)
        } else {
            Err(Refused::OutOfOrder {
                got: header.base_sequence,
                expected,
            })
        }
    }

    /// Appends one batch (already checked by [`batch::split`]) unless it is a retry
    /// of one already here. Returns the file to sync when the caller wants the write
    /// durable before answering.
    pub fn append(
        &mut self,
        header: Header,
        bytes: &[u8],
        now: SystemTime,
    ) -> Result<(Appended, Option<Arc<File>>), Error> {
        if let Some(offset) = self.check_sequence(&header)? {
            return Ok((Appended::Duplicate(offset), None));
        }
        if self
            .segments
            .last()
            .is_some_and(|s| s.size > 0 && s.size + bytes.len() as u64 > self.segment_bytes)
        {
            self.roll(now)?;
        }
        let base = self.next_offset;
        let mut owned = bytes.to_vec();
        batch::set_base_offset(&mut owned, base);
        let header = Header {
            base_offset: base,
            ..header
        };
        let segment = self
            .segments
            .last_mut()
            .expect("a log always has a segment");
        segment
            .file
            .write_all_at(&owned, segment.size)
            .map_err(io_err(&segment.path))?;
        if segment.entries.is_empty() {
            segment.first_append = now;
        }
        segment.entries.push(Entry {
            base,
            last: header.last_offset(),
            max_timestamp: header.max_timestamp,
            pos: segment.size,
            len: owned.len() as u32,
        });
        segment.size += owned.len() as u64;
        segment.last_append = now;
        let file = segment.file.clone();
        self.next_offset = header.last_offset() + 1;
        self.remember(&header);
        Ok((Appended::New(base), Some(file)))
    }

    /// The file ranges holding the batches from `offset` on, up to `max_bytes` (at
    /// least one whole batch, so a consumer can always make progress). `None` when
    /// `offset` is outside the log.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Option<Vec<Chunk>> {
        if offset < self.log_start() || offset > self.next_offset {
            return None;
        }
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut total = 0usize;
        let first_segment = self
            .segments
            .partition_point(|s| s.base <= offset)
            .saturating_sub(1);
        for segment in &self.segments[first_segment..] {
            let start = segment.entries.partition_point(|e| e.last < offset);
            for entry in &segment.entries[start..] {
                let len = entry.len as usize;
                if total > 0 && total + len > max_bytes {
                    return Some(chunks);
                }
                match chunks.last_mut() {
                    Some(c)
                        if Arc::ptr_eq(&c.file, &segment.file)
                            && c.pos + c.len as u64 == entry.pos =>
                    {
                        c.len += len;
                    }
                    _ => chunks.push(Chunk {
                        file: segment.file.clone(),
                        pos: entry.pos,
                        len,
                    }),
                }
                total += len;
            }
        }
        Some(chunks)
    }

    /// The first batch whose newest record is at or after `timestamp` (ms): its base
    /// offset and that timestamp.
    pub fn offset_for_time(&self, timestamp: i64) -> Option<(i64, i64)> {
        self.segments
            .iter()
            .flat_map(|s| s.entries.iter())
            .find(|e| e.max_timestamp >= timestamp)
            .map(|e| (e.base, e.max_timestamp))
    }

    /// Rolls and deletes segments by age (see the module documentation). Returns the
    /// number of segments deleted.
    pub fn expire(&mut self, retention: Option<Duration>, now: SystemTime) -> Result<usize, Error> {
        let Some(retention) = retention else {
            return Ok(0);
        };
        let roll_age = (retention / 10).clamp(Duration::from_secs(60), Duration::from_secs(86_400));
        let active = self.segments.last().expect("a log always has a segment");
        let age = |t: SystemTime| now.duration_since(t).unwrap_or_default();
        if !active.entries.is_empty()
            && (age(active.first_append) >= roll_age || age(active.last_append) >= retention)
        {
            self.roll(now)?;
        }
        let mut deleted = 0;
        while self.segments.len() > 1 && age(self.segments[0].last_append) >= retention {
            let segment = self.segments.remove(0);
            fs::remove_file(&segment.path).map_err(io_err(&segment.path))?;
            tracing::info!(segment = %segment.path.display(), "deleted a segment past its retention");
            deleted += 1;
        }
        if deleted > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(deleted)
    }
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::batch;

    fn header(bytes: &[u8]) -> Header {
        Header::parse(bytes).expect("valid header")
    }

    fn append(log: &mut PartitionLog, bytes: &[u8]) -> Result<Appended, Error> {
        log.append(header(bytes), bytes, SystemTime::now())
            .map(|(a, _)| a)
    }

    fn read_all(log: &PartitionLog, from: i64) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in log.read(from, usize::MAX).expect("in range") {
            let mut buf = vec![0; chunk.len];
            chunk.file.read_exact_at(&mut buf, chunk.pos).expect("read");
            out.extend_from_slice(&buf);
        }
        out
    }

    #[test]
    fn offsets_survive_a_reopen_and_reads_return_whole_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = PartitionLog::open(dir.path(), 1 << 20).expect("open");
        assert_eq!(
            append(&mut log, &batch(3, -1, -1, -1)).expect("ok"),
            Appended::New(0)
        );
        assert_eq!(
            append(&mut log, &batch(2, -1, -1, -1)).expect("ok"),
            Appended::New(3)
        );
        assert_eq!(log.log_end(), 5);
        drop(log);
        let (log, cut) = PartitionLog::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!((log.log_start(), log.log_end(), cut), (0, 5, 0));
        // Offset 4 is inside the second batch: the whole batch comes back.
        let bytes = read_all(&log, 4);
        assert_eq!(header(&bytes).base_offset, 3);
        assert_eq!(bytes.len(), batch(2, -1, -1, -1).len());
        assert!(log.read(5, 100).expect("at the end").is_empty());
        assert!(log.read(6, 100).is_none());
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_the_log_continues_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = PartitionLog::open(dir.path(), 1 << 20).expect("open");
        append(&mut log, &batch(3, -1, -1, -1)).expect("ok");
        let path = log.segments[0].path.clone();
        drop(log);
        // Half of a second batch, as a crash in the middle of a write leaves it.
        let half = batch(2, -1, -1, -1);
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        std::io::Write::write_all(&mut f, &half[..40]).expect("write");
        drop(f);
        let (mut log, cut) = PartitionLog::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!((cut, log.log_end()), (40, 3));
        assert_eq!(
            append(&mut log, &batch(1, -1, -1, -1)).expect("ok"),
            Appended::New(3)
        );
    }

    #[test]
    fn damage_before_the_newest_segment_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = PartitionLog::open(dir.path(), 100).expect("open");
        append(&mut log, &batch(10, -1, -1, -1)).expect("ok");
        append(&mut log, &batch(10, -1, -1, -1)).expect("ok");
        assert_eq!(log.segments.len(), 2, "rolled at segment_bytes");
        let first = log.segments[0].path.clone();
        drop(log);
        let f = OpenOptions::new().write(true).open(&first).expect("open");
        f.set_len(70).expect("truncate");
        let err = PartitionLog::open(dir.path(), 100).expect_err("refused");
        assert!(matches!(err, Error::Damaged { .. }), "{err}");
    }

    #[test]
    fn a_retried_batch_is_not_written_twice_and_gaps_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = PartitionLog::open(dir.path(), 1 << 20).expect("open");
        assert_eq!(
            append(&mut log, &batch(2, 9, 0, 0)).expect("ok"),
            Appended::New(0)
        );
        assert_eq!(
            append(&mut log, &batch(3, 9, 0, 2)).expect("ok"),
            Appended::New(2)
        );
        assert_eq!(
            append(&mut log, &batch(2, 9, 0, 0)).expect("ok"),
            Appended::Duplicate(0)
        );
        assert!(matches!(
            append(&mut log, &batch(1, 9, 0, 7)),
            Err(Error::Refused(Refused::OutOfOrder {
                got: 7,
                expected: 5
            }))
        ));
        // The producer state is rebuilt from the files.
        drop(log);
        let (mut log, _) = PartitionLog::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(
            append(&mut log, &batch(3, 9, 0, 2)).expect("ok"),
            Appended::Duplicate(2)
        );
        assert_eq!(log.max_producer_id(), 9);
        // A new epoch starts again at 0; the old one is fenced.
        assert_eq!(
            append(&mut log, &batch(1, 9, 1, 0)).expect("ok"),
            Appended::New(5)
        );
        assert!(matches!(
            append(&mut log, &batch(1, 9, 0, 5)),
            Err(Error::Refused(Refused::StaleEpoch { .. }))
        ));
    }

    #[test]
    fn retention_deletes_old_segments_but_keeps_the_next_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = PartitionLog::open(dir.path(), 1 << 20).expect("open");
        let t0 = SystemTime::now();
        log.append(header(&batch(4, -1, -1, -1)), &batch(4, -1, -1, -1), t0)
            .expect("ok");
        let day = Duration::from_secs(86_400);
        assert_eq!(
            log.expire(Some(day), t0 + Duration::from_secs(10))
                .expect("ok"),
            0
        );
        assert_eq!(log.expire(None, t0 + 3 * day).expect("ok"), 0);
        assert_eq!(log.expire(Some(day), t0 + 2 * day).expect("ok"), 1);
        assert_eq!((log.log_start(), log.log_end()), (4, 4));
        assert!(
            log.read(0, 100).is_none(),
            "expired offsets are out of range"
        );
        drop(log);
        let (log, _) = PartitionLog::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!((log.log_start(), log.log_end()), (4, 4));
    }

    #[test]
    fn reads_stop_at_max_bytes_but_return_at_least_one_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = PartitionLog::open(dir.path(), 1 << 20).expect("open");
        for _ in 0..4 {
            append(&mut log, &batch(5, -1, -1, -1)).expect("ok");
        }
        let one = batch(5, -1, -1, -1).len();
        let total = |chunks: Vec<Chunk>| chunks.iter().map(|c| c.len).sum::<usize>();
        assert_eq!(total(log.read(0, 1).expect("ok")), one);
        assert_eq!(total(log.read(0, 2 * one + 1).expect("ok")), 2 * one);
        assert_eq!(total(log.read(7, usize::MAX).expect("ok")), 3 * one);
        assert_eq!(log.offset_for_time(1_500), Some((0, 2_000)));
        assert_eq!(log.offset_for_time(9_999), None);
    }
}
