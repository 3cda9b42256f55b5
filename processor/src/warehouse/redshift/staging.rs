//! Staging a load's rows for `COPY`: Parquet files under the staging prefix and the
//! manifest that names exactly them.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use shared::catalog::TooLong;
use shared::error::{BoxError, context};

use super::VarcharLimit;
use crate::text::byte_prefix;
use crate::warehouse::{
    Drained, ItemSource, StagedRowsSink, WarehouseError, drain_items, with_sequence,
};

/// Bytes each staged file should hold before a load spreads over one more: Redshift
/// advises files of 1 MB to 1 GB after compression, as many as a multiple of the slices
/// (`queries-troubleshooting-load-takes-too-long.html`), and splits Parquet files of 128 MB
/// or more across slices itself (`c_best-practices-use-multiple-files.html`). So a small
/// load is one file, and a large one uses all `staging_files`.
pub const MIN_FILE_BYTES: usize = 1024 * 1024;

/// Rows per Parquet row group: bounds the memory each open file buffers.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// The Arrow type a column is written to Parquet as: the physical types Redshift's
/// Parquet `COPY` maps onto its column types.
fn staged_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Int8 => DataType::Int16,
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        // UTC wall-clock time without a zone (the staging column is `TIMESTAMP`; the merge
        // converts it to `TIMESTAMPTZ`): the form Redshift's columnar COPY reads without doubt.
        DataType::Timestamp(_, _) => DataType::Timestamp(TimeUnit::Microsecond, None),
        other => other.clone(),
    }
}

/// The rows of `batch` with a string longer in bytes than its column's limit, with the
/// reason; columns that truncate instead are left to [`truncate_long_strings`].
fn over_long_strings(batch: &RecordBatch, limits: &[Option<VarcharLimit>]) -> Vec<(usize, String)> {
    // The first over-long column of a row gives its reason.
    let mut reasons: Vec<Option<String>> = vec![None; batch.num_rows()];
    let schema = batch.schema();
    let columns = schema.fields().iter().zip(batch.columns()).zip(limits);
    for ((field, array), limit) in columns {
        let rejecting = limit.filter(|l| l.too_long == TooLong::Reject);
        let (
            Some(strings),
            Some(VarcharLimit {
                bytes: max_bytes, ..
            }),
        ) = (array.as_string_opt::<i32>(), rejecting)
        else {
            continue;
        };
        for (reason, value) in reasons.iter_mut().zip(strings.iter()) {
            let Some(value) = value.filter(|v| v.len() > max_bytes) else {
                continue;
            };
            reason.get_or_insert_with(|| {
                format!(
                    "column {}: {} bytes, longer than the {max_bytes} bytes its Redshift VARCHAR holds (raise its max_length in the catalog)",
                    field.name(),
                    value.len()
                )
            });
        }
    }
    reasons
        .into_iter()
        .enumerate()
        .filter_map(|(row, reason)| Some((row, reason?)))
        .collect()
}

/// `array` with every string longer than `max_bytes` cut to it at a character boundary,
/// and how many were cut; `None` when none is too long.
fn truncated(array: &ArrayRef, max_bytes: usize) -> Option<(ArrayRef, u64)> {
    let strings = array.as_string_opt::<i32>()?;
    let cut = strings
        .iter()
        .flatten()
        .filter(|v| v.len() > max_bytes)
        .count();
    if cut == 0 {
        return None;
    }
    let fitted: StringArray = strings
        .iter()
        .map(|value| value.map(|v| byte_prefix(v, max_bytes)))
        .collect();
    Some((Arc::new(fitted), cut as u64))
}

/// The columns of `batch` with the strings of truncating columns cut to their limit, and
/// how many values were cut.
fn truncate_long_strings(
    batch: &RecordBatch,
    limits: &[Option<VarcharLimit>],
) -> (Vec<ArrayRef>, u64) {
    let mut cut_total = 0;
    let columns = batch
        .columns()
        .iter()
        .zip(limits.iter().chain(std::iter::repeat(&None)))
        .map(|(array, limit)| match limit {
            Some(VarcharLimit {
                bytes,
                too_long: TooLong::Truncate,
            }) => match truncated(array, *bytes) {
                Some((fitted, cut)) => {
                    cut_total += cut;
                    fitted
                }
                None => Arc::clone(array),
            },
            _ => Arc::clone(array),
        })
        .collect();
    (columns, cut_total)
}

