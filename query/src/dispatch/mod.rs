//! Segment changes out to the mailing system: the Kafka topic and signed webhooks.
//!
//! - [`change`]: one change and the JSON body every sink sends.
//! - [`kafka`]: the segment-changes topic, exactly once.
//! - [`webhook`]: Standard Webhooks signing, delivery with retries, cursors.

pub mod change;
pub mod kafka;
pub mod webhook;

pub use change::{Change, ChangeKind};
