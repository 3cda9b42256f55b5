//! Encodes Arrow record batches in PostgreSQL's binary `COPY` format, so rows go to the
//! server without a text round trip and without any ambiguity between NULL and empty text.
//!
//! Format: a signature and two zero words, then per row a 16-bit field count and per field
//! a 32-bit length (-1 for NULL) and the value in the type's binary send format; a -1 field
//! count ends the stream.

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int16Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use shared::error::BoxError;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Days from 1970-01-01 (Arrow) to 2000-01-01 (PostgreSQL).
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("column {column:?} has type {data_type}, which has no PostgreSQL mapping")]
    Unsupported { column: String, data_type: String },
    #[error("column {column:?} row {row}: text contains a NUL byte, which PostgreSQL cannot store")]
    NulInText { column: String, row: usize },
    #[error("column {column:?}: cannot convert for COPY")]
    Convert { column: String, source: BoxError },
}

/// The PostgreSQL column type for an Arrow type.
pub(crate) fn pg_type(data_type: &DataType) -> Option<String> {
    Some(match data_type {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 => "smallint".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Decimal128(precision, scale) => format!("numeric({precision},{scale})"),
        _ => return None,
    })
}

/// One column, converted to the array type its encoder reads.
enum Column {
    Bool(BooleanArray),
    I16(Int16Array),
    I32(Int32Array),
    I64(Int64Array),
    F32(Float32Array),
    F64(Float64Array),
    Text(StringArray, String),
    Date(Date32Array),
    Timestamp(TimestampMicrosecondArray),
    Numeric(Decimal128Array),
}

fn prepare(name: &str, array: &ArrayRef) -> Result<Column, EncodeError> {
    let convert = |to: &DataType| {
        cast(array, to).map_err(|err| EncodeError::Convert {
            column: name.to_owned(),
            source: err.into(),
        })
    };
    let downcast_failed = || EncodeError::Convert {
        column: name.to_owned(),
        source: "unexpected array type after cast".into(),
    };
    macro_rules! typed {
        ($variant:ident, $array:ty, $target:expr) => {{
            let converted = convert(&$target)?;
            Column::$variant(
                converted
                    .as_any()
                    .downcast_ref::<$array>()
                    .ok_or_else(downcast_failed)?
                    .clone(),
            )
        }};
    }
    Ok(match array.data_type() {
        DataType::Boolean => typed!(Bool, BooleanArray, DataType::Boolean),
        DataType::Int8 | DataType::Int16 => typed!(I16, Int16Array, DataType::Int16),
        DataType::Int32 => typed!(I32, Int32Array, DataType::Int32),
        DataType::Int64 => typed!(I64, Int64Array, DataType::Int64),
        DataType::Float32 => typed!(F32, Float32Array, DataType::Float32),
        DataType::Float64 => typed!(F64, Float64Array, DataType::Float64),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let converted = convert(&DataType::Utf8)?;
            let strings = converted
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(downcast_failed)?
                .clone();
            Column::Text(strings, name.to_owned())
        }
        DataType::Date32 => typed!(Date, Date32Array, DataType::Date32),
        DataType::Timestamp(_, tz) => {
            typed!(
                Timestamp,
                TimestampMicrosecondArray,
                DataType::Timestamp(TimeUnit::Microsecond, tz.clone())
            )
        }
        DataType::Decimal128(p, s) => {
            typed!(Numeric, Decimal128Array, DataType::Decimal128(*p, *s))
        }
        other => {
            return Err(EncodeError::Unsupported {
                column: name.to_owned(),
                data_type: other.to_string(),
            });
        }
    })
}

/// Writes the stream header.
pub(crate) fn write_header(out: &mut Vec<u8>) {
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
}

/// Writes the end-of-data marker.
pub(crate) fn write_trailer(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i16).to_be_bytes());
}

/// Appends every row of `batch`.
pub(crate) fn write_batch(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let schema = batch.schema();
    let columns: Vec<Column> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, array)| prepare(field.name(), array))
        .collect::<Result<_, _>>()?;
    let field_count = i16::try_from(columns.len()).map_err(|_| EncodeError::Convert {
        column: String::new(),
        source: "more than 32767 columns".into(),
    })?;
    for row in 0..batch.num_rows() {
        out.extend_from_slice(&field_count.to_be_bytes());
        for column in &columns {
            write_value(column, row, out)?;
        }
    }
    Ok(())
}

