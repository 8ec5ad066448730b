//! Reading query results over the lake, written once for every crate that runs SQL
//! on it (the audience engine, the ledger, the GDPR duties): run a statement and
//! collect its batches, take a column as Rust values, quote a string literal.

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type};
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};

/// Runs `sql` and collects its batches.
pub async fn collect(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    Ok(ctx.sql(sql).await?.collect().await?)
}

/// An SQL string literal: `text` in single quotes, inner quotes doubled.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn column(batch: &RecordBatch, name: &str, to: &DataType) -> Result<std::sync::Arc<dyn Array>> {
    let array = batch
        .column_by_name(name)
        .ok_or_else(|| Error::MissingColumn(name.to_owned()))?;
    Ok(cast(array, to)?)
}

/// Text column `name` of `batch` as owned strings (NULL as `None`).
pub fn strings(batch: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    let array = column(batch, name, &DataType::Utf8)?;
    Ok(array
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_owned))
        .collect())
}

/// Integer column `name` of `batch` as `i64` (NULL as 0).
pub fn int64s(batch: &RecordBatch, name: &str) -> Result<Vec<i64>> {
    let array = column(batch, name, &DataType::Int64)?;
    Ok(array
        .as_primitive::<Int64Type>()
        .iter()
        .map(|v| v.unwrap_or(0))
        .collect())
}

/// Integer column `name` of `batch` as `i64`, NULL as `None`.
pub fn optional_int64s(batch: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>> {
    let array = column(batch, name, &DataType::Int64)?;
    Ok(array.as_primitive::<Int64Type>().iter().collect())
}

/// Floating-point column `name` of `batch` as `f64` (NULL as NaN).
pub fn float64s(batch: &RecordBatch, name: &str) -> Result<Vec<f64>> {
    let array = column(batch, name, &DataType::Float64)?;
    Ok(array
        .as_primitive::<Float64Type>()
        .iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect())
}

/// Integer column `name` of `batch` as `i32`, NULL as `None` (Kafka partitions).
pub fn int32s(batch: &RecordBatch, name: &str) -> Result<Vec<Option<i32>>> {
    let array = column(batch, name, &DataType::Int32)?;
    Ok(array.as_primitive::<Int32Type>().iter().collect())
}

/// Binary column `name` of `batch` as owned bytes (NULL as empty).
pub fn binaries(batch: &RecordBatch, name: &str) -> Result<Vec<Vec<u8>>> {
    let array = column(batch, name, &DataType::Binary)?;
    Ok(array
        .as_binary::<i32>()
        .iter()
        .map(|v| v.unwrap_or_default().to_vec())
        .collect())
}

/// Boolean column `name` of `batch`, NULL as false.
pub fn booleans(batch: &RecordBatch, name: &str) -> Result<Vec<bool>> {
    let array = column(batch, name, &DataType::Boolean)?;
    let array = array.as_boolean();
    Ok((0..array.len())
        .map(|i| array.is_valid(i) && array.value(i))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn columns_read_as_rust_values() -> Result<()> {
        let ctx = SessionContext::new();
        let batches = collect(
            &ctx,
            "SELECT * FROM (VALUES ('a', 1, true, 7), (NULL, NULL, NULL, NULL)) AS t(s, n, b, p)",
        )
        .await?;
        let batch = &batches[0];
        assert_eq!(strings(batch, "s")?, vec![Some("a".to_owned()), None]);
        assert_eq!(int64s(batch, "n")?, vec![1, 0]);
        assert_eq!(optional_int64s(batch, "n")?, vec![Some(1), None]);
        assert_eq!(float64s(batch, "n")?[0], 1.0);
        assert_eq!(booleans(batch, "b")?, vec![true, false]);
        assert_eq!(int32s(batch, "p")?, vec![Some(7), None]);
        assert!(matches!(strings(batch, "x"), Err(Error::MissingColumn(_))));
        assert_eq!(quote("it's"), "'it''s'");
        Ok(())
    }
}
