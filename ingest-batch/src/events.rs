//! What an invocation carries: S3 event notifications (`Records` of `ObjectCreated:*`),
//! S3 events delivered through EventBridge (`Object Created`), or the `s3:TestEvent` S3
//! sends when a notification is configured. Each becomes a list of created objects with
//! decoded keys, plus the entries that were left out on purpose and why.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::s3::S3Event;
use serde::Deserialize;
use serde_json::Value;

use crate::keys::decode_event_key;

/// One object S3 reported as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedObject {
    pub bucket: String,
    /// Decoded: the key `GetObject` needs.
    pub key: String,
    pub size: u64,
    /// Without quotes.
    pub etag: String,
    pub version_id: Option<String>,
    /// When S3 created it (milliseconds since the Unix epoch), for latency metrics.
    pub event_time_ms: Option<i64>,
    /// The key exactly as an EventBridge event carried it, when decoding changed it.
    /// EventBridge's documentation does not say whether its keys are URL-encoded as
    /// notifications' are, so a key with `+` or `%` is checked against the bucket (see
    /// `FileIngest`) before either form is trusted.
    pub undecoded_key: Option<String>,
}

/// Why an entry of an invocation, or an object, produced no work item. Each is counted
/// and logged; none fails the invocation, since retrying could not change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// `s3:TestEvent`, sent when a notification is configured.
    TestEvent,
    /// An event of another kind (`ObjectRemoved:*`, `Object Deleted`, …).
    NotObjectCreated,
    /// The key does not decode (bad `%` escape, not UTF-8), or the record lacks a field.
    Malformed,
    /// A zero-byte key ending in `/`, as the console creates for "folders".
    FolderMarker,
    /// A zero-byte object: nothing to load.
    EmptyObject,
    /// No dataset's route matches the key.
    Unrouted,
    /// The object was deleted or overwritten before it could be planned; the newer
    /// version has its own event.
    Gone,
}

impl SkipReason {
    /// The metric label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::TestEvent => "test_event",
            SkipReason::NotObjectCreated => "not_object_created",
            SkipReason::Malformed => "malformed",
            SkipReason::FolderMarker => "folder_marker",
            SkipReason::EmptyObject => "empty_object",
            SkipReason::Unrouted => "unrouted",
            SkipReason::Gone => "gone",
        }
    }
}

/// An entry left out, with what identifies it for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub reason: SkipReason,
    pub detail: String,
}

/// An invocation, read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Notifications {
    pub created: Vec<CreatedObject>,
    pub skipped: Vec<Skipped>,
}

/// The payload is none of the event shapes this function accepts: a wiring mistake,
/// reported as an error so it shows up in the function's error metrics.
#[derive(Debug, thiserror::Error)]
#[error(
    "the invocation payload is not an S3 event notification, an EventBridge S3 event or an s3:TestEvent (read as {read_as})"
)]
pub struct PayloadError {
    /// The shape the payload was read as when it failed.
    pub read_as: &'static str,
    pub source: shared::error::BoxError,
}

/// The `detail` of an EventBridge `Object Created` event.
#[derive(Debug, Deserialize)]
struct ObjectCreatedDetail {
    bucket: NamedBucket,
    object: DetailObject,
}

#[derive(Debug, Deserialize)]
struct NamedBucket {
    name: String,
}

#[derive(Debug, Deserialize)]
struct DetailObject {
    key: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default, rename = "version-id")]
    version_id: Option<String>,
}

/// Reads an invocation payload.
pub(crate) fn read_payload(payload: Value) -> Result<Notifications, PayloadError> {
    if payload.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Notifications {
            created: Vec::new(),
            skipped: vec![Skipped {
                reason: SkipReason::TestEvent,
                detail: payload
                    .get("Bucket")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            }],
        });
    }
    if payload.get("Records").is_some() {
        return read_s3_notification(payload);
    }
    if payload.get("detail-type").is_some() {
        return read_eventbridge(payload);
    }
    Err(PayloadError {
        read_as: "an event",
        source: "it has neither \"Records\" nor \"detail-type\"".into(),
    })
}

/// Fields S3 always sends but emulators and hand-made events may leave out; the event
/// type requires them, and nothing here reads them.
const OPTIONAL_RECORD_FIELDS: [&str; 2] = ["userIdentity", "requestParameters"];

