//! Reading table `contacts`: the sealed addresses of subjects, for the mailing path
//! (`spur segments`) and for access requests (export). Opening them needs the
//! subject's data key (`spur_keys::vault`), which this crate never sees.

use datafusion::prelude::SessionContext;

use crate::error::Result;
use crate::read::{binaries, collect, int64s, quote, strings};

/// One row of `contacts`, still sealed.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedContact {
    pub subject_id: String,
    pub event_id: String,
    pub site_id: String,
    pub address: Vec<u8>,
    /// ms since the epoch.
    pub recorded_at: i64,
}

/// The sealed addresses of `subjects`, newest first per subject; with `latest_only`,
/// one per subject (the address most recently given). A crash of the processor
/// between its commits may write an event's row twice: rows are distinct per event.
pub async fn sealed(
    ctx: &SessionContext,
    subjects: &[String],
    latest_only: bool,
) -> Result<Vec<SealedContact>> {
    if subjects.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = subjects.iter().map(|s| quote(s)).collect();
    let limit = if latest_only { "AND rank = 1" } else { "" };
    let sql = format!(
        "SELECT subject_id, event_id, site_id, address, recorded_at FROM (
             SELECT subject_id, event_id, site_id, address,
                    CAST(recorded_at AS BIGINT) / 1000 AS recorded_at,
                    ROW_NUMBER() OVER (PARTITION BY subject_id
                                       ORDER BY recorded_at DESC, event_id DESC) AS rank,
                    ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY recorded_at) AS copy
             FROM contacts WHERE subject_id IN ({}))
         WHERE copy = 1 {limit}
         ORDER BY subject_id, recorded_at DESC, event_id DESC",
        list.join(", ")
    );
    let mut out = Vec::new();
    for batch in &collect(ctx, &sql).await? {
        let subject = strings(batch, "subject_id")?;
        let event = strings(batch, "event_id")?;
        let site = strings(batch, "site_id")?;
        let address = binaries(batch, "address")?;
        let at = int64s(batch, "recorded_at")?;
        for i in 0..batch.num_rows() {
            out.push(SealedContact {
                subject_id: subject[i].clone().unwrap_or_default(),
                event_id: event[i].clone().unwrap_or_default(),
                site_id: site[i].clone().unwrap_or_default(),
                address: address[i].clone(),
                recorded_at: at[i],
            });
        }
    }
    Ok(out)
}
