//! A bounded sample of one file: its format and compression (from the name, else from its
//! first bytes), its layout (a CSV's delimiter and header) and its first rows as text
//! cells — or, for Parquet, its schema and first rows.

use std::io::Read;

use bytes::Bytes;
use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::parquet::arrow::ParquetRecordBatchStreamBuilder;
use futures::TryStreamExt;
use object_store::{GetOptions, GetRange, ObjectStoreExt};
use shared::catalog::{Compression, FileFormat, check_identifier};
use shared::envelope::FileItem;

use super::DraftError;
use super::input::InputFile;
use crate::pipeline::read::parquet_reader;

/// The most bytes read from the start of one file (compressed, as stored).
pub const MAX_HEAD_BYTES: u64 = 8 * 1024 * 1024;
/// The most bytes of text decompressed from that.
const MAX_TEXT_BYTES: u64 = 64 * 1024 * 1024;
/// Delimiters tried, in order of preference when several fit.
const DELIMITERS: [u8; 4] = [b',', b';', b'\t', b'|'];

/// A CSV file's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvLayout {
    pub delimiter: u8,
    pub header: bool,
}

/// One file's sample.
#[derive(Debug, Clone)]
pub struct Sample {
    pub format: FileFormat,
    /// How the file is compressed, and whether its name says so (else the catalog must).
    pub compression: Compression,
    pub compression_named: bool,
    pub csv: Option<CsvLayout>,
    pub columns: Vec<String>,
    /// Parquet: each column's type from the file's schema.
    pub schema_types: Option<Vec<DataType>>,
    pub rows: Vec<Vec<Option<String>>>,
    /// Things the sample showed that the user should know.
    pub notes: Vec<String>,
}

/// Reads up to `max_rows` rows of `file`.
pub async fn sample_file(file: &InputFile, max_rows: usize) -> Result<Sample, DraftError> {
    if file.size == 0 {
        return Err(DraftError::Layout {
            file: file.display.clone(),
            reason: "is empty: nothing to draft from".to_owned(),
        });
    }
    let head = read_head(file).await?;
    let named = Compression::from_key(&file.file_name);
    let compression = match named {
        Compression::None => compression_of_bytes(&head),
        named => named,
    };
    let lower_name = file.file_name.to_ascii_lowercase();
    let format = format_of_name(strip_compression(&lower_name))
        .unwrap_or_else(|| format_of_bytes(&head, compression));
    if format == FileFormat::Parquet {
        return sample_parquet(file, max_rows).await;
    }
    let (text, cut) = decompress(&head, compression, file)?;
    let cut = cut || (head.len() as u64) < file.size;
    let text = whole_lines(&text, cut);
    let text = std::str::from_utf8(text).map_err(|err| DraftError::Layout {
        file: file.display.clone(),
        reason: format!(
            "not UTF-8 text (byte {} of the sample): the loader reads UTF-8; convert the file first",
            err.valid_up_to()
        ),
    })?;
    let text = text.trim_start_matches('\u{feff}');
    let mut sample = match format {
        FileFormat::Jsonl => sample_jsonl(file, text, max_rows)?,
        _ => sample_csv(file, text, max_rows, cut)?,
    };
    sample.compression = compression;
    sample.compression_named = named == compression;
    Ok(sample)
}

/// The first bytes of the file, at most [`MAX_HEAD_BYTES`].
async fn read_head(file: &InputFile) -> Result<Bytes, DraftError> {
    let options = GetOptions {
        range: Some(GetRange::Bounded(0..MAX_HEAD_BYTES.min(file.size))),
        ..GetOptions::default()
    };
    let read = async {
        file.object
            .store
            .get_opts(&file.object.path, options)
            .await?
            .bytes()
            .await
    };
    read.await.map_err(|err| DraftError::Read {
        what: file.display.clone(),
        source: err.into(),
    })
}

fn compression_of_bytes(head: &[u8]) -> Compression {
    match head {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        _ => Compression::None,
    }
}

