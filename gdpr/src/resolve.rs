//! Subject ids for a mailing system that keeps its own list (`spur subject resolve`,
//! `POST /v1/subjects/resolve`): for each e-mail address, the subject id Spur uses
//! for that person and whether the lake has that subject.
//!
//! - The subject id is the identity pseudonym the processor stores for an identify
//!   event: HMAC-SHA256 of the trimmed, lower-cased address under the active identity
//!   key (`spur_keys::pseudonym::email`), so an address resolves to the same id
//!   whichever case the mailer wrote it in.
//! - An address is valid by the collector's rule for identify events (at most 254
//!   characters, no whitespace or control characters, one `@` with a non-empty local
//!   part and a domain with an inner dot); an invalid one gets an error on its own
//!   row, never a failure of the whole list.
//! - `known`: the consent ledger has an entry (a link, a consent decision) naming the
//!   subject that is not redacted by an erasure. Identify events the ledger follower
//!   has not turned into entries yet are not counted until it has.
//!
//! The answer holds the addresses the caller sent, as sent (so the mailer can match
//! rows): it is written to the caller only, never to a log line.
//!
//! CSV, both ways: the list is read as RFC 4180 records (quoted fields, `\r\n` or
//! `\n`), the address in the first column; a first row whose first cell has no `@`
//! is a header and skipped, blank rows are skipped. The answer is
//! `email,subject_id,known,error`, one row per address row in the input's order; a
//! cell that a spreadsheet would run as a formula gets a `'` in front (OWASP CSV
//! injection) before the RFC 4180 quoting.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use serde::Serialize;
use spur_lake::Lake;
use spur_lake::read::{collect, strings};

use crate::error::{Error, Result};

/// Most addresses one admin request may resolve (413 beyond).
pub const MAX_EMAILS: usize = 10_000;

/// What an invalid row says.
pub const INVALID_EMAIL: &str = "not an e-mail address";

/// One address and who it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolution {
    /// The address as the caller sent it.
    pub email: String,
    /// The subject id; `None` when the address is invalid.
    pub subject_id: Option<String>,
    /// Whether the lake has the subject; `None` when the address is invalid.
    pub known: Option<bool>,
    /// Why the address has no subject id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The address trimmed and lower-cased, if it is one (the collector's rule,
/// [`spur_schemas::identify::normalized_email`]).
pub fn email_address(raw: &str) -> Option<String> {
    spur_schemas::identify::normalized_email(raw)
}

/// The subject id of every address in `emails`, in order. `pseudonym` turns a valid,
/// normalised address into its pseudonym; its error (no identity key) fails the
/// whole call, as a configuration error.
pub async fn resolve(
    lake: &Lake,
    emails: &[String],
    pseudonym: &(dyn Fn(&str) -> std::result::Result<String, String> + Sync),
) -> Result<Vec<Resolution>> {
    let mut out = Vec::with_capacity(emails.len());
    for raw in emails {
        let resolution = match email_address(raw) {
            Some(email) => Resolution {
                email: raw.clone(),
                subject_id: Some(pseudonym(&email).map_err(Error::Config)?),
                known: Some(false),
                error: None,
            },
            None => Resolution {
                email: raw.clone(),
                subject_id: None,
                known: None,
                error: Some(INVALID_EMAIL.into()),
            },
        };
        out.push(resolution);
    }
    let ids: Vec<&str> = out.iter().filter_map(|r| r.subject_id.as_deref()).collect();
    let known = known_subjects(lake, &ids).await?;
    for resolution in &mut out {
        if let Some(id) = &resolution.subject_id {
            resolution.known = Some(known.contains(id));
        }
    }
    Ok(out)
}

/// Which of `ids` the ledger names in an entry that is not redacted: one join
/// against the ids as an in-memory table, however many there are.
pub async fn known_subjects(lake: &Lake, ids: &[&str]) -> Result<HashSet<String>> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let schema = Arc::new(Schema::new(vec![Field::new(
        "subject_id",
        DataType::Utf8,
        false,
    )]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(StringArray::from(ids.to_vec()))],
    )
    .map_err(datafusion::error::DataFusionError::from)?;
    let ctx = lake.session_context().await?;
    ctx.register_table(
        "resolve_ids",
        Arc::new(MemTable::try_new(schema, vec![vec![batch]])?),
    )?;
    let batches = collect(
        &ctx,
        "SELECT DISTINCT l.subject_id FROM ledger l
         JOIN resolve_ids r ON l.subject_id = r.subject_id
         WHERE l.erased = false",
    )
    .await?;
    let mut known = HashSet::new();
    for batch in &batches {
        known.extend(strings(batch, "subject_id")?.into_iter().flatten());
    }
    Ok(known)
}

/// One address row of a mailer's list: its record number in the input (from 1,
/// the header and blank rows counted) and its first cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRow {
    pub row: usize,
    pub email: String,
}

/// The address rows of a CSV list (see the module header for the rules).
pub fn read_list(text: &str) -> Vec<ListRow> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rows = Vec::new();
    let mut header_checked = false;
    for (index, first) in first_cells(text).into_iter().enumerate() {
        let Some(first) = first else { continue };
        if !header_checked {
            header_checked = true;
            if !first.contains('@') {
                continue;
            }
        }
        rows.push(ListRow {
            row: index + 1,
            email: first,
        });
    }
    rows
}

