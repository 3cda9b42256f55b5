//! The record stream through the real Kinesis client against the AWS emulator.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_sdk_kinesis::types::StreamStatus;
use bytes::Bytes;
use shared::envelope::compare_sequence_numbers;
use shared::stream::{KinesisStream, OutgoingRecord, RecordStream, ShardRecord, StartPosition};
use test_support::{clients, eventually, unique_name};

async fn create_stream(client: &aws_sdk_kinesis::Client, shards: i32) -> KinesisStream {
    let name = unique_name("events");
    client
        .create_stream()
        .stream_name(&name)
        .shard_count(shards)
        .send()
        .await
        .expect("create stream");
    eventually("stream ACTIVE", Duration::from_secs(30), || {
        let name = name.clone();
        async move {
            let summary = client
                .describe_stream_summary()
                .stream_name(name)
                .send()
                .await
                .ok()?;
            let status = summary
                .stream_description_summary()?
                .stream_status()
                .clone();
            (status == StreamStatus::Active).then_some(())
        }
    })
    .await;
    KinesisStream::new(client.clone(), name)
}

fn records(prefix: &str, count: usize) -> Vec<OutgoingRecord> {
    (0..count)
        .map(|i| OutgoingRecord {
            partition_key: format!("customer-{}", i % 7),
            data: Bytes::from(format!("{{\"batch\":\"{prefix}\",\"n\":{i}}}")),
        })
        .collect()
}

/// Reads a shard from `start` until a page comes back empty.
async fn read_shard(
    stream: &KinesisStream,
    shard_id: &str,
    start: &StartPosition,
) -> Vec<ShardRecord> {
    let mut iterator = stream
        .shard_iterator(shard_id, start)
        .await
        .expect("iterator");
    let mut out = Vec::new();
    for _ in 0..100 {
        let page = stream.get_records(&iterator, 7).await.expect("get records");
        let empty = page.records.is_empty();
        out.extend(page.records);
        match page.next_iterator {
            Some(next) if !empty => iterator = next,
            _ => return out,
        }
    }
    panic!("shard {shard_id} did not run dry in 100 pages");
}

#[tokio::test]
async fn records_come_back_in_order_per_shard_from_trim_horizon() {
    let clients = clients().await;
    let stream = create_stream(&clients.kinesis, 2).await;
    let sent = records("a", 40);
    let report = stream.put_records(&sent).await;
    assert!(report.all_succeeded(), "{report:?}");
    assert_eq!(report.succeeded.len(), 40);

    let shards = stream.list_shards().await.expect("list shards");
    assert_eq!(shards.len(), 2);
    assert!(shards.iter().all(|s| !s.is_closed()));

    // What each shard must hold, in put order, from the put report.
    let mut expected: BTreeMap<String, Vec<Bytes>> = BTreeMap::new();
    for (index, location) in &report.succeeded {
        expected
            .entry(location.shard_id.clone())
            .or_default()
            .push(sent[*index].data.clone());
    }
    assert_eq!(
        expected.len(),
        2,
        "40 records over 7 partition keys should use both shards"
    );
    for shard in &shards {
        let read = read_shard(&stream, &shard.shard_id, &StartPosition::TrimHorizon).await;
        let data: Vec<Bytes> = read.iter().map(|r| r.data.clone()).collect();
        assert_eq!(
            Some(&data),
            expected.get(&shard.shard_id),
            "shard {}",
            shard.shard_id
        );
        for pair in read.windows(2) {
            assert_eq!(
                compare_sequence_numbers(&pair[0].sequence_number, &pair[1].sequence_number),
                std::cmp::Ordering::Less
            );
        }
        assert!(read.iter().all(|r| r.arrival_ms.is_some()));
    }
}

