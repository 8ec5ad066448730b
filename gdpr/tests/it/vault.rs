//! The contact vault under an access request and an erasure: export returns the
//! address; after erasure no copy of it opens — not the table, not a copy of its
//! files taken before (an older version, a backup) — because the data key is gone.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use datafusion::arrow::array::AsArray;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use spur_gdpr::{EraseOptions, erase, export};
use spur_keys::KeyRing;
use spur_keys::vault::Vault;
use spur_lake::model::ContactRow;
use spur_lake::{TableKind, contacts_batch};
use spur_schemas::time::date;
use spur_testkit::{T0, Writer, boot_views, root, signup};

const A: &str = "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0";
const A_PHONE: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const B: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
const B_PHONE: &str = "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1";
const DAY_MS: i64 = 86_400_000;

/// Every Parquet file under `dir`, recursively.
fn parquet_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            parquet_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    Ok(())
}

/// (subject, event, sealed address) of every row in these Parquet files.
fn sealed_rows(files: &[PathBuf]) -> Result<Vec<(String, String, Vec<u8>)>> {
    let mut out = Vec::new();
    for file in files {
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file)?)?.build()?;
        for batch in reader {
            let batch = batch?;
            let text = |name: &str| -> Result<Vec<String>> {
                let column = datafusion::arrow::compute::cast(
                    batch.column_by_name(name).context("column")?,
                    &datafusion::arrow::datatypes::DataType::Utf8,
                )?;
                Ok(column
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.unwrap_or_default().to_owned())
                    .collect())
            };
            let (subjects, events) = (text("subject_id")?, text("event_id")?);
            let address = datafusion::arrow::compute::cast(
                batch.column_by_name("address").context("address")?,
                &datafusion::arrow::datatypes::DataType::Binary,
            )?;
            let address = address.as_binary::<i32>();
            for i in 0..batch.num_rows() {
                out.push((
                    subjects[i].clone(),
                    events[i].clone(),
                    address.value(i).to_vec(),
                ));
            }
        }
    }
    Ok(out)
}

#[tokio::test]
async fn export_returns_the_address_and_erasure_shreds_every_copy() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let keys_dir = dir.path().join("keys");
    let keys = KeyRing::init(&keys_dir)?;
    let vault = Vault::new(&keys_dir);
    let mut w = Writer::new(&root(&dir)?).await?;
    let mut rows = boot_views("a", A_PHONE, T0, 2);
    rows.push(signup("a-sign", A_PHONE, T0 + 60_000, A, true));
    rows.push(signup("b-sign", B_PHONE, T0 + 60_000, B, true));
    w.append(rows).await?;
    // What the processor writes for the two sign-ups.
    let contact = |subject: &str, event: &str, email: &str| -> Result<ContactRow> {
        Ok(ContactRow {
            subject_id: subject.into(),
            event_id: event.into(),
            site_id: "shop".into(),
            address: vault.seal(&keys, subject, event, email)?,
            recorded_at: T0 + 60_000,
            dt: date(T0 + 60_000),
        })
    };
    let sealed = [
        contact(A, "a-sign", "ada@example.com")?,
        contact(B, "b-sign", "bob@example.com")?,
    ];
    w.lake
        .append(TableKind::Contacts, contacts_batch(&sealed)?, &[])
        .await?;

    // Access: the address comes back in clear, only to the subject's export.
    let before = export(&w.lake, A, T0 + DAY_MS, Some(&keys_dir)).await?;
    let emails: Vec<_> = before.tables["contacts"]
        .iter()
        .map(|c| c["email"].as_str().unwrap_or_default().to_owned())
        .collect();
    ensure!(emails == ["ada@example.com"], "{emails:?}");
    ensure!(before.summary().contains("ada@example.com"));
    ensure!(!before.summary().contains("bob@example.com"));

    // A copy of the contacts files taken before the erasure (an older version, a backup).
    let mut files = Vec::new();
    parquet_files(&dir.path().join("contacts"), &mut files)?;
    let backup = sealed_rows(&files)?;
    ensure!(backup.len() == 2, "{backup:?}");
    for (_, _, bytes) in &backup {
        ensure!(
            !bytes.windows(7).any(|w| w == b"example"),
            "an address is stored in clear"
        );
    }

    let options = EraseOptions {
        keys_dir: Some(keys_dir.clone()),
        ..EraseOptions::default()
    };
    let receipt = erase(&mut w.lake, A, T0 + DAY_MS, &options).await?;
    ensure!(receipt.contact_key_destroyed, "{receipt:?}");
    ensure!(receipt.tables["contacts"].rows == 1, "{receipt:?}");
    ensure!(!vault.key_path(A)?.exists(), "A's data key survived");

    // Not one copy of A's address opens any more; B's still does.
    let keys = KeyRing::load(&keys_dir)?;
    for (subject, event, bytes) in &backup {
        let opened = vault.open(&keys, subject, event, bytes)?;
        if subject == A {
            ensure!(opened.is_none(), "A's address opened after erasure");
        } else {
            ensure!(opened.as_deref() == Some("bob@example.com"), "{opened:?}");
        }
    }
    // And the table no longer has A's row in any file (vacuumed).
    let mut files = Vec::new();
    parquet_files(&dir.path().join("contacts"), &mut files)?;
    ensure!(
        sealed_rows(&files)?.iter().all(|(s, _, _)| s != A),
        "A's sealed row survived"
    );
    let after = export(&w.lake, A, T0 + DAY_MS, Some(&keys_dir)).await?;
    ensure!(after.tables["contacts"].is_empty());
    let b = export(&w.lake, B, T0 + DAY_MS, Some(&keys_dir)).await?;
    ensure!(b.tables["contacts"].len() == 1);
    Ok(())
}