/// The first field of every RFC 4180 record of `text`; `None` for a blank record.
fn first_cells(text: &str) -> Vec<Option<String>> {
    let mut records = Vec::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let mut first = String::new();
        let mut field = 0usize;
        let mut blank = true;
        let mut quoted = false;
        while let Some(c) = chars.next() {
            if quoted {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        if field == 0 {
                            first.push('"');
                        }
                    } else {
                        quoted = false;
                    }
                } else if field == 0 {
                    first.push(c);
                }
                continue;
            }
            match c {
                '\n' => break,
                '\r' if chars.peek() == Some(&'\n') => {}
                '"' => {
                    quoted = true;
                    blank = false;
                }
                ',' => {
                    field += 1;
                    blank = false;
                }
                c => {
                    blank = false;
                    if field == 0 {
                        first.push(c);
                    }
                }
            }
        }
        records.push((!blank).then_some(first));
    }
    records
}

/// What `spur subject resolve` prints: the CSV answer, and the input rows (record
/// numbers from 1, header counted) whose address is invalid, for a note on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListAnswer {
    pub csv: String,
    pub invalid_rows: Vec<usize>,
}

/// Resolves a mailer's CSV list (`spur subject resolve`): [`read_list`], then
/// [`resolve`], then [`to_csv`].
pub async fn resolve_list(
    lake: &Lake,
    text: &str,
    pseudonym: &(dyn Fn(&str) -> std::result::Result<String, String> + Sync),
) -> Result<ListAnswer> {
    let rows = read_list(text);
    let emails: Vec<String> = rows.iter().map(|r| r.email.clone()).collect();
    let resolutions = resolve(lake, &emails, pseudonym).await?;
    let invalid_rows = rows
        .iter()
        .zip(&resolutions)
        .filter(|(_, r)| r.error.is_some())
        .map(|(row, _)| row.row)
        .collect();
    Ok(ListAnswer {
        csv: to_csv(&resolutions),
        invalid_rows,
    })
}

/// The answer as CSV, header first (see the module header).
pub fn to_csv(resolutions: &[Resolution]) -> String {
    let mut out = String::from("email,subject_id,known,error\r\n");
    for r in resolutions {
        let known = r.known.map_or("", |k| if k { "true" } else { "false" });
        out.push_str(&format!(
            "{},{},{},{}\r\n",
            csv_cell(&r.email),
            csv_cell(r.subject_id.as_deref().unwrap_or("")),
            known,
            csv_cell(r.error.as_deref().unwrap_or("")),
        ));
    }
    out
}

/// A text cell for CSV: a `'` in front when a spreadsheet would read it as a
/// formula (OWASP: `=`, `+`, `-`, `@`, tab, carriage return), then quoted as RFC
/// 4180 requires. The same rule as `spur sql --format csv` (`spur_query::output`).
pub fn csv_cell(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_and_normalised_like_the_collector() {
        assert_eq!(
            email_address(" Alice@Example.COM ").as_deref(),
            Some("alice@example.com")
        );
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@example",
            "alice@.example.com",
            "alice@example.com.",
            "al ice@example.com",
            "a@b@example.com",
            "a\u{7}@example.com",
        ] {
            assert_eq!(email_address(bad), None, "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(email_address(&long), None);
    }

    #[test]
    fn a_list_with_or_without_header_quotes_and_blank_rows() {
        let rows = read_list(
            "\u{feff}email,name\r\nalice@example.com,Alice\r\n\r\n\"bob@example.com\",\"Bob, \"\"B\"\"\nline two\"\nnot-an-address\n  \n\"x,\"\"y\"\"@example.com\"",
        );
        let got: Vec<(usize, &str)> = rows.iter().map(|r| (r.row, r.email.as_str())).collect();
        assert_eq!(
            got,
            [
                (2, "alice@example.com"),
                (4, "bob@example.com"),
                (5, "not-an-address"),
                (6, "  "),
                (7, "x,\"y\"@example.com"),
            ]
        );
        // Without a header the first row is an address.
        let rows = read_list("alice@example.com\nbob@example.com");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].row, 1);
        assert!(read_list("").is_empty());
        assert!(read_list("email\n").is_empty());
    }

    #[test]
    fn csv_cells_are_neutralised_then_quoted() {
        assert_eq!(
            csv_cell(r#"=HYPERLINK("http://evil","x")"#),
            r#""'=HYPERLINK(""http://evil"",""x"")""#
        );
        assert_eq!(csv_cell("+cmd"), "'+cmd");
        assert_eq!(csv_cell("@SUM(1)"), "'@SUM(1)");
        assert_eq!(csv_cell("-2+3"), "'-2+3");
        assert_eq!(csv_cell("\t=1"), "'\t=1");
        assert_eq!(csv_cell("\r=1"), "\"'\r=1\"");
        assert_eq!(csv_cell("a@example.com"), "a@example.com");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
    }

    #[test]
    fn the_answer_has_one_row_per_address_and_errors_in_their_column() {
        let csv = to_csv(&[
            Resolution {
                email: "=cmd@example.com".into(),
                subject_id: Some("00ff".into()),
                known: Some(true),
                error: None,
            },
            Resolution {
                email: "nope".into(),
                subject_id: None,
                known: None,
                error: Some(INVALID_EMAIL.into()),
            },
        ]);
        assert_eq!(
            csv,
            "email,subject_id,known,error\r\n'=cmd@example.com,00ff,true,\r\nnope,,,not an e-mail address\r\n"
        );
    }
}
