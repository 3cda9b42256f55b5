//! Reads a `file` work item into typed Arrow rows with their lineage, streaming.
//!
//! CSV and JSON lines are parsed here rather than by DataFusion's readers because the
//! platform needs what those readers cannot give: a reject (with the raw text and the
//! reason) for each bad row while the good rows load, and the byte offset of every row for
//! its lineage. Parquet is read with the parquet crate's async stream reader over the
//! object store (each byte range checked whole), its columns converted to the catalog's.
//! Objects are streamed and decompressed on the fly (gzip, zstd); rows are handed on in
//! chunks, never the whole file at once.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, new_null_array};
use datafusion::arrow::compute::can_cast_types;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ParquetRecordBatchStreamBuilder;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore};
use shared::catalog::{Compression, CsvOptions, Dataset, FileFormat, UnknownColumns, type_label};
use shared::envelope::{ByteRange, FileItem, normalize_etag};
use shared::error::{BoxError, Classify, Retryability, context};
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::objects::StoredObject;
use crate::pipeline::typing::{Origin, RowsIn, TextRows, Typed, conform, json_cells};
use crate::warehouse::Reject;

/// Rows handed on at a time.
pub(crate) const CHUNK_ROWS: usize = 8192;
/// A JSON line longer than this is rejected without being parsed.
pub(crate) const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Why a file could not be read; its rows are not loaded.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {source_url}")]
    Object {
        source_url: String,
        source: BoxError,
        retryable: bool,
    },
    #[error("{source_url} is not valid {compression} data")]
    Corrupt {
        source_url: String,
        compression: &'static str,
        source: BoxError,
    },
    #[error("{source_url} does not match dataset {dataset:?}: {reason}")]
    Shape {
        source_url: String,
        dataset: String,
        reason: String,
    },
    #[error("{source_url}")]
    Convert {
        source_url: String,
        source: BoxError,
    },
}

impl Classify for ReadError {
    fn retryability(&self) -> Retryability {
        match self {
            ReadError::Object {
                retryable: true, ..
            } => Retryability::Retryable,
            _ => Retryability::Permanent,
        }
    }
}

/// The `s3://bucket/key` of a file item.
pub(crate) fn source_url(item: &FileItem) -> String {
    format!("s3://{}/{}", item.bucket, item.key)
}

fn origin(item: &FileItem) -> Origin {
    Origin {
        source: source_url(item),
        partition: normalize_etag(&item.etag),
    }
}

