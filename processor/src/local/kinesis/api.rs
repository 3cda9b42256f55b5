//! The Kinesis Data Streams calls a producer makes (`PutRecord`, `PutRecords`,
//! `ListShards`, `DescribeStreamSummary`, `DescribeStream`, `ListStreams`), in Kinesis's
//! JSON 1.1 protocol, over the local platform's stream, with Kinesis's limits and error
//! codes.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use shared::stream::{
    EmbeddedStream, KINESIS_MAX_BATCH_BYTES as MAX_CALL_BYTES, KINESIS_MAX_BATCH_RECORDS,
    KINESIS_MAX_PARTITION_KEY_CHARS as MAX_PARTITION_KEY_CHARS,
    KINESIS_MAX_RECORD_BYTES as MAX_RECORD_BYTES, OutgoingRecord, PutReport, RecordStream,
};

/// The account the local streams' ARNs name.
const ACCOUNT: &str = "000000000000";
const REGION: &str = "us-east-1";

/// A call that failed as a whole, as Kinesis reports it: an error code (`__type`) and a
/// message; `server_fault` answers 500 (the SDKs retry it), otherwise 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: &'static str,
    pub message: String,
    pub server_fault: bool,
}

impl ApiError {
    pub(crate) fn client(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            server_fault: false,
        }
    }

    fn validation(message: impl Into<String>) -> Self {
        Self::client("ValidationException", message)
    }

    fn invalid_argument(message: impl Into<String>) -> Self {
        Self::client("InvalidArgumentException", message)
    }

    fn internal(message: impl Into<String>) -> Self {
        Self {
            code: "InternalFailure",
            message: message.into(),
            server_fault: true,
        }
    }
}

