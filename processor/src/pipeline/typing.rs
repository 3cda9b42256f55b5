//! From text cells to typed Arrow rows, with a reject for every row that does not fit.
//!
//! Every source (CSV fields, JSON-lines values, stream records) is first turned into text
//! cells per catalog column; this module casts them to the catalog's types. A row whose
//! cell does not parse, or whose required cell is empty, becomes a [`Reject`] with the
//! reason, and the other rows load. One code path for every format keeps the rules the
//! same everywhere: an empty cell is NULL; surrounding spaces are ignored for non-text
//! types.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, StringArray, StringBuilder,
};
use datafusion::arrow::compute::{CastOptions, cast_with_options, filter};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use shared::catalog::{Column, Dataset, UnknownColumns, type_label};

use crate::pipeline::lineage;
use crate::warehouse::Reject;

/// Where rows come from, for the lineage columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    /// `s3://bucket/key` or `kinesis://stream`.
    pub source: String,
    /// The object's entity tag or the shard id.
    pub partition: String,
}

/// The schema readers produce: the catalog columns followed by the lineage columns.
pub(crate) fn input_schema_with_lineage(dataset: &Dataset) -> SchemaRef {
    let mut fields: Vec<Field> = dataset
        .columns
        .iter()
        .map(|c| Field::new(&c.name, c.data_type.clone(), c.nullable))
        .collect();
    fields.extend(lineage::fields());
    Arc::new(Schema::new(fields))
}

/// Rows of text cells, accumulated by a reader.
#[derive(Debug)]
pub(crate) struct TextRows {
    columns: Vec<StringBuilder>,
    row_numbers: Vec<u64>,
    raw: Vec<Option<String>>,
    offsets: Vec<String>,
    sub_offsets: Vec<i64>,
    /// Rows refused before typing (wrong field count, not JSON, …).
    rejects: Vec<Reject>,
}

impl TextRows {
    pub fn new(column_count: usize) -> Self {
        Self {
            columns: (0..column_count).map(|_| StringBuilder::new()).collect(),
            row_numbers: Vec::new(),
            raw: Vec::new(),
            offsets: Vec::new(),
            sub_offsets: Vec::new(),
            rejects: Vec::new(),
        }
    }

    /// Rows (accepted so far, before typing) plus rejects.
    pub fn len(&self) -> usize {
        self.row_numbers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.row_numbers.is_empty()
    }

    pub fn reject_count(&self) -> usize {
        self.rejects.len()
    }

    /// Adds a row; `cells` has one entry per catalog column, `None` or empty for NULL.
    pub fn push<'a>(
        &mut self,
        cells: impl IntoIterator<Item = Option<&'a str>>,
        row_number: u64,
        raw: Option<String>,
        offset: String,
        sub_offset: i64,
    ) {
        for (builder, cell) in self.columns.iter_mut().zip(cells) {
            match cell {
                Some(text) if !text.is_empty() => builder.append_value(text),
                _ => builder.append_null(),
            }
        }
        self.row_numbers.push(row_number);
        self.raw.push(raw);
        self.offsets.push(offset);
        self.sub_offsets.push(sub_offset);
    }

    /// Records a row that could not even be split into cells.
    pub fn reject(&mut self, reject: Reject) {
        self.rejects.push(reject);
    }
}

/// Typed rows and the rows that were refused.
#[derive(Debug)]
pub(crate) struct Typed {
    pub batch: RecordBatch,
    pub rejects: Vec<Reject>,
}

impl TextRows {
    /// Casts the text rows to the dataset's types and adds the lineage columns.
    pub fn into_typed(mut self, dataset: &Dataset, origin: &Origin) -> Result<Typed, ArrowError> {
        let columns = self
            .columns
            .iter_mut()
            .map(|builder| Arc::new(builder.finish()) as ArrayRef)
            .collect();
        conform(
            dataset,
            origin,
            RowsIn {
                columns,
                row_numbers: self.row_numbers,
                raw: self.raw,
                offsets: self.offsets,
                sub_offsets: self.sub_offsets,
                rejects: self.rejects,
            },
        )
    }
}

/// Rows in any types, one array per catalog column, with their lineage.
#[derive(Debug)]
pub(crate) struct RowsIn {
    pub columns: Vec<ArrayRef>,
    pub row_numbers: Vec<u64>,
    pub raw: Vec<Option<String>>,
    pub offsets: Vec<String>,
    pub sub_offsets: Vec<i64>,
    /// Rows already refused by the reader.
    pub rejects: Vec<Reject>,
}

fn display(value: &str) -> String {
    const MAX: usize = 80;
    if value.chars().count() > MAX {
        format!("{:?}…", value.chars().take(MAX).collect::<String>())
    } else {
        format!("{value:?}")
    }
}