fn object_error(item: &FileItem, err: object_store::Error) -> ReadError {
    let retryable = !matches!(
        err,
        object_store::Error::NotFound { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
    );
    ReadError::Object {
        source_url: source_url(item),
        source: err.into(),
        retryable,
    }
}

/// A read of the version the work item names (when the bucket is versioned).
fn pinned(item: &FileItem, range: Option<GetRange>) -> GetOptions {
    GetOptions {
        range,
        version: item.version_id.clone(),
        ..GetOptions::default()
    }
}

/// The entity tag of what a read returned must be the work item's, so an object
/// overwritten since its event is never loaded under the old content's keys, and the parts
/// of a split file all read the same bytes. Checked on every response rather than sent as
/// `If-Match`, whose quoting differs between stores.
fn check_etag(item: &FileItem, meta: &object_store::ObjectMeta) -> Result<(), ReadError> {
    match &meta.e_tag {
        Some(found) if normalize_etag(found) != normalize_etag(&item.etag) => {
            Err(ReadError::Object {
                source_url: source_url(item),
                source: format!(
                    "the object now has entity tag {}, not {} (overwritten since its event; the new content has an event of its own)",
                    normalize_etag(found),
                    normalize_etag(&item.etag)
                )
                .into(),
                retryable: false,
            })
        }
        _ => Ok(()),
    }
}

/// The object-store path of a key, taken as it is (`Path::from` would percent-encode
/// non-ASCII characters and the request would name another key). For stores other than
/// S3, which reads any key (`ObjectStores::for_object`).
pub(crate) fn object_path(item: &FileItem) -> Result<ObjectPath, ReadError> {
    ObjectPath::parse(&item.key).map_err(|err| ReadError::Object {
        source_url: source_url(item),
        source: context("the key cannot be named in this store", err),
        retryable: false,
    })
}

/// Reads the item in a background task; chunks of typed rows (and then the end, or an
/// error) arrive on the returned channel. The channel is bounded, so a slow consumer
/// slows the reader instead of filling memory.
pub(crate) fn spawn_read(
    object: StoredObject,
    item: FileItem,
    dataset: Dataset,
) -> mpsc::Receiver<Result<Typed, ReadError>> {
    let (sender, receiver) = mpsc::channel(2);
    let url = source_url(&item);
    let reader_sender = sender.clone();
    let reader = tokio::spawn(async move {
        match item.format {
            FileFormat::Parquet => read_parquet(object, &item, &dataset, &reader_sender).await,
            FileFormat::Csv | FileFormat::Jsonl => {
                read_text(object, item.clone(), dataset, reader_sender).await
            }
        }
    });
    // A closed channel means the whole file was read, so a reader that panics (a decoder
    // bug, a store answering with the wrong bytes) must end with an error, never with a
    // silent end that would load part of the file as all of it.
    tokio::spawn(async move {
        let failure = match reader.await {
            Ok(Ok(())) => return,
            Ok(Err(err)) => err,
            Err(join) => ReadError::Convert {
                source_url: url,
                source: context("the reader failed", join),
            },
        };
        // The receiver may be gone (the consumer gave up): nothing to tell then.
        let _ = sender.send(Err(failure)).await;
    });
    receiver
}

async fn read_text(
    StoredObject { store, path }: StoredObject,
    item: FileItem,
    dataset: Dataset,
    sender: mpsc::Sender<Result<Typed, ReadError>>,
) -> Result<(), ReadError> {
    if item.range.is_some() && item.compression != Compression::None {
        return Err(ReadError::Shape {
            source_url: source_url(&item),
            dataset: dataset.name.clone(),
            reason: format!(
                "a byte range of a {}-compressed file cannot be decoded on its own",
                item.compression.as_str()
            ),
        });
    }
    // A later part of a split CSV file has no header of its own: read the file's.
    let part_header = match item.range {
        Some(range)
            if range.start > 0 && item.format == FileFormat::Csv && dataset.csv.has_header =>
        {
            Some(read_csv_header(store.as_ref(), &path, &item, &dataset).await?)
        }
        _ => None,
    };
    let options = pinned(&item, item.range.map(|r| GetRange::Bounded(r.start..r.end)));
    let result = store
        .get_opts(&path, options)
        .await
        .map_err(|err| object_error(&item, err))?;
    check_etag(&item, &result.meta)?;
    let stream = result
        .into_stream()
        .map_err(|err| std::io::Error::other(FetchError(err)));
    let reader = StreamReader::new(stream);
    tokio::task::spawn_blocking(move || {
        let bridge = SyncIoBridge::new(reader);
        let decoded: Box<dyn Read> = match item.compression {
            Compression::None => Box::new(bridge),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(bridge)),
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::new(bridge).map_err(|err| {
                    ReadError::Corrupt {
                        source_url: source_url(&item),
                        compression: "zstd",
                        source: err.into(),
                    }
                })?)
            }
        };
        let mut emit = |rows: TextRows| -> Result<bool, ReadError> {
            let typed =
                rows.into_typed(&dataset, &origin(&item))
                    .map_err(|err| ReadError::Convert {
                        source_url: source_url(&item),
                        source: err.into(),
                    })?;
            Ok(sender.blocking_send(Ok(typed)).is_ok())
        };
        match item.format {
            FileFormat::Csv => read_csv(decoded, &item, &dataset, part_header, &mut emit),
            _ => read_jsonl(decoded, &item, &dataset, &mut emit),
        }
    })
    .await
    .map_err(|err| ReadError::Convert {
        source_url: String::new(),
        source: context("reader task failed", err),
    })?
}

/// An object-store failure carried through the byte stream, so it can be told apart
/// from a decoder's complaint about the bytes themselves.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct FetchError(object_store::Error);

fn io_error(item: &FileItem, err: std::io::Error) -> ReadError {
    read_failure(item, is_fetch_failure(&err), err.into())
}

fn is_fetch_failure(err: &std::io::Error) -> bool {
    err.get_ref().is_some_and(|inner| inner.is::<FetchError>())
}

