//! The built `ingest-batch` binary run as Lambda runs it: started with the Lambda
//! environment, it fetches events from a Runtime API endpoint on loopback (owned by this
//! test), answers each one, and sends its work items to the emulator's SQS.

use std::process::Stdio;
use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;
use shared::envelope::WorkItem;
use test_support::lambda_runtime::{self as runtime_api, Call, next_call};
use test_support::{binary_config, clients, create_bucket, create_queue};

const CATALOG: &str = r#"
[datasets.orders]
format = "jsonl"
target = "sales.orders"
key = ["order_id"]
s3 = { prefix = "landing/orders/" }
columns = [{ name = "order_id", type = "int64", nullable = false }]
"#;

#[tokio::test]
async fn the_binary_serves_invocations_through_the_runtime_api() {
    let clients = clients().await;
    let bucket = create_bucket(&clients.s3, "lambda").await;
    let key = "landing/orders/2026 11 24/déjà+vu.jsonl";
    let put = clients
        .s3
        .put_object()
        .bucket(&bucket)
        .key(key)
        .body(ByteStream::from_static(b"{\"order_id\":1}\n"))
        .send()
        .await
        .expect("put");
    let work_url = create_queue(&clients.sqs, &[]).await;

    // An S3 notification as S3 sends it: the key form-encoded.
    let encoded_key = "landing/orders/2026+11+24/d%C3%A9j%C3%A0%2Bvu.jsonl";
    let notification = serde_json::json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-24T10:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:EXAMPLE"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "ingest",
               "bucket": {"name": bucket, "arn": format!("arn:aws:s3:::{bucket}")},
               "object": {"key": encoded_key, "size": 15, "eTag": put.e_tag().expect("etag").trim_matches('"'), "sequencer": "01"}}
    }]});
    let api = runtime_api::start(vec![
        ("req-1".to_owned(), notification.to_string()),
        (
            "req-2".to_owned(),
            r#"{"hello":"not an S3 event"}"#.to_owned(),
        ),
    ])
    .await;
    let mut calls = api.calls;

    let config_path = binary_config(
        "lambda",
        CATALOG,
        &format!("[queue]\nurl = \"{work_url}\"\n"),
    );

    let started = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ingest-batch"))
        .envs(runtime_api::lambda_env(api.address))
        .env("INGEST_CONFIG", &config_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the function binary");
    let stderr = child.stderr.take().expect("piped");
    let log_lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let stdout = child.stdout.take().expect("piped");
    let emf_lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });

    let Call::Next { at } = next_call(&mut calls).await else {
        panic!("the first call is for the next event");
    };
    eprintln!(
        "cold start (process start to first event request): {:?}",
        at - started
    );
    match next_call(&mut calls).await {
        Call::Response { request_id, body } => {
            assert_eq!(request_id, "req-1");
            let report: serde_json::Value = serde_json::from_str(&body).expect("json response");
            assert_eq!(report["objects"], 1, "{body}");
            assert_eq!(report["work_items_sent"], 1, "{body}");
        }
        other => panic!("expected a response, got {other:?}"),
    }
    assert!(matches!(next_call(&mut calls).await, Call::Next { .. }));
    match next_call(&mut calls).await {
        Call::Error { request_id, body } => {
            assert_eq!(request_id, "req-2");
            let error: serde_json::Value = serde_json::from_str(&body).expect("json error");
            assert_eq!(error["errorType"], "UnrecognisedPayload", "{body}");
            assert!(
                error["errorMessage"]
                    .as_str()
                    .is_some_and(|m| m.contains("not an S3 event notification")),
                "{body}"
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // The function lives on, waiting for the next event.
    assert!(matches!(next_call(&mut calls).await, Call::Next { .. }));
    assert!(child.try_wait().expect("status").is_none(), "still running");
    child.kill().expect("stop the function");
    child.wait().expect("reaped");

    // One Embedded Metric Format document per invocation that recorded metrics; the
    // failed one recorded none, so it wrote none.
    let lines = emf_lines.join().expect("stdout reader");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let (values, dimensions) = test_support::check_emf(&lines[0], "ingest-batch");
    assert_eq!(values["ingest_objects_received_total"], 1.0, "{lines:?}");
    assert_eq!(values["ingest_work_items_sent_total"], 1.0, "{lines:?}");
    assert_eq!(dimensions["source"], "s3_event");
    assert!(lines[0].contains("\"RequestId\":\"req-1\""), "{lines:?}");

    let received = clients
        .sqs
        .receive_message()
        .queue_url(&work_url)
        .wait_time_seconds(5)
        .send()
        .await
        .expect("receive");
    let messages = received.messages();
    assert_eq!(messages.len(), 1);
    let work_item = WorkItem::from_json(messages[0].body().expect("body")).expect("work item");
    // The log names the item the way the processor will: message id, key, dataset.
    let logs = log_lines.join().expect("stderr reader");
    let sent: serde_json::Value = logs
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|entry| entry["message"] == "work item sent")
        .unwrap_or_else(|| panic!("a `work item sent` log line: {logs:?}"));
    assert_eq!(sent["message_id"], messages[0].message_id().expect("id"));
    assert_eq!(
        sent["idempotency_key"],
        work_item.idempotency_key().to_string()
    );
    assert_eq!(sent["dataset"], "orders");
    let WorkItem::File(item) = work_item else {
        panic!("a file item");
    };
    assert_eq!(item.key, key);
    assert_eq!(item.dataset, "orders");
}

#[tokio::test]
async fn a_start_up_error_names_every_config_problem() {
    let api = runtime_api::start(Vec::new()).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ingest-batch"))
        .envs(runtime_api::lambda_env(api.address))
        .env("INGEST_QUEUE__MAX_MESSAGE_BYTES", "12")
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("queue.url: required field is missing"),
        "{stderr}"
    );
    assert!(stderr.contains("queue.max_message_bytes"), "{stderr}");
}
