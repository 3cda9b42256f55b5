//! Turns a created object into its work items: routes the key to a dataset, leaves out
//! what holds nothing to load, and splits a large splittable file into parts.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::error::ProvideErrorMetadata;
use bytes::Bytes;
use shared::catalog::{Catalog, Compression, Dataset, FileFormat};
use shared::envelope::{ByteRange, FileItem, Part};
use shared::error::{BoxError, Classify, Retryability, classify_sdk_error};

use crate::events::{CreatedObject, SkipReason, Skipped};
use crate::split::{CsvRowEnds, Cuts, even_ranges, jsonl_row_end};

/// Bytes read per request while scanning a CSV file for row ends.
pub(crate) const CSV_SCAN_CHUNK_BYTES: u64 = 8 * 1024 * 1024;
/// Bytes read per request while looking for a JSON-lines row end after a mark.
pub(crate) const JSONL_PEEK_BYTES: u64 = 64 * 1024;

/// Why an object's bytes could not be read while planning.
#[derive(Debug, thiserror::Error)]
pub enum ObjectReadError {
    /// Deleted, or overwritten (the entity tag no longer matches): the newer version
    /// has an event of its own.
    #[error("s3://{bucket}/{key} is gone or changed since the event")]
    Gone {
        bucket: String,
        key: String,
        source: BoxError,
    },
    #[error("reading s3://{bucket}/{key} bytes {start}..{end} failed")]
    Failed {
        bucket: String,
        key: String,
        start: u64,
        end: u64,
        source: BoxError,
        retryable: bool,
    },
}

impl Classify for ObjectReadError {
    fn retryability(&self) -> Retryability {
        match self {
            ObjectReadError::Failed {
                retryable: true, ..
            } => Retryability::Retryable,
            _ => Retryability::Permanent,
        }
    }
}

/// Reads byte ranges of the exact object version an event named.
#[async_trait]
pub trait ObjectReader: Send + Sync + fmt::Debug {
    /// Bytes `[start, end)` of the object; fails with `Gone` when it no longer has the
    /// event's entity tag.
    async fn read_range(
        &self,
        object: &CreatedObject,
        start: u64,
        end: u64,
    ) -> Result<Bytes, ObjectReadError>;
}

/// Reads through the S3 API (`GetObject` with `Range` and `If-Match`).
#[derive(Debug, Clone)]
pub struct S3Objects {
    pub client: aws_sdk_s3::Client,
}

#[async_trait]
impl ObjectReader for S3Objects {
    async fn read_range(
        &self,
        object: &CreatedObject,
        start: u64,
        end: u64,
    ) -> Result<Bytes, ObjectReadError> {
        let failed = |source: BoxError, retryable: bool| ObjectReadError::Failed {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            start,
            end,
            source,
            retryable,
        };
        let output = self
            .client
            .get_object()
            .bucket(&object.bucket)
            .key(&object.key)
            .set_version_id(object.version_id.clone())
            .if_match(format!("\"{}\"", object.etag))
            .range(format!("bytes={start}-{}", end.saturating_sub(1)))
            .send()
            .await
            .map_err(|err| {
                let status = err.raw_response().map(|r| r.status().as_u16());
                if matches!(
                    err.code(),
                    Some("NoSuchKey" | "NoSuchVersion" | "PreconditionFailed")
                ) || matches!(status, Some(404 | 412))
                {
                    ObjectReadError::Gone {
                        bucket: object.bucket.clone(),
                        key: object.key.clone(),
                        source: err.into(),
                    }
                } else {
                    let retryable = classify_sdk_error(&err) == Retryability::Retryable;
                    failed(err.into(), retryable)
                }
            })?;
        let body = output
            .body
            .collect()
            .await
            .map_err(|err| failed(err.into(), true))?;
        Ok(body.into_bytes())
    }
}

/// What became of one created object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    /// One work item, or one per part.
    Items(Vec<FileItem>),
    Skipped(Skipped),
}