/// Classifies an I/O failure met while reading: a failed fetch may succeed later; a
/// decoder error on compressed data means the file is corrupt and never will.
fn read_failure(item: &FileItem, fetch_failed: bool, source: BoxError) -> ReadError {
    if fetch_failed || item.compression == Compression::None {
        ReadError::Object {
            source_url: source_url(item),
            source,
            retryable: true,
        }
    } else {
        ReadError::Corrupt {
            source_url: source_url(item),
            compression: item.compression.as_str(),
            source,
        }
    }
}

/// Hands a chunk on; `false` when nobody listens any more.
type Emit<'a> = dyn FnMut(TextRows) -> Result<bool, ReadError> + 'a;

/// Hands the rows on once they fill a chunk; `false` when nobody listens any more.
fn flush_if_full(
    rows: &mut TextRows,
    column_count: usize,
    emit: &mut Emit<'_>,
) -> Result<bool, ReadError> {
    if rows.len() + rows.reject_count() < CHUNK_ROWS {
        return Ok(true);
    }
    emit(std::mem::replace(rows, TextRows::new(column_count)))
}

/// The CSV reader every part of a file is read with, so all agree on where rows start.
fn csv_reader<R: Read>(options: CsvOptions, reader: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .delimiter(options.delimiter)
        .quote(options.quote)
        .escape(options.escape)
        .double_quote(options.escape.is_none())
        .has_headers(false)
        .flexible(true)
        .from_reader(reader)
}

/// The most bytes a CSV header may take.
pub(crate) const MAX_HEADER_BYTES: u64 = 1024 * 1024;

/// The header row of a split CSV file, read from its start.
async fn read_csv_header(
    store: &dyn ObjectStore,
    path: &ObjectPath,
    item: &FileItem,
    dataset: &Dataset,
) -> Result<Vec<String>, ReadError> {
    let options = pinned(
        item,
        Some(GetRange::Bounded(0..item.size.min(MAX_HEADER_BYTES))),
    );
    let result = store
        .get_opts(path, options)
        .await
        .map_err(|err| object_error(item, err))?;
    check_etag(item, &result.meta)?;
    let bytes = result
        .bytes()
        .await
        .map_err(|err| object_error(item, err))?;
    let mut csv = csv_reader(dataset.csv, bytes.as_ref());
    let mut record = csv::ByteRecord::new();
    let complete = csv
        .read_byte_record(&mut record)
        .map_err(|err| ReadError::Convert {
            source_url: source_url(item),
            source: context("reading the header", err),
        })?;
    // The header must end inside the bytes read, or it was cut.
    let header_end = csv.position().byte();
    if !complete || (header_end >= bytes.len() as u64 && item.size > MAX_HEADER_BYTES) {
        return Err(ReadError::Shape {
            source_url: source_url(item),
            dataset: dataset.name.clone(),
            reason: format!("no complete header row in the first {MAX_HEADER_BYTES} bytes"),
        });
    }
    Ok(header_names(&record))
}

fn header_names(record: &csv::ByteRecord) -> Vec<String> {
    record
        .iter()
        .map(|name| {
            String::from_utf8_lossy(name)
                .trim()
                .trim_start_matches('\u{feff}')
                .to_ascii_lowercase()
        })
        .collect()
}

fn read_csv(
    reader: impl Read,
    item: &FileItem,
    dataset: &Dataset,
    part_header: Option<Vec<String>>,
    emit: &mut Emit<'_>,
) -> Result<(), ReadError> {
    let CsvOptions {
        delimiter,
        has_header,
        ..
    } = dataset.csv;
    let mut csv = csv_reader(dataset.csv, reader);
    let column_count = dataset.columns.len();
    let mut record = csv::ByteRecord::new();
    let read = |csv: &mut csv::Reader<_>, record: &mut csv::ByteRecord| {
        csv.read_byte_record(record)
            .map_err(|err| match err.kind() {
                csv::ErrorKind::Io(io) => read_failure(item, is_fetch_failure(io), err.into()),
                _ => ReadError::Convert {
                    source_url: source_url(item),
                    source: err.into(),
                },
            })
    };
    let names = match part_header {
        Some(names) => Some(names),
        None if has_header => {
            if !read(&mut csv, &mut record)? {
                return Ok(()); // an empty file: nothing to load
            }
            Some(header_names(&record))
        }
        None => None,
    };
    // Which field holds each catalog column: by header name, or by position.
    let layout = match names {
        Some(names) => header_layout(dataset, &names, item)?,
        None => FieldLayout {
            field_of_column: (0..column_count).map(Some).collect(),
            fields: column_count,
        },
    };
    let separator = char::from(delimiter).to_string();
    let mut rows = TextRows::new(column_count);
    while read(&mut csv, &mut record)? {
        push_csv_record(&record, &layout, item, &separator, &mut rows);
        if !flush_if_full(&mut rows, column_count, emit)? {
            return Ok(());
        }
    }
    if !rows.is_empty() || rows.reject_count() > 0 {
        emit(rows)?;
    }
    Ok(())
}