/// Casts every column to the dataset's type and adds the lineage columns. A value that
/// does not convert, or a missing required value, rejects its row with the reason; text
/// is trimmed before it is converted to a non-text type.
pub(crate) fn conform(
    dataset: &Dataset,
    origin: &Origin,
    rows: RowsIn,
) -> Result<Typed, ArrowError> {
    let RowsIn {
        columns,
        row_numbers,
        mut raw,
        offsets,
        sub_offsets,
        mut rejects,
    } = rows;
    let row_count = row_numbers.len();
    let mut reasons: Vec<Option<String>> = vec![None; row_count];
    let mut typed_columns: Vec<ArrayRef> =
        Vec::with_capacity(dataset.columns.len() + lineage::COLUMNS.len());
    for (column, source) in dataset.columns.iter().zip(columns) {
        typed_columns.push(type_column(column, source, &mut reasons)?);
    }
    typed_columns.push(Arc::new(StringArray::from_iter_values(
        std::iter::repeat_n(origin.source.as_str(), row_count),
    )));
    typed_columns.push(Arc::new(StringArray::from_iter_values(
        std::iter::repeat_n(origin.partition.as_str(), row_count),
    )));
    typed_columns.push(Arc::new(StringArray::from_iter_values(offsets.iter())));
    typed_columns.push(Arc::new(Int64Array::from(sub_offsets)));

    let keep: BooleanArray = reasons.iter().map(|r| Some(r.is_none())).collect();
    for (row, reason) in reasons.into_iter().enumerate() {
        if let Some(reason) = reason {
            rejects.push(Reject {
                row_number: Some(row_numbers[row]),
                raw: raw[row].take(),
                reason,
            });
        }
    }
    rejects.sort_by_key(|r| r.row_number);
    let columns = typed_columns
        .iter()
        .map(|array| filter(array.as_ref(), &keep))
        .collect::<Result<Vec<_>, _>>()?;
    let batch = RecordBatch::try_new(input_schema_with_lineage(dataset), columns)?;
    Ok(Typed { batch, rejects })
}

/// One column cast to its catalog type (text trimmed first); a row whose value does not
/// convert, or that lacks a required value, gets its first reason.
fn type_column(
    column: &Column,
    source: ArrayRef,
    reasons: &mut [Option<String>],
) -> Result<ArrayRef, ArrowError> {
    let source = match source.as_any().downcast_ref::<StringArray>() {
        Some(text) if column.data_type != DataType::Utf8 => Arc::new(
            text.iter()
                .map(|cell| cell.map(str::trim))
                .collect::<StringArray>(),
        ) as ArrayRef,
        _ => source,
    };
    let typed = cast_cells(&source, &column.data_type)?;
    let formatter = ArrayFormatter::try_new(source.as_ref(), &FormatOptions::default())?;
    for (row, reason) in reasons.iter_mut().enumerate() {
        if reason.is_some() || !typed.is_null(row) {
            continue;
        }
        let value = source
            .is_valid(row)
            .then(|| formatter.value(row).to_string());
        match value {
            Some(value) if !value.trim().is_empty() => {
                *reason = Some(format!(
                    "column {}: {} is not a valid {}",
                    column.name,
                    display(&value),
                    type_label(&column.data_type)
                ));
            }
            _ if !column.nullable => {
                *reason = Some(format!("column {}: a value is required", column.name));
            }
            _ => {}
        }
    }
    Ok(typed)
}

/// Cells converted to `to` the way a load converts them: a value that does not convert
/// becomes NULL (the caller tells why). `catalog draft` proposes only types its sample
/// converts to by this same rule.
pub(crate) fn cast_cells(source: &ArrayRef, to: &DataType) -> Result<ArrayRef, ArrowError> {
    if source.data_type() == to {
        return Ok(Arc::clone(source));
    }
    let cast_options = CastOptions {
        safe: true,
        format_options: FormatOptions::default(),
    };
    cast_with_options(source, to, &cast_options)
}