fn strip_compression(name: &str) -> &str {
    [".gz", ".gzip", ".zst", ".zstd"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .unwrap_or(name)
}

/// The format a file's name says (after a compression extension), if it says one.
pub fn format_named(file_name: &str) -> Option<FileFormat> {
    format_of_name(strip_compression(&file_name.to_ascii_lowercase()))
}

fn format_of_name(name: &str) -> Option<FileFormat> {
    let extension = name.rsplit_once('.')?.1;
    match extension {
        "csv" | "tsv" | "txt" => Some(FileFormat::Csv),
        "jsonl" | "ndjson" | "json" => Some(FileFormat::Jsonl),
        "parquet" | "pq" => Some(FileFormat::Parquet),
        _ => None,
    }
}

fn format_of_bytes(head: &[u8], compression: Compression) -> FileFormat {
    if compression == Compression::None && head.starts_with(b"PAR1") {
        return FileFormat::Parquet;
    }
    let first = decompress_prefix(head, compression)
        .into_iter()
        .find(|b| !b.is_ascii_whitespace());
    if first == Some(b'{') {
        FileFormat::Jsonl
    } else {
        FileFormat::Csv
    }
}

/// The first few bytes of the text, for sniffing.
fn decompress_prefix(head: &[u8], compression: Compression) -> Vec<u8> {
    let mut prefix = Vec::new();
    let _ = decoder(head, compression).map(|d| d.take(64).read_to_end(&mut prefix));
    prefix
}

fn decoder<'a>(head: &'a [u8], compression: Compression) -> std::io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(head),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(head)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(head)?),
    })
}

/// The text of the head, at most [`MAX_TEXT_BYTES`], and whether it was cut short (by
/// that bound, or by the end of the bytes read inside a compressed stream).
fn decompress(
    head: &[u8],
    compression: Compression,
    file: &InputFile,
) -> Result<(Vec<u8>, bool), DraftError> {
    let mut text = Vec::new();
    let reading = decoder(head, compression)
        .and_then(|d| d.take(MAX_TEXT_BYTES).read_to_end(&mut text).map(drop));
    let cut_mid_stream = head.len() as u64 != file.size;
    match reading {
        Ok(()) => {
            let cut = text.len() as u64 >= MAX_TEXT_BYTES;
            Ok((text, cut))
        }
        // The head ends inside the compressed stream: what came out before is the sample.
        Err(_) if cut_mid_stream && !text.is_empty() => Ok((text, true)),
        Err(err) => Err(DraftError::Layout {
            file: file.display.clone(),
            reason: format!("does not decompress as {}: {err}", compression.as_str()),
        }),
    }
}

/// The text up to its last complete line when it was cut short.
fn whole_lines(text: &[u8], cut: bool) -> &[u8] {
    if !cut {
        return text;
    }
    text.iter()
        .rposition(|&b| b == b'\n')
        .map_or(&text[..0], |end| &text[..=end])
}

/// `cut`: the text is the start of a longer file, so its last record may be incomplete.
fn sample_csv(
    file: &InputFile,
    text: &str,
    max_rows: usize,
    cut: bool,
) -> Result<Sample, DraftError> {
    let delimiter = sniff_delimiter(text);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = reader.records().peekable();
    let layout_error = |reason: String| DraftError::Layout {
        file: file.display.clone(),
        reason,
    };
    let first = match records.next() {
        Some(record) => record.map_err(|err| layout_error(format!("not CSV: {err}")))?,
        None => return Err(layout_error("holds no rows".to_owned())),
    };
    let first: Vec<String> = first.iter().map(str::to_owned).collect();
    let header = looks_like_header(&first);
    let columns = if header {
        header_columns(&first).map_err(layout_error)?
    } else {
        (1..=first.len()).map(|n| format!("column_{n}")).collect()
    };
    let mut rows = Vec::new();
    if !header {
        rows.push(first.iter().map(|v| cell(v)).collect());
    }
    while let Some(record) = records.next() {
        if rows.len() >= max_rows {
            break;
        }
        let record = record.map_err(|err| layout_error(format!("not CSV: {err}")))?;
        let last_of_a_cut_sample = cut && records.peek().is_none();
        if record.len() != columns.len() && last_of_a_cut_sample {
            break;
        }
        if record.len() != columns.len() {
            let line = record.position().map_or(0, |p| p.line());
            return Err(layout_error(format!(
                "line {line} has {} field(s) where the {} has {}: a ragged file cannot be drafted; fix the line (a delimiter inside a value must be quoted), then draft again",
                record.len(),
                if header { "header" } else { "first line" },
                columns.len()
            )));
        }
        rows.push(record.iter().map(cell).collect());
    }
    let mut notes = Vec::new();
    if !header {
        notes.push(
            "the first line looks like data, not a header: columns are named column_1…; rename them (csv header = false reads by position)"
                .to_owned(),
        );
    }
    Ok(Sample {
        format: FileFormat::Csv,
        compression: Compression::None,
        compression_named: true,
        csv: Some(CsvLayout { delimiter, header }),
        columns,
        schema_types: None,
        rows,
        notes,
    })
}