/// Where a CSV row's fields go: the field of each catalog column (`None`: an optional
/// column the file lacks, loaded as NULL), and how many fields a row has.
#[derive(Debug)]
struct FieldLayout {
    field_of_column: Vec<Option<usize>>,
    fields: usize,
}

/// The layout a header gives. An optional (nullable) column the header lacks loads as
/// NULL; a required one fails the file, with what the header looks like; a column the
/// catalog does not name is ignored, or fails the file under `unknown_columns = "reject"`.
fn header_layout(
    dataset: &Dataset,
    names: &[String],
    item: &FileItem,
) -> Result<FieldLayout, ReadError> {
    let positions: Vec<Option<usize>> = dataset
        .columns
        .iter()
        .map(|c| names.iter().position(|n| n == &c.name))
        .collect();
    let missing: Vec<&str> = dataset
        .columns
        .iter()
        .zip(&positions)
        .filter(|(column, position)| position.is_none() && !column.nullable)
        .map(|(c, _)| c.name.as_str())
        .collect();
    let unknown: Vec<&str> = names
        .iter()
        .filter(|name| !dataset.columns.iter().any(|c| &c.name == *name))
        .map(String::as_str)
        .collect();
    let shape = |reason: String| ReadError::Shape {
        source_url: source_url(item),
        dataset: dataset.name.clone(),
        reason,
    };
    let matched = names
        .iter()
        .any(|name| dataset.columns.iter().any(|c| &c.name == name));
    if !matched {
        return Err(shape(format!(
            "no header name is a column of the catalog; the header has {}{}",
            names.join(", "),
            header_hint(dataset, names)
        )));
    }
    if !missing.is_empty() {
        return Err(shape(format!(
            "the header lacks required column(s) {}; it has {}{}",
            missing.join(", "),
            names.join(", "),
            header_hint(dataset, names)
        )));
    }
    if dataset.unknown_columns == UnknownColumns::Reject && !unknown.is_empty() {
        return Err(shape(format!(
            "the header has column(s) the catalog does not name: {} (unknown_columns = \"reject\"; add them to the catalog or set unknown_columns = \"ignore\")",
            unknown.join(", ")
        )));
    }
    Ok(FieldLayout {
        field_of_column: positions,
        fields: names.len(),
    })
}

/// What a header that does not match the catalog looks like: another delimiter, or no
/// header at all (names are already compared trimmed and in lower case).
fn header_hint(dataset: &Dataset, names: &[String]) -> String {
    let known = |name: &str| dataset.columns.iter().any(|c| c.name == name.trim());
    for (delimiter, label) in [
        (';', "semicolon"),
        ('\t', "tab"),
        ('|', "pipe"),
        (',', "comma"),
    ] {
        if u8::try_from(delimiter).ok() == Some(dataset.csv.delimiter) {
            continue;
        }
        let split: Vec<&str> = names.iter().flat_map(|n| n.split(delimiter)).collect();
        if split.len() > names.len() && split.iter().filter(|n| known(n)).count() >= 2 {
            let shown = if delimiter == '\t' {
                "\\t".to_owned()
            } else {
                delimiter.to_string()
            };
            return format!(
                ". The header looks {label}-delimited: set csv = {{ delimiter = \"{shown}\" }} for this dataset"
            );
        }
    }
    if !names.iter().any(|n| known(n)) {
        return ". If the file has no header row, set csv = { header = false }".to_owned();
    }
    String::new()
}

