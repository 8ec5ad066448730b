//! Kafka record batches (message format v2) as the broker sees them: a fixed header
//! it reads and one field it writes (the base offset). The records inside stay as
//! the producer compressed them; the broker never decodes them, so a consumer gets
//! back exactly the bytes that were produced.
//!
//! Layout of the header (big-endian), after which the records follow:
//! `baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 | crc u32 |
//! attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 |
//! producerId i64 | producerEpoch i16 | baseSequence i32 | recordCount i32`.
//! The CRC-32C covers everything from `attributes` to the end, so rewriting the base
//! offset leaves it valid.

/// Bytes before the records.
pub const HEADER_LEN: usize = 61;
/// `baseOffset` and `batchLength`: the part not counted in `batchLength`.
pub const LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;
const TRANSACTIONAL: i16 = 0x10;
const CONTROL: i16 = 0x20;

/// What the broker needs to know of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub base_offset: i64,
    /// The whole batch, header included.
    pub len: usize,
    pub last_offset_delta: i32,
    pub max_timestamp: i64,
    pub base_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl Header {
    /// Reads the header at the start of `bytes` (at least [`HEADER_LEN`] long).
    /// Checks the framing only, not the CRC.
    pub fn parse(bytes: &[u8]) -> Result<Header, Invalid> {
        if bytes.len() < HEADER_LEN {
            return Err(Invalid::Truncated);
        }
        let batch_length = i32_at(bytes, 8);
        if batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(Invalid::Length(batch_length));
        }
        let magic = bytes[16] as i8;
        if magic != 2 {
            return Err(Invalid::Magic(magic));
        }
        let header = Header {
            base_offset: i64_at(bytes, 0),
            len: LOG_OVERHEAD + batch_length as usize,
            last_offset_delta: i32_at(bytes, 23),
            base_timestamp: i64_at(bytes, 27),
            max_timestamp: i64_at(bytes, 35),
            producer_id: i64_at(bytes, 43),
            producer_epoch: i16_at(bytes, 51),
            base_sequence: i32_at(bytes, 53),
            record_count: i32_at(bytes, 57),
        };
        if header.last_offset_delta < 0 || header.record_count < 0 {
            return Err(Invalid::Counts);
        }
        Ok(header)
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// The sequence of the batch's last record (sequences wrap at `i32::MAX`).
    pub fn last_sequence(&self) -> i32 {
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        if last > i64::from(i32::MAX) {
            (last - i64::from(i32::MAX) - 1) as i32
        } else {
            last as i32
        }
    }

    pub fn idempotent(&self) -> bool {
        self.producer_id >= 0
    }
}

/// Why bytes are not an acceptable batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("the batch is cut short")]
    Truncated,
    #[error("batch length {0} is impossible")]
    Length(i32),
    #[error("message format v{0} is not supported (v2 only)")]
    Magic(i8),
    #[error("negative record count or offset delta")]
    Counts,
    #[error("the CRC does not match the contents")]
    Crc,
    #[error("transactional and control batches are not supported")]
    Transactional,
    #[error("a batch of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

/// Splits a produce request's record set into batches, checking each completely
/// (framing, CRC, no transactions, size). Nothing of an invalid set is written.
pub fn split(records: &[u8], max_batch: usize) -> Result<Vec<(Header, &[u8])>, Invalid> {
    let mut batches = Vec::new();
    let mut rest = records;
    while !rest.is_empty() {
        let header = Header::parse(rest)?;
        if header.len > max_batch {
            return Err(Invalid::TooLarge(header.len));
        }
        if rest.len() < header.len {
            return Err(Invalid::Truncated);
        }
        let (batch, tail) = rest.split_at(header.len);
        check_crc(batch)?;
        let attributes = i16_at(batch, 21);
        if attributes & (TRANSACTIONAL | CONTROL) != 0 {
            return Err(Invalid::Transactional);
        }
        batches.push((header, batch));
        rest = tail;
    }
    if batches.is_empty() {
        return Err(Invalid::Truncated);
    }
    Ok(batches)
}

/// Checks the CRC-32C of a whole batch.
pub fn check_crc(batch: &[u8]) -> Result<(), Invalid> {
    if batch.len() < HEADER_LEN {
        return Err(Invalid::Truncated);
    }
    let stored = u32::from_be_bytes([batch[17], batch[18], batch[19], batch[20]]);
    if crc32c::crc32c(&batch[CRC_START..]) == stored {
        Ok(())
    } else {
        Err(Invalid::Crc)
    }
}

/// Writes the offset the log gives the batch.
pub fn set_base_offset(batch: &mut [u8], offset: i64) {
    batch[..8].copy_from_slice(&offset.to_be_bytes());
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid v2 batch of `count` records (the records themselves are opaque bytes
    /// here: the broker never reads them).
    pub(crate) fn batch(count: i32, producer: i64, epoch: i16, sequence: i32) -> Vec<u8> {
        let body = vec![0xAB; 10 * count as usize];
        let mut b = Vec::with_capacity(HEADER_LEN + body.len());
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + body.len()) as i32).to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.push(2);
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(count - 1).to_be_bytes());
        b.extend_from_slice(&1_000i64.to_be_bytes());
        b.extend_from_slice(&2_000i64.to_be_bytes());
        b.extend_from_slice(&producer.to_be_bytes());
        b.extend_from_slice(&epoch.to_be_bytes());
        b.extend_from_slice(&sequence.to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        b.extend_from_slice(&body);
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn a_valid_batch_is_read_back() {
        let b = batch(3, 7, 1, 40);
        let split = split(&b, 1 << 20).expect("valid");
        assert_eq!(split.len(), 1);
        let h = split[0].0;
        assert_eq!((h.len, h.last_offset_delta, h.producer_id), (b.len(), 2, 7));
        assert_eq!((h.base_sequence, h.last_sequence()), (40, 42));
        assert_eq!(h.max_timestamp, 2_000);
    }

    #[test]
    fn rewriting_the_base_offset_keeps_the_crc() {
        let mut b = batch(2, -1, -1, -1);
        set_base_offset(&mut b, 123_456);
        check_crc(&b).expect("crc still valid");
        assert_eq!(Header::parse(&b).expect("header").base_offset, 123_456);
    }

    #[test]
    fn corrupt_truncated_and_foreign_batches_are_refused() {
        let good = batch(2, -1, -1, -1);
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(split(&flipped, 1 << 20).expect_err("refused"), Invalid::Crc);
        assert_eq!(
            split(&good[..good.len() - 1], 1 << 20).expect_err("refused"),
            Invalid::Truncated
        );
        assert_eq!(
            split(&good[..30], 1 << 20).expect_err("refused"),
            Invalid::Truncated
        );
        let mut v1 = good.clone();
        v1[16] = 1;
        assert_eq!(split(&v1, 1 << 20).expect_err("refused"), Invalid::Magic(1));
        assert_eq!(
            split(&good, 20).expect_err("refused"),
            Invalid::TooLarge(good.len())
        );
        assert_eq!(
            split(&[], 1 << 20).expect_err("refused"),
            Invalid::Truncated
        );
        let mut txn = good.clone();
        txn[22] |= 0x10;
        let crc = crc32c::crc32c(&txn[CRC_START..]);
        txn[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            split(&txn, 1 << 20).expect_err("refused"),
            Invalid::Transactional
        );
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let b = batch(3, 1, 0, i32::MAX - 1);
        let h = Header::parse(&b).expect("header");
        assert_eq!(h.last_sequence(), 0);
    }
}
