//! The record stream on Kinesis Data Streams.

use async_trait::async_trait;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use aws_smithy_types::DateTime;
use bytes::Bytes;

use super::*;
use crate::error::{Classify, Retryability, classify_sdk_error, is_retryable_service_code, report};
use crate::queue::plan_batches;
use crate::retry::{EntryFailure, EntryReport, RetryPolicy, retry_failed_entries};

/// A Kinesis data stream.
#[derive(Debug, Clone)]
pub struct KinesisStream {
    client: aws_sdk_kinesis::Client,
    name: String,
    retry: RetryPolicy,
}

impl KinesisStream {
    pub fn new(client: aws_sdk_kinesis::Client, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
            retry: RetryPolicy::default(),
        }
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    fn call_error<E>(
        &self,
        operation: &'static str,
        shard: Option<&str>,
        err: aws_sdk_kinesis::error::SdkError<E>,
    ) -> StreamError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        StreamError {
            operation,
            stream: self.name.clone(),
            shard: shard.map(str::to_owned),
            retryability: classify_sdk_error(&err),
            source: err.into(),
        }
    }

    async fn put_batch_once(&self, records: &[OutgoingRecord], indices: Vec<usize>) -> PutReport {
        let entries: Vec<PutRecordsRequestEntry> = indices
            .iter()
            .map(|&index| {
                PutRecordsRequestEntry::builder()
                    .partition_key(records[index].partition_key.clone())
                    .data(Blob::new(records[index].data.to_vec()))
                    .build()
                    .expect("partition key and data are set")
            })
            .collect();
        let result = self
            .client
            .put_records()
            .stream_name(&self.name)
            .set_records(Some(entries))
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(err) => {
                let code = err.code().unwrap_or("CallFailed").to_owned();
                let error = self.call_error("PutRecords", None, err);
                return EntryReport::all_failed(
                    &indices,
                    &code,
                    &report(&error),
                    error.is_retryable(),
                );
            }
        };
        // PutRecords answers in request order, one result per record.
        let mut report = PutReport::default();
        for (&index, result) in indices.iter().zip(output.records()) {
            match (
                result.shard_id(),
                result.sequence_number(),
                result.error_code(),
            ) {
                (Some(shard_id), Some(sequence_number), None) => report.succeeded.push((
                    index,
                    PutLocation {
                        shard_id: shard_id.to_owned(),
                        sequence_number: sequence_number.to_owned(),
                    },
                )),
                (_, _, code) => {
                    let code = code.unwrap_or("NoResult");
                    report.failed.push(EntryFailure {
                        index,
                        code: code.to_owned(),
                        message: result.error_message().unwrap_or_default().to_owned(),
                        retryable: is_retryable_service_code(code) || code == "NoResult",
                    });
                }
            }
        }
        report
    }
}

#[async_trait]
impl RecordStream for KinesisStream {
    fn name(&self) -> &str {
        &self.name
    }

    async fn put_records(&self, records: &[OutgoingRecord]) -> PutReport {
        let (sendable, too_large): (Vec<usize>, Vec<usize>) =
            (0..records.len()).partition(|&i| records[i].size() <= KINESIS_MAX_RECORD_BYTES);
        let mut report = EntryReport::all_failed(
            &too_large,
            "RecordTooLarge",
            &format!("record is over the {KINESIS_MAX_RECORD_BYTES}-byte limit"),
            false,
        );
        let sizes: Vec<usize> = sendable.iter().map(|&i| records[i].size()).collect();
        let (batches, _) = plan_batches(&sizes, KINESIS_MAX_BATCH_RECORDS, KINESIS_MAX_BATCH_BYTES);
        for batch in batches {
            let indices = batch
                .into_iter()
                .map(|position| sendable[position])
                .collect();
            report.merge(
                retry_failed_entries(&self.retry, indices, |indices| {
                    self.put_batch_once(records, indices)
                })
                .await,
            );
        }
        report.sort_by_index();
        report
    }

    async fn list_shards(&self) -> Result<Vec<ShardInfo>, StreamError> {
        let mut shards = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            // The stream name and a next token are mutually exclusive.
            let request = match &next_token {
                Some(token) => self.client.list_shards().next_token(token),
                None => self.client.list_shards().stream_name(&self.name),
            };
            let output = request
                .send()
                .await
                .map_err(|err| self.call_error("ListShards", None, err))?;
            for shard in output.shards() {
                let range = shard.sequence_number_range();
                shards.push(ShardInfo {
                    shard_id: shard.shard_id().to_owned(),
                    parent_shard_id: shard.parent_shard_id().map(str::to_owned),
                    adjacent_parent_shard_id: shard.adjacent_parent_shard_id().map(str::to_owned),
                    starting_sequence_number: range
                        .map(|r| r.starting_sequence_number().to_owned())
                        .unwrap_or_default(),
                    ending_sequence_number: range
                        .and_then(|r| r.ending_sequence_number())
                        .map(str::to_owned),
                });
            }
            match output.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                _ => break,
            }
        }
        Ok(shards)
    }

    async fn shard_iterator(
        &self,
        shard_id: &str,
        start: &StartPosition,
    ) -> Result<String, StreamError> {
        let mut request = self
            .client
            .get_shard_iterator()
            .stream_name(&self.name)
            .shard_id(shard_id);
        request = match start {
            StartPosition::TrimHorizon => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            StartPosition::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            StartPosition::AtSequenceNumber(seq) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(seq),
            StartPosition::AfterSequenceNumber(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
            StartPosition::AtTimestamp(time) => request
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(DateTime::from(*time)),
        };
        let output = request
            .send()
            .await
            .map_err(|err| self.call_error("GetShardIterator", Some(shard_id), err))?;
        output
            .shard_iterator()
            .map(str::to_owned)
            .ok_or_else(|| StreamError {
                operation: "GetShardIterator",
                stream: self.name.clone(),
                shard: Some(shard_id.to_owned()),
                source: "the service returned no iterator".into(),
                retryability: Retryability::Retryable,
            })
    }

    async fn get_records(&self, iterator: &str, limit: u32) -> Result<RecordsPage, StreamError> {
        let limit = i32::try_from(limit.clamp(1, 10_000)).expect("clamped to 10 000");
        let output = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await
            .map_err(|err| self.call_error("GetRecords", None, err))?;
        Ok(RecordsPage {
            records: output
                .records()
                .iter()
                .map(|record| ShardRecord {
                    sequence_number: record.sequence_number().to_owned(),
                    partition_key: record.partition_key().unwrap_or_default().to_owned(),
                    data: Bytes::copy_from_slice(record.data().as_ref()),
                    arrival_ms: record
                        .approximate_arrival_timestamp()
                        .and_then(|t| t.to_millis().ok()),
                })
                .collect(),
            next_iterator: output.next_shard_iterator().map(str::to_owned),
            millis_behind_latest: output.millis_behind_latest(),
        })
    }
}
