//! The stream path end to end against the emulator's Kinesis, SQS and S3 and a real
//! PostgreSQL: records put into a two-shard stream are read by the local event-source
//! poller, handled (decode, validate, quarantine, pack), loaded by the processor with the
//! dataset's transform; then `replay` of the window adds no rows, and after rows are
//! deleted a replay restores exactly them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ingest_stream::handler::{S3Writer, StreamIngest};
use ingest_stream::poller::{Checkpoints, ReadSettings, StopWhen, read_stream};
use processor::operations::replay::{ReplayOptions, replay};
use processor::warehouse::Warehouse;
use processor::worker::Worker;
use shared::catalog::Catalog;
use shared::config::S3Location;
use shared::envelope::MessageSizeLimit;
use shared::queue::{SqsQueue, WorkQueue};
use shared::stream::{KinesisStream, OutgoingRecord, RecordStream, epoch_millis};
use test_support::faults;
use test_support::{TestSchemas, clients, create_bucket, unique_name};

use crate::support::platform::{new_queue, ready_postgres, s3_pipeline};
use crate::support::workers;

const CATALOG: &str = r#"
[datasets.order_status_events]
target = "events.order_status"
stream = { name = "STREAM", discriminator = { field = "event_type", value = "order_status_changed" } }
transform = "SELECT event_id, order_id, upper(status) AS status, step, occurred_at FROM input"
columns = [
  { name = "event_id", type = "string", nullable = false },
  { name = "order_id", type = "int64", nullable = false },
  { name = "status", type = "string", nullable = false },
  { name = "step", type = "int32", nullable = false },
  { name = "occurred_at", type = "timestamptz", nullable = false },
]
"#;

const ORDERS: i64 = 12;
const STEPS: i64 = 10;

async fn drain(worker: &Worker, queue: &SqsQueue) {
    let mut empty_polls = 0;
    while empty_polls < 2 {
        let messages = queue
            .receive(10, Duration::from_secs(1), Duration::from_secs(60))
            .await
            .expect("receive");
        if messages.is_empty() {
            empty_polls += 1;
        }
        for message in &messages {
            worker.handle(message).await;
        }
    }
}

/// A stream, the stream handler, a worker and the warehouse table, for one test.
struct Setup {
    stream: KinesisStream,
    ingest: StreamIngest,
    worker: Worker,
    queue: Arc<SqsQueue>,
    client: tokio_postgres::Client,
    table: String,
}

async fn setup(shards: i32) -> Setup {
    let clients = clients().await;
    let schemas = TestSchemas::new();
    let stream_name = unique_name("orders");
    clients
        .kinesis
        .create_stream()
        .stream_name(&stream_name)
        .shard_count(shards)
        .send()
        .await
        .expect("create stream");
    let stream = KinesisStream::new(clients.kinesis.clone(), &stream_name);
    let catalog_text = schemas.retarget(CATALOG).replace("STREAM", &stream_name);
    let catalog = Arc::new(Catalog::from_toml(&catalog_text, "test").expect("catalog"));
    let pipeline = s3_pipeline(Arc::clone(&catalog)).await;
    let warehouse = Arc::new(ready_postgres(&pipeline, &schemas.platform).await);
    let bucket = create_bucket(&clients.s3, "quarantine").await;
    let queue = new_queue(&clients).await;
    let ingest = StreamIngest {
        catalog: Arc::clone(&catalog),
        queue: Arc::clone(&queue) as Arc<dyn WorkQueue>,
        objects: Arc::new(S3Writer {
            client: clients.s3.clone(),
        }),
        quarantine: S3Location {
            bucket: bucket.clone(),
            prefix: "quarantine/".into(),
        },
        claim_checks: S3Location {
            bucket: bucket.clone(),
            prefix: "claims/".into(),
        },
        size_limit: MessageSizeLimit::default(),
        replay: None,
    };
    let worker = workers::worker(
        Arc::clone(&queue) as Arc<dyn WorkQueue>,
        pipeline,
        Arc::clone(&warehouse) as Arc<dyn Warehouse>,
        Duration::from_secs(60),
    );

    let client = test_support::pg_client().await;
    // Like Redshift, no uniqueness: only the load protocol keeps a replayed row single.
    faults::without_unique_index(&client, &schemas.events, "order_status").await;
    Setup {
        stream,
        ingest,
        worker,
        queue,
        client,
        table: format!("{}.order_status", schemas.events),
    }
}

/// Steps per order follow the records' order in their shards.
async fn assert_steps_in_order(client: &tokio_postgres::Client, table: &str) {
    let rows = client
        .query(
            &format!(
                "SELECT order_id, step FROM {table} ORDER BY order_id, length(_ingest_offset), _ingest_offset"
            ),
            &[],
        )
        .await
        .expect("rows");
    let mut last: Option<(i64, i32)> = None;
    for row in rows {
        let (order, step): (i64, i32) = (row.get(0), row.get(1));
        if let Some((last_order, last_step)) = last
            && last_order == order
        {
            assert_eq!(step, last_step + 1, "order {order}: steps out of order");
        }
        last = Some((order, step));
    }
}