/// Staged Parquet files of one load and the manifest that names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFiles {
    /// The folder of this load under the staging prefix.
    pub folder: Path,
    /// `(key, bytes)` of each Parquet file.
    pub files: Vec<(Path, u64)>,
    pub manifest: Path,
    pub rows: u64,
    /// String values cut to their column's `max_length` (columns with `too_long = "truncate"`).
    pub values_truncated: u64,
}

/// Writes a load's rows as Parquet files in the staging location.
#[derive(Debug, Clone)]
pub struct ParquetStager {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
    /// The most files of one load.
    files: usize,
    min_file_bytes: usize,
}

impl ParquetStager {
    /// `store` is the staging bucket's store; `prefix` ends in `/` (or is empty). A load
    /// writes up to `files` files, opening another once each holds [`MIN_FILE_BYTES`].
    pub fn new(store: Arc<dyn ObjectStore>, bucket: &str, prefix: &str, files: usize) -> Self {
        Self {
            store,
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            files: files.max(1),
            min_file_bytes: MIN_FILE_BYTES,
        }
    }

    /// The same stager with another size at which a load opens one more file.
    pub fn with_min_file_bytes(self, min_file_bytes: usize) -> Self {
        Self {
            min_file_bytes,
            ..self
        }
    }

    pub fn s3_url(&self, key: &Path) -> String {
        format!("s3://{}/{}", self.bucket, key)
    }

    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// A failed write to the staging location; retried like any S3 hiccup.
    fn staging_error(&self, dataset: &str, source: BoxError) -> WarehouseError {
        WarehouseError::Staging {
            dataset: dataset.to_owned(),
            location: self.location(),
            source,
            retryable: true,
        }
    }

    /// The folder of one load's files under the staging prefix.
    pub fn load_folder(&self, dataset: &str, load_id: &str) -> Path {
        Path::from(format!("{}{dataset}/{load_id}", self.prefix))
    }

    /// Drains the items into up to `files` Parquet files (batches go round-robin, so the
    /// files come out about equal) under `<prefix><dataset>/<load_id>/`, then writes the
    /// manifest. Nothing is written when there are no rows.
    ///
    /// `varchar_limits` are the byte limits of the string columns, by position: a row with a
    /// longer string is rejected with the reason instead of failing the whole `COPY`, or
    /// the value is cut to the limit and counted where the column says so.
    pub async fn stage(
        &self,
        dataset: &str,
        schema: &SchemaRef,
        items: &mut [ItemSource],
        (load_id, varchar_limits): (&str, &[Option<VarcharLimit>]),
    ) -> Result<(Option<StagedFiles>, Drained), WarehouseError> {
        let folder = self.load_folder(dataset, load_id);
        let staged_schema = Arc::new(Schema::new(
            with_sequence(schema)
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), staged_type(f.data_type()), f.is_nullable()))
                .collect::<Vec<_>>(),
        ));
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        let mut sink = ParquetFiles {
            stager: self,
            dataset,
            folder: folder.clone(),
            schema: staged_schema,
            properties,
            writers: Vec::new(),
            next: 0,
            rows: 0,
            values_truncated: 0,
            varchar_limits,
        };
        let drained = match drain_items(dataset, schema, items, &mut sink).await {
            Ok(drained) => drained,
            Err(err) => {
                // Abandon the open uploads; finished files are removed with the folder.
                drop(sink);
                self.remove_folder(&folder).await;
                return Err(err);
            }
        };
        let ParquetFiles {
            writers,
            rows,
            values_truncated,
            ..
        } = sink;
        if writers.is_empty() {
            return Ok((None, drained));
        }
        let files = self.close_files(dataset, writers).await?;
        let manifest = self.write_manifest(dataset, &folder, &files).await?;
        let staged = StagedFiles {
            folder,
            files,
            manifest,
            rows,
            values_truncated,
        };
        Ok((Some(staged), drained))
    }

    /// Finishes the uploads; returns each file's key and size.
    async fn close_files(
        &self,
        dataset: &str,
        writers: Vec<(Path, AsyncArrowWriter<BufWriter>)>,
    ) -> Result<Vec<(Path, u64)>, WarehouseError> {
        let mut files = Vec::with_capacity(writers.len());
        for (key, writer) in writers {
            writer
                .close()
                .await
                .map_err(|err| self.staging_error(dataset, err.into()))?;
            let head = self.store.head(&key).await.map_err(|err| {
                self.staging_error(
                    dataset,
                    context(format!("staged file {key} is missing"), err),
                )
            })?;
            files.push((key, head.size));
        }
        Ok(files)
    }

    /// The manifest `COPY` reads: exactly these files, each mandatory, with its length.
    async fn write_manifest(
        &self,
        dataset: &str,
        folder: &Path,
        files: &[(Path, u64)],
    ) -> Result<Path, WarehouseError> {
        let manifest = folder.clone().join("manifest.json");
        let entries: Vec<serde_json::Value> = files
            .iter()
            .map(|(key, size)| {
                serde_json::json!({
                    "url": self.s3_url(key),
                    "mandatory": true,
                    "meta": { "content_length": size },
                })
            })
            .collect();
        let body = serde_json::json!({ "entries": entries }).to_string();
        self.store
            .put(&manifest, body.into())
            .await
            .map_err(|err| {
                self.staging_error(dataset, context("cannot write the manifest", err))
            })?;
        Ok(manifest)
    }

    /// Deletes everything under a load's folder; failures are logged, not raised (the
    /// staging prefix's lifecycle rule removes leftovers).
    pub async fn remove_folder(&self, folder: &Path) {
        use futures::TryStreamExt;
        let listed: Result<Vec<_>, _> = self.store.list(Some(folder)).try_collect().await;
        match listed {
            Ok(objects) => {
                for object in objects {
                    if let Err(err) = self.store.delete(&object.location).await {
                        tracing::warn!(key = %object.location, error = %shared::error::Report(&err), "cannot delete a staged file");
                    }
                }
            }
            Err(err) => {
                tracing::warn!(folder = %folder, error = %shared::error::Report(&err), "cannot list staged files")
            }
        }
    }
}

