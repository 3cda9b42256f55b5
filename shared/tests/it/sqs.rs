//! The work queue through the real SQS client against the AWS emulator.

use std::collections::BTreeSet;
use std::time::Duration;

use shared::catalog::{Compression, FileFormat};
use shared::envelope::{FileItem, MessageSizeLimit, WorkItem};
use shared::error::Classify;
use shared::queue::{OutgoingMessage, SqsQueue, WorkQueue};
use test_support::{
    clients, create_queue, create_queue_with_dlq, eventually, queue_depth, unique_name,
};

fn work_item(key: &str) -> WorkItem {
    WorkItem::File(FileItem {
        dataset: "orders".into(),
        bucket: "landing".into(),
        key: key.into(),
        version_id: None,
        etag: "0123456789abcdef".into(),
        size: 42,
        range: None,
        part: None,
        format: FileFormat::Csv,
        compression: Compression::None,
        created_at_ms: Some(1_700_000_000_000),
    })
}

#[tokio::test]
async fn work_item_survives_send_receive_delete() {
    let clients = clients().await;
    let url = create_queue(&clients.sqs, &[]).await;
    let queue = SqsQueue::new(clients.sqs.clone(), &url, MessageSizeLimit::default());
    let item = work_item("landing/orders/2024 été/ordres+1.csv");
    let body = item
        .to_json(MessageSizeLimit::default())
        .expect("serializes");

    let message = OutgoingMessage::from(body.clone()).with_attribute("origin", "test été");
    let report = queue.send(&[message]).await;
    assert!(report.all_succeeded(), "{report:?}");
    assert_eq!(report.succeeded.len(), 1);

    let received = queue
        .receive(10, Duration::from_secs(5), Duration::from_secs(30))
        .await
        .expect("receive");
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].receive_count, 1);
    assert!(received[0].sent_at_ms.is_some());
    assert_eq!(received[0].message_id, report.succeeded[0].1);
    assert_eq!(
        received[0].attributes.get("origin").map(String::as_str),
        Some("test été")
    );
    let decoded = WorkItem::from_json(&received[0].body).expect("decodes");
    assert_eq!(decoded, item);
    assert_eq!(decoded.idempotency_key(), item.idempotency_key());
    assert_eq!(queue_depth(&clients.sqs, &url).await, (0, 1));

    let deleted = queue.delete(&[received[0].receipt_handle.clone()]).await;
    assert!(deleted.all_succeeded(), "{deleted:?}");
    assert_eq!(queue_depth(&clients.sqs, &url).await, (0, 0));
    let again = queue
        .receive(10, Duration::from_secs(1), Duration::from_secs(30))
        .await
        .expect("receive");
    assert!(again.is_empty(), "deleted message came back: {again:?}");
}

#[tokio::test]
async fn batches_of_ten_carry_every_message_and_refuse_oversized_ones() {
    let clients = clients().await;
    let url = create_queue(&clients.sqs, &[]).await;
    let limit = MessageSizeLimit::new(4096).expect("valid limit");
    let queue = SqsQueue::new(clients.sqs.clone(), &url, limit);
    let mut bodies: Vec<String> = (0..25)
        .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i * 100)))
        .collect();
    bodies.insert(7, "y".repeat(5000));

    let messages: Vec<OutgoingMessage> =
        bodies.iter().cloned().map(OutgoingMessage::from).collect();
    let report = queue.send(&messages).await;
    assert_eq!(report.succeeded.len(), 25, "{report:?}");
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].index, 7);
    assert_eq!(report.failed[0].code, "MessageTooLong");
    assert!(!report.failed[0].retryable);

    let mut seen = BTreeSet::new();
    let mut handles = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < 25 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of 25 messages arrived",
            seen.len()
        );
        let messages = queue
            .receive(10, Duration::from_secs(1), Duration::from_secs(60))
            .await
            .expect("receive");
        for message in messages {
            assert!(seen.insert(message.body), "a message was delivered twice");
            handles.push(message.receipt_handle);
        }
    }
    let expected: BTreeSet<String> = bodies.iter().filter(|b| b.len() <= 4096).cloned().collect();
    assert_eq!(seen, expected);

    let deleted = queue.delete(&handles).await;
    assert_eq!(deleted.succeeded.len(), 25, "{deleted:?}");
    assert_eq!(queue_depth(&clients.sqs, &url).await, (0, 0));
}

