//! Query results as text for `spur sql`: an aligned table (Arrow's pretty printer),
//! CSV with a header line, or JSON with one object per row (newline-delimited, nulls
//! written out so that every row has every column). CSV and JSON are written batch
//! by batch as the query produces them; the table needs every row to size its
//! columns, so it is written at the end.

use std::fmt;
use std::io::Write;
use std::str::FromStr;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::csv;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::{self, writer::LineDelimited};
use datafusion::arrow::util::pretty::pretty_format_batches_with_schema;

use crate::error::{Error, Result};

/// How `spur sql` prints results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// An aligned text table, for people.
    #[default]
    Table,
    /// CSV with a header line, for spreadsheets and scripts.
    Csv,
    /// Newline-delimited JSON objects, one per row.
    Json,
}

impl Format {
    pub const NAMES: [&'static str; 3] = ["table", "csv", "json"];
}

impl FromStr for Format {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            other => Err(format!(
                "unknown output format {other:?}: table, csv or json"
            )),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Table => "table",
            Format::Csv => "csv",
            Format::Json => "json",
        })
    }
}

/// Writes the results of one statement.
#[derive(Debug)]
pub struct ResultWriter<W: Write> {
    format: Format,
    schema: SchemaRef,
    out: W,
    header_written: bool,
    held: Vec<RecordBatch>,
}

impl<W: Write> ResultWriter<W> {
    pub fn new(format: Format, schema: SchemaRef, out: W) -> Self {
        Self {
            format,
            schema,
            out,
            header_written: false,
            held: Vec::new(),
        }
    }

    /// Writes (or, for the table, holds) one batch.
    pub fn write(&mut self, batch: RecordBatch) -> Result<()> {
        match self.format {
            Format::Table => self.held.push(batch),
            Format::Csv => {
                let mut writer = csv::WriterBuilder::new()
                    .with_header(!self.header_written)
                    .build(&mut self.out);
                writer.write(&batch).map_err(arrow_error)?;
                self.header_written = true;
            }
            Format::Json => {
                let mut writer = json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, LineDelimited>(&mut self.out);
                writer.write(&batch).map_err(arrow_error)?;
                writer.finish().map_err(arrow_error)?;
            }
        }
        Ok(())
    }

    /// Ends the output: prints the table, or the CSV header of an empty result.
    pub fn finish(mut self) -> Result<W> {
        match self.format {
            Format::Table => {
                let table = pretty_format_batches_with_schema(self.schema.clone(), &self.held)
                    .map_err(arrow_error)?;
                writeln!(self.out, "{table}").map_err(Error::Output)?;
            }
            Format::Csv if !self.header_written => {
                self.write(RecordBatch::new_empty(self.schema.clone()))?;
            }
            Format::Csv | Format::Json => {}
        }
        self.out.flush().map_err(Error::Output)?;
        Ok(self.out)
    }
}

fn arrow_error(error: ArrowError) -> Error {
    match error {
        ArrowError::IoError(_, source) => Error::Output(source),
        other => Error::Output(std::io::Error::other(other)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, StringArray};

    use super::*;

    fn batch() -> RecordBatch {
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "site",
                Arc::new(StringArray::from(vec![Some("shop"), None])),
            ),
            ("n", Arc::new(Int64Array::from(vec![3, 1]))),
            ("bot", Arc::new(BooleanArray::from(vec![false, true]))),
        ];
        RecordBatch::try_from_iter_with_nullable(
            columns.into_iter().map(|(name, array)| (name, array, true)),
        )
        .expect("batch")
    }

    fn render(format: Format, batches: Vec<RecordBatch>) -> String {
        let schema = batch().schema();
        let mut writer = ResultWriter::new(format, schema, Vec::new());
        for batch in batches {
            writer.write(batch).expect("write");
        }
        String::from_utf8(writer.finish().expect("finish")).expect("utf-8")
    }

    #[test]
    fn csv_has_one_header_across_batches() {
        assert_eq!(
            render(Format::Csv, vec![batch(), batch()]),
            "site,n,bot\nshop,3,false\n,1,true\nshop,3,false\n,1,true\n"
        );
        assert_eq!(render(Format::Csv, vec![]), "site,n,bot\n");
    }

    #[test]
    fn json_is_one_object_per_row_with_nulls() {
        assert_eq!(
            render(Format::Json, vec![batch()]),
            "{\"site\":\"shop\",\"n\":3,\"bot\":false}\n{\"site\":null,\"n\":1,\"bot\":true}\n"
        );
        assert_eq!(render(Format::Json, vec![]), "");
    }

    #[test]
    fn table_is_aligned_and_shows_the_header_when_empty() {
        let table = render(Format::Table, vec![batch()]);
        assert_eq!(
            table,
            "+------+---+-------+\n\
             | site | n | bot   |\n\
             +------+---+-------+\n\
             | shop | 3 | false |\n\
             |      | 1 | true  |\n\
             +------+---+-------+\n"
        );
        assert!(render(Format::Table, vec![]).contains("| site | n | bot |"));
    }

    #[test]
    fn format_names_parse() {
        for name in Format::NAMES {
            assert_eq!(name.parse::<Format>().expect("known").to_string(), name);
        }
        assert!("xml".parse::<Format>().is_err());
    }
}