/// The streams a running local platform reads, by name.
#[derive(Debug, Clone)]
pub struct KinesisApi {
    streams: BTreeMap<String, EmbeddedStream>,
    /// When the endpoint opened: the streams' creation time as far as callers can tell.
    opened: SystemTime,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StreamRef {
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutRecordInput {
    #[serde(flatten)]
    stream: StreamRef,
    #[serde(flatten)]
    record: RecordInput,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RecordInput {
    data: String,
    partition_key: String,
    explicit_hash_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutRecordsInput {
    #[serde(flatten)]
    stream: StreamRef,
    records: Vec<RecordInput>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListShardsInput {
    #[serde(flatten)]
    stream: StreamRef,
    next_token: Option<String>,
    max_results: Option<i64>,
    exclusive_start_shard_id: Option<String>,
}

impl KinesisApi {
    pub fn new(streams: impl IntoIterator<Item = EmbeddedStream>) -> Self {
        Self {
            streams: streams
                .into_iter()
                .map(|stream| (stream.name().to_owned(), stream))
                .collect(),
            opened: SystemTime::now(),
        }
    }

    /// The names of the streams served.
    pub fn stream_names(&self) -> Vec<String> {
        self.streams.keys().cloned().collect()
    }

    /// Answers one call: `operation` is the `X-Amz-Target` after `Kinesis_20131202.`.
    pub async fn call(&self, operation: &str, body: &[u8]) -> Result<Value, ApiError> {
        match operation {
            "PutRecord" => self.put_record(parse(body)?).await,
            "PutRecords" => self.put_records(parse(body)?).await,
            "ListShards" => self.list_shards(parse(body)?),
            "DescribeStreamSummary" => self.describe_stream_summary(&parse(body)?),
            "DescribeStream" => self.describe_stream(&parse(body)?),
            "ListStreams" => Ok(self.list_streams()),
            other => Err(ApiError::client(
                "UnknownOperationException",
                format!(
                    "{other} is not served by the local endpoint (it serves PutRecord, PutRecords, ListShards, DescribeStreamSummary, DescribeStream, ListStreams)"
                ),
            )),
        }
    }

    fn stream(&self, reference: &StreamRef) -> Result<&EmbeddedStream, ApiError> {
        let from_arn = match &reference.stream_arn {
            Some(arn) => Some(stream_of_arn(arn)?),
            None => None,
        };
        let name = match (reference.stream_name.as_deref(), from_arn) {
            (Some(name), Some(arn_name)) if name != arn_name => {
                return Err(ApiError::invalid_argument(format!(
                    "StreamName {name:?} and StreamARN name different streams"
                )));
            }
            (Some(name), _) => name,
            (None, Some(arn_name)) => arn_name,
            (None, None) => {
                return Err(ApiError::validation(
                    "Either StreamName or StreamARN should be provided.",
                ));
            }
        };
        self.streams.get(name).ok_or_else(|| {
            ApiError::client(
                "ResourceNotFoundException",
                format!(
                    "Stream {name} under account {ACCOUNT} not found. This local endpoint serves: {}.",
                    self.stream_names().join(", ")
                ),
            )
        })
    }

    async fn put_record(&self, input: PutRecordInput) -> Result<Value, ApiError> {
        let stream = self.stream(&input.stream)?;
        let (record, hash_key) = outgoing(&input.record, None)?;
        let report = stream.put_records_at(&[record], &[hash_key]).await;
        if let Some(failure) = report.failed.first() {
            return Err(ApiError::internal(failure.message.clone()));
        }
        let (_, location) = report
            .succeeded
            .first()
            .ok_or_else(|| ApiError::internal("the record was neither put nor refused"))?;
        Ok(json!({
            "ShardId": location.shard_id,
            "SequenceNumber": location.sequence_number,
            "EncryptionType": "NONE",
        }))
    }

    async fn put_records(&self, input: PutRecordsInput) -> Result<Value, ApiError> {
        let stream = self.stream(&input.stream)?;
        if input.records.is_empty() || input.records.len() > KINESIS_MAX_BATCH_RECORDS {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value with {} records at 'records' failed to satisfy constraint: Member must have length less than or equal to {KINESIS_MAX_BATCH_RECORDS} and greater than or equal to 1",
                input.records.len()
            )));
        }
        let mut records = Vec::with_capacity(input.records.len());
        let mut hash_keys = Vec::with_capacity(input.records.len());
        for (index, entry) in input.records.iter().enumerate() {
            let (record, hash_key) = outgoing(entry, Some(index))?;
            records.push(record);
            hash_keys.push(hash_key);
        }
        let bytes: usize = records
            .iter()
            .map(|r| r.partition_key.len() + r.data.len())
            .sum();
        if bytes > MAX_CALL_BYTES {
            return Err(ApiError::invalid_argument(format!(
                "Records size {bytes} bytes (data and partition keys) exceeds the {MAX_CALL_BYTES}-byte limit of one PutRecords request"
            )));
        }
        let report = stream.put_records_at(&records, &hash_keys).await;
        Ok(put_records_output(records.len(), &report))
    }

    fn list_shards(&self, input: ListShardsInput) -> Result<Value, ApiError> {
        // A next token names the stream and the last shard listed (Kinesis forbids a
        // stream name next to it).
        let (stream, after) = match input.next_token.as_deref() {
            Some(token) => {
                if input.stream.stream_name.is_some() || input.stream.stream_arn.is_some() {
                    return Err(ApiError::invalid_argument(
                        "NextToken and StreamName cannot be provided together.",
                    ));
                }
                let (name, after) = token.rsplit_once('|').ok_or_else(|| {
                    ApiError::invalid_argument(format!("invalid NextToken {token:?}"))
                })?;
                let stream = self.stream(&StreamRef {
                    stream_name: Some(name.to_owned()),
                    stream_arn: None,
                })?;
                (stream, Some(after.to_owned()))
            }
            None => (
                self.stream(&input.stream)?,
                input.exclusive_start_shard_id.clone(),
            ),
        };
        let limit = match input.max_results {
            None => 1000,
            Some(n @ 1..=10_000) => usize::try_from(n).unwrap_or(1000),
            Some(n) => {
                return Err(ApiError::validation(format!(
                    "1 validation error detected: Value '{n}' at 'maxResults' failed to satisfy constraint: Member must have value between 1 and 10000"
                )));
            }
        };
        let shards: Vec<Value> = shards(stream)
            .into_iter()
            .filter(|(id, _)| after.as_deref().is_none_or(|after| id.as_str() > after))
            .map(|(_, shard)| shard)
            .collect();
        let more = shards.len() > limit;
        let page: Vec<Value> = shards.into_iter().take(limit).collect();
        let mut output = json!({ "Shards": page });
        if more && let Some(last) = page.last().and_then(|s| s["ShardId"].as_str()) {
            output["NextToken"] = Value::String(format!("{}|{last}", stream.name()));
        }
        Ok(output)
    }

    fn describe_stream_summary(&self, input: &StreamRef) -> Result<Value, ApiError> {
        let stream = self.stream(input)?;
        let mut summary = self.description(stream);
        summary["OpenShardCount"] = json!(stream.shard_count());
        summary["ConsumerCount"] = json!(0);
        Ok(json!({ "StreamDescriptionSummary": summary }))
    }

    fn describe_stream(&self, input: &StreamRef) -> Result<Value, ApiError> {
        let stream = self.stream(input)?;
        let mut description = self.description(stream);
        description["Shards"] = Value::Array(shards(stream).into_iter().map(|(_, s)| s).collect());
        description["HasMoreShards"] = json!(false);
        Ok(json!({ "StreamDescription": description }))
    }

    fn list_streams(&self) -> Value {
        let names = self.stream_names();
        let summaries: Vec<Value> = self
            .streams
            .values()
            .map(|stream| {
                json!({
                    "StreamName": stream.name(),
                    "StreamARN": arn(stream.name()),
                    "StreamStatus": "ACTIVE",
                    "StreamModeDetails": { "StreamMode": "PROVISIONED" },
                    "StreamCreationTimestamp": epoch_seconds(self.opened),
                })
            })
            .collect();
        json!({ "StreamNames": names, "HasMoreStreams": false, "StreamSummaries": summaries })
    }

    /// What `DescribeStream` and `DescribeStreamSummary` share.
    fn description(&self, stream: &EmbeddedStream) -> Value {
        json!({
            "StreamName": stream.name(),
            "StreamARN": arn(stream.name()),
            "StreamStatus": "ACTIVE",
            "StreamModeDetails": { "StreamMode": "PROVISIONED" },
            "RetentionPeriodHours": stream.retention().as_secs() / 3600,
            "StreamCreationTimestamp": epoch_seconds(self.opened),
            "EnhancedMonitoring": [{ "ShardLevelMetrics": [] }],
            "EncryptionType": "NONE",
        })
    }
}

/// The body of a call, or Kinesis's error for one that does not read: malformed JSON is a
/// `SerializationException`, a missing or mistyped member a `ValidationException`.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|err| {
        if err.is_syntax() || err.is_eof() {
            ApiError::client("SerializationException", format!("malformed JSON: {err}"))
        } else {
            ApiError::validation(format!("1 validation error detected: {err}"))
        }
    })
}

