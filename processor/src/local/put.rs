//! `processor put`: JSON lines into a local stream, as producers call `PutRecords` on
//! Kinesis — one record per line, in calls of at most 500 records and 5 MiB, each record
//! at most 1 MiB. A line that is not a JSON value, or is too large, is not put and is
//! reported with its number; the others are.

use std::io::BufRead;
use std::time::Duration;

use bytes::Bytes;
use shared::embedded::EmbeddedDb;
use shared::stream::{
    EmbeddedStream, KINESIS_MAX_BATCH_BYTES as MAX_CALL_BYTES, KINESIS_MAX_BATCH_RECORDS,
    KINESIS_MAX_PARTITION_KEY_CHARS as MAX_PARTITION_KEY_CHARS,
    KINESIS_MAX_RECORD_BYTES as MAX_RECORD_BYTES, OutgoingRecord, RecordStream,
};

use super::{DemoError, Layout, step};

#[derive(Debug, Clone)]
pub struct PutOptions {
    /// The local platform's folder.
    pub layout: Layout,
    pub stream: String,
    /// A top-level field whose value is the record's partition key; without it (or when a
    /// record lacks it) the line number is, which spreads records over the shards.
    pub partition_key_field: Option<String>,
}

/// What a put did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutSummary {
    pub put: u64,
    /// (line number, why) of each line not put.
    pub refused: Vec<(u64, String)>,
}

/// Puts every line of `lines`; `progress` hears the records put so far after each call.
pub async fn put_lines(
    options: &PutOptions,
    lines: impl BufRead,
    progress: &mut dyn FnMut(u64),
) -> Result<PutSummary, DemoError> {
    let db = EmbeddedDb::open(&options.layout.database())
        .map_err(|err| step("opening the local database")(err))?;
    let stream = existing_stream(db, &options.stream).await?;
    let mut summary = PutSummary::default();
    let mut call = Call::default();
    let mut lines = lines;
    let mut bytes = Vec::new();
    let mut number = 0u64;
    loop {
        bytes.clear();
        let read = lines
            .read_until(b'\n', &mut bytes)
            .map_err(|err| step("reading the records")(err))?;
        if read == 0 {
            break;
        }
        number += 1;
        let Ok(line) = std::str::from_utf8(&bytes) else {
            summary.refused.push((number, "not UTF-8 text".to_owned()));
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        match record_of(line, number, options.partition_key_field.as_deref()) {
            Ok(record) => {
                if !call.fits(&record) {
                    call.send(&stream, &mut summary).await?;
                    progress(summary.put);
                }
                call.push(record, number);
            }
            Err(why) => summary.refused.push((number, why)),
        }
    }
    call.send(&stream, &mut summary).await?;
    progress(summary.put);
    Ok(summary)
}

/// The record of one line, or why it is not one.
fn record_of(line: &str, number: u64, key_field: Option<&str>) -> Result<OutgoingRecord, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|err| format!("not JSON: {err}"))?;
    let partition_key = key_field
        .and_then(|field| value.get(field))
        .map(|key| match key {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        })
        .filter(|key| !key.is_empty())
        .unwrap_or_else(|| number.to_string());
    if partition_key.chars().count() > MAX_PARTITION_KEY_CHARS {
        return Err(format!(
            "partition key over Kinesis's {MAX_PARTITION_KEY_CHARS}-character limit"
        ));
    }
    let record = OutgoingRecord {
        partition_key,
        data: Bytes::from(line.trim().to_owned()),
    };
    let size = record.partition_key.len() + record.data.len();
    if size > MAX_RECORD_BYTES {
        return Err(format!(
            "{size} bytes, over Kinesis's {MAX_RECORD_BYTES}-byte record limit"
        ));
    }
    Ok(record)
}

/// The records of the next put call, with their line numbers.
#[derive(Debug, Default)]
struct Call {
    records: Vec<OutgoingRecord>,
    lines: Vec<u64>,
    bytes: usize,
}

impl Call {
    fn fits(&self, record: &OutgoingRecord) -> bool {
        self.records.len() < KINESIS_MAX_BATCH_RECORDS
            && self.bytes + record.partition_key.len() + record.data.len() <= MAX_CALL_BYTES
    }

    fn push(&mut self, record: OutgoingRecord, line: u64) {
        self.bytes += record.partition_key.len() + record.data.len();
        self.records.push(record);
        self.lines.push(line);
    }

    /// Puts the records, retrying those that failed (a busy database) a few times; a
    /// record that still fails is refused with the stream's reason.
    async fn send(
        &mut self,
        stream: &EmbeddedStream,
        summary: &mut PutSummary,
    ) -> Result<(), DemoError> {
        let (mut records, mut lines) = (
            std::mem::take(&mut self.records),
            std::mem::take(&mut self.lines),
        );
        self.bytes = 0;
        for attempt in 0..5 {
            if records.is_empty() {
                return Ok(());
            }
            let report = stream.put_records(&records).await;
            summary.put += report.succeeded.len() as u64;
            let failed: Vec<(usize, String, bool)> = report
                .failed
                .iter()
                .map(|f| (f.index, f.message.clone(), f.retryable))
                .collect();
            let mut again = (Vec::new(), Vec::new());
            for (index, message, retryable) in failed {
                if retryable && attempt < 4 {
                    again.0.push(records[index].clone());
                    again.1.push(lines[index]);
                } else {
                    summary.refused.push((lines[index], message));
                }
            }
            (records, lines) = again;
            if !records.is_empty() {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
        }
        Ok(())
    }
}

/// The stream `name` of the folder; fails when there is none: records put there would
/// reach nothing.
pub(crate) async fn existing_stream(
    db: EmbeddedDb,
    name: &str,
) -> Result<EmbeddedStream, DemoError> {
    if let Some(stream) = EmbeddedStream::open(db.clone(), name)
        .await
        .map_err(|err| step("opening the stream")(err))?
    {
        return Ok(stream);
    }
    Err(DemoError::Setup(no_such_stream(&db, name).await?))
}

/// Why records cannot go to stream `name`, naming the streams there are.
pub(crate) async fn no_such_stream(db: &EmbeddedDb, name: &str) -> Result<String, DemoError> {
    let streams = EmbeddedStream::names(db)
        .await
        .map_err(|err| step("listing the streams")(err))?;
    Ok(format!(
        "no stream {name:?} in this folder (it has: {}); start `processor dev` with the catalog that routes it, which creates it",
        if streams.is_empty() {
            "none".to_owned()
        } else {
            streams.join(", ")
        }
    ))
}
