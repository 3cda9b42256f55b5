//! The built `ingest-stream` binary run as Lambda runs it, fed a Kinesis event by a
//! Runtime API endpoint on loopback (the same test-owned endpoint as ingest-batch's):
//! valid records reach the emulator's SQS, the invalid one its S3 quarantine, and the
//! response carries no batch item failures.

use std::process::Stdio;

use runtime_api::{Call, next_call};
use test_support::EXAMPLE_CATALOG as CATALOG;
use test_support::lambda_runtime as runtime_api;
use test_support::{binary_config, clients, create_bucket, create_queue};

fn kinesis_record(sequence: &str, data: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "order-1",
            "sequenceNumber": sequence,
            "data": aws_smithy_types::base64::encode(data),
            "approximateArrivalTimestamp": 1795514400.123
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": format!("shardId-000000000000:{sequence}"),
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/ingest-stream",
        "awsRegion": "us-east-1",
        "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/order-events"
    })
}

#[tokio::test]
async fn the_binary_handles_a_kinesis_event_through_the_runtime_api() {
    let clients = clients().await;
    let bucket = create_bucket(&clients.s3, "quarantine").await;
    let queue_url = create_queue(&clients.sqs, &[]).await;
    let good = br#"{"event_type":"order_status_changed","event_id":"e1","order_id":1,"status":"paid","occurred_at":"2026-11-24T10:00:00Z"}"#;
    let event = serde_json::json!({"Records": [
        kinesis_record("49590000000000000000000000000000000000000000000000000001", good),
        kinesis_record("49590000000000000000000000000000000000000000000000000002", b"{oops"),
    ]});
    let api = runtime_api::start(vec![("req-1".to_owned(), event.to_string())]).await;
    let mut calls = api.calls;

    let sections = format!(
        "[queue]\nurl = \"{queue_url}\"\n\n[stream]\nquarantine = \"s3://{bucket}/quarantine/\"\n"
    );
    let config_path = binary_config("stream-lambda", CATALOG, &sections);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ingest-stream"))
        .envs(runtime_api::lambda_env(api.address))
        .env("INGEST_CONFIG", &config_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the function binary");
    assert!(matches!(next_call(&mut calls).await, Call::Next { .. }));
    match next_call(&mut calls).await {
        Call::Response { request_id, body } => {
            assert_eq!(request_id, "req-1");
            let response: serde_json::Value = serde_json::from_str(&body).expect("json");
            assert_eq!(
                response["batchItemFailures"],
                serde_json::json!([]),
                "{body}"
            );
        }
        other => panic!("expected a response, got {other:?}"),
    }
    assert!(matches!(next_call(&mut calls).await, Call::Next { .. }));
    child.kill().expect("stop");
    child.wait().expect("reaped");
    // The invocation's metrics, as one Embedded Metric Format document on stdout.
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("piped"), &mut stdout)
        .expect("stdout");
    // One document per dimension set (metrics with and without `source`).
    let mut values = std::collections::BTreeMap::new();
    let mut dimensions = std::collections::BTreeMap::new();
    for line in stdout.lines() {
        assert!(line.contains("\"RequestId\":\"req-1\""), "{line}");
        let (line_values, line_dimensions) = test_support::check_emf(line, "ingest-stream");
        values.extend(line_values);
        dimensions.extend(line_dimensions);
    }
    assert_eq!(
        values["ingest_stream_records_received_total"], 2.0,
        "{stdout}"
    );
    assert_eq!(values["ingest_records_quarantined_total"], 1.0, "{stdout}");
    assert_eq!(values["ingest_work_items_sent_total"], 1.0, "{stdout}");
    assert_eq!(dimensions["source"], "kinesis");

    let received = clients
        .sqs
        .receive_message()
        .queue_url(&queue_url)
        .wait_time_seconds(5)
        .send()
        .await
        .expect("receive");
    assert_eq!(received.messages().len(), 1);
    let listed = clients
        .s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("quarantine/order-events/shardId-000000000000/")
        .send()
        .await
        .expect("list");
    assert_eq!(listed.contents().len(), 1, "the bad record is quarantined");
}
