//! `processor redrive` against the emulator, whose SQS lacks StartMessageMoveTask: the
//! fallback moves every message once, strips the failure reason, honours --max and
//! --dry-run, and never deletes what it did not send.

use std::time::Duration;

use processor::redrive::{RedriveOptions, RedriveOutcome, redrive};
use processor::worker::REASON_ATTRIBUTE;
use shared::aws::AwsClients;
use shared::envelope::MessageSizeLimit;
use shared::queue::{OutgoingMessage, SqsQueue, WorkQueue};
use shared::testing::{create_queue, emulator_settings, queue_depth};

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
            failed: 0
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
            failed: 0
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