#[tokio::test]
async fn at_timestamp_skips_records_that_arrived_before() {
    let clients = clients().await;
    let stream = create_stream(&clients.kinesis, 2).await;
    assert!(
        stream
            .put_records(&records("before", 10))
            .await
            .all_succeeded()
    );
    // Arrival times must differ from the cut-off on either side.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let cut_off = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = records("after", 10);
    assert!(stream.put_records(&after).await.all_succeeded());

    let mut from_timestamp = Vec::new();
    let mut from_start = 0;
    for shard in stream.list_shards().await.expect("list shards") {
        from_timestamp.extend(
            read_shard(
                &stream,
                &shard.shard_id,
                &StartPosition::AtTimestamp(cut_off),
            )
            .await,
        );
        from_start += read_shard(&stream, &shard.shard_id, &StartPosition::TrimHorizon)
            .await
            .len();
    }
    assert_eq!(from_start, 20, "control: everything is still in the stream");
    let mut got: Vec<Bytes> = from_timestamp.into_iter().map(|r| r.data).collect();
    let mut want: Vec<Bytes> = after.into_iter().map(|r| r.data).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn sequence_number_iterators_start_at_or_after_a_record() {
    let clients = clients().await;
    let stream = create_stream(&clients.kinesis, 1).await;
    let report = stream.put_records(&records("seq", 5)).await;
    assert!(report.all_succeeded());
    let shard = &report.succeeded[0].1.shard_id;
    let second = report.succeeded[1].1.sequence_number.clone();
    let at = read_shard(
        &stream,
        shard,
        &StartPosition::AtSequenceNumber(second.clone()),
    )
    .await;
    let after = read_shard(
        &stream,
        shard,
        &StartPosition::AfterSequenceNumber(second.clone()),
    )
    .await;
    assert_eq!(at.len(), 4);
    assert_eq!(at[0].sequence_number, second);
    assert_eq!(after.len(), 3);
    assert_eq!(
        after[0].sequence_number,
        report.succeeded[2].1.sequence_number
    );
    let latest = read_shard(&stream, shard, &StartPosition::Latest).await;
    assert!(latest.is_empty(), "LATEST starts after the last record");
}

#[tokio::test]
async fn list_shards_includes_closed_parents_after_a_split() {
    let clients = clients().await;
    let stream = create_stream(&clients.kinesis, 1).await;
    let parent = stream.list_shards().await.expect("list shards").remove(0);
    clients
        .kinesis
        .split_shard()
        .stream_name(stream.name())
        .shard_to_split(&parent.shard_id)
        .new_starting_hash_key("170141183460469231731687303715884105728")
        .send()
        .await
        .expect("split shard");
    let shards = eventually("the split to finish", Duration::from_secs(30), || async {
        let shards = stream.list_shards().await.ok()?;
        (shards.len() == 3).then_some(shards)
    })
    .await;
    let closed: Vec<&str> = shards
        .iter()
        .filter(|s| s.is_closed())
        .map(|s| s.shard_id.as_str())
        .collect();
    assert_eq!(closed, [parent.shard_id.as_str()]);
    let children: Vec<_> = shards.iter().filter(|s| !s.is_closed()).collect();
    assert_eq!(children.len(), 2);
    assert!(
        children
            .iter()
            .all(|c| c.parent_shard_id.as_deref() == Some(parent.shard_id.as_str()))
    );
}

#[tokio::test]
async fn oversized_records_fail_alone_and_are_not_sent() {
    let clients = clients().await;
    let stream = create_stream(&clients.kinesis, 1).await;
    let mut batch = records("ok", 3);
    batch.insert(
        1,
        OutgoingRecord {
            partition_key: "big".into(),
            data: Bytes::from(vec![b'x'; 1024 * 1024]),
        },
    );
    let report = stream.put_records(&batch).await;
    let succeeded: Vec<usize> = report.succeeded.iter().map(|(i, _)| *i).collect();
    assert_eq!(succeeded, [0, 2, 3]);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(
        (report.failed[0].index, report.failed[0].code.as_str()),
        (1, "RecordTooLarge")
    );
    assert!(!report.failed[0].retryable);
    let shard = stream.list_shards().await.expect("list shards").remove(0);
    assert_eq!(
        read_shard(&stream, &shard.shard_id, &StartPosition::TrimHorizon)
            .await
            .len(),
        3
    );
}
