//! Spur's end-to-end suite: the `spur` binary against a real Kafka-API broker over
//! TCP (`spur broker`, the embedded one; one test also against `tansu` when it is on
//! `PATH` or in `SPUR_TANSU`), `spur up` as a whole, and the tracker in headless
//! Chromium. Needs Chromium (`SPUR_CHROMIUM`, default `/usr/bin/chromium`); enabled
//! by the `broker-tests` feature, which `.ci/run` turns on:
//!
//! ```sh
//! cargo test --workspace --features broker-tests --test it -- --test-threads 1
//! ```
#![cfg(feature = "broker-tests")]

mod browser;
// The collector's HTTP client, topic reader and metric parser, shared as source.
#[allow(dead_code)]
#[path = "../../collector/tests/it/common.rs"]
mod client;
mod harness;

mod broker_restart;
mod collector_crash;
mod collector_e2e;
mod demo_shop;
mod fault_run;
mod mailing_e2e;
mod processor_e2e;
mod scrub_e2e;
mod segments_e2e;
mod tracker;
mod up_e2e;
