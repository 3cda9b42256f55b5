//! The record stream in the local platform's embedded database.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use md5::{Digest, Md5};
use rusqlite::{OptionalExtension, params};

use super::{
    KINESIS_MAX_RECORD_BYTES, OutgoingRecord, PutLocation, PutReport, RecordStream, RecordsPage,
    ShardInfo, ShardRecord, StartPosition, StreamError, epoch_millis,
};
use crate::embedded::{EmbeddedDb, EmbeddedError, entry_report, millis, now_ms, sql_error};
use crate::error::{Classify, Retryability};
use crate::retry::EntryReport;

/// Sequence numbers are zero-padded, so they also sort as text.
const SEQUENCE_DIGITS: usize = 20;

/// A stream of the embedded database: shards chosen by the MD5 of the partition key over
/// equal hash ranges (as Kinesis does), sequence numbers that grow with every put,
/// arrival timestamps, and retention.
#[derive(Debug, Clone)]
pub struct EmbeddedStream {
    db: EmbeddedDb,
    name: String,
    shard_count: u32,
    retention: Duration,
}

impl EmbeddedStream {
    /// Opens the stream, creating it with `shard_count` shards and `retention` when it
    /// does not exist yet (an existing stream keeps its own).
    pub async fn create(
        db: EmbeddedDb,
        name: impl Into<String>,
        shard_count: u32,
        retention: Duration,
    ) -> Result<Self, StreamError> {
        let name = name.into();
        let stream = name.clone();
        let shard_count = shard_count.max(1);
        db.call("creating the stream", move |conn| {
            conn.execute(
                "INSERT INTO streams (name, shard_count, retention_ms) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
                params![stream, shard_count, millis(retention)],
            )
            .map_err(sql_error("creating the stream"))
        })
        .await
        .map_err(|err| stream_error(&name, "CreateStream", None, err))?;
        Self::open(db, &name).await?.ok_or_else(|| StreamError {
            operation: "CreateStream",
            stream: name.clone(),
            shard: None,
            source: "the stream vanished right after it was created".into(),
            retryability: Retryability::Retryable,
        })
    }

    /// Opens the stream `name` if the database has it (never creates one).
    pub async fn open(db: EmbeddedDb, name: &str) -> Result<Option<Self>, StreamError> {
        let stream = name.to_owned();
        let found = db
            .call("opening the stream", move |conn| {
                conn.query_row(
                    "SELECT shard_count, retention_ms FROM streams WHERE name = ?1",
                    params![stream],
                    |row| Ok((row.get::<_, u32>(0)?, row.get::<_, i64>(1)?)),
                )
                .optional()
                .map_err(sql_error("opening the stream"))
            })
            .await
            .map_err(|err| stream_error(name, "DescribeStream", None, err))?;
        Ok(found.map(|(shard_count, retention_ms)| Self {
            db,
            name: name.to_owned(),
            shard_count: shard_count.max(1),
            retention: Duration::from_millis(retention_ms.unsigned_abs()),
        }))
    }

    /// The names of every stream in the database, sorted.
    pub async fn names(db: &EmbeddedDb) -> Result<Vec<String>, StreamError> {
        db.call("listing the streams", |conn| {
            let mut select = conn
                .prepare("SELECT name FROM streams ORDER BY name")
                .map_err(sql_error("listing the streams"))?;
            select
                .query_map(params![], |row| row.get(0))
                .and_then(Iterator::collect)
                .map_err(sql_error("listing the streams"))
        })
        .await
        .map_err(|err| stream_error("*", "ListStreams", None, err))
    }

    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// The hash keys shard `index` takes: equal ranges over the 128-bit key space, as
    /// Kinesis splits a new stream's.
    pub fn hash_key_range(&self, index: u32) -> (u128, u128) {
        let width = self.hash_range_width();
        let start = width.saturating_mul(u128::from(index));
        let end = if index + 1 >= self.shard_count {
            u128::MAX
        } else {
            start + width - 1
        };
        (start, end)
    }