/// The open Parquet files of one load; batches go to them in turn.
struct ParquetFiles<'a> {
    stager: &'a ParquetStager,
    dataset: &'a str,
    folder: Path,
    schema: SchemaRef,
    properties: WriterProperties,
    writers: Vec<(Path, AsyncArrowWriter<BufWriter>)>,
    next: usize,
    rows: u64,
    values_truncated: u64,
    varchar_limits: &'a [Option<VarcharLimit>],
}

impl StagedRowsSink for ParquetFiles<'_> {
    /// Rows with a string longer in bytes than its `VARCHAR` holds: one such value would
    /// fail the whole `COPY`.
    fn refuse(&self, batch: &RecordBatch) -> Vec<(usize, String)> {
        over_long_strings(batch, self.varchar_limits)
    }

    async fn write(&mut self, batch: RecordBatch) -> Result<(), WarehouseError> {
        let convert_failed = |source: ArrowError| WarehouseError::Rows {
            dataset: self.dataset.to_owned(),
            action: "cannot convert rows for Parquet".into(),
            source,
        };
        let (fitted, cut) = truncate_long_strings(&batch, self.varchar_limits);
        self.values_truncated += cut;
        let columns = fitted
            .iter()
            .zip(self.schema.fields())
            .map(|(array, field)| cast(array, field.data_type()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(convert_failed)?;
        let batch =
            RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(convert_failed)?;
        self.rows += batch.num_rows() as u64;
        if self.needs_another_file() {
            self.next = self.writers.len();
            let key = self
                .folder
                .clone()
                .join(format!("part-{:05}.parquet", self.writers.len()));
            let writer = AsyncArrowWriter::try_new(
                BufWriter::new(Arc::clone(&self.stager.store), key.clone()),
                Arc::clone(&self.schema),
                Some(self.properties.clone()),
            )
            .map_err(|err| self.stager.staging_error(self.dataset, err.into()))?;
            self.writers.push((key, writer));
        }
        let (_, writer) = &mut self.writers[self.next];
        writer
            .write(&batch)
            .await
            .map_err(|err| self.stager.staging_error(self.dataset, err.into()))?;
        self.next = (self.next + 1) % self.writers.len();
        Ok(())
    }
}

impl ParquetFiles<'_> {
    /// Whether the next batch opens a file: the first, or one more once the open files
    /// hold `min_file_bytes` each (written or buffered), up to the stager's `files`.
    fn needs_another_file(&self) -> bool {
        let open = self.writers.len();
        let staged: usize = self
            .writers
            .iter()
            .map(|(_, writer)| writer.bytes_written() + writer.in_progress_size())
            .sum();
        open == 0 || (open < self.stager.files && staged >= open * self.stager.min_file_bytes)
    }
}