fn read_s3_notification(mut payload: Value) -> Result<Notifications, PayloadError> {
    if let Some(records) = payload.get_mut("Records").and_then(Value::as_array_mut) {
        for record in records.iter_mut().filter_map(Value::as_object_mut) {
            for field in OPTIONAL_RECORD_FIELDS {
                record
                    .entry(field)
                    .or_insert_with(|| Value::Object(serde_json::Map::new()));
            }
        }
    }
    let event: S3Event = serde_json::from_value(payload).map_err(|err| PayloadError {
        read_as: "an S3 event notification",
        source: err.into(),
    })?;
    let mut notifications = Notifications::default();
    for record in event.records {
        let event_name = record.event_name.clone().unwrap_or_default();
        let bucket = record.s3.bucket.name.clone().unwrap_or_default();
        let encoded_key = record.s3.object.key.clone().unwrap_or_default();
        if !event_name.starts_with("ObjectCreated:") {
            notifications.skipped.push(Skipped {
                reason: SkipReason::NotObjectCreated,
                detail: format!("{event_name} s3://{bucket}/{encoded_key}"),
            });
            continue;
        }
        let key = decode_event_key(&encoded_key).map_err(|err| err.to_string());
        let object = created_object(
            bucket,
            &encoded_key,
            key,
            record.s3.object.size.and_then(|n| u64::try_from(n).ok()),
            record.s3.object.e_tag.clone(),
            record.s3.object.version_id.clone(),
            Some(record.event_time.timestamp_millis()),
        );
        match object {
            Ok(object) => notifications.created.push(object),
            Err(skipped) => notifications.skipped.push(skipped),
        }
    }
    Ok(notifications)
}

fn read_eventbridge(payload: Value) -> Result<Notifications, PayloadError> {
    let event: EventBridgeEvent<Value> =
        serde_json::from_value(payload).map_err(|err| PayloadError {
            read_as: "an EventBridge event",
            source: err.into(),
        })?;
    let mut notifications = Notifications::default();
    if event.source != "aws.s3" || event.detail_type != "Object Created" {
        notifications.skipped.push(Skipped {
            reason: SkipReason::NotObjectCreated,
            detail: format!("{} / {}", event.source, event.detail_type),
        });
        return Ok(notifications);
    }
    let detail: ObjectCreatedDetail =
        serde_json::from_value(event.detail).map_err(|err| PayloadError {
            read_as: "an EventBridge Object Created detail",
            source: err.into(),
        })?;
    // EventBridge's pages do not say whether the key is URL-encoded like a notification's:
    // decode it when it decodes, keep the raw form for the bucket check when they differ.
    let raw_key = detail.object.key;
    let (key, undecoded_key) = match decode_event_key(&raw_key) {
        Ok(decoded) if decoded != raw_key => (Ok(decoded), Some(raw_key.clone())),
        Ok(decoded) => (Ok(decoded), None),
        Err(_) if !raw_key.is_empty() => (Ok(raw_key.clone()), None),
        Err(err) => (Err(err.to_string()), None),
    };
    let object = created_object(
        detail.bucket.name,
        &raw_key,
        key,
        detail.object.size,
        detail.object.etag,
        detail.object.version_id,
        event.time.map(|t| t.timestamp_millis()),
    );
    match object {
        Ok(object) => notifications.created.push(CreatedObject {
            undecoded_key,
            ..object
        }),
        Err(skipped) => notifications.skipped.push(skipped),
    }
    Ok(notifications)
}

