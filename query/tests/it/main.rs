//! Integration tests of the query layer: one binary (each links DataFusion), one
//! module per behaviour. Every test builds its own small lake in a temporary
//! directory (`fixture.rs`); the server tests talk to a real `serve` on a loopback
//! port with tokio-postgres.

mod cases;
mod dispatch;
mod fixture;
mod limits;
mod privacy;
mod readonly;
mod score;
mod segments;
mod sql;
mod wire;