fn cell(value: &str) -> Option<String> {
    (!value.trim().is_empty()).then(|| value.to_owned())
}

/// The delimiter that splits the first lines into the same number of fields (more than
/// one), the most fields winning; a comma when none does.
fn sniff_delimiter(text: &str) -> u8 {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(50)
        .collect();
    let joined = lines.join("\n");
    let mut best = (b',', 1usize);
    for delimiter in DELIMITERS {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(false)
            .flexible(true)
            .from_reader(joined.as_bytes());
        let counts: Vec<usize> = reader
            .records()
            .map_while(Result::ok)
            .map(|r| r.len())
            .collect();
        let Some(&fields) = counts.first() else {
            continue;
        };
        let consistent = counts.iter().all(|&n| n == fields);
        if consistent && fields > best.1 {
            best = (delimiter, fields);
        }
    }
    best.0
}

/// A first line is a header when its fields are non-empty, distinct and none is a
/// number or a date.
fn looks_like_header(first: &[String]) -> bool {
    let mut seen = std::collections::HashSet::new();
    first.iter().all(|field| {
        let field = field.trim();
        !field.is_empty()
            && seen.insert(field.to_ascii_lowercase())
            && field.parse::<f64>().is_err()
            && !field.as_bytes().first().is_some_and(u8::is_ascii_digit)
    })
}

/// The catalog's column names of a header: its names trimmed and lower-cased (as the
/// loader matches them); names the catalog cannot take are listed in the error.
fn header_columns(first: &[String]) -> Result<Vec<String>, String> {
    let names: Vec<String> = first
        .iter()
        .map(|f| f.trim().to_ascii_lowercase())
        .collect();
    check_names(
        &names,
        "header names",
        "the loader matches header names to column names: rename them in the files' header",
    )?;
    Ok(names)
}

/// Fails, listing them, when names are not names the catalog takes.
fn check_names(names: &[String], what: &str, fix: &str) -> Result<(), String> {
    let bad: Vec<String> = names
        .iter()
        .filter(|name| check_identifier(name).is_err())
        .map(|name| format!("{name:?}"))
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the {what} {} are not names the catalog takes (lower-case letters, digits and _, not starting with a digit); {fix}, then draft again",
        bad.join(", ")
    ))
}

fn sample_jsonl(file: &InputFile, text: &str, max_rows: usize) -> Result<Sample, DraftError> {
    let layout_error = |reason: String| DraftError::Layout {
        file: file.display.clone(),
        reason,
    };
    if text.trim_start().starts_with('[') {
        return Err(layout_error(
            "holds a JSON array; the loader reads JSON lines (one object per line): write one object per line, then draft again".to_owned(),
        ));
    }
    let mut columns: Vec<String> = Vec::new();
    let mut objects = Vec::new();
    let mut not_objects = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if objects.len() >= max_rows {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(object)) => {
                for key in object.keys() {
                    if !columns.contains(key) {
                        columns.push(key.clone());
                    }
                }
                objects.push(object);
            }
            _ => not_objects.push(number + 1),
        }
    }
    if objects.is_empty() {
        return Err(layout_error(
            "holds no JSON object on any line: not JSON lines".to_owned(),
        ));
    }
    check_names(&columns, "field names", "rename them at the producer").map_err(layout_error)?;
    let rows = objects
        .iter()
        .map(|object| {
            columns
                .iter()
                .map(|column| match object.get(column) {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(s)) => cell(s),
                    Some(other) => Some(other.to_string()),
                })
                .collect()
        })
        .collect();
    let mut notes = Vec::new();
    if !not_objects.is_empty() {
        notes.push(format!(
            "{} sampled line(s) are not JSON objects (first: line {}); they will be rejected",
            not_objects.len(),
            not_objects[0]
        ));
    }
    Ok(Sample {
        format: FileFormat::Jsonl,
        compression: Compression::None,
        compression_named: true,
        csv: None,
        columns,
        schema_types: None,
        rows,
        notes,
    })
}

