//! `processor redrive` against the emulator, whose SQS lacks StartMessageMoveTask: the
//! fallback moves every message once, strips the failure reason, honours --max and
//! --dry-run, and never deletes what it did not send. The StartMessageMoveTask path runs
//! against the SDK's own mocking layer (`aws-smithy-mocks`).

use std::time::Duration;

use processor::operations::redrive::{RedriveOptions, RedriveOutcome, redrive};
use shared::aws::AwsClients;
use shared::envelope::MessageSizeLimit;
use shared::queue::REASON_ATTRIBUTE;
use shared::queue::{OutgoingMessage, SqsQueue, WorkQueue};
use test_support::{create_queue, emulator_settings, queue_depth};

#[tokio::test]
async fn dead_letters_move_back_once_without_their_failure_reason() {
    // One attempt per call: the emulator answers StartMessageMoveTask with HTTP 500.
    let clients = AwsClients::new(&shared::aws::AwsSettings {
        max_attempts: 1,
        ..emulator_settings()
    })
    .await;
    let dlq_url = create_queue(&clients.sqs, &[]).await;
    let work_url = create_queue(&clients.sqs, &[]).await;
    let dead_letter = SqsQueue::new(clients.sqs.clone(), &dlq_url, MessageSizeLimit::default());
    let target = SqsQueue::new(clients.sqs.clone(), &work_url, MessageSizeLimit::default());
    let messages: Vec<OutgoingMessage> = (0..25)
        .map(|i| {
            OutgoingMessage::from(format!("item {i}"))
                .with_attribute(REASON_ATTRIBUTE, "warehouse was down")
        })
        .collect();
    assert!(dead_letter.send(&messages).await.all_succeeded());

    let mut ticks = Vec::new();
    let dry = RedriveOptions {
        dry_run: true,
        ..RedriveOptions::default()
    };
    let outcome = redrive(&dead_letter, &target, dry, &mut |m, e| ticks.push((m, e)))
        .await
        .expect("dry run");
    assert_eq!(outcome, RedriveOutcome::WouldMove { messages: 25 });
    assert_eq!(
        queue_depth(&clients.sqs, &work_url).await,
        (0, 0),
        "a dry run moves nothing"
    );

    let some = RedriveOptions {
        max_messages: Some(5),
        ..RedriveOptions::default()
    };
    let outcome = redrive(&dead_letter, &target, some, &mut |m, e| ticks.push((m, e)))
        .await
        .expect("redrive 5");
    assert_eq!(
        outcome,
        RedriveOutcome::Moved {
            moved: 5,
            failed: 0,
            held: 0
        }
    );

    let outcome = redrive(
        &dead_letter,
        &target,
        RedriveOptions::default(),
        &mut |m, e| ticks.push((m, e)),
    )
    .await
    .expect("redrive the rest");
    assert_eq!(
        outcome,
        RedriveOutcome::Moved {
            moved: 20,
            failed: 0,
            held: 0
        }
    );
    assert_eq!(
        ticks.last().map(|t| t.0),
        Some(20),
        "progress reported: {ticks:?}"
    );
    assert_eq!(queue_depth(&clients.sqs, &dlq_url).await, (0, 0));

    let mut bodies = Vec::new();
    while bodies.len() < 25 {
        let received = target
            .receive(10, Duration::from_secs(1), Duration::from_secs(60))
            .await
            .expect("receive");
        assert!(
            !received.is_empty(),
            "only {} of 25 moved messages arrived",
            bodies.len()
        );
        for message in received {
            assert!(
                !message.attributes.contains_key(REASON_ATTRIBUTE),
                "{message:?}"
            );
            bodies.push(message.body);
        }
    }
    bodies.sort();
    let mut expected: Vec<String> = (0..25).map(|i| format!("item {i}")).collect();
    expected.sort();
    assert_eq!(bodies, expected, "every message exactly once");
}