/// One CSV record as a row, or as a reject when its field count or encoding is wrong.
fn push_csv_record(
    record: &csv::ByteRecord,
    layout: &FieldLayout,
    item: &FileItem,
    separator: &str,
    rows: &mut TextRows,
) {
    let (byte, row_number) = record.position().map_or((0, 0), |p| (p.byte(), p.line()));
    let offset = item.range.map_or(0, |r| r.start) + byte;
    let raw = || {
        record
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect::<Vec<_>>()
            .join(separator)
    };
    if record.len() != layout.fields {
        rows.reject(Reject {
            row_number: Some(row_number),
            raw: Some(raw()),
            reason: format!("expected {} fields, found {}", layout.fields, record.len()),
        });
        return;
    }
    let cells: Result<Vec<Option<&str>>, _> = layout
        .field_of_column
        .iter()
        .map(|field| field.map(|i| std::str::from_utf8(&record[i])).transpose())
        .collect();
    match cells {
        Ok(cells) => rows.push(cells, row_number, Some(raw()), offset.to_string(), 0),
        Err(err) => rows.reject(Reject {
            row_number: Some(row_number),
            raw: Some(raw()),
            reason: format!("row is not valid UTF-8 ({err})"),
        }),
    }
}

fn read_jsonl(
    reader: impl Read,
    item: &FileItem,
    dataset: &Dataset,
    emit: &mut Emit<'_>,
) -> Result<(), ReadError> {
    let column_count = dataset.columns.len();
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let mut line = Vec::new();
    let mut offset = item.range.map_or(0, |r| r.start);
    let mut line_number = 0u64;
    let mut rows = TextRows::new(column_count);
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|err| io_error(item, err))?;
        if read == 0 {
            break;
        }
        line_number += 1;
        let start = offset;
        offset += read as u64;
        if line.len() > MAX_LINE_BYTES && line.last() != Some(&b'\n') {
            // Skip the rest of the over-long line.
            let mut skipped = Vec::new();
            let rest = reader
                .read_until(b'\n', &mut skipped)
                .map_err(|err| io_error(item, err))?;
            offset += rest as u64;
            rows.reject(Reject {
                row_number: Some(line_number),
                raw: Some(String::from_utf8_lossy(&line[..256]).into_owned() + "…"),
                reason: format!("line is longer than {MAX_LINE_BYTES} bytes"),
            });
            continue;
        }
        let text = trim_line(&line);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let raw = String::from_utf8_lossy(text).into_owned();
        match serde_json::from_slice::<serde_json::Value>(text) {
            Err(err) => rows.reject(Reject {
                row_number: Some(line_number),
                raw: Some(raw),
                reason: format!("not valid JSON: {err}"),
            }),
            Ok(value) => match json_cells(dataset, &value) {
                Ok(cells) => rows.push(
                    cells.iter().map(Option::as_deref),
                    line_number,
                    Some(raw),
                    start.to_string(),
                    0,
                ),
                Err(reason) => rows.reject(Reject {
                    row_number: Some(line_number),
                    raw: Some(raw),
                    reason,
                }),
            },
        }
        if !flush_if_full(&mut rows, column_count, emit)? {
            return Ok(());
        }
    }
    if !rows.is_empty() || rows.reject_count() > 0 {
        emit(rows)?;
    }
    Ok(())
}

fn trim_line(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    let start = if line.starts_with(b"\xef\xbb\xbf") {
        3
    } else {
        0
    };
    &line[start.min(end)..end]
}

/// The row groups a Parquet item loads, with the file row number of each one's first row:
/// all of them, or for a part, those whose first byte lies in its range (each row group
/// starts in exactly one part).
pub(crate) fn parquet_row_groups(
    metadata: &ParquetMetaData,
    range: Option<ByteRange>,
) -> Vec<(usize, u64)> {
    let mut first_row: u64 = 0;
    let mut selected = Vec::new();
    for (index, group) in metadata.row_groups().iter().enumerate() {
        let start = group
            .columns()
            .iter()
            .map(|column| column.byte_range().0)
            .min()
            .unwrap_or(0);
        if range.is_none_or(|r| (r.start..r.end).contains(&start)) {
            selected.push((index, first_row));
        }
        first_row += u64::try_from(group.num_rows()).unwrap_or(0);
    }
    selected
}

