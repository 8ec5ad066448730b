//! The collector's component tests: a real HTTP server on loopback in front of
//! librdkafka's mock cluster (no external service). The same behaviours against a real
//! broker are in the workspace's end-to-end suite (`tests/it`).

mod broker;
mod common;
mod confirm;
mod connections;
mod consent;
mod delivery;
mod demo;
mod endpoints;
mod fuzz;
mod geo;
mod limits;
mod unsubscribe;