async fn sample_parquet(file: &InputFile, max_rows: usize) -> Result<Sample, DraftError> {
    let read_error = |err: datafusion::parquet::errors::ParquetError| DraftError::Layout {
        file: file.display.clone(),
        reason: format!("not a Parquet file this tool reads: {err}"),
    };
    let meta = file
        .object
        .store
        .head(&file.object.path)
        .await
        .map_err(|err| DraftError::Read {
            what: file.display.clone(),
            source: err.into(),
        })?;
    let item = FileItem {
        dataset: "draft".to_owned(),
        bucket: String::new(),
        key: file.object.path.to_string(),
        version_id: None,
        etag: meta.e_tag.unwrap_or_default(),
        size: meta.size,
        range: None,
        part: None,
        format: FileFormat::Parquet,
        compression: Compression::None,
        created_at_ms: None,
    };
    let reader = parquet_reader(file.object.clone(), item);
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(read_error)?;
    let schema = builder.schema().clone();
    let mut stream = builder
        .with_batch_size(max_rows.clamp(1, 8192))
        .build()
        .map_err(read_error)?;
    let mut rows: Vec<Vec<Option<String>>> = Vec::new();
    while rows.len() < max_rows {
        let Some(batch) = stream.try_next().await.map_err(read_error)? else {
            break;
        };
        let formatters = batch
            .columns()
            .iter()
            .map(|array| ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| DraftError::Layout {
                file: file.display.clone(),
                reason: format!("a column does not read as text: {err}"),
            })?;
        for row in 0..batch.num_rows().min(max_rows - rows.len()) {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .zip(&formatters)
                    .map(|(array, f)| array.is_valid(row).then(|| f.value(row).to_string()))
                    .collect(),
            );
        }
    }
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    check_names(
        &columns,
        "column names",
        "rename them where the files are written",
    )
    .map_err(|reason| DraftError::Layout {
        file: file.display.clone(),
        reason,
    })?;
    Ok(Sample {
        format: FileFormat::Parquet,
        compression: Compression::None,
        compression_named: true,
        csv: None,
        columns,
        schema_types: Some(
            schema
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect(),
        ),
        rows,
        notes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delimiter_is_the_one_that_splits_every_line_alike() {
        assert_eq!(sniff_delimiter("a,b,c\n1,2,3\n"), b',');
        assert_eq!(sniff_delimiter("a;b;c\n1;2,5;3\n"), b';');
        assert_eq!(sniff_delimiter("a\tb\n1\t2\n"), b'\t');
        assert_eq!(sniff_delimiter("just one column\nx\n"), b',');
    }

    #[test]
    fn headers_are_names_not_values() {
        let line = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(looks_like_header(&line(&["id", "name"])));
        assert!(!looks_like_header(&line(&["1", "Ada"])));
        assert!(!looks_like_header(&line(&["id", "id"])));
        assert!(!looks_like_header(&line(&["2024-01-02", "x"])));
        assert!(header_columns(&line(&["Order ID", "price"])).is_err());
        assert_eq!(
            header_columns(&line(&[" Price "])),
            Ok(vec!["price".to_owned()])
        );
    }

    #[test]
    fn compression_and_format_from_bytes_when_the_name_says_nothing() {
        assert_eq!(compression_of_bytes(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(compression_of_bytes(b"id,name"), Compression::None);
        assert_eq!(
            format_of_bytes(b"PAR1....", Compression::None),
            FileFormat::Parquet
        );
        assert_eq!(
            format_of_bytes(b" {\"a\":1}", Compression::None),
            FileFormat::Jsonl
        );
        assert_eq!(format_of_name("x.csv"), Some(FileFormat::Csv));
        assert_eq!(
            format_of_name(strip_compression("x.jsonl.gz")),
            Some(FileFormat::Jsonl)
        );
        assert_eq!(format_of_name("x"), None);
    }
}