async fn read_parquet(
    StoredObject { store, path }: StoredObject,
    item: &FileItem,
    dataset: &Dataset,
    sender: &mpsc::Sender<Result<Typed, ReadError>>,
) -> Result<(), ReadError> {
    let url = source_url(item);
    let convert = |source: BoxError| ReadError::Convert {
        source_url: url.clone(),
        source,
    };
    let reader = parquet_reader(StoredObject { store, path }, item.clone());
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|err| {
            parquet_error(item, err, |other| ReadError::Shape {
                source_url: url.clone(),
                dataset: dataset.name.clone(),
                reason: format!("not a readable Parquet file: {other}"),
            })
        })?;
    let column_indices = parquet_columns(builder.schema(), dataset, &url)?;
    let groups = parquet_row_groups(builder.metadata(), item.range);
    let row_counts: Vec<u64> = groups
        .iter()
        .map(|(index, _)| {
            u64::try_from(builder.metadata().row_group(*index).num_rows()).unwrap_or(0)
        })
        .collect();
    if groups.is_empty() {
        return Ok(()); // a part in which no row group starts
    }
    let mut stream = builder
        .with_row_groups(groups.iter().map(|(index, _)| *index).collect())
        .with_batch_size(CHUNK_ROWS)
        .build()
        .map_err(|err| convert(err.into()))?;
    // Lineage offsets are row numbers in the whole file, whichever part reads the row.
    let mut position = GroupPosition::default();
    while let Some(batch) = stream.next().await {
        let batch: RecordBatch =
            batch.map_err(|err| parquet_error(item, err, |other| convert(other.into())))?;
        let rows = batch.num_rows();
        let columns: Vec<ArrayRef> = column_indices
            .iter()
            .zip(&dataset.columns)
            .map(|(index, column)| match index {
                Some(i) => Arc::clone(batch.column(*i)),
                None => new_null_array(&column.data_type, rows),
            })
            .collect();
        let offsets: Vec<u64> = (0..rows)
            .map(|_| position.next_offset(&groups, &row_counts))
            .collect();
        let rows_in = RowsIn {
            columns,
            row_numbers: offsets.iter().map(|n| n + 1).collect(),
            offsets: offsets.iter().map(u64::to_string).collect(),
            raw: vec![None; rows],
            sub_offsets: vec![0; rows],
            rejects: Vec::new(),
        };
        let typed = conform(dataset, &origin(item), rows_in).map_err(|err| convert(err.into()))?;
        if sender.send(Ok(typed)).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Where the next row stands among the row groups a part reads.
#[derive(Debug, Default)]
struct GroupPosition {
    group: usize,
    row_in_group: u64,
}

impl GroupPosition {
    /// The next row's number in the whole file, from each group's (index, first row) and
    /// row count.
    fn next_offset(&mut self, groups: &[(usize, u64)], row_counts: &[u64]) -> u64 {
        while self.group + 1 < groups.len() && self.row_in_group >= row_counts[self.group] {
            self.group += 1;
            self.row_in_group = 0;
        }
        let offset = groups[self.group].1 + self.row_in_group;
        self.row_in_group += 1;
        offset
    }
}

/// The file column of each catalog column (`None`: absent and nullable, read as NULL).
/// A required column the file lacks, or one whose Parquet type cannot become the
/// dataset's type, fails the file before any row is read, naming them all.
fn parquet_columns(
    file_schema: &SchemaRef,
    dataset: &Dataset,
    url: &str,
) -> Result<Vec<Option<usize>>, ReadError> {
    let shape = |reason: String| ReadError::Shape {
        source_url: url.to_owned(),
        dataset: dataset.name.clone(),
        reason,
    };
    let mut column_indices = Vec::with_capacity(dataset.columns.len());
    let mut missing = Vec::new();
    for column in &dataset.columns {
        match file_schema.index_of(&column.name) {
            Ok(index) => column_indices.push(Some(index)),
            Err(_) if column.nullable => column_indices.push(None),
            Err(_) => missing.push(column.name.as_str()),
        }
    }
    if !missing.is_empty() {
        let found: Vec<&str> = file_schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        return Err(shape(format!(
            "the file lacks required column(s) {}; it has {}",
            missing.join(", "),
            found.join(", ")
        )));
    }
    let unconvertible: Vec<String> = column_indices
        .iter()
        .zip(&dataset.columns)
        .filter_map(|(index, column)| {
            let file_type = file_schema.field(index.as_ref().copied()?).data_type();
            (!can_cast_types(file_type, &column.data_type)).then(|| {
                format!(
                    "{} is {} in the file, which cannot become {}",
                    column.name,
                    type_label(file_type),
                    type_label(&column.data_type)
                )
            })
        })
        .collect();
    if !unconvertible.is_empty() {
        return Err(shape(format!("column {}", unconvertible.join("; column "))));
    }
    Ok(column_indices)
}

/// The Parquet object of `item`, read by ranges and pinned to its entity tag (a load's
/// reads, and `catalog draft`'s).
pub(crate) fn parquet_reader(
    StoredObject { store, path }: StoredObject,
    item: FileItem,
) -> impl AsyncFileReader + Unpin + 'static {
    ParquetObject { store, path, item }
}