    /// The width of each shard's hash key range (the last takes what remains).
    fn hash_range_width(&self) -> u128 {
        match self.shard_count {
            0 | 1 => u128::MAX,
            count => u128::MAX / u128::from(count) + 1,
        }
    }

    /// The id of shard `index` (`shardId-000000000000`), as Kinesis names shards.
    pub fn shard_id(index: u32) -> String {
        format!("shardId-{index:012}")
    }

    /// The shard of a hash key: the one whose range holds it.
    fn shard_for_hash(&self, hash: u128) -> String {
        let index = (hash / self.hash_range_width()).min(u128::from(self.shard_count - 1));
        Self::shard_id(u32::try_from(index).unwrap_or(self.shard_count - 1))
    }

    /// The shard of a partition key: by the MD5 of the key, as Kinesis maps it.
    fn shard_for(&self, partition_key: &str) -> String {
        let digest = Md5::digest(partition_key.as_bytes());
        self.shard_for_hash(u128::from_be_bytes(digest.into()))
    }

    /// Puts records like `put_records`, except that a record with an explicit hash key
    /// (`hash_keys[i]`, Kinesis's `ExplicitHashKey`) goes to the shard whose range holds
    /// it rather than the one of its partition key.
    pub async fn put_records_at(
        &self,
        records: &[OutgoingRecord],
        hash_keys: &[Option<u128>],
    ) -> PutReport {
        let shards = records
            .iter()
            .enumerate()
            .map(|(i, record)| match hash_keys.get(i).copied().flatten() {
                Some(hash) => self.shard_for_hash(hash),
                None => self.shard_for(&record.partition_key),
            })
            .collect();
        self.put_to_shards(records, shards).await
    }

    /// How many records the stream holds.
    pub async fn record_count(&self) -> Result<u64, StreamError> {
        let stream = self.name.clone();
        self.db
            .call("counting records", move |conn| {
                conn.query_row(
                    "SELECT count(*) FROM stream_records WHERE stream = ?1",
                    params![stream],
                    |row| row.get::<_, i64>(0),
                )
                .map(i64::unsigned_abs)
                .map_err(sql_error("counting records"))
            })
            .await
            .map_err(|err| self.error("DescribeStream", None, err))
    }

    /// The sequence number of each shard's newest record (shards without records are
    /// left out).
    pub async fn newest_sequences(
        &self,
    ) -> Result<std::collections::BTreeMap<String, String>, StreamError> {
        let stream = self.name.clone();
        self.db
            .call("reading the tip", move |conn| {
                let mut select = conn
                    .prepare_cached(
                        "SELECT shard_id, max(seq) FROM stream_records WHERE stream = ?1 GROUP BY shard_id",
                    )
                    .map_err(sql_error("reading the tip"))?;
                select
                    .query_map(params![stream], |row| {
                        Ok((row.get::<_, String>(0)?, sequence_text(row.get(1)?)))
                    })
                    .and_then(Iterator::collect)
                    .map_err(sql_error("reading the tip"))
            })
            .await
            .map_err(|err| self.error("DescribeStream", None, err))
    }