/// The emulator lacks `StartMessageMoveTask`, so this path runs against the SDK's own
/// mocking layer: the real client builds and sends (to the mock) every request.
#[tokio::test]
async fn where_sqs_supports_it_a_move_task_moves_the_dead_letters() {
    use aws_sdk_sqs::Client;
    use aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesOutput;
    use aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput;
    use aws_sdk_sqs::operation::start_message_move_task::StartMessageMoveTaskOutput;
    use aws_sdk_sqs::types::QueueAttributeName;
    use aws_smithy_mocks::{MockResponseInterceptor, RuleMode, create_mock_http_client, mock};

    const DLQ_URL: &str = "https://sqs.eu-west-1.amazonaws.com/123456789012/work-dlq";
    const DLQ_ARN: &str = "arn:aws:sqs:eu-west-1:123456789012:work-dlq";
    const WORK_URL: &str = "https://sqs.eu-west-1.amazonaws.com/123456789012/work";
    const WORK_ARN: &str = "arn:aws:sqs:eu-west-1:123456789012:work";
    let attributes = |url: &'static str, arn: &'static str| {
        mock!(Client::get_queue_attributes)
            .match_requests(move |request| request.queue_url() == Some(url))
            .then_output(move || {
                GetQueueAttributesOutput::builder()
                    .attributes(QueueAttributeName::QueueArn, arn)
                    .attributes(QueueAttributeName::ApproximateNumberOfMessages, "7")
                    .attributes(
                        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                        "0",
                    )
                    .build()
            })
    };
    let dlq_attributes = attributes(DLQ_URL, DLQ_ARN);
    let work_attributes = attributes(WORK_URL, WORK_ARN);
    let move_task = mock!(Client::start_message_move_task)
        .match_requests(|request| {
            request.source_arn() == Some(DLQ_ARN)
                && request.destination_arn() == Some(WORK_ARN)
                && request.max_number_of_messages_per_second() == Some(50)
        })
        .then_output(|| {
            StartMessageMoveTaskOutput::builder()
                .task_handle("task-1")
                .build()
        });
    let empty_receive =
        mock!(Client::receive_message).then_output(|| ReceiveMessageOutput::builder().build());
    let interceptor = MockResponseInterceptor::new()
        .rule_mode(RuleMode::MatchAny)
        .with_rule(&dlq_attributes)
        .with_rule(&work_attributes)
        .with_rule(&move_task)
        .with_rule(&empty_receive);
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version_latest()
        .region(aws_sdk_sqs::config::Region::new("eu-west-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "AKIDTEST", "secret", None, None, "test",
        ))
        .http_client(create_mock_http_client())
        .interceptor(interceptor)
        .build();
    let client = Client::from_conf(config);
    let dead_letter = SqsQueue::new(client.clone(), DLQ_URL, MessageSizeLimit::default());
    let target = SqsQueue::new(client, WORK_URL, MessageSizeLimit::default());

    let options = RedriveOptions {
        max_per_second: 50,
        ..RedriveOptions::default()
    };
    let outcome = redrive(&dead_letter, &target, options, &mut |_, _| {})
        .await
        .expect("redrive");
    assert_eq!(
        outcome,
        RedriveOutcome::MoveTaskStarted {
            task_handle: "task-1".to_owned(),
            messages: 7
        }
    );
    assert_eq!(move_task.num_calls(), 1);

    // A move task cannot stop after N messages: with --max the processor moves them itself.
    let limited = RedriveOptions {
        max_messages: Some(2),
        ..options
    };
    let outcome = redrive(&dead_letter, &target, limited, &mut |_, _| {})
        .await
        .expect("redrive with --max");
    assert_eq!(
        outcome,
        RedriveOutcome::Moved {
            moved: 0,
            failed: 0,
            held: 0
        }
    );
    assert_eq!(move_task.num_calls(), 1);
    assert!(empty_receive.num_calls() >= 1);
}