/// A Parquet file in an object store, read by ranges for the parquet crate's async
/// reader (footer first, then the selected row groups' column chunks).
struct ParquetObject {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    item: FileItem,
}

fn external(err: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(err))
}

/// Ranges closer than this are fetched in one request.
const COALESCE_GAP_BYTES: u64 = 1024 * 1024;

/// Merges ranges that overlap or lie within `gap` bytes of each other, in file order.
fn coalesce(ranges: &[std::ops::Range<u64>], gap: u64) -> Vec<std::ops::Range<u64>> {
    let mut sorted = ranges.to_vec();
    sorted.sort_by_key(|r| r.start);
    let mut runs: Vec<std::ops::Range<u64>> = Vec::new();
    for range in sorted {
        match runs.last_mut() {
            Some(last) if range.start <= last.end.saturating_add(gap) => {
                last.end = last.end.max(range.end);
            }
            _ => runs.push(range),
        }
    }
    runs
}

/// A failed fetch is classified like any object read; anything else is about the bytes.
fn parquet_error(
    item: &FileItem,
    err: ParquetError,
    otherwise: impl FnOnce(ParquetError) -> ReadError,
) -> ReadError {
    match err {
        ParquetError::External(inner) => {
            let inner = match inner.downcast::<object_store::Error>() {
                Ok(fetch) => return object_error(item, *fetch),
                Err(inner) => inner,
            };
            match inner.downcast::<ReadError>() {
                Ok(read) => *read,
                Err(inner) => otherwise(ParquetError::External(inner)),
            }
        }
        other => otherwise(other),
    }
}

impl ParquetObject {
    async fn fetch(&self, range: std::ops::Range<u64>) -> Result<bytes::Bytes, ParquetError> {
        let result = self
            .store
            .get_opts(
                &self.path,
                pinned(&self.item, Some(GetRange::Bounded(range.clone()))),
            )
            .await
            .map_err(external)?;
        check_etag(&self.item, &result.meta)
            .map_err(|err| ParquetError::External(Box::new(err)))?;
        let wanted = range.end - range.start;
        let bytes = result.bytes().await.map_err(external)?;
        // The parquet reader assumes every range arrives whole.
        if bytes.len() as u64 != wanted {
            return Err(ParquetError::External(Box::new(ReadError::Object {
                source_url: source_url(&self.item),
                source: format!(
                    "asked for bytes {}..{}, received {} bytes",
                    range.start,
                    range.end,
                    bytes.len()
                )
                .into(),
                retryable: true,
            })));
        }
        Ok(bytes)
    }
}

impl AsyncFileReader for ParquetObject {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<bytes::Bytes>> {
        Box::pin(self.fetch(range))
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<Vec<bytes::Bytes>>> {
        Box::pin(async move {
            // One request per run of nearby ranges (a row group's column chunks lie
            // together), each range then sliced out of its run.
            let runs = coalesce(&ranges, COALESCE_GAP_BYTES);
            let fetched =
                futures::future::try_join_all(runs.iter().cloned().map(|run| self.fetch(run)))
                    .await?;
            Ok(ranges
                .iter()
                .map(|range| {
                    let (run, bytes) = runs
                        .iter()
                        .zip(&fetched)
                        .find(|(run, _)| run.start <= range.start && range.end <= run.end)
                        .expect("every range lies in a run made from it");
                    let start = usize::try_from(range.start - run.start).unwrap_or(usize::MAX);
                    let end = usize::try_from(range.end - run.start).unwrap_or(usize::MAX);
                    bytes.slice(start.min(bytes.len())..end.min(bytes.len()))
                })
                .collect())
        })
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, datafusion::parquet::errors::Result<Arc<ParquetMetaData>>> {
        Box::pin(async move {
            let size = self.item.size;
            let metadata = ParquetMetaDataReader::new()
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        })
    }
}

/// Every chunk of an item, collected (for small items and tests).
pub async fn read_all(
    store: Arc<dyn ObjectStore>,
    item: FileItem,
    dataset: Dataset,
) -> Result<(Vec<RecordBatch>, Vec<Reject>), ReadError> {
    let object = StoredObject {
        path: object_path(&item)?,
        store,
    };
    read_object(object, item, dataset).await
}

/// Every chunk of an item read from `object`, collected.
pub async fn read_object(
    object: StoredObject,
    item: FileItem,
    dataset: Dataset,
) -> Result<(Vec<RecordBatch>, Vec<Reject>), ReadError> {
    let mut receiver = spawn_read(object, item, dataset);
    let mut batches = Vec::new();
    let mut rejects = Vec::new();
    while let Some(chunk) = receiver.recv().await {
        let typed = chunk?;
        if typed.batch.num_rows() > 0 {
            batches.push(typed.batch);
        }
        rejects.extend(typed.rejects);
    }
    Ok((batches, rejects))
}

/// Rows in a list of batches.
pub fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::{
        CopyOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStoreExt,
        PutMultipartOptions, PutOptions, PutPayload, PutResult,
    };
    use shared::catalog::Catalog;