    /// Puts each record into the shard named for it, in one transaction.
    async fn put_to_shards(&self, records: &[OutgoingRecord], shards: Vec<String>) -> PutReport {
        let (sendable, too_large): (Vec<usize>, Vec<usize>) = (0..records.len()).partition(|&i| {
            records[i].partition_key.len() + records[i].data.len() <= KINESIS_MAX_RECORD_BYTES
        });
        let mut report = EntryReport::all_failed(
            &too_large,
            "RecordTooLarge",
            &format!("record is over the {KINESIS_MAX_RECORD_BYTES}-byte limit"),
            false,
        );
        let rows: Vec<(usize, String, String, Bytes)> = sendable
            .iter()
            .map(|&i| {
                let record = &records[i];
                (
                    i,
                    shards[i].clone(),
                    record.partition_key.clone(),
                    record.data.clone(),
                )
            })
            .collect();
        let stream = self.name.clone();
        let put = self
            .db
            .call("putting records", move |conn| {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql_error("putting records"))?;
                let now = now_ms();
                let retention: i64 = tx
                    .query_row(
                        "SELECT retention_ms FROM streams WHERE name = ?1",
                        params![stream],
                        |row| row.get(0),
                    )
                    .map_err(sql_error("putting records"))?;
                tx.execute(
                    "DELETE FROM stream_records WHERE stream = ?1 AND arrival_ms < ?2",
                    params![stream, now.saturating_sub(retention)],
                )
                .map_err(sql_error("trimming records past retention"))?;
                let mut locations = Vec::with_capacity(rows.len());
                {
                    let mut insert = tx
                        .prepare_cached(
                            "INSERT INTO stream_records (stream, shard_id, partition_key, data, arrival_ms)
                             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING seq",
                        )
                        .map_err(sql_error("putting records"))?;
                    for (index, shard_id, partition_key, data) in rows {
                        let seq: i64 = insert
                            .query_row(
                                params![stream, shard_id, partition_key, data.as_ref(), now],
                                |row| row.get(0),
                            )
                            .map_err(sql_error("putting records"))?;
                        locations.push((
                            index,
                            PutLocation {
                                shard_id,
                                sequence_number: sequence_text(seq),
                            },
                        ));
                    }
                }
                tx.commit().map_err(sql_error("putting records"))?;
                Ok(locations)
            })
            .await;
        report.merge(entry_report(&sendable, put));
        report.sort_by_index();
        report
    }

    fn error(
        &self,
        operation: &'static str,
        shard: Option<&str>,
        err: EmbeddedError,
    ) -> StreamError {
        stream_error(&self.name, operation, shard, err)
    }

    fn bad_iterator(&self, iterator: &str) -> StreamError {
        StreamError {
            operation: "GetRecords",
            stream: self.name.clone(),
            shard: None,
            source: format!("invalid shard iterator {iterator:?}").into(),
            retryability: Retryability::Permanent,
        }
    }
}

fn stream_error(
    stream: &str,
    operation: &'static str,
    shard: Option<&str>,
    err: EmbeddedError,
) -> StreamError {
    StreamError {
        operation,
        stream: stream.to_owned(),
        shard: shard.map(str::to_owned),
        retryability: err.retryability(),
        source: Box::new(err),
    }
}

fn sequence_text(seq: i64) -> String {
    format!("{seq:0width$}", width = SEQUENCE_DIGITS)
}

/// An iterator names a shard and the last sequence number already read.
fn encode_iterator(shard_id: &str, after: i64) -> String {
    format!("{shard_id}/{after}")
}

fn decode_iterator(iterator: &str) -> Option<(&str, i64)> {
    let (shard, after) = iterator.rsplit_once('/')?;
    Some((shard, after.parse().ok()?))
}

#[async_trait]
impl RecordStream for EmbeddedStream {
    fn name(&self) -> &str {
        &self.name
    }

    async fn put_records(&self, records: &[OutgoingRecord]) -> PutReport {
        self.put_records_at(records, &[]).await
    }

    async fn list_shards(&self) -> Result<Vec<ShardInfo>, StreamError> {
        Ok((0..self.shard_count)
            .map(|index| ShardInfo {
                shard_id: Self::shard_id(index),
                parent_shard_id: None,
                adjacent_parent_shard_id: None,
                starting_sequence_number: sequence_text(0),
                ending_sequence_number: None,
            })
            .collect())
    }

