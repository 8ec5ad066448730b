//! Spur's audience: who each subject is, what they consented to, what interests
//! them, which lifecycle stage and which segments they are in — all derived from the
//! lake, all written back to it.
//!
//! - [`identity`]: the one definition of a subject (visitor → person, from the
//!   ledger) and of marketing consent (double opt-in).
//! - [`ledger`]: the hash-chained consent and identity ledger, its follower and
//!   [`verify`].
//! - [`score`]: interest scores with time decay (`spur score`), explainable.
//! - [`config`], [`profile`], [`views`]: lifecycle rules, one profile row per subject,
//!   and the views analysts get (`subjects`, `profiles`, `segment_members`,
//!   `timeline`).
//! - [`engine`]: segment membership, decided incrementally and committed with its
//!   position in the events topic; [`change`]: the `segment.entered` /
//!   `segment.exited` record and its one JSON body.
//!
//! Must never: talk to Kafka or HTTP, send anything to a mailing system (that is
//! `spur-dispatch`), or serve SQL (that is `spur-query`). Its only I/O is the lake.

pub mod change;
pub mod config;
pub mod engine;
mod error;
pub mod identity;
pub mod ledger;
pub mod profile;
pub mod score;
pub mod state;
pub mod views;

pub use change::{Change, ChangeKind};
pub use config::{LifecycleConfig, SegmentDef, Stage};
pub use engine::{Engine, StepSummary};
pub use error::{Error, Result};
pub use identity::{LINKS_SQL, SUBJECTS_SQL, consent_sql};
pub use ledger::{Ledger, Verification, verify};
pub use score::{ScoringConfig, UrlRule};