/// A record of a call, checked against Kinesis's limits; `index` names it in a
/// `PutRecords` call.
fn outgoing(
    entry: &RecordInput,
    index: Option<usize>,
) -> Result<(OutgoingRecord, Option<u128>), ApiError> {
    let at = |member: &str| match index {
        Some(i) => format!("'records.{}.member.{member}'", i + 1),
        None => format!("'{member}'"),
    };
    let keys = entry.partition_key.chars().count();
    if !(1..=MAX_PARTITION_KEY_CHARS).contains(&keys) {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value at {} failed to satisfy constraint: Member must have length less than or equal to {MAX_PARTITION_KEY_CHARS} and greater than or equal to 1",
            at("partitionKey")
        )));
    }
    let data = aws_smithy_types::base64::decode(&entry.data).map_err(|_| {
        ApiError::client(
            "SerializationException",
            format!("{} is not base64", at("data")),
        )
    })?;
    let size = data.len() + entry.partition_key.len();
    if size > MAX_RECORD_BYTES {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value at {} failed to satisfy constraint: the record is {size} bytes (data and partition key), over the {MAX_RECORD_BYTES}-byte limit",
            at("data")
        )));
    }
    let hash_key = match entry.explicit_hash_key.as_deref() {
        None => None,
        Some(text) => Some(hash_key(text).ok_or_else(|| {
            ApiError::invalid_argument(format!(
                "Invalid ExplicitHashKey {text:?} at {}: it must be a decimal integer from 0 to 2^128 - 1",
                at("explicitHashKey")
            ))
        })?),
    };
    let record = OutgoingRecord {
        partition_key: entry.partition_key.clone(),
        data: Bytes::from(data),
    };
    Ok((record, hash_key))
}

/// An `ExplicitHashKey`: decimal digits only, below 2^128.
fn hash_key(text: &str) -> Option<u128> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `PutRecords`'s answer: one entry per record in the caller's order, a sequence number
/// and shard for each record put, an error code and message for each that was not (the
/// caller puts those again).
pub(crate) fn put_records_output(count: usize, report: &PutReport) -> Value {
    let mut entries = vec![Value::Null; count];
    for (index, location) in &report.succeeded {
        if let Some(entry) = entries.get_mut(*index) {
            *entry = json!({
                "SequenceNumber": location.sequence_number,
                "ShardId": location.shard_id,
            });
        }
    }
    for failure in &report.failed {
        if let Some(entry) = entries.get_mut(failure.index) {
            *entry = json!({ "ErrorCode": "InternalFailure", "ErrorMessage": failure.message });
        }
    }
    let failed = entries
        .iter()
        .filter(|entry| entry.get("SequenceNumber").is_none())
        .count();
    for entry in &mut entries {
        if entry.is_null() {
            *entry = json!({ "ErrorCode": "InternalFailure", "ErrorMessage": "not put" });
        }
    }
    json!({ "FailedRecordCount": failed, "Records": entries, "EncryptionType": "NONE" })
}

