//! Spur's shared vocabulary: the JSON a website sends ([`wire`]), the records the
//! collector produces to Kafka ([`record`]), dead letters and their reason codes
//! ([`dead_letter`]), topic names and the shared broker settings ([`kafka`]), when an identify event may
//! link a visitor to a person ([`identify`]), the
//! one-click unsubscribe token ([`unsubscribe`]) and the double opt-in link ([`confirm`]).
//!
//! This crate is a leaf: no I/O, no async, no clocks. Every service depends on it and
//! on nothing else of Spur's, so a format change is made here, once, and versioned by
//! [`record::SCHEMA_VERSION`].

pub mod confirm;
pub mod dead_letter;
pub mod identify;
pub mod kafka;
pub mod record;
pub mod secret;
pub mod time;
pub mod unsubscribe;
pub mod wire;

pub use dead_letter::{DeadLetter, DropReason, ReasonCode};
pub use record::{EventRecord, Payload};
pub use secret::Secret;

/// An error and its sources on one line, each source once (DataFusion and reqwest
/// often repeat the inner message in the outer one): what a client or a log is shown.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}
