//! A small lake in a temporary directory, written through `spur_lake` as the
//! processor writes it.
//!
//! Contents (all times UTC):
//! - `events`, 2025-11-29: 6 events `ev-0-0` … `ev-0-5` on site `shop`; `n % 3 == 2`
//!   are `identify`, the rest `pageview`; path `/p/<n>`; topics `[shoes, sale]` for
//!   even `n`; `engaged_ms` `1000 * n` for odd `n`, else null.
//! - `events`, 2025-11-30: 4 events `ev-1-0` … `ev-1-3`; odd `n` on site `blog`.
//! - `sessions`: 3 on 2025-11-29, 2 on 2025-11-30 (`duration_ms` 60 s × (n + 1),
//!   `pageviews` n + 2, the one with n = 1 is a bot).

use anyhow::{Context, Result};
use spur_lake::{Lake, TableKind};
use tempfile::TempDir;

use crate::rows::{event, session};

/// A lake with the fixture rows, one commit per table and day (so each day is its
/// own partition and file).
#[derive(Debug)]
pub struct Fixture {
    pub dir: TempDir,
}

impl Fixture {
    pub async fn new() -> Result<Fixture> {
        let dir = tempfile::tempdir()?;
        let fixture = Fixture { dir };
        let mut lake = fixture.writer().await?;
        for (day, events, sessions) in [(0, 6, 3), (1, 4, 2)] {
            let rows: Vec<_> = (0..events).map(|n| event(day, n)).collect();
            lake.append(TableKind::Events, spur_lake::events_batch(&rows)?, &[])
                .await?;
            let rows: Vec<_> = (0..sessions).map(|n| session(day, n)).collect();
            lake.append(TableKind::Sessions, spur_lake::sessions_batch(&rows)?, &[])
                .await?;
        }
        Ok(fixture)
    }

    /// The lake root (the temporary directory's path).
    pub fn root(&self) -> Result<String> {
        self.dir
            .path()
            .to_str()
            .map(str::to_owned)
            .context("temporary directory path is not UTF-8")
    }

    /// A writer on the same lake, as the processor would hold.
    pub async fn writer(&self) -> Result<Lake> {
        Ok(Lake::open(&self.root()?).await?)
    }
}
