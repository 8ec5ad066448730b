//! Arrow columns as PostgreSQL values: the type each Arrow type is announced as, and
//! the encoding of batches into `DataRow`s (text or binary, as the client asked).
//!
//! | Arrow | PostgreSQL |
//! |---|---|
//! | Boolean | bool |
//! | Int8, Int16, UInt8 | int2 |
//! | Int32, UInt16 | int4 |
//! | Int64, UInt32 | int8 |
//! | Float16, Float32 / Float64 | float4 / float8 |
//! | Utf8, LargeUtf8, Utf8View | text |
//! | Binary variants | bytea |
//! | Date32, Date64 | date |
//! | Timestamp without / with time zone | timestamp / timestamptz (µs) |
//! | Dictionary | as its values |
//! | anything else (UInt64, decimals, lists, structs, intervals, …) | text, as Arrow displays it (`[shoes, sale]`, `12.50`) |

use std::sync::Arc;

use chrono::{DateTime, NaiveDate};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Schema,
    TimeUnit, TimestampMicrosecondType,
};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;

/// How a column's values are taken out of Arrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Text,
    Bytea,
    Date,
    Timestamp,
    TimestampTz,
    /// Any other type: Arrow's display text, announced as `text`.
    Display,
}

fn kind(data_type: &DataType) -> Kind {
    match data_type {
        DataType::Boolean => Kind::Bool,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Kind::Int2,
        DataType::Int32 | DataType::UInt16 => Kind::Int4,
        DataType::Int64 | DataType::UInt32 => Kind::Int8,
        DataType::Float16 | DataType::Float32 => Kind::Float4,
        DataType::Float64 => Kind::Float8,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => Kind::Text,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => Kind::Bytea,
        DataType::Date32 | DataType::Date64 => Kind::Date,
        DataType::Timestamp(_, None) => Kind::Timestamp,
        DataType::Timestamp(_, Some(_)) => Kind::TimestampTz,
        DataType::Dictionary(_, values) => kind(values),
        _ => Kind::Display,
    }
}

impl Kind {
    fn pg_type(self) -> Type {
        match self {
            Kind::Bool => Type::BOOL,
            Kind::Int2 => Type::INT2,
            Kind::Int4 => Type::INT4,
            Kind::Int8 => Type::INT8,
            Kind::Float4 => Type::FLOAT4,
            Kind::Float8 => Type::FLOAT8,
            Kind::Text | Kind::Display => Type::TEXT,
            Kind::Bytea => Type::BYTEA,
            Kind::Date => Type::DATE,
            Kind::Timestamp => Type::TIMESTAMP,
            Kind::TimestampTz => Type::TIMESTAMPTZ,
        }
    }

    /// The one Arrow type values of this kind are read from.
    fn arrow_type(self) -> Option<DataType> {
        Some(match self {
            Kind::Bool => DataType::Boolean,
            Kind::Int2 => DataType::Int16,
            Kind::Int4 => DataType::Int32,
            Kind::Int8 => DataType::Int64,
            Kind::Float4 => DataType::Float32,
            Kind::Float8 => DataType::Float64,
            Kind::Text => DataType::Utf8,
            Kind::Bytea => DataType::Binary,
            Kind::Date => DataType::Date32,
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Kind::Display => return None,
        })
    }
}

/// The PostgreSQL type an Arrow type is announced as.
pub(crate) fn pg_type(data_type: &DataType) -> Type {
    kind(data_type).pg_type()
}

/// The row description of a result.
pub(crate) fn fields(schema: &Schema, format: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(index, field)| {
            FieldInfo::new(
                field.name().clone(),
                None,
                None,
                pg_type(field.data_type()),
                format.format_for(index),
            )
        })
        .collect()
}

/// One column, converted to the Arrow type its kind reads.
enum Column {
    Typed(Kind, ArrayRef),
    Display(ArrayRef),
}

fn column(array: &ArrayRef) -> Result<Column, ArrowError> {
    let kind = kind(array.data_type());
    Ok(match kind.arrow_type() {
        Some(target) if array.data_type() == &target => Column::Typed(kind, array.clone()),
        Some(target) => Column::Typed(kind, cast(array, &target)?),
        None => Column::Display(array.clone()),
    })
}