fn created_object(
    bucket: String,
    encoded_key: &str,
    key: Result<String, String>,
    size: Option<u64>,
    etag: Option<String>,
    version_id: Option<String>,
    event_time_ms: Option<i64>,
) -> Result<CreatedObject, Skipped> {
    let malformed = |why: String| Skipped {
        reason: SkipReason::Malformed,
        detail: format!("s3://{bucket}/{encoded_key}: {why}"),
    };
    if bucket.is_empty() {
        return Err(malformed("the record names no bucket".into()));
    }
    let key = key.map_err(malformed)?;
    let etag = etag
        .map(|e| shared::envelope::normalize_etag(&e))
        .filter(|e| !e.is_empty())
        .ok_or_else(|| malformed("the record has no eTag".into()))?;
    Ok(CreatedObject {
        bucket,
        key,
        size: size.unwrap_or(0),
        etag,
        version_id: version_id.filter(|v| !v.is_empty() && v != "null"),
        event_time_ms,
        undecoded_key: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(event_name: &str, key: &str, size: u64) -> Value {
        json!({
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-east-1",
            "eventTime": "2026-11-24T10:00:00.000Z",
            "eventName": event_name,
            "s3": {
                "s3SchemaVersion": "1.0",
                "bucket": {"name": "landing", "arn": "arn:aws:s3:::landing"},
                "object": {"key": key, "size": size, "eTag": "\"0123abcd\"", "versionId": "v1"}
            }
        })
    }

    #[test]
    fn s3_notifications_decode_keys_and_keep_optional_fields_optional() {
        let payload = json!({"Records": [
            record("ObjectCreated:Put", "landing/orders/d%C3%A9j%C3%A0+vu+%2B1.jsonl", 10),
            record("ObjectRemoved:Delete", "landing/orders/x.jsonl", 0),
            record("ObjectCreated:Put", "bad%zz", 10),
        ]});
        let read = read_payload(payload).expect("an S3 notification");
        assert_eq!(
            read.created,
            vec![CreatedObject {
                bucket: "landing".into(),
                key: "landing/orders/déjà vu +1.jsonl".into(),
                size: 10,
                etag: "0123abcd".into(),
                version_id: Some("v1".into()),
                event_time_ms: Some(1_795_514_400_000),
                undecoded_key: None,
            }]
        );
        let reasons: Vec<SkipReason> = read.skipped.iter().map(|s| s.reason).collect();
        assert_eq!(
            reasons,
            [SkipReason::NotObjectCreated, SkipReason::Malformed]
        );
        assert!(
            read.skipped[1].detail.contains("bad%zz"),
            "{:?}",
            read.skipped
        );
    }

    #[test]
    fn the_library_fixture_reads() {
        let fixture = include_str!("../tests/fixtures/s3-put.json");
        let read = read_payload(serde_json::from_str(fixture).expect("json")).expect("reads");
        assert_eq!(read.created.len(), 1);
        assert_eq!(read.created[0].key, "landing/customers/Happy Face.csv");
    }

    #[test]
    fn eventbridge_object_created_events_read_the_same_way() {
        let payload = json!({
            "version": "0",
            "id": "c9888434-815d-c6f4-9fc2-4dd7bdeccaaf",
            "detail-type": "Object Created",
            "source": "aws.s3",
            "account": "123456789012",
            "time": "2026-11-24T10:00:00Z",
            "region": "eu-west-1",
            "resources": ["arn:aws:s3:::landing"],
            "detail": {
                "version": "0",
                "bucket": {"name": "landing"},
                "object": {"key": "landing/orders/a+b.jsonl", "size": 42, "etag": "ffee", "version-id": "v9", "sequencer": "00"},
                "request-id": "X", "requester": "123456789012", "reason": "PutObject"
            }
        });
        let read = read_payload(payload).expect("reads");
        assert_eq!(read.created[0].key, "landing/orders/a b.jsonl");
        assert_eq!(read.created[0].size, 42);
        assert_eq!(read.created[0].version_id.as_deref(), Some("v9"));
        let deleted = json!({"version": "0", "detail-type": "Object Deleted", "source": "aws.s3",
            "detail": {"bucket": {"name": "landing"}, "object": {"key": "k"}}});
        let read = read_payload(deleted).expect("reads");
        assert_eq!(read.skipped[0].reason, SkipReason::NotObjectCreated);
    }

    #[test]
    fn test_events_are_skipped_and_other_payloads_are_errors() {
        let test_event = json!({"Service": "Amazon S3", "Event": "s3:TestEvent",
            "Time": "2026-11-24T10:00:00.000Z", "Bucket": "landing", "RequestId": "1", "HostId": "2"});
        let read = read_payload(test_event).expect("reads");
        assert!(read.created.is_empty());
        assert_eq!(read.skipped[0].reason, SkipReason::TestEvent);
        let err = read_payload(json!({"hello": 1})).expect_err("not an event");
        assert!(
            shared::error::report(&err).contains("not an S3 event notification"),
            "{err}"
        );
        assert!(read_payload(json!({"Records": "x"})).is_err());
    }
}