/// Routes and splits created objects.
#[derive(Debug, Clone)]
pub struct FilePlanner {
    pub catalog: Arc<Catalog>,
    pub reader: Arc<dyn ObjectReader>,
    /// Splittable files larger than this are cut into parts of about this size.
    pub part_size: u64,
}

/// Whether a file can be cut into byte ranges loaded independently: every format can
/// (CSV and JSON lines at row ends, Parquet by row groups) unless the whole file is one
/// compressed stream, which can only be decoded from its start.
pub(crate) fn is_splittable(compression: Compression) -> bool {
    compression == Compression::None
}

impl FilePlanner {
    pub async fn plan(&self, object: &CreatedObject) -> Result<Planned, ObjectReadError> {
        let skipped = |reason: SkipReason| {
            Ok(Planned::Skipped(Skipped {
                reason,
                detail: format!("s3://{}/{}", object.bucket, object.key),
            }))
        };
        if object.size == 0 {
            return skipped(if object.key.ends_with('/') {
                SkipReason::FolderMarker
            } else {
                SkipReason::EmptyObject
            });
        }
        let Some(dataset) = self.catalog.route_object(&object.key) else {
            return skipped(SkipReason::Unrouted);
        };
        let compression = dataset.compression_for(&object.key);
        let ranges = if object.size > self.part_size && is_splittable(compression) {
            match self.part_ranges(dataset, object).await {
                Ok(ranges) => ranges,
                Err(ObjectReadError::Gone { .. }) => return skipped(SkipReason::Gone),
                Err(err) => return Err(err),
            }
        } else {
            Vec::new()
        };
        let item = |range: Option<ByteRange>, part: Option<Part>| FileItem {
            dataset: dataset.name.clone(),
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            version_id: object.version_id.clone(),
            etag: object.etag.clone(),
            size: object.size,
            range,
            part,
            format: dataset.format,
            compression,
            created_at_ms: object.event_time_ms,
        };
        if ranges.len() < 2 {
            return Ok(Planned::Items(vec![item(None, None)]));
        }
        let count = u32::try_from(ranges.len()).unwrap_or(u32::MAX);
        Ok(Planned::Items(
            ranges
                .into_iter()
                .zip(1..=count)
                .map(|((start, end), index)| {
                    item(Some(ByteRange { start, end }), Some(Part { index, count }))
                })
                .collect(),
        ))
    }

