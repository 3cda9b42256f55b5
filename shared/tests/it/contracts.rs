//! The queue and stream contracts: one set of checks run against the AWS implementations
//! (through the emulator's SQS and Kinesis) and against the embedded ones (SQLite), so
//! their behaviour cannot drift apart. The embedded ones are also checked to keep
//! everything across a reopen of the database file (a restart of the process).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use shared::embedded::EmbeddedDb;
use shared::envelope::MessageSizeLimit;
use shared::queue::{EmbeddedQueue, Redrive};
use shared::queue::{OutgoingMessage, SqsQueue, WorkQueue};
use shared::stream::EmbeddedStream;
use shared::stream::{KinesisStream, OutgoingRecord, RecordStream, ShardRecord, StartPosition};
use test_support::{clients, create_queue_with_dlq, unique_name};

const SHORT_VISIBILITY: Duration = Duration::from_secs(1);

/// A work queue and its dead-letter queue (messages move there after two receives).
struct Queues {
    work: Arc<dyn WorkQueue>,
    dead_letter: Arc<dyn WorkQueue>,
}

async fn sqs_queues() -> Queues {
    let clients = clients().await;
    let (url, dlq_url) = create_queue_with_dlq(&clients.sqs, 2).await;
    let sqs = |url: &str| -> Arc<dyn WorkQueue> {
        Arc::new(SqsQueue::new(
            clients.sqs.clone(),
            url,
            MessageSizeLimit::default(),
        ))
    };
    Queues {
        work: sqs(&url),
        dead_letter: sqs(&dlq_url),
    }
}

fn temp_db() -> test_support::TempDatabase {
    test_support::TempDatabase::new("contract")
}

fn embedded_queues(path: &std::path::Path) -> Queues {
    let db = EmbeddedDb::open(path).expect("open");
    Queues {
        work: Arc::new(EmbeddedQueue::new(
            db.clone(),
            "work",
            MessageSizeLimit::default(),
            Some(Redrive {
                dead_letter: "work-dlq".into(),
                max_receive_count: 2,
            }),
        )),
        dead_letter: Arc::new(EmbeddedQueue::new(
            db,
            "work-dlq",
            MessageSizeLimit::default(),
            None,
        )),
    }
}

async fn receive_all(
    queue: &dyn WorkQueue,
    visibility: Duration,
) -> Vec<shared::queue::ReceivedMessage> {
    queue
        .receive(10, Duration::from_millis(500), visibility)
        .await
        .expect("receive")
}