#[tokio::test]
async fn a_message_received_max_receive_count_times_lands_in_the_dlq() {
    let clients = clients().await;
    let (url, dlq_url) = create_queue_with_dlq(&clients.sqs, 2).await;
    let queue = SqsQueue::new(clients.sqs.clone(), &url, MessageSizeLimit::default());
    let dlq = SqsQueue::new(clients.sqs.clone(), &dlq_url, MessageSizeLimit::default());
    let body = work_item("poison.csv")
        .to_json(MessageSizeLimit::default())
        .expect("serializes");
    assert!(queue.send(&[body.clone().into()]).await.all_succeeded());

    // A worker that fails without deleting: the message comes back (visibility 0).
    let mut counts = Vec::new();
    for _ in 0..5 {
        let messages = queue
            .receive(1, Duration::from_secs(1), Duration::ZERO)
            .await
            .expect("receive");
        match messages.as_slice() {
            [] => break,
            [message] => counts.push(message.receive_count),
            more => panic!("one message expected, got {more:?}"),
        }
    }
    assert_eq!(counts, [1, 2], "received exactly maxReceiveCount times");

    let dead = eventually(
        "the message in the DLQ",
        Duration::from_secs(10),
        || async {
            let messages = dlq
                .receive(1, Duration::from_secs(1), Duration::from_secs(30))
                .await
                .expect("receive from dlq");
            messages.into_iter().next()
        },
    )
    .await;
    assert_eq!(dead.body, body);
    assert_eq!(queue_depth(&clients.sqs, &url).await, (0, 0));
}

#[tokio::test]
async fn extending_visibility_keeps_a_message_hidden() {
    let clients = clients().await;
    let url = create_queue(&clients.sqs, &[]).await;
    let queue = SqsQueue::new(clients.sqs.clone(), &url, MessageSizeLimit::default());
    assert!(
        queue
            .send(&["heartbeat".to_owned().into()])
            .await
            .all_succeeded()
    );

    let first = queue
        .receive(1, Duration::from_secs(5), Duration::from_secs(1))
        .await
        .expect("receive");
    assert_eq!(first.len(), 1);
    queue
        .extend_visibility(&first[0].receipt_handle, Duration::from_secs(60))
        .await
        .expect("extend visibility");
    // Past the original one-second timeout: without the extension it would be back.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let during = queue
        .receive(1, Duration::ZERO, Duration::from_secs(30))
        .await
        .expect("receive");
    assert!(
        during.is_empty(),
        "message reappeared while its visibility was extended"
    );
    assert_eq!(queue_depth(&clients.sqs, &url).await, (0, 1));

    // Control: releasing it (timeout 0) makes it visible again at once.
    queue
        .extend_visibility(&first[0].receipt_handle, Duration::ZERO)
        .await
        .expect("release");
    let after = eventually("the released message", Duration::from_secs(10), || async {
        let messages = queue
            .receive(1, Duration::from_secs(1), Duration::from_secs(30))
            .await
            .expect("receive");
        messages.into_iter().next()
    })
    .await;
    assert_eq!(after.body, "heartbeat");
    assert_eq!(after.receive_count, 2);
}

#[tokio::test]
async fn a_missing_queue_is_a_permanent_error_that_names_it() {
    let clients = clients().await;
    let url = format!(
        "{}/123456789012/{}",
        test_support::aws_endpoint(),
        unique_name("missing")
    );
    let queue = SqsQueue::new(clients.sqs.clone(), &url, MessageSizeLimit::default());
    let err = queue
        .receive(1, Duration::ZERO, Duration::from_secs(30))
        .await
        .expect_err("queue does not exist");
    assert!(!err.is_retryable(), "{err}");
    assert!(shared::error::report(&err).contains(&url), "{err}");
    let report = queue.send(&["x".to_owned().into()]).await;
    assert!(report.succeeded.is_empty());
    assert_eq!(report.failed.len(), 1);
    assert!(!report.failed[0].retryable, "{report:?}");
}