    /// The parts' byte ranges: at row boundaries for text, even for Parquet.
    async fn part_ranges(
        &self,
        dataset: &Dataset,
        object: &CreatedObject,
    ) -> Result<Vec<(u64, u64)>, ObjectReadError> {
        let size = object.size;
        let mut cuts = Cuts::new(size, self.part_size);
        match dataset.format {
            FileFormat::Parquet => return Ok(even_ranges(size, self.part_size)),
            FileFormat::Jsonl => {
                while !cuts.done() {
                    let mark = cuts.next_mark;
                    let mut at = mark - 1;
                    let row_end = loop {
                        if at >= size {
                            break None;
                        }
                        let end = at.saturating_add(JSONL_PEEK_BYTES).min(size);
                        let bytes = self.reader.read_range(object, at, end).await?;
                        if let Some(row_end) = jsonl_row_end(&bytes, at, mark) {
                            break Some(row_end);
                        }
                        at = end;
                    };
                    match row_end {
                        Some(row_end) if cuts.offer(row_end) => {}
                        _ => break,
                    }
                }
            }
            FileFormat::Csv => {
                let mut scanner = CsvRowEnds::new(dataset.csv);
                let mut at = 0;
                while !cuts.done() && at < size {
                    let end = at.saturating_add(CSV_SCAN_CHUNK_BYTES).min(size);
                    let bytes = self.reader.read_range(object, at, end).await?;
                    scanner.feed(&bytes, |row_end| {
                        cuts.offer(row_end);
                    });
                    at = end;
                }
            }
        }
        Ok(cuts.ranges())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Objects held in memory, for planning without S3.
    #[derive(Debug)]
    struct InMemory(Vec<u8>);

    #[async_trait]
    impl ObjectReader for InMemory {
        async fn read_range(
            &self,
            _: &CreatedObject,
            start: u64,
            end: u64,
        ) -> Result<Bytes, ObjectReadError> {
            let (start, end) = (start as usize, (end as usize).min(self.0.len()));
            Ok(Bytes::copy_from_slice(&self.0[start..end]))
        }
    }

    const CATALOG: &str = r#"
[datasets.events]
format = "jsonl"
target = "s.events"
s3 = { prefix = "events/" }
columns = [{ name = "id", type = "int64" }]

[datasets.payments]
format = "parquet"
target = "s.payments"
s3 = { prefix = "payments/" }
columns = [{ name = "id", type = "int64" }]
"#;

    fn planner(body: Vec<u8>) -> FilePlanner {
        FilePlanner {
            catalog: Arc::new(Catalog::from_toml(CATALOG, "test").expect("catalog")),
            reader: Arc::new(InMemory(body)),
            part_size: 100,
        }
    }

    fn object(key: &str, size: u64) -> CreatedObject {
        CreatedObject {
            bucket: "b".into(),
            key: key.into(),
            size,
            etag: "e".into(),
            version_id: None,
            event_time_ms: None,
            undecoded_key: None,
        }
    }

    fn ranges(planned: Planned) -> Vec<(u64, u64, u32, u32)> {
        match planned {
            Planned::Items(items) => items
                .iter()
                .map(|i| {
                    let r = i.range.expect("range");
                    let p = i.part.expect("part");
                    (r.start, r.end, p.index, p.count)
                })
                .collect(),
            Planned::Skipped(s) => panic!("{s:?}"),
        }
    }

    #[tokio::test]
    async fn json_lines_are_cut_after_the_first_newline_past_each_mark() {
        let body: Vec<u8> = (0..30)
            .flat_map(|i| format!("{{\"id\":{i:03}}}\n").into_bytes())
            .collect();
        assert_eq!(body.len(), 330, "11 bytes a row");
        let planned = planner(body.clone())
            .plan(&object("events/a.jsonl", 330))
            .await
            .expect("planned");
        // Marks at 100, 210, 320: the next row ends are 110, 220, 330 (the end: no cut).
        assert_eq!(
            ranges(planned),
            [(0, 110, 1, 3), (110, 220, 2, 3), (220, 330, 3, 3)]
        );
    }

    #[tokio::test]
    async fn compressed_small_empty_and_unrouted_objects_are_not_split() {
        let planner = planner(Vec::new());
        let whole = |planned: Planned| match planned {
            Planned::Items(items) => {
                assert_eq!(items.len(), 1);
                assert_eq!((items[0].range, items[0].part), (None, None));
                items[0].compression
            }
            Planned::Skipped(s) => panic!("{s:?}"),
        };
        let gz = planner.plan(&object("events/big.jsonl.gz", 10_000)).await;
        assert_eq!(whole(gz.expect("planned")), Compression::Gzip);
        let small = planner.plan(&object("events/small.jsonl", 100)).await;
        assert_eq!(whole(small.expect("planned")), Compression::None);
        let skip = |planned: Planned| match planned {
            Planned::Skipped(s) => s.reason,
            other => panic!("{other:?}"),
        };
        let folder = planner
            .plan(&object("events/2026/", 0))
            .await
            .expect("planned");
        assert_eq!(skip(folder), SkipReason::FolderMarker);
        let empty = planner
            .plan(&object("events/e.jsonl", 0))
            .await
            .expect("planned");
        assert_eq!(skip(empty), SkipReason::EmptyObject);
        let unrouted = planner
            .plan(&object("other/x.csv", 5))
            .await
            .expect("planned");
        assert_eq!(skip(unrouted), SkipReason::Unrouted);
    }

    #[tokio::test]
    async fn parquet_is_cut_evenly_without_reading() {
        // The reader holds nothing: planning a Parquet file must not read it.
        let planned = planner(Vec::new())
            .plan(&object("payments/p.parquet", 250))
            .await
            .expect("planned");
        assert_eq!(
            ranges(planned),
            [(0, 100, 1, 3), (100, 200, 2, 3), (200, 250, 3, 3)]
        );
    }
}