/// Send, receive, hide, re-deliver, extend, delete, dead-letter, size limit, long poll.
async fn queue_contract(queues: Queues) {
    let queue = queues.work.as_ref();
    let messages = vec![
        OutgoingMessage::from("first".to_owned()).with_attribute("reason", "a test"),
        OutgoingMessage::from("second ✓".to_owned()),
        OutgoingMessage::from("x".repeat(MessageSizeLimit::default().bytes() + 1)),
    ];
    let sent = queue.send(&messages).await;
    assert_eq!(sent.succeeded.len(), 2, "{sent:?}");
    assert_eq!(sent.failed.len(), 1);
    assert_eq!(sent.failed[0].index, 2);
    assert_eq!(sent.failed[0].code, "MessageTooLong");
    assert!(!sent.failed[0].retryable);

    let mut received = Vec::new();
    for _ in 0..5 {
        received.extend(receive_all(queue, Duration::from_secs(30)).await);
        if received.len() == 2 {
            break;
        }
    }
    received.sort_by(|a, b| a.body.cmp(&b.body));
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].body, "first");
    assert_eq!(
        received[0].attributes.get("reason").map(String::as_str),
        Some("a test")
    );
    assert_eq!(received[1].body, "second ✓");
    assert!(received.iter().all(|m| m.receive_count == 1));
    assert!(received.iter().all(|m| m.sent_at_ms.is_some()));
    let depth = queue.depth().await.expect("depth");
    assert_eq!((depth.visible, depth.in_flight), (0, 2));
    assert!(
        receive_all(queue, Duration::from_secs(30)).await.is_empty(),
        "received messages stay hidden"
    );

    let handles: Vec<String> = received.iter().map(|m| m.receipt_handle.clone()).collect();
    let deleted = queue.delete(&handles).await;
    assert!(deleted.all_succeeded(), "{deleted:?}");
    let depth = queue.depth().await.expect("depth");
    assert_eq!((depth.visible, depth.in_flight), (0, 0));

    // Not deleted: back after the visibility timeout, counted; an extension keeps it away.
    queue
        .send(&[OutgoingMessage::from("again".to_owned())])
        .await;
    let first = eventually_one(queue, SHORT_VISIBILITY).await;
    assert_eq!(first.receive_count, 1);
    queue
        .extend_visibility(&first.receipt_handle, Duration::from_secs(3))
        .await
        .expect("extend");
    tokio::time::sleep(SHORT_VISIBILITY + Duration::from_millis(500)).await;
    assert!(
        receive_all(queue, SHORT_VISIBILITY).await.is_empty(),
        "the extension keeps it hidden past the first timeout"
    );
    let second = eventually_one(queue, SHORT_VISIBILITY).await;
    assert_eq!(second.body, "again");
    assert_eq!(second.receive_count, 2);

    // After two receives it goes to the dead-letter queue instead of a third delivery.
    tokio::time::sleep(SHORT_VISIBILITY + Duration::from_millis(200)).await;
    assert!(
        receive_all(queue, SHORT_VISIBILITY).await.is_empty(),
        "moved to the dead-letter queue"
    );
    let dead = eventually_one(queues.dead_letter.as_ref(), Duration::from_secs(30)).await;
    assert_eq!(dead.body, "again");

    // A long poll returns as soon as a message arrives.
    let sender = Arc::clone(&queues.work);
    let send_later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        sender
            .send(&[OutgoingMessage::from("late".to_owned())])
            .await
    });
    let started = std::time::Instant::now();
    let late = queue
        .receive(1, Duration::from_secs(5), Duration::from_secs(30))
        .await
        .expect("long poll");
    assert!(send_later.await.expect("send").all_succeeded());
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].body, "late");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

