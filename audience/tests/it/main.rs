//! Integration tests of the audience crate over a real lake: one binary (each links
//! DataFusion), one module per behaviour. Every test writes its own scripted history
//! (`spur_testkit`) into a lake in a temporary directory: interest scores with their
//! subjects, decay and explanation (`score.rs`), segment membership decided by the
//! engine, with its reasons, consent gate, reload and the analyst views
//! (`segments.rs`), and the consent ledger's rules: double opt-in, links only of
//! persistent ids, verification (`ledger.rs`); the incremental state against the
//! rebuild, merges and splits (`state.rs`).

mod confirmation;
mod ledger;
mod score;
mod segments;
mod state;