fn status_event(order: i64, step: i64) -> OutgoingRecord {
    OutgoingRecord {
        partition_key: format!("order-{order}"),
        data: Bytes::from(format!(
            r#"{{"event_type":"order_status_changed","event_id":"o{order}-s{step}","order_id":{order},"status":"step {step}","step":{step},"occurred_at":"2026-11-24T10:00:{:02}Z"}}"#,
            step
        )),
    }
}

#[tokio::test]
async fn stream_records_load_once_in_order_and_replay_restores_only_what_is_missing() {
    let Setup {
        stream,
        ingest,
        worker,
        queue,
        client,
        table,
    } = setup(2).await;
    // Each order's status changes in steps, keyed by order: one shard per order.
    let before = epoch_millis(std::time::SystemTime::now()) - 1000;
    let mut records = Vec::new();
    for step in 1..=STEPS {
        for order in 1..=ORDERS {
            records.push(status_event(order, step));
        }
    }
    // Too large for a work item: it travels by claim check.
    records.push(OutgoingRecord {
        partition_key: "order-99".into(),
        data: Bytes::from(format!(
            r#"{{"event_type":"order_status_changed","event_id":"big","order_id":99,"status":"step 1 {}","step":1,"occurred_at":"2026-11-24T10:00:00Z"}}"#,
            "x".repeat(300 * 1024)
        )),
    });
    records.push(OutgoingRecord {
        partition_key: "order-1".into(),
        data: Bytes::from_static(b"{not json"),
    });
    records.push(OutgoingRecord {
        partition_key: "order-2".into(),
        data: Bytes::from_static(br#"{"event_type":"order_status_changed","event_id":"bad","order_id":"two","status":"x","step":1,"occurred_at":"2026-11-24T10:00:00Z"}"#),
    });
    let put = stream.put_records(&records).await;
    assert!(put.all_succeeded(), "{put:?}");
    let shards_used: std::collections::BTreeSet<&str> = put
        .succeeded
        .iter()
        .map(|(_, at)| at.shard_id.as_str())
        .collect();
    assert_eq!(shards_used.len(), 2, "both shards hold records");

    // The local event-source poller reads both shards until it is caught up.
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let settings = ReadSettings {
        batch_size: 25,
        poll_interval: Duration::from_millis(100),
        min_call_interval: Duration::from_millis(10),
        stop: StopWhen::CaughtUp,
        ..ReadSettings::default()
    };
    let mut checkpoints = Checkpoints::default();
    let read = read_stream(
        &stream,
        &ingest,
        &settings,
        &mut checkpoints,
        stopped.clone(),
        &mut |_| {},
    )
    .await
    .expect("poll");
    assert_eq!(read.records, records.len() as u64, "{read:?}");
    assert_eq!(read.quarantined, 2, "{read:?}");
    drain(&worker, &queue).await;

    let count = |sql: String| {
        let client = &client;
        async move {
            client
                .query_one(&sql, &[])
                .await
                .expect("query")
                .get::<_, i64>(0)
        }
    };
    let expected = ORDERS * STEPS + 1;
    assert_eq!(
        count(format!("SELECT count(*) FROM {table}")).await,
        expected
    );
    assert_eq!(
        count(format!(
            "SELECT count(*) FROM {table} WHERE status = upper(status) AND status LIKE 'STEP %'"
        ))
        .await,
        expected,
        "the transform applied"
    );
    // Per key, the steps follow the records' order in their shard (sequence numbers).
    assert_steps_in_order(&client, &table).await;

    // Replaying the window over loaded data adds nothing, even three replays at once
    // loaded by two workers at once (a duplicate storm: each replay's items are new work
    // items, so only the rows' lineage stops the copies).
    let now = epoch_millis(std::time::SystemTime::now()) + 1000;
    let options = ReplayOptions {
        from_ms: before,
        to_ms: now,
        checkpoint_file: None,
        batch_size: 50,
    };
    let replays = futures::future::join_all((0..3).map(|_| {
        let stopped = stopped.clone();
        let (stream, ingest, options) = (&stream, &ingest, &options);
        async move { replay(stream, ingest, options, stopped, &mut |_| {}).await }
    }))
    .await;
    for replayed in replays {
        let replayed = replayed.expect("replay");
        assert_eq!(replayed.records, records.len() as u64, "{replayed:?}");
    }
    tokio::join!(drain(&worker, &queue), drain(&worker, &queue));
    assert_eq!(
        count(format!("SELECT count(*) FROM {table}")).await,
        expected
    );

    // Rows deleted by mistake come back, exactly them, with a second replay.
    let deleted = client
        .execute(
            &format!("DELETE FROM {table} WHERE order_id IN (3, 4) AND step > 5"),
            &[],
        )
        .await
        .expect("delete");
    assert_eq!(deleted, 10);
    let checkpoint = std::env::temp_dir().join(format!("{}.json", unique_name("replay")));
    let options = ReplayOptions {
        checkpoint_file: Some(checkpoint.clone()),
        ..options
    };
    replay(&stream, &ingest, &options, stopped, &mut |_| {})
        .await
        .expect("replay again");
    let saved = Checkpoints::load(&checkpoint).expect("checkpoint file");
    assert!(saved.replay_id.is_some());
    assert_eq!(saved.shards.len(), 2);
    drain(&worker, &queue).await;
    assert_eq!(
        count(format!("SELECT count(*) FROM {table}")).await,
        expected
    );
    assert_eq!(
        count(format!("SELECT count(DISTINCT event_id) FROM {table}")).await,
        expected,
        "no event twice"
    );
    let _ = std::fs::remove_file(checkpoint);
}

#[tokio::test]
async fn a_resharded_stream_is_read_parents_first_and_replays_without_duplicates() {
    let Setup {
        stream,
        ingest,
        worker,
        queue,
        client,
        table,
    } = setup(1).await;
    let before = epoch_millis(std::time::SystemTime::now()) - 1000;
    let first: Vec<OutgoingRecord> = (1..=5)
        .flat_map(|step| (1..=ORDERS).map(move |order| status_event(order, step)))
        .collect();
    assert!(stream.put_records(&first).await.all_succeeded());
    let parent = stream.list_shards().await.expect("shards").remove(0);
    let kinesis = clients().await.kinesis;
    kinesis
        .split_shard()
        .stream_name(stream.name())
        .shard_to_split(&parent.shard_id)
        .new_starting_hash_key("170141183460469231731687303715884105728")
        .send()
        .await
        .expect("split");
    let second: Vec<OutgoingRecord> = (6..=STEPS)
        .flat_map(|step| (1..=ORDERS).map(move |order| status_event(order, step)))
        .collect();
    let put = stream.put_records(&second).await;
    assert!(put.all_succeeded(), "{put:?}");
    // moto keeps routing puts to the closed parent after a split (real Kinesis routes
    // them to the children), so here the children stay empty: what this test proves is
    // that the poller and the replay find every shard, read the closed parent to its end
    // and follow it with its children, across a resharded stream.

    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let settings = ReadSettings {
        batch_size: 7,
        poll_interval: Duration::from_millis(100),
        min_call_interval: Duration::from_millis(10),
        stop: StopWhen::CaughtUp,
        ..ReadSettings::default()
    };
    let mut checkpoints = Checkpoints::default();
    let read = read_stream(
        &stream,
        &ingest,
        &settings,
        &mut checkpoints,
        stopped.clone(),
        &mut |_| {},
    )
    .await
    .expect("poll");
    assert_eq!(read.records, (ORDERS * STEPS) as u64, "{read:?}");
    assert_eq!(read.shards, 3);
    assert!(
        checkpoints.shards[&parent.shard_id].finished,
        "the parent was read to its end"
    );
    drain(&worker, &queue).await;
    let expected = ORDERS * STEPS;
    let count = |sql: String| {
        let client = &client;
        async move {
            client
                .query_one(&sql, &[])
                .await
                .expect("query")
                .get::<_, i64>(0)
        }
    };
    assert_eq!(
        count(format!("SELECT count(*) FROM {table}")).await,
        expected
    );
    // Per key, the steps were loaded in order.
    let out_of_order = count(format!(
        "SELECT count(*) FROM (SELECT order_id, step, lag(step) OVER (PARTITION BY order_id ORDER BY _ingest_loaded_at, length(_ingest_offset), _ingest_offset) AS previous FROM {table}) t WHERE previous IS NOT NULL AND step < previous"
    ))
    .await;
    assert_eq!(out_of_order, 0, "steps loaded out of order");

    client
        .execute(&format!("DELETE FROM {table} WHERE step IN (5, 6)"), &[])
        .await
        .expect("delete");
    let options = ReplayOptions {
        from_ms: before,
        to_ms: epoch_millis(std::time::SystemTime::now()) + 1000,
        checkpoint_file: None,
        batch_size: 20,
    };
    let replayed = replay(&stream, &ingest, &options, stopped, &mut |_| {})
        .await
        .expect("replay across the reshard");
    assert_eq!(replayed.records, (ORDERS * STEPS) as u64, "{replayed:?}");
    drain(&worker, &queue).await;
    assert_eq!(
        count(format!("SELECT count(*) FROM {table}")).await,
        expected
    );
    assert_eq!(
        count(format!("SELECT count(DISTINCT event_id) FROM {table}")).await,
        expected
    );
}