async fn eventually_one(
    queue: &dyn WorkQueue,
    visibility: Duration,
) -> shared::queue::ReceivedMessage {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        let mut received = receive_all(queue, visibility).await;
        if let Some(message) = received.pop() {
            assert!(received.is_empty());
            return message;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no message arrived");
}

#[tokio::test]
async fn sqs_meets_the_queue_contract() {
    queue_contract(sqs_queues().await).await;
}

#[tokio::test]
async fn the_embedded_queue_meets_the_queue_contract() {
    let db = temp_db();
    queue_contract(embedded_queues(db.path())).await;
}

#[tokio::test]
async fn the_embedded_queue_keeps_messages_across_a_reopen() {
    let file = temp_db();
    let path = file.path();
    let queues = embedded_queues(path);
    let sent = queues
        .work
        .send(&[OutgoingMessage::from("kept".to_owned())])
        .await;
    assert!(sent.all_succeeded());
    let received = receive_all(queues.work.as_ref(), SHORT_VISIBILITY).await;
    assert_eq!(received.len(), 1);
    drop(queues);

    // Reopened: the message that was in flight comes back with its count.
    let queues = embedded_queues(path);
    tokio::time::sleep(SHORT_VISIBILITY).await;
    let again = eventually_one(queues.work.as_ref(), Duration::from_secs(30)).await;
    assert_eq!(again.body, "kept");
    assert_eq!(again.receive_count, 2);
    assert!(
        queues
            .work
            .delete(&[again.receipt_handle])
            .await
            .all_succeeded()
    );
    let queues = embedded_queues(path);
    assert!(
        receive_all(queues.work.as_ref(), SHORT_VISIBILITY)
            .await
            .is_empty()
    );
}

fn record(key: &str, n: usize) -> OutgoingRecord {
    OutgoingRecord {
        partition_key: key.to_owned(),
        data: Bytes::from(format!("{key}:{n}")),
    }
}

async fn read_all(
    stream: &dyn RecordStream,
    shard: &str,
    start: StartPosition,
) -> Vec<ShardRecord> {
    let mut iterator = stream
        .shard_iterator(shard, &start)
        .await
        .expect("iterator");
    let mut records = Vec::new();
    for _ in 0..20 {
        let page = stream
            .get_records(&iterator, 1000)
            .await
            .expect("get records");
        let empty = page.records.is_empty();
        records.extend(page.records);
        match page.next_iterator {
            Some(next) => iterator = next,
            None => break,
        }
        if empty && page.millis_behind_latest == Some(0) {
            break;
        }
    }
    records
}

/// Shards by partition key, order, sequence numbers, every iterator type, size limit.
async fn stream_contract(stream: &dyn RecordStream) {
    let shards = stream.list_shards().await.expect("shards");
    assert_eq!(shards.len(), 2);
    let first: Vec<OutgoingRecord> = (0..20)
        .map(|n| record(&format!("key-{}", n % 5), n))
        .collect();
    let put = stream.put_records(&first).await;
    assert!(put.all_succeeded(), "{put:?}");
    // One key, one shard; sequence numbers grow within a shard.
    for key in 0..5 {
        let locations: Vec<_> = put
            .succeeded
            .iter()
            .filter(|(index, _)| index % 5 == key)
            .map(|(_, at)| at)
            .collect();
        assert!(locations.windows(2).all(|w| w[0].shard_id == w[1].shard_id));
    }
    let mut read = Vec::new();
    for shard in &shards {
        let records = read_all(stream, &shard.shard_id, StartPosition::TrimHorizon).await;
        let numbers: Vec<u128> = records
            .iter()
            .map(|r| r.sequence_number.parse().expect("numeric sequence"))
            .collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "in sequence order");
        assert!(records.iter().all(|r| r.arrival_ms.is_some()));
        read.extend(records.into_iter().map(|r| (shard.shard_id.clone(), r)));
    }
    assert_eq!(read.len(), 20, "every record once");
    for (index, at) in &put.succeeded {
        // Sequence numbers are unique within a shard.
        let (_, found) = read
            .iter()
            .find(|(shard, r)| shard == &at.shard_id && r.sequence_number == at.sequence_number)
            .expect("read back");
        assert_eq!(found.data, first[*index].data);
        assert_eq!(found.partition_key, first[*index].partition_key);
    }

    // Positions: after / at a sequence number.
    let (_, third) = &put.succeeded[2];
    let shard = third.shard_id.as_str();
    let at = read_all(
        stream,
        shard,
        StartPosition::AtSequenceNumber(third.sequence_number.clone()),
    )
    .await;
    assert_eq!(at[0].sequence_number, third.sequence_number);
    let after = read_all(
        stream,
        shard,
        StartPosition::AfterSequenceNumber(third.sequence_number.clone()),
    )
    .await;
    assert_eq!(after.len() + 1, at.len());

    // LATEST and AT_TIMESTAMP see only what came after.
    let latest = stream
        .shard_iterator(shard, &StartPosition::Latest)
        .await
        .expect("latest");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let cut = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let later: Vec<OutgoingRecord> = (0..10)
        .map(|n| record(&third_key(&first, &put, shard), 100 + n))
        .collect();
    assert!(stream.put_records(&later).await.all_succeeded());
    let page = stream
        .get_records(&latest, 1000)
        .await
        .expect("from latest");
    assert_eq!(page.records.len(), 10, "LATEST: only the new records");
    let since = read_all(stream, shard, StartPosition::AtTimestamp(cut)).await;
    assert_eq!(since.len(), 10, "AT_TIMESTAMP: only the new records");
    assert!(since.iter().all(|r| {
        r.data
            .starts_with(third_key(&first, &put, shard).as_bytes())
    }));
    let caught_up = stream
        .get_records(page.next_iterator.as_deref().expect("open shard"), 1000)
        .await
        .expect("tip");
    assert!(caught_up.records.is_empty());
    assert_eq!(caught_up.millis_behind_latest, Some(0));

    let too_large = stream
        .put_records(&[OutgoingRecord {
            partition_key: "big".into(),
            data: Bytes::from(vec![b'x'; 1024 * 1024 + 1]),
        }])
        .await;
    assert_eq!(too_large.failed.len(), 1);
    assert!(!too_large.failed[0].retryable);
}

/// The partition key of a put record that landed on `shard`.
fn third_key(records: &[OutgoingRecord], put: &shared::stream::PutReport, shard: &str) -> String {
    put.succeeded
        .iter()
        .find(|(_, at)| at.shard_id == shard)
        .map(|(index, _)| records[*index].partition_key.clone())
        .expect("a record on the shard")
}

