//! Query results as text for `spur sql`: an aligned table (Arrow's pretty printer),
//! CSV with a header line, or JSON with one object per row (newline-delimited, nulls
//! written out so that every row has every column). CSV and JSON are written batch
//! by batch as the query produces them; the table needs every row to size its
//! columns, so it is written at the end.
//!
//! **CSV injection** (OWASP "CSV Injection"): a spreadsheet opening the CSV runs a
//! cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return as a
//! formula, and page titles, paths and custom properties come from visitors'
//! browsers. Every text cell that starts with one of them is written with a single
//! quote `'` in front ([`neutralise_cell`]), then quoted as RFC 4180 requires like
//! any other cell. Typed columns (numbers, booleans, dates) are written as they
//! are, so `-3` in an integer column stays a number; a text cell `-3` gets the
//! quote. Column names come from the analyst's SQL and are left alone.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;
use std::str::FromStr;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::csv;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
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
                writer
                    .write(&neutralise_batch(&batch).map_err(arrow_error)?)
                    .map_err(arrow_error)?;
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

/// First characters that make a spreadsheet read a cell as a formula (OWASP).
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// A text cell as it may go into a CSV file: with a `'` in front when it starts
/// like a formula, else unchanged. RFC 4180 quoting is the CSV writer's.
pub fn neutralise_cell(text: &str) -> Cow<'_, str> {
    if text.starts_with(FORMULA_STARTS) {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

fn is_text(data_type: &DataType) -> bool {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, values) => is_text(values),
        _ => false,
    }
}

/// The batch with every text cell passed through [`neutralise_cell`]; columns
/// without such a cell (and every non-text column) are kept as they are.
fn neutralise_batch(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if !is_text(field.data_type()) {
            fields.push(field.clone());
            columns.push(column.clone());
            continue;
        }
        let text = cast(column, &DataType::Utf8)?;
        let text = text.as_string::<i32>();
        if !text.iter().flatten().any(|v| v.starts_with(FORMULA_STARTS)) {
            fields.push(field.clone());
            columns.push(column.clone());
            continue;
        }
        let neutral: StringArray = text.iter().map(|v| v.map(neutralise_cell)).collect();
        fields.push(Arc::new(Field::new(
            field.name(),
            DataType::Utf8,
            field.is_nullable() || neutral.null_count() > 0,
        )));
        columns.push(Arc::new(neutral) as ArrayRef);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
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

    use datafusion::arrow::array::{BooleanArray, Float64Array, Int64Array};

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

    /// OWASP CSV injection: text cells that start like a formula get a `'` in front
    /// and are still quoted per RFC 4180; typed numbers, negative ones too, do not.
    #[test]
    fn csv_neutralises_formula_cells_but_not_numbers() {
        let cells = [
            Some(r#"=HYPERLINK("http://evil","x")"#),
            Some("+cmd"),
            Some("@SUM(1)"),
            Some("-2+3"),
            Some("\t=1"),
            Some("\r=1"),
            Some("plain, text"),
            Some("a=b"),
            Some(""),
            None,
        ];
        let n = cells.len();
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("title", Arc::new(StringArray::from(cells.to_vec()))),
            (
                "n",
                Arc::new(Int64Array::from(
                    (0..n as i64).map(|i| -i - 2).collect::<Vec<_>>(),
                )),
            ),
            ("x", Arc::new(Float64Array::from(vec![-1.5; n]))),
        ];
        let batch = RecordBatch::try_from_iter_with_nullable(
            columns.into_iter().map(|(name, array)| (name, array, true)),
        )
        .expect("batch");
        let mut writer = ResultWriter::new(Format::Csv, batch.schema(), Vec::new());
        writer.write(batch).expect("write");
        let csv = String::from_utf8(writer.finish().expect("finish")).expect("utf-8");
        assert_eq!(
            csv,
            "title,n,x\n\
             \"'=HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\",-2,-1.5\n\
             '+cmd,-3,-1.5\n\
             '@SUM(1),-4,-1.5\n\
             '-2+3,-5,-1.5\n\
             '\t=1,-6,-1.5\n\
             \"'\r=1\",-7,-1.5\n\
             \"plain, text\",-8,-1.5\n\
             a=b,-9,-1.5\n\
             ,-10,-1.5\n\
             ,-11,-1.5\n"
        );
    }

    #[test]
    fn neutralise_cell_prefixes_only_formula_starts() {
        for cell in ["=1", "+1", "-1", "@a", "\tx", "\rx"] {
            assert_eq!(neutralise_cell(cell), format!("'{cell}"));
        }
        for cell in ["1", "a-b", " =1", "'=1", ""] {
            assert_eq!(neutralise_cell(cell), cell);
        }
    }

    /// Dictionary and view strings (what DataFusion hands out) are text too.
    #[test]
    fn csv_neutralises_dictionary_and_view_strings() {
        use datafusion::arrow::array::{DictionaryArray, StringViewArray};
        use datafusion::arrow::datatypes::Int32Type;
        let dictionary: DictionaryArray<Int32Type> = vec!["=a", "b", "=a"].into_iter().collect();
        let view = StringViewArray::from(vec!["@x", "y", "-z"]);
        let columns: Vec<(&str, ArrayRef)> =
            vec![("d", Arc::new(dictionary)), ("v", Arc::new(view))];
        let batch = RecordBatch::try_from_iter(columns).expect("batch");
        let mut writer = ResultWriter::new(Format::Csv, batch.schema(), Vec::new());
        writer.write(batch).expect("write");
        let csv = String::from_utf8(writer.finish().expect("finish")).expect("utf-8");
        assert_eq!(csv, "d,v\n'=a,'@x\nb,y\n'=a,'-z\n");
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
