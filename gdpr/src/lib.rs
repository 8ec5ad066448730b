//! Spur's GDPR duties (`docs/privacy.md`), the operator's side of data protection:
//!
//! - [`export`] (Art. 15): everything held about a subject, as JSON and as a
//!   readable summary;
//! - [`erase`] (Art. 17): every trace of a subject removed from every table and file,
//!   resumable, with a receipt and the suppression list;
//! - [`admin`]: the bearer-token HTTP endpoints for both, and for a mailing
//!   system's own unsubscribe (a ledger withdrawal) and list resolution (`spur admin`);
//! - [`resolve`]: subject ids for a mailer's list of e-mail addresses, CSV in and out
//!   (`spur subject resolve`);
//! - [`subject`]: a subject from an id or an e-mail address (with the identity key),
//!   and the receipt's notes on Kafka;
//! - [`retention`] (`spur lake retention`) and [`residency`] (where the lake and the
//!   brokers are, `residency.eu_only`).
//!
//! Identity, the ledger and its verification are `spur-audience`'s; keys are
//! `spur-keys`'.
//!
//! Must never: write personal data in clear (receipts carry digests), put a subject in
//! a URL or a log line, or depend on a service crate.

pub mod admin;
pub mod erase;
mod error;
pub mod export;
pub mod residency;
pub mod resolve;
pub mod retention;
pub mod subject;

pub use admin::AdminConfig;
pub use erase::{EraseOptions, Receipt, erase};
pub use error::{Error, Result};
pub use export::{Export, export};
pub use residency::ResidencySettings;
pub use retention::RetentionConfig;