#[tokio::test]
async fn kinesis_meets_the_stream_contract() {
    let clients = clients().await;
    let name = unique_name("contract");
    clients
        .kinesis
        .create_stream()
        .stream_name(&name)
        .shard_count(2)
        .send()
        .await
        .expect("create stream");
    stream_contract(&KinesisStream::new(clients.kinesis.clone(), &name)).await;
}

#[tokio::test]
async fn the_embedded_stream_meets_the_stream_contract() {
    let file = temp_db();
    let db = EmbeddedDb::open(file.path()).expect("open");
    let stream = EmbeddedStream::create(db, "events", 2, Duration::from_secs(86_400))
        .await
        .expect("stream");
    stream_contract(&stream).await;
}

#[tokio::test]
async fn the_embedded_stream_keeps_records_across_a_reopen_and_trims_past_retention() {
    let file = temp_db();
    let path = file.path();
    let stream = EmbeddedStream::create(
        EmbeddedDb::open(path).expect("open"),
        "events",
        2,
        Duration::from_secs(1),
    )
    .await
    .expect("stream");
    assert!(stream.put_records(&[record("a", 1)]).await.all_succeeded());
    drop(stream);
    let stream = EmbeddedStream::create(
        EmbeddedDb::open(path).expect("open"),
        "events",
        4,
        Duration::from_secs(1),
    )
    .await
    .expect("reopen");
    let shards = stream.list_shards().await.expect("shards");
    assert_eq!(shards.len(), 2, "an existing stream keeps its shards");
    let mut kept = 0;
    for shard in &shards {
        kept += read_all(&stream, &shard.shard_id, StartPosition::TrimHorizon)
            .await
            .len();
    }
    assert_eq!(kept, 1);
    // Past retention, the next put trims it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(stream.put_records(&[record("b", 2)]).await.all_succeeded());
    let mut left = Vec::new();
    for shard in &shards {
        left.extend(read_all(&stream, &shard.shard_id, StartPosition::TrimHorizon).await);
    }
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].data, Bytes::from_static(b"b:2"));
}

#[tokio::test]
async fn an_unknown_queue_name_is_an_empty_queue_not_an_error() {
    // SQS would refuse an unknown URL; the embedded queue creates queues by name on use.
    let file = temp_db();
    let db = EmbeddedDb::open(file.path()).expect("open");
    let queue = EmbeddedQueue::new(db, unique_name("q"), MessageSizeLimit::default(), None);
    assert!(
        queue
            .receive(10, Duration::ZERO, SHORT_VISIBILITY)
            .await
            .expect("receive")
            .is_empty()
    );
}

#[tokio::test]
async fn embedded_shards_split_the_hash_key_space_and_take_explicit_hash_keys() {
    let file = temp_db();
    let db = EmbeddedDb::open(file.path()).expect("open");
    assert!(
        EmbeddedStream::open(db.clone(), "events")
            .await
            .expect("look up")
            .is_none(),
        "open never creates a stream"
    );
    for shards in [1u32, 2, 3] {
        let name = format!("s{shards}");
        let stream = EmbeddedStream::create(db.clone(), &name, shards, Duration::from_secs(60))
            .await
            .expect("stream");
        let ranges: Vec<(u128, u128)> = (0..shards).map(|i| stream.hash_key_range(i)).collect();
        assert_eq!(ranges[0].0, 0);
        assert_eq!(ranges[ranges.len() - 1].1, u128::MAX);
        for pair in ranges.windows(2) {
            assert_eq!(
                pair[0].1 + 1,
                pair[1].0,
                "{shards} shards: contiguous ranges"
            );
        }
        // The last hash key lands in the last shard, the first in the first.
        let records = [record("a", 1), record("b", 2)];
        let put = stream
            .put_records_at(&records, &[Some(u128::MAX), Some(0)])
            .await;
        assert!(put.all_succeeded());
        let shard_of = |index: usize| {
            put.succeeded
                .iter()
                .find(|(i, _)| *i == index)
                .map(|(_, at)| at.shard_id.clone())
                .expect("put")
        };
        assert_eq!(shard_of(0), format!("shardId-{:012}", shards - 1));
        assert_eq!(shard_of(1), "shardId-000000000000");
    }
    let names = EmbeddedStream::names(&db).await.expect("names");
    assert_eq!(names, ["s1", "s2", "s3"]);
}