/// Encodes a batch as `DataRow`s, each value in the format `fields` gives for its
/// column.
pub(crate) fn rows(
    batch: &RecordBatch,
    fields: &Arc<Vec<FieldInfo>>,
) -> PgWireResult<Vec<DataRow>> {
    let columns = batch
        .columns()
        .iter()
        .map(column)
        .collect::<Result<Vec<_>, _>>()
        .map_err(api_error)?;
    let display_options = FormatOptions::default().with_null("");
    let formatters = columns
        .iter()
        .map(|column| match column {
            Column::Display(array) => {
                ArrayFormatter::try_new(array.as_ref(), &display_options).map(Some)
            }
            Column::Typed(..) => Ok(None),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(api_error)?;

    let mut encoder = DataRowEncoder::new(fields.clone());
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        for (column, formatter) in columns.iter().zip(&formatters) {
            encode(&mut encoder, column, formatter.as_ref(), row)?;
        }
        rows.push(encoder.take_row());
    }
    Ok(rows)
}

fn encode(
    encoder: &mut DataRowEncoder,
    column: &Column,
    formatter: Option<&ArrayFormatter<'_>>,
    row: usize,
) -> PgWireResult<()> {
    let array = match column {
        Column::Typed(_, array) | Column::Display(array) => array,
    };
    if array.is_null(row) {
        return encoder.encode_field(&None::<&str>);
    }
    match (column, formatter) {
        (Column::Display(_), Some(formatter)) => {
            encoder.encode_field(&formatter.value(row).to_string())
        }
        (Column::Typed(kind, array), _) => match kind {
            Kind::Bool => encoder.encode_field(&array.as_boolean().value(row)),
            Kind::Int2 => encoder.encode_field(&array.as_primitive::<Int16Type>().value(row)),
            Kind::Int4 => encoder.encode_field(&array.as_primitive::<Int32Type>().value(row)),
            Kind::Int8 => encoder.encode_field(&array.as_primitive::<Int64Type>().value(row)),
            Kind::Float4 => encoder.encode_field(&array.as_primitive::<Float32Type>().value(row)),
            Kind::Float8 => encoder.encode_field(&array.as_primitive::<Float64Type>().value(row)),
            Kind::Text => encoder.encode_field(&array.as_string::<i32>().value(row)),
            Kind::Bytea => encoder.encode_field(&array.as_binary::<i32>().value(row)),
            Kind::Date => {
                let days = array.as_primitive::<Date32Type>().value(row);
                let date = NaiveDate::from_epoch_days(days).ok_or_else(|| out_of_range(days))?;
                encoder.encode_field(&date)
            }
            Kind::Timestamp | Kind::TimestampTz => {
                let micros = array.as_primitive::<TimestampMicrosecondType>().value(row);
                let time =
                    DateTime::from_timestamp_micros(micros).ok_or_else(|| out_of_range(micros))?;
                if *kind == Kind::Timestamp {
                    encoder.encode_field(&time.naive_utc())
                } else {
                    encoder.encode_field(&time)
                }
            }
            Kind::Display => encoder.encode_field(&None::<&str>),
        },
        (Column::Display(_), None) => encoder.encode_field(&None::<&str>),
    }
}

fn out_of_range(value: impl std::fmt::Display) -> PgWireError {
    api_error(ArrowError::ComputeError(format!(
        "date or time {value} is outside the range PostgreSQL clients read"
    )))
}

fn api_error(error: ArrowError) -> PgWireError {
    PgWireError::ApiError(Box::new(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrow_types_map_to_postgres_types() {
        let cases = [
            (DataType::Boolean, Type::BOOL),
            (DataType::Int8, Type::INT2),
            (DataType::Int16, Type::INT2),
            (DataType::Int32, Type::INT4),
            (DataType::Int64, Type::INT8),
            (DataType::UInt32, Type::INT8),
            (DataType::UInt64, Type::TEXT),
            (DataType::Float32, Type::FLOAT4),
            (DataType::Float64, Type::FLOAT8),
            (DataType::Utf8View, Type::TEXT),
            (DataType::LargeUtf8, Type::TEXT),
            (DataType::Binary, Type::BYTEA),
            (DataType::Date32, Type::DATE),
            (
                DataType::Timestamp(TimeUnit::Millisecond, None),
                Type::TIMESTAMP,
            ),
            (
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                Type::TIMESTAMPTZ,
            ),
            (
                DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8)),
                Type::TEXT,
            ),
            (DataType::Decimal128(10, 2), Type::TEXT),
            (DataType::new_list(DataType::Utf8, true), Type::TEXT),
        ];
        for (arrow, pg) in cases {
            assert_eq!(pg_type(&arrow), pg, "{arrow}");
        }
    }
}
