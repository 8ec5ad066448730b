//! Integration tests of the query layer (analyst SQL): one binary (each links
//! DataFusion), one module per behaviour. Every test builds its own small lake in a
//! temporary directory (the fixture lake of `spur_testkit`, see `fixture.rs`); the
//! CLI path runs `run_sql` over a catalog, the server tests talk to a real `serve` on
//! a loopback port with tokio-postgres. Covered: the data-driven SQL cases on both
//! paths, output formats (CSV injection neutralised), the read-only guard, memory
//! and connection limits, shutdown, new commits becoming visible, and analysts'
//! own clients (psql, psycopg, SQLAlchemy; TLS; cancel; start before the lake).

mod cases;
mod clients;
mod fixture;
mod injection;
mod limits;
mod readonly;
mod sql;
mod wire;