/// With a redrive limit, a message already redriven that often stays in the dead-letter
/// queue; the others move with their count raised, so the next redrive can tell.
#[tokio::test]
async fn a_redrive_limit_leaves_poison_messages_in_the_dead_letter_queue() {
    use processor::operations::redrive::REDRIVE_COUNT_ATTRIBUTE;
    let clients = test_support::clients().await;
    let dlq_url = create_queue(&clients.sqs, &[]).await;
    let work_url = create_queue(&clients.sqs, &[]).await;
    let dead_letter = SqsQueue::new(clients.sqs.clone(), &dlq_url, MessageSizeLimit::default());
    let target = SqsQueue::new(clients.sqs.clone(), &work_url, MessageSizeLimit::default());
    let messages = vec![
        OutgoingMessage::from("fresh".to_owned()),
        OutgoingMessage::from("once".to_owned()).with_attribute(REDRIVE_COUNT_ATTRIBUTE, "1"),
        OutgoingMessage::from("poison".to_owned()).with_attribute(REDRIVE_COUNT_ATTRIBUTE, "2"),
    ];
    assert!(dead_letter.send(&messages).await.all_succeeded());
    let options = RedriveOptions {
        max_redrives: Some(2),
        ..RedriveOptions::default()
    };
    let outcome = redrive(&dead_letter, &target, options, &mut |_, _| {})
        .await
        .expect("redrive");
    assert_eq!(
        outcome,
        RedriveOutcome::Moved {
            moved: 2,
            failed: 0,
            held: 1
        }
    );
    let mut moved = std::collections::BTreeMap::new();
    while moved.len() < 2 {
        let received = target
            .receive(10, Duration::from_secs(1), Duration::from_secs(60))
            .await
            .expect("receive");
        assert!(!received.is_empty(), "moved messages arrive: {moved:?}");
        for message in received {
            moved.insert(
                message.body.clone(),
                message.attributes.get(REDRIVE_COUNT_ATTRIBUTE).cloned(),
            );
        }
    }
    assert_eq!(moved["fresh"].as_deref(), Some("1"));
    assert_eq!(moved["once"].as_deref(), Some("2"));
    // The poison message is still in the dead-letter queue (hidden for a moment).
    let (visible, in_flight) = queue_depth(&clients.sqs, &dlq_url).await;
    assert_eq!(visible + in_flight, 1);
}

/// `processor dlq`'s look at an SQS dead-letter queue: letters come with their dataset,
/// source, reason and counts, oldest first, at most as many as asked — and stay in the
/// queue, visible again at once.
#[tokio::test]
async fn dead_letters_are_looked_at_without_being_taken() {
    use processor::operations::dlq::peek_dead_letters;
    use shared::catalog::{Compression, FileFormat};
    use shared::envelope::{ByteRange, FileItem, Part, WorkItem};
    use shared::queue::DATASET_ATTRIBUTE;

    let clients = AwsClients::new(&emulator_settings()).await;
    let dlq_url = create_queue(&clients.sqs, &[]).await;
    let dead_letter = SqsQueue::new(clients.sqs.clone(), &dlq_url, MessageSizeLimit::default());
    let item = WorkItem::File(FileItem {
        dataset: "orders".to_owned(),
        bucket: "landing".to_owned(),
        key: "orders/2026-12-07.csv".to_owned(),
        version_id: None,
        etag: "abc".to_owned(),
        size: 10,
        range: Some(ByteRange { start: 0, end: 5 }),
        part: Some(Part { index: 2, count: 3 }),
        format: FileFormat::Csv,
        compression: Compression::None,
        created_at_ms: None,
    });
    let body = item.to_json(MessageSizeLimit::default()).expect("json");
    let messages = vec![
        OutgoingMessage::from(body)
            .with_attribute(REASON_ATTRIBUTE, "over the dataset's reject limit")
            .with_attribute(DATASET_ATTRIBUTE, "orders"),
        OutgoingMessage::from("not an item".to_owned()),
        OutgoingMessage::from("neither".to_owned()),
    ];
    assert!(dead_letter.send(&messages).await.all_succeeded());

    let two = peek_dead_letters(&dead_letter, 2).await.expect("look");
    assert_eq!(two.len(), 2, "at most as many as asked");
    let all = peek_dead_letters(&dead_letter, 10).await.expect("look");
    assert_eq!(all.len(), 3);
    let order = all
        .iter()
        .find(|l| l.dataset.as_deref() == Some("orders"))
        .expect("the item's letter");
    assert_eq!(
        order.source,
        "s3://landing/orders/2026-12-07.csv (part 2 of 3)"
    );
    assert_eq!(order.reason, "over the dataset's reject limit");
    assert!(order.receives >= 1 && order.sent_at.is_some(), "{order:?}");
    let garbage = all
        .iter()
        .find(|l| l.dataset.is_none())
        .expect("a letter that is not an item");
    assert!(garbage.source.starts_with("not a work item"), "{garbage:?}");
    assert!(garbage.reason.contains("redrive policy"), "{garbage:?}");
    assert_eq!(
        queue_depth(&clients.sqs, &dlq_url).await,
        (3, 0),
        "every letter is left, visible"
    );
}