/// The text cells of a JSON object for the dataset's columns: strings as they are,
/// numbers and booleans as their JSON text, nested values as JSON text for string
/// columns. Fields the catalog does not name are ignored.
pub(crate) fn json_cells(
    dataset: &Dataset,
    value: &serde_json::Value,
) -> Result<Vec<Option<String>>, String> {
    let serde_json::Value::Object(object) = value else {
        return Err(format!(
            "expected a JSON object, found {}",
            json_kind(value)
        ));
    };
    if dataset.unknown_columns == UnknownColumns::Reject {
        let unknown: Vec<&str> = object
            .keys()
            .filter(|key| !dataset.columns.iter().any(|c| &c.name == *key))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "field(s) the catalog does not name: {} (unknown_columns = \"reject\")",
                unknown.join(", ")
            ));
        }
    }
    dataset
        .columns
        .iter()
        .map(|column| match object.get(&column.name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                Ok(Some(v.to_string()))
            }
            Some(nested) if column.data_type == DataType::Utf8 => Ok(Some(nested.to_string())),
            Some(nested) => Err(format!(
                "column {}: expected {}, found {}",
                column.name,
                type_label(&column.data_type),
                json_kind(nested)
            )),
        })
        .collect()
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Date32Array, Decimal128Array, Int64Array as I64};
    use shared::catalog::Catalog;

    use super::*;

    fn dataset() -> Dataset {
        let text = r#"
[datasets.orders]
format = "csv"
target = "s.orders"
s3 = { prefix = "o/" }
columns = [
  { name = "order_id", type = "int64", nullable = false },
  { name = "note", type = "string" },
  { name = "amount", type = "decimal(10,2)" },
  { name = "day", type = "date" },
]
"#;
        Catalog::from_toml(text, "t")
            .expect("valid")
            .get("orders")
            .expect("present")
            .clone()
    }

    fn origin() -> Origin {
        Origin {
            source: "s3://b/o/1.csv".into(),
            partition: "etag".into(),
        }
    }

    #[test]
    fn good_rows_are_typed_and_bad_rows_are_rejected_with_reasons() {
        let dataset = dataset();
        let mut rows = TextRows::new(4);
        let input: [[Option<&str>; 4]; 5] = [
            [
                Some("1"),
                Some("first"),
                Some(" 12.50 "),
                Some("2024-06-01"),
            ],
            [Some("two"), Some("x"), None, None],
            [Some(""), Some("no id"), None, None],
            [Some("4"), None, Some("abc"), Some("2024-13-01")],
            [Some("5"), Some(""), None, Some("2024-02-29")],
        ];
        for (i, cells) in input.iter().enumerate() {
            rows.push(
                cells.iter().copied(),
                i as u64 + 2,
                Some(format!("line {}", i + 2)),
                format!("{}", i * 10),
                0,
            );
        }
        rows.reject(Reject {
            row_number: Some(7),
            raw: Some("1,2,3,4,5".into()),
            reason: "expected 4 fields, found 5".into(),
        });
        let typed = rows.into_typed(&dataset, &origin()).expect("types");
        let reasons: Vec<(Option<u64>, &str)> = typed
            .rejects
            .iter()
            .map(|r| (r.row_number, r.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (Some(3), "column order_id: \"two\" is not a valid int64"),
                (Some(4), "column order_id: a value is required"),
                (
                    Some(5),
                    "column amount: \"abc\" is not a valid decimal(10,2)"
                ),
                (Some(7), "expected 4 fields, found 5"),
            ]
        );
        assert_eq!(typed.rejects[0].raw.as_deref(), Some("line 3"));
        let batch = typed.batch;
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.num_columns(), 8);
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<I64>()
            .expect("int64");
        assert_eq!(ids.values(), &[1, 5]);
        let amounts = batch
            .column(2)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .expect("decimal");
        assert_eq!(amounts.value(0), 1250);
        assert!(amounts.is_null(1));
        let days = batch
            .column(3)
            .as_any()
            .downcast_ref::<Date32Array>()
            .expect("date");
        assert_eq!(days.value(0), 19_875);
        let notes = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("text");
        assert!(notes.is_null(1), "empty cells are NULL");
        let offsets = batch
            .column(6)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("offsets");
        assert_eq!((offsets.value(0), offsets.value(1)), ("0", "40"));
        let sources = batch
            .column(4)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("sources");
        assert_eq!(sources.value(1), "s3://b/o/1.csv");
    }

    #[test]
    fn json_values_become_cells() {
        let dataset = dataset();
        let cells = json_cells(
            &dataset,
            &serde_json::json!({"order_id": 7, "note": {"a": [1]}, "amount": "1.5", "extra": true}),
        )
        .expect("object");
        assert_eq!(
            cells,
            [
                Some("7".to_owned()),
                Some("{\"a\":[1]}".to_owned()),
                Some("1.5".to_owned()),
                None
            ]
        );
        assert_eq!(
            json_cells(&dataset, &serde_json::json!({"order_id": [1]})).expect_err("nested id"),
            "column order_id: expected int64, found an array"
        );
        assert_eq!(
            json_cells(&dataset, &serde_json::json!([1])).expect_err("not an object"),
            "expected a JSON object, found an array"
        );
        let strict = Dataset {
            unknown_columns: UnknownColumns::Reject,
            ..dataset
        };
        assert_eq!(
            json_cells(&strict, &serde_json::json!({"order_id": 7, "extra": true}))
                .expect_err("an unknown key"),
            "field(s) the catalog does not name: extra (unknown_columns = \"reject\")"
        );
        assert!(json_cells(&strict, &serde_json::json!({"order_id": 7})).is_ok());
    }
}