fn write_fixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn write_value(column: &Column, row: usize, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let is_null = match column {
        Column::Bool(a) => a.is_null(row),
        Column::I16(a) => a.is_null(row),
        Column::I32(a) => a.is_null(row),
        Column::I64(a) => a.is_null(row),
        Column::F32(a) => a.is_null(row),
        Column::F64(a) => a.is_null(row),
        Column::Text(a, _) => a.is_null(row),
        Column::Date(a) => a.is_null(row),
        Column::Timestamp(a) => a.is_null(row),
        Column::Numeric(a) => a.is_null(row),
    };
    if is_null {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return Ok(());
    }
    match column {
        Column::Bool(a) => write_fixed(out, &[u8::from(a.value(row))]),
        Column::I16(a) => write_fixed(out, &a.value(row).to_be_bytes()),
        Column::I32(a) => write_fixed(out, &a.value(row).to_be_bytes()),
        Column::I64(a) => write_fixed(out, &a.value(row).to_be_bytes()),
        Column::F32(a) => write_fixed(out, &a.value(row).to_be_bytes()),
        Column::F64(a) => write_fixed(out, &a.value(row).to_be_bytes()),
        Column::Text(a, name) => {
            let text = a.value(row);
            if text.as_bytes().contains(&0) {
                return Err(EncodeError::NulInText {
                    column: name.clone(),
                    row,
                });
            }
            write_fixed(out, text.as_bytes());
        }
        Column::Date(a) => write_fixed(
            out,
            &(a.value(row).saturating_sub(PG_EPOCH_DAYS)).to_be_bytes(),
        ),
        Column::Timestamp(a) => write_fixed(
            out,
            &(a.value(row).saturating_sub(PG_EPOCH_MICROS)).to_be_bytes(),
        ),
        Column::Numeric(a) => {
            let scale = u16::try_from(a.scale().max(0)).unwrap_or(0);
            let encoded = encode_numeric(a.value(row), scale);
            write_fixed(out, &encoded);
        }
    }
    Ok(())
}

/// PostgreSQL's binary `numeric`: base-10000 digits with a weight, a sign and a display
/// scale, for the decimal `unscaled / 10^scale`.
pub(crate) fn encode_numeric(unscaled: i128, scale: u16) -> Vec<u8> {
    let negative = unscaled < 0;
    let digits_text = unscaled.unsigned_abs().to_string();
    let scale_usize = usize::from(scale);
    let (integer, fraction) = if digits_text.len() > scale_usize {
        digits_text.split_at(digits_text.len() - scale_usize)
    } else {
        ("", digits_text.as_str())
    };
    // Fraction digits, left-padded to the scale, right-padded to whole groups of four.
    let mut fraction = format!("{fraction:0>scale_usize$}");
    while fraction.len() % 4 != 0 {
        fraction.push('0');
    }
    let mut integer = integer.to_owned();
    while integer.len() % 4 != 0 {
        integer.insert(0, '0');
    }
    let group = |chunk: &[u8]| {
        chunk
            .iter()
            .fold(0i16, |acc, d| acc * 10 + i16::from(d - b'0'))
    };
    let mut groups: Vec<i16> = integer.as_bytes().chunks(4).map(group).collect();
    let integer_groups = groups.len();
    groups.extend(fraction.as_bytes().chunks(4).map(group));
    let mut weight = i16::try_from(integer_groups).unwrap_or(i16::MAX) - 1;
    let leading_zeros = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..leading_zeros);
    weight -= i16::try_from(leading_zeros).unwrap_or(0);
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let sign: u16 = if negative && !groups.is_empty() {
        0x4000
    } else {
        0
    };
    let mut out = Vec::with_capacity(8 + groups.len() * 2);
    out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&scale.to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(unscaled: i128, scale: u16) -> (i16, i16, u16, u16, Vec<i16>) {
        let bytes = encode_numeric(unscaled, scale);
        let word = |i: usize| i16::from_be_bytes([bytes[i], bytes[i + 1]]);
        let n = word(0);
        let digits = (0..usize::try_from(n).expect("non-negative"))
            .map(|i| word(8 + 2 * i))
            .collect();
        (
            n,
            word(2),
            u16::from_be_bytes([bytes[4], bytes[5]]),
            u16::from_be_bytes([bytes[6], bytes[7]]),
            digits,
        )
    }

    #[test]
    fn numerics_encode_as_base_10000_groups() {
        assert_eq!(numeric(1230, 2), (2, 0, 0, 2, vec![12, 3000]));
        assert_eq!(numeric(5, 2), (1, -1, 0, 2, vec![500]));
        assert_eq!(numeric(0, 2), (0, 0, 0, 2, vec![]));
        assert_eq!(
            numeric(-123_456_789, 0),
            (3, 2, 0x4000, 0, vec![1, 2345, 6789])
        );
        assert_eq!(numeric(100_000_000, 0), (1, 2, 0, 0, vec![1]));
        assert_eq!(numeric(1, 6), (1, -2, 0, 6, vec![100]));
        assert_eq!(numeric(-100_005, 1), (3, 1, 0x4000, 1, vec![1, 0, 5000]));
    }

    #[test]
    fn unsupported_types_name_the_column() {
        use datafusion::arrow::array::BinaryArray;
        use datafusion::arrow::datatypes::{Field, Schema};
        use std::sync::Arc;
        let schema = Arc::new(Schema::new(vec![Field::new(
            "blob",
            DataType::Binary,
            true,
        )]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(BinaryArray::from(vec![&b"x"[..]]))])
                .expect("batch");
        let err = write_batch(&batch, &mut Vec::new()).expect_err("binary unsupported");
        assert!(
            matches!(
                &err,
                EncodeError::Unsupported { column, data_type }
                    if column == "blob" && data_type == "Binary"
            ),
            "{err:?}"
        );
        assert_eq!(
            pg_type(&DataType::Decimal128(12, 2)).as_deref(),
            Some("numeric(12,2)")
        );
    }
}
