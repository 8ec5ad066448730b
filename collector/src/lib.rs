//! Spur's collector: the HTTP front door. It validates tracking events, enforces
//! consent per purpose, adds coarse geography, drops the IP address and produces the
//! events to Kafka, answering 2xx only once the broker has acknowledged them.
//!
//! Map: [`server`] runs the loop and [`api`] routes requests; [`ingest`] is the pure
//! core (consent, visitor id, record assembly) over [`validate`], [`scrub`] (personal
//! data in free text) and [`clock`];
//! [`geo`], [`agent`], [`salt`] and [`client_ip`] enrich; [`sink`] talks to Kafka;
//! [`reply`] maps every refusal to HTTP; [`metrics`] keeps the accounting;
//! [`unsubscribe`] is the one-click unsubscribe (RFC 8058) of marketing e-mails and
//! [`confirm`] the double opt-in link (`/v1/confirm`); [`demo`] is the demo shop
//! (`/demo/`, with `collector.demo` on).

pub mod agent;
pub mod api;
pub mod client_ip;
pub mod clock;
pub mod compat;
pub mod config;
pub mod confirm;
pub mod demo;
pub mod error;
pub mod geo;
pub mod ingest;
pub mod metrics;
pub mod reply;
pub mod salt;
pub mod scrub;
pub mod server;
pub mod sink;
pub mod sites;
pub mod tracker;
pub mod unsubscribe;
pub mod validate;

pub use config::Config;
pub use error::{Error, Result};
pub use server::{run, serve};
