//! The ingest-stream Lambda: Kinesis events → validated records → `records` work items on
//! the work queue.
//!
//! - [`kpl`] de-aggregates KPL records, [`decode`] decompresses and parses them;
//! - [`handler`] validates, quarantines, packs and sends a batch, and names the record to
//!   retry from;
//! - [`poller`] reads every shard of a stream like Lambda's event source mapping (tests,
//!   the local demo, `processor replay`);
//! - below: the Lambda event and response adapters for the binary.

pub mod decode;
pub mod handler;
pub mod kpl;
pub mod poller;

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};

use crate::handler::{BatchOutcome, IncomingRecord};

/// Why a Lambda event could not be read.
#[derive(Debug, thiserror::Error)]
#[error("Kinesis event record {index}: {reason}")]
pub struct EventError {
    pub index: usize,
    pub reason: String,
}

/// The records of a Lambda Kinesis event: stream from the source ARN, shard from the
/// event id (`shardId-…:sequence`).
pub fn incoming_records(event: KinesisEvent) -> Result<Vec<IncomingRecord>, EventError> {
    event
        .records
        .into_iter()
        .enumerate()
        .map(|(index, record)| {
            let error = |reason: &str| EventError {
                index,
                reason: reason.to_owned(),
            };
            let stream = record
                .event_source_arn
                .as_deref()
                .and_then(|arn| arn.rsplit_once(":stream/"))
                .map(|(_, name)| name.to_owned())
                .ok_or_else(|| error("no stream name in eventSourceARN"))?;
            let shard_id = record
                .event_id
                .as_deref()
                .and_then(|id| id.split_once(':'))
                .map(|(shard, _)| shard.to_owned())
                .ok_or_else(|| error("no shard id in eventID"))?;
            Ok(IncomingRecord {
                stream,
                shard_id,
                sequence_number: record.kinesis.sequence_number,
                arrival_ms: Some(
                    record
                        .kinesis
                        .approximate_arrival_timestamp
                        .0
                        .timestamp_millis(),
                ),
                data: record.kinesis.data.0,
            })
        })
        .collect()
}

/// The Lambda response: the record to retry from, if any (`ReportBatchItemFailures`).
pub fn lambda_response(outcome: &BatchOutcome) -> KinesisEventResponse {
    let mut response = KinesisEventResponse::default();
    if let Some(sequence) = &outcome.retry_from {
        let mut failure = KinesisBatchItemFailure::default();
        failure.item_identifier = Some(sequence.clone());
        response.batch_item_failures.push(failure);
    }
    response
}