    const CATALOG: &str = crate::local::EXAMPLE_CATALOG;
    const PARQUET: &[u8] =
        include_bytes!("../../../testdata/bad-inputs/parquet/convertible_types.parquet");

    /// A store that answers reads wrongly.
    #[derive(Debug)]
    struct Misbehaving {
        inner: InMemory,
        /// Panics while reading instead of answering.
        panics: bool,
    }

    impl std::fmt::Display for Misbehaving {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "misbehaving store")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for Misbehaving {
        async fn get_opts(
            &self,
            location: &ObjectPath,
            mut options: GetOptions,
        ) -> object_store::Result<GetResult> {
            assert!(!self.panics, "a reader bug");
            // Every ranged read answered with the whole object.
            options.range = None;
            self.inner.get_opts(location, options).await
        }
        async fn put_opts(
            &self,
            location: &ObjectPath,
            payload: PutPayload,
            options: PutOptions,
        ) -> object_store::Result<PutResult> {
            self.inner.put_opts(location, payload, options).await
        }
        async fn put_multipart_opts(
            &self,
            location: &ObjectPath,
            options: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<'static, object_store::Result<ObjectPath>>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectPath>> {
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&ObjectPath>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&ObjectPath>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &ObjectPath,
            to: &ObjectPath,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    async fn read_parquet_from(panics: bool) -> Result<usize, ReadError> {
        let inner = InMemory::new();
        let path = ObjectPath::from("landing/payments/p.parquet");
        let stored = inner
            .put(&path, PutPayload::from_static(PARQUET))
            .await
            .expect("put");
        let item = FileItem {
            dataset: "payments".into(),
            bucket: "landing".into(),
            key: path.to_string(),
            version_id: None,
            etag: stored.e_tag.expect("etag"),
            size: PARQUET.len() as u64,
            range: None,
            part: None,
            format: FileFormat::Parquet,
            compression: Compression::None,
            created_at_ms: None,
        };
        let dataset = Catalog::from_toml(CATALOG, "test")
            .expect("catalog")
            .get("payments")
            .expect("payments")
            .clone();
        let object = StoredObject {
            store: Arc::new(Misbehaving { inner, panics }),
            path,
        };
        let (batches, _) = read_object(object, item, dataset).await?;
        Ok(row_count(&batches))
    }

    #[tokio::test]
    async fn a_reader_that_panics_ends_with_an_error_not_with_the_end_of_the_file() {
        let err = read_parquet_from(true).await.expect_err("no silent end");
        assert!(
            shared::error::report(&err).contains("the reader failed") && !err.is_retryable(),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_range_answered_with_other_bytes_is_a_retryable_error() {
        let err = read_parquet_from(false).await.expect_err("a short read");
        assert!(
            shared::error::report(&err).contains("received") && err.is_retryable(),
            "{err}"
        );
    }

    #[test]
    fn nearby_ranges_are_fetched_together() {
        assert_eq!(
            coalesce(&[10..20, 0..5, 25..30, 100..110], 5),
            [0..30, 100..110]
        );
        assert_eq!(
            coalesce(&[0..10, 5..8], 0),
            vec![std::ops::Range { start: 0, end: 10 }]
        );
        assert!(coalesce(&[], 5).is_empty());
    }
}