    async fn shard_iterator(
        &self,
        shard_id: &str,
        start: &StartPosition,
    ) -> Result<String, StreamError> {
        let known = (0..self.shard_count).any(|index| Self::shard_id(index) == shard_id);
        if !known {
            return Err(StreamError {
                operation: "GetShardIterator",
                stream: self.name.clone(),
                shard: Some(shard_id.to_owned()),
                source: "no such shard".into(),
                retryability: Retryability::Permanent,
            });
        }
        let parse = |seq: &str| -> Result<i64, StreamError> {
            seq.parse().map_err(|_| StreamError {
                operation: "GetShardIterator",
                stream: self.name.clone(),
                shard: Some(shard_id.to_owned()),
                source: format!("invalid sequence number {seq:?}").into(),
                retryability: Retryability::Permanent,
            })
        };
        let after = match start {
            StartPosition::TrimHorizon => 0,
            StartPosition::AfterSequenceNumber(seq) => parse(seq)?,
            StartPosition::AtSequenceNumber(seq) => parse(seq)?.saturating_sub(1),
            StartPosition::Latest | StartPosition::AtTimestamp(_) => {
                let (stream, shard) = (self.name.clone(), shard_id.to_owned());
                let at = match start {
                    StartPosition::AtTimestamp(time) => Some(epoch_millis(*time)),
                    _ => None,
                };
                self.db
                    .call("positioning an iterator", move |conn| {
                        let found: Option<i64> = match at {
                            // Just before the first record that arrived at or after `at`.
                            Some(at) => conn
                                .query_row(
                                    "SELECT min(seq) - 1 FROM stream_records WHERE stream = ?1 AND shard_id = ?2 AND arrival_ms >= ?3",
                                    params![stream, shard, at],
                                    |row| row.get(0),
                                )
                                .optional()
                                .map_err(sql_error("positioning an iterator"))?
                                .flatten()
                                // Nothing that late yet: everything so far is before it.
                                .or(conn
                                    .query_row("SELECT max(seq) FROM stream_records", [], |row| row.get(0))
                                    .map_err(sql_error("positioning an iterator"))?),
                            None => conn
                                .query_row("SELECT max(seq) FROM stream_records", [], |row| row.get(0))
                                .map_err(sql_error("positioning an iterator"))?,
                        };
                        Ok(found.unwrap_or(0))
                    })
                    .await
                    .map_err(|err| self.error("GetShardIterator", Some(shard_id), err))?
            }
        };
        Ok(encode_iterator(shard_id, after))
    }

    async fn get_records(&self, iterator: &str, limit: u32) -> Result<RecordsPage, StreamError> {
        let (shard, after) =
            decode_iterator(iterator).ok_or_else(|| self.bad_iterator(iterator))?;
        let (stream, shard_id) = (self.name.clone(), shard.to_owned());
        let limit = limit.clamp(1, 10_000);
        let (records, behind) = self
            .db
            .call("reading records", move |conn| {
                let mut select = conn
                    .prepare_cached(
                        "SELECT seq, partition_key, data, arrival_ms FROM stream_records
                         WHERE stream = ?1 AND shard_id = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
                    )
                    .map_err(sql_error("reading records"))?;
                let records: Vec<(i64, String, Vec<u8>, i64)> = select
                    .query_map(params![stream, shard_id, after, limit], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                    })
                    .and_then(Iterator::collect)
                    .map_err(sql_error("reading records"))?;
                let last = records.last().map_or(after, |r| r.0);
                // How far the page ends from the tip: the age of the next unread record.
                let next_arrival: Option<i64> = conn
                    .query_row(
                        "SELECT arrival_ms FROM stream_records WHERE stream = ?1 AND shard_id = ?2 AND seq > ?3 ORDER BY seq LIMIT 1",
                        params![stream, shard_id, last],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(sql_error("reading records"))?;
                let behind = next_arrival.map_or(0, |at| now_ms().saturating_sub(at).max(1));
                Ok((records, behind))
            })
            .await
            .map_err(|err| self.error("GetRecords", Some(shard), err))?;
        let last = records.last().map_or(after, |r| r.0);
        Ok(RecordsPage {
            records: records
                .into_iter()
                .map(|(seq, partition_key, data, arrival_ms)| ShardRecord {
                    sequence_number: sequence_text(seq),
                    partition_key,
                    data: Bytes::from(data),
                    arrival_ms: Some(arrival_ms),
                })
                .collect(),
            next_iterator: Some(encode_iterator(shard, last)),
            millis_behind_latest: Some(behind),
        })
    }
}