/// Every shard of the stream as `ListShards` lists it, with its id.
fn shards(stream: &EmbeddedStream) -> Vec<(String, Value)> {
    (0..stream.shard_count())
        .map(|index| {
            let id = EmbeddedStream::shard_id(index);
            let (start, end) = stream.hash_key_range(index);
            let shard = json!({
                "ShardId": id,
                "HashKeyRange": {
                    "StartingHashKey": start.to_string(),
                    "EndingHashKey": end.to_string(),
                },
                "SequenceNumberRange": { "StartingSequenceNumber": "0" },
            });
            (id, shard)
        })
        .collect()
}

fn arn(stream: &str) -> String {
    format!("arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{stream}")
}

/// The stream an ARN names (`arn:aws:kinesis:REGION:ACCOUNT:stream/NAME`).
fn stream_of_arn(arn: &str) -> Result<&str, ApiError> {
    arn.strip_prefix("arn:")
        .and_then(|rest| rest.split_once(":stream/"))
        .map(|(_, name)| name)
        .filter(|name| !name.is_empty())
        .ok_or_else(|| ApiError::invalid_argument(format!("{arn:?} is not a stream ARN")))
}

fn epoch_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64().floor())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::retry::{EntryFailure, EntryReport};
    use shared::stream::PutLocation;

    #[test]
    fn put_records_output_keeps_the_callers_order_and_counts_failures() {
        let report: PutReport = EntryReport {
            succeeded: vec![(
                1,
                PutLocation {
                    shard_id: "shardId-000000000001".to_owned(),
                    sequence_number: "7".to_owned(),
                },
            )],
            failed: vec![EntryFailure {
                index: 0,
                code: "Sql".to_owned(),
                message: "database is locked".to_owned(),
                retryable: true,
            }],
        };
        let output = put_records_output(3, &report);
        assert_eq!(output["FailedRecordCount"], 2);
        assert_eq!(output["Records"][0]["ErrorCode"], "InternalFailure");
        assert_eq!(output["Records"][0]["ErrorMessage"], "database is locked");
        assert_eq!(output["Records"][1]["SequenceNumber"], "7");
        assert_eq!(output["Records"][2]["ErrorCode"], "InternalFailure");
    }

    #[test]
    fn hash_keys_are_decimal_and_below_two_to_the_128() {
        assert_eq!(hash_key("0"), Some(0));
        assert_eq!(
            hash_key("340282366920938463463374607431768211455"),
            Some(u128::MAX)
        );
        assert_eq!(hash_key("340282366920938463463374607431768211456"), None);
        assert_eq!(hash_key("-1"), None);
        assert_eq!(hash_key("0x10"), None);
        assert_eq!(hash_key(""), None);
    }

    #[test]
    fn stream_arns_name_their_stream() {
        assert_eq!(
            stream_of_arn("arn:aws:kinesis:eu-west-1:123456789012:stream/orders"),
            Ok("orders")
        );
        assert!(stream_of_arn("orders").is_err());
        assert!(stream_of_arn("arn:aws:kinesis:eu-west-1:1:stream/").is_err());
    }

    #[test]
    fn records_over_kinesis_limits_are_refused_with_its_codes() {
        let record = |key: &str, bytes: usize| RecordInput {
            data: aws_smithy_types::base64::encode(vec![b'x'; bytes]),
            partition_key: key.to_owned(),
            explicit_hash_key: None,
        };
        assert!(outgoing(&record("k", 1024 * 1024 - 1), None).is_ok());
        let over = outgoing(&record("k", 1024 * 1024), Some(4)).expect_err("over 1 MiB");
        assert_eq!(over.code, "ValidationException");
        assert!(over.message.contains("'records.5.member.data'"), "{over:?}");
        let key = outgoing(&record("", 1), None).expect_err("empty key");
        assert_eq!(key.code, "ValidationException");
        let long_key = "k".repeat(257);
        assert!(outgoing(&record(&long_key, 1), None).is_err());
        let not_base64 = RecordInput {
            data: "not base64!".to_owned(),
            partition_key: "k".to_owned(),
            explicit_hash_key: None,
        };
        assert_eq!(
            outgoing(&not_base64, None).expect_err("bad data").code,
            "SerializationException"
        );
    }
}
