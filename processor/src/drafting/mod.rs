//! `processor catalog draft`: a catalog entry drafted from files — local files and
//! folders or S3 objects and prefixes. It detects the format and compression, reads a
//! bounded sample (the first rows of the first files), infers each column's type and
//! nullability, proposes a merge key and the S3 route, and renders an entry that
//! `processor check` accepts unchanged, with a comment per column on what it saw. A file
//! it cannot draft (ragged, not UTF-8, names the catalog cannot take, files that differ)
//! is an error that says so, never a wrong draft.

mod infer;
mod input;
mod key;
mod render;
mod sample;

pub use infer::Inferred;
pub use key::KeyProposal;
pub use render::render;
pub use sample::CsvLayout;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use shared::catalog::{Compression, FileFormat, check_identifier, type_label};
use shared::error::BoxError;

use crate::objects::ObjectStores;
use sample::Sample;

/// Rows sampled by default, over every file.
pub const DEFAULT_SAMPLE_ROWS: usize = 10_000;
/// The most files sampled; the others are only listed.
const MAX_SAMPLED_FILES: usize = 20;

#[derive(Debug, Clone)]
pub struct DraftOptions {
    /// Files, folders and `s3://bucket/key-or-prefix` URLs.
    pub inputs: Vec<String>,
    /// The dataset's name; by default from the folder, prefix or file named.
    pub name: Option<String>,
    /// `schema.table`; by default `public.<name>`.
    pub target: Option<String>,
    /// Route the dataset from this stream (its records are JSON) rather than from S3.
    pub stream: Option<String>,
    pub sample_rows: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DraftError {
    #[error("{0}")]
    Input(String),
    #[error("reading {what}")]
    Read { what: String, source: BoxError },
    #[error("{file}: {reason}")]
    Layout { file: String, reason: String },
    #[error("the files are not alike: {0}; draft them apart")]
    Mismatch(String),
}

/// A drafted dataset.
#[derive(Debug, Clone)]
pub struct Draft {
    pub name: String,
    pub target: String,
    pub format: FileFormat,
    /// Said in the catalog only when file names do not tell it (`.gz`, `.zst`).
    pub compression: Option<Compression>,
    pub csv: Option<CsvLayout>,
    pub s3_prefix: String,
    /// The prefix is a suggestion (the inputs were local files), not the files' own.
    pub s3_prefix_guessed: bool,
    /// The stream the dataset is routed from instead (`--stream`).
    pub stream: Option<String>,
    pub columns: Vec<(String, Inferred)>,
    pub key: KeyProposal,
    /// Every file found, and how many of them were sampled.
    pub files: Vec<String>,
    pub files_sampled: usize,
    pub rows_sampled: usize,
    pub notes: Vec<String>,
}

/// Drafts one dataset from the files the inputs name.
pub async fn draft(options: &DraftOptions, stores: &dyn ObjectStores) -> Result<Draft, DraftError> {
    let inputs = input::resolve(&options.inputs, stores).await?;
    let name = match &options.name {
        Some(name) => {
            check_identifier(name).map_err(|why| DraftError::Input(format!("--name: {why}")))?;
            name.clone()
        }
        None => identifier_of(&inputs.name_hint),
    };
    let target = options
        .target
        .clone()
        .unwrap_or_else(|| format!("public.{name}"));
    check_target(&target)?;
    let samples = sample_files(&inputs.files, options.sample_rows.max(1)).await?;
    let mut combined = combine(&samples)?;
    check_unsampled(
        &inputs.files[samples.len()..],
        &samples[0].0,
        combined.format,
    )?;
    if options.stream.is_some() && combined.format != FileFormat::Jsonl {
        return Err(DraftError::Input(format!(
            "--stream: stream records are JSON, and the sample is {}; draft from JSON lines, one record per line",
            combined.format.as_str()
        )));
    }
    if combined.rows.is_empty() {
        return Err(DraftError::Input(format!(
            "{} hold(s) no data rows: a draft needs rows to tell the columns' types",
            samples
                .iter()
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let (columns, kept) = infer_columns(&mut combined);
    let typed: Vec<(String, DataType)> = columns
        .iter()
        .map(|(name, inferred)| (name.clone(), inferred.data_type.clone()))
        .collect();
    // The key is looked for among the columns drafted, in their cells only.
    let key_rows: Vec<Vec<Option<String>>> = combined
        .rows
        .iter()
        .map(|row| kept.iter().map(|&i| row[i].clone()).collect())
        .collect();
    Ok(Draft {
        key: key::propose_key(&typed, &key_rows),
        s3_prefix_guessed: inputs.s3_prefix.is_none(),
        stream: options.stream.clone(),
        s3_prefix: inputs
            .s3_prefix
            .unwrap_or_else(|| format!("landing/{name}/")),
        name,
        target,
        format: combined.format,
        compression: combined.compression,
        csv: combined.csv,
        columns,
        files: inputs.files.iter().map(|f| f.display.clone()).collect(),
        files_sampled: samples.len(),
        rows_sampled: combined.rows.len(),
        notes: combined.notes,
    })
}

/// The first rows of the first files, `sample_rows` in all.
async fn sample_files(
    files: &[input::InputFile],
    sample_rows: usize,
) -> Result<Vec<(String, Sample)>, DraftError> {
    let mut samples = Vec::new();
    let mut rows_read = 0;
    for file in files.iter().take(MAX_SAMPLED_FILES) {
        if rows_read >= sample_rows && !samples.is_empty() {
            break;
        }
        let sample =
            sample::sample_file(file, sample_rows.saturating_sub(rows_read).max(1)).await?;
        rows_read += sample.rows.len();
        samples.push((file.display.clone(), sample));
    }
    Ok(samples)
}

/// The files not sampled must not name another format than the sampled ones (a folder of
/// CSV files with a Parquet file among them is two datasets).
fn check_unsampled(
    unsampled: &[input::InputFile],
    sampled: &str,
    format: FileFormat,
) -> Result<(), DraftError> {
    match unsampled.iter().find_map(|file| {
        sample::format_named(&file.file_name)
            .filter(|named| *named != format)
            .map(|named| (file, named))
    }) {
        None => Ok(()),
        Some((file, named)) => Err(DraftError::Mismatch(format!(
            "{sampled} is {}, {} is named {}",
            format.as_str(),
            file.display,
            named.as_str()
        ))),
    }
}

/// The samples of every file, as one.
struct Combined {
    format: FileFormat,
    compression: Option<Compression>,
    csv: Option<CsvLayout>,
    columns: Vec<String>,
    schema_types: Option<Vec<DataType>>,
    rows: Vec<Vec<Option<String>>>,
    notes: Vec<String>,
}

/// One layout for every file (the same format, CSV layout and columns; JSON lines may
/// differ in their keys, whose union is taken), or what differs.
fn combine(samples: &[(String, Sample)]) -> Result<Combined, DraftError> {
    let (first_name, first) = samples
        .first()
        .ok_or_else(|| DraftError::Input("nothing to sample".into()))?;
    let mut columns = first.columns.clone();
    for (name, sample) in &samples[1..] {
        let differs = |what: &str, a: String, b: String| {
            DraftError::Mismatch(format!("{first_name} {what} {a}, {name} {b}"))
        };
        if sample.format != first.format {
            return Err(differs(
                "is",
                first.format.as_str().into(),
                sample.format.as_str().into(),
            ));
        }
        if sample.csv != first.csv {
            return Err(differs(
                "is laid out as",
                format!("{:?}", first.csv),
                format!("{:?}", sample.csv),
            ));
        }
        if sample.format == FileFormat::Jsonl {
            for column in &sample.columns {
                if !columns.contains(column) {
                    columns.push(column.clone());
                }
            }
        } else if sample.columns != first.columns || sample.schema_types != first.schema_types {
            return Err(differs(
                "has the columns",
                first.columns.join(", "),
                sample.columns.join(", "),
            ));
        }
    }
    let compression = catalog_compression(samples)?;
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for (name, sample) in samples {
        let positions: Vec<Option<usize>> = columns
            .iter()
            .map(|c| sample.columns.iter().position(|s| s == c))
            .collect();
        rows.extend(sample.rows.iter().map(|row| {
            positions
                .iter()
                .map(|at| at.and_then(|i| row.get(i).cloned().flatten()))
                .collect()
        }));
        notes.extend(sample.notes.iter().map(|note| format!("{name}: {note}")));
    }
    Ok(Combined {
        format: first.format,
        compression,
        csv: first.csv,
        columns,
        schema_types: first.schema_types.clone(),
        rows,
        notes,
    })
}

/// The compression the catalog must name: none when every file's name tells it, else the
/// one every file has.
fn catalog_compression(samples: &[(String, Sample)]) -> Result<Option<Compression>, DraftError> {
    if samples.iter().all(|(_, s)| s.compression_named) {
        return Ok(None);
    }
    let first = samples[0].1.compression;
    match samples.iter().find(|(_, s)| s.compression != first) {
        None => Ok(Some(first)),
        Some((name, other)) => Err(DraftError::Mismatch(format!(
            "{} is {} and {name} is {}, and not every name says so: name compressed files .gz or .zst",
            samples[0].0,
            first.as_str(),
            other.compression.as_str()
        ))),
    }
}

/// Each column's type: from the file's schema for Parquet, else from its sampled text;
/// and the positions of the columns drafted (Parquet columns the loader cannot read are
/// left out, with a note).
fn infer_columns(combined: &mut Combined) -> (Vec<(String, Inferred)>, Vec<usize>) {
    let mut columns = Vec::new();
    let mut kept = Vec::new();
    for (i, name) in combined.columns.iter().enumerate() {
        let cells: Vec<Option<String>> = combined.rows.iter().map(|row| row[i].clone()).collect();
        let inferred = infer::infer_column(&cells);
        let inferred = match &combined.schema_types {
            Some(types) => match from_schema(&types[i], inferred) {
                Some(inferred) => inferred,
                None => {
                    combined.notes.push(format!(
                        "column {name} left out: Parquet {} is not a flat column the loader reads",
                        types[i]
                    ));
                    continue;
                }
            },
            None => inferred,
        };
        columns.push((name.clone(), inferred));
        kept.push(i);
    }
    (columns, kept)
}

/// A Parquet column's catalog type (the loader casts it); `None` for nested or binary
/// columns, which the loader does not read.
fn from_schema(data_type: &DataType, sampled: Inferred) -> Option<Inferred> {
    let catalog_type = match data_type {
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => DataType::Int16,
        DataType::Int32 | DataType::UInt16 => DataType::Int32,
        DataType::Int64 | DataType::UInt32 => DataType::Int64,
        DataType::UInt64 => DataType::Decimal128(20, 0),
        DataType::Float16 | DataType::Float32 => DataType::Float32,
        DataType::Float64 => DataType::Float64,
        DataType::Decimal128(p, s) if *s >= 0 => DataType::Decimal128(*p, *s),
        // Text converts as a CSV's does: its values tell the type.
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            return Some(Inferred {
                seen: format!("Parquet string: {}", sampled.seen),
                ..sampled
            });
        }
        DataType::Dictionary(_, values)
            if matches!(
                values.as_ref(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) =>
        {
            return Some(Inferred {
                seen: format!("Parquet string: {}", sampled.seen),
                ..sampled
            });
        }
        DataType::Boolean => DataType::Boolean,
        DataType::Date32 | DataType::Date64 => DataType::Date32,
        DataType::Timestamp(_, None) => DataType::Timestamp(TimeUnit::Microsecond, None),
        DataType::Timestamp(_, Some(_)) => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        // Strings written without their UTF-8 annotation (Hive, Impala): loaded as text.
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => DataType::Utf8,
        _ => return None,
    };
    Some(Inferred {
        seen: format!(
            "Parquet {}; {}",
            type_label(data_type),
            sampled.seen.rsplit("; ").next().unwrap_or_default()
        ),
        data_type: catalog_type,
        nullable: sampled.nullable,
        max_length: None,
    })
}

/// A name the catalog takes, made of `hint`: lower case, `_` for anything else.
fn identifier_of(hint: &str) -> String {
    let mut name = String::new();
    for c in hint.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.ends_with('_') && !name.is_empty() {
            name.push('_');
        }
    }
    let name = name.trim_end_matches('_').to_owned();
    match name.chars().next() {
        None => "dataset".to_owned(),
        Some(first) if first.is_ascii_digit() => format!("t_{name}"),
        Some(_) => name,
    }
}

fn check_target(target: &str) -> Result<(), DraftError> {
    let bad = |why: String| DraftError::Input(format!("--target {target:?}: {why}"));
    let (schema, table) = target
        .split_once('.')
        .ok_or_else(|| bad("expected schema.table".to_owned()))?;
    check_identifier(schema).map_err(bad)?;
    check_identifier(table).map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_names_are_identifiers() {
        assert_eq!(identifier_of("Order Items (2026)"), "order_items_2026");
        assert_eq!(identifier_of("2026-orders"), "t_2026_orders");
        assert_eq!(identifier_of("…"), "dataset");
        assert!(check_target("public.orders").is_ok());
        assert!(check_target("orders").is_err());
        assert!(check_target("Public.orders").is_err());
    }
}
