//! Spur's query layer: analyst SQL over the Delta lake, read-only and
//! memory-bounded, from the CLI (`spur sql`) and over the PostgreSQL wire protocol.
//!
//! - [`catalog`]: the lake's tables in DataFusion, refreshed as the processor commits,
//!   each query in a session with its own memory limit.
//! - [`guard`]: the read-only rules, in one place (syntax tree and logical plan).
//! - [`output`]: results as a table, CSV or JSON lines (`spur sql`).
//! - [`serve`]: the PostgreSQL-wire server (`spur serve-sql`) for psql, BI tools and
//!   drivers, with what they read besides the lake (`pg_catalog`, PostgreSQL's
//!   functions: `postgres.rs`).
//!
//! The views analysts see besides the tables (`pageviews`, `subjects`, `profiles`,
//! `segment_members`, `timeline`) are defined by `spur-lake` and `spur-audience`.
//!
//! Must never: write to the lake, run anything but read-only SQL, or depend on
//! another service crate (collector, processor, dispatch, gdpr).

pub mod catalog;
pub mod config;
mod error;
pub mod guard;
pub mod output;
mod postgres;
mod server;

use std::io::Write;

use futures::StreamExt;

pub use catalog::Catalog;
pub use config::Config;
pub use error::{Error, Result};
pub use output::Format;
pub use server::serve;

/// Runs `sql` — one statement or several separated by `;` — and writes each
/// statement's result to `out` in `format`. Every statement is checked and planned
/// before the first runs, so a refused or invalid one stops the batch early.
pub async fn run_sql<W: Write>(
    catalog: &Catalog,
    sql: &str,
    format: Format,
    out: &mut W,
) -> Result<()> {
    for planned in catalog.plan_sql(sql).await? {
        let mut batches = catalog.execute(planned).await?;
        let mut writer = output::ResultWriter::new(format, batches.schema(), &mut *out);
        while let Some(batch) = batches.next().await {
            writer.write(batch.map_err(|e| catalog.error(e))?)?;
        }
        writer.finish()?;
    }
    Ok(())
}
