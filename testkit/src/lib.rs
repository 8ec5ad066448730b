//! Test fixtures shared by the crates' integration tests: lake rows and scripted
//! histories. A dev-dependency only (ARCHITECTURE.md's crate graph enforces that).
//!
//! - [`rows`]: single lake rows ([`event`], [`pageview`], [`identify`], [`session`]),
//!   built as the processor writes them.
//! - [`fixture`]: [`Fixture`], a small lake of those rows in a temporary directory
//!   (its contents are listed there), for the SQL tests.
//! - [`history`]: scripted histories for the audience tests — a [`Writer`] that
//!   appends events with increasing offsets, sign-ups with and without marketing
//!   consent, consent changes, runs of `boots` views, and the [`BOOT_FANS`] segments
//!   as `(name, condition)` pairs (this crate knows the lake, not the audience
//!   crate's types).

pub mod fixture;
pub mod history;
pub mod rows;

pub use fixture::Fixture;
pub use history::{
    BOOT_FANS, T0, Writer, append_closed_sessions, boot_views, confirm, consent, root, signup,
};
pub use rows::{DAY0, DAY1, closed_sessions, event, identify, pageview, session};
