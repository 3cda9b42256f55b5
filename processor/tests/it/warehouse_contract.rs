//! The load protocol's contract, checked against PostgreSQL (started by scripts/test.sh)
//! and against the embedded SQLite warehouse with the same code, so the local mode keeps
//! the guarantees of the real one: idempotent by the ledger, last write wins within a
//! micro-batch, lineage-deduplicated appends, rejects and ledger in the load's
//! transaction, nothing left behind by a failed load, one winner among concurrent loads
//! of one item, and exactly one claim of a completed file.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use processor::pipeline::lineage;
use processor::warehouse::files::{Claim, FilePart};
use processor::warehouse::{ItemRows, ItemSource, MemoryRows, Reject, RowSource, SourceError};
use shared::catalog::{Catalog, TooLong};
use shared::error::{Classify, Retryability};

use crate::support::orders::{batch, item, key, load_schema, orders_dataset, owned};
use crate::support::sinks::{Harness, Postgres, Redshift, Sqlite};

async fn keyed_loads_are_idempotent_and_the_last_update_in_a_batch_wins(harness: &dyn Harness) {
    let (dataset, warehouse) = harness.with_target(true).await;
    let first = item(1, 2, &[(1, "placed", 1), (2, "placed", 2)]);
    let report = warehouse
        .load_rows(&dataset, &load_schema(), std::slice::from_ref(&first))
        .await
        .expect("load");
    assert_eq!(
        (
            report.items_loaded,
            report.items_skipped,
            report.rows_written
        ),
        (1, 0, 2)
    );
    // A redelivery: skipped, nothing changes.
    let report = warehouse
        .load_rows(&dataset, &load_schema(), &[first])
        .await
        .expect("again");
    assert_eq!(
        (
            report.items_loaded,
            report.items_skipped,
            report.rows_written
        ),
        (0, 1, 0)
    );
    // Two items of one micro-batch update one order: the later one wins.
    let batch = [
        item(3, 4, &[(2, "shipped", 3), (3, "placed", 4)]),
        item(5, 5, &[(3, "cancelled", 5)]),
    ];
    let report = warehouse
        .load_rows(&dataset, &load_schema(), &batch)
        .await
        .expect("batch");
    assert_eq!(
        (report.items_loaded, report.rows_staged, report.rows_written),
        (2, 3, 2)
    );
    assert_eq!(
        harness.rows().await,
        owned(&[(1, "placed"), (2, "shipped"), (3, "cancelled")])
    );
    // An old item whose key the ledger holds does not bring back stale values.
    let report = warehouse
        .load_rows(
            &dataset,
            &load_schema(),
            &[item(3, 4, &[(2, "shipped", 3), (3, "placed", 4)])],
        )
        .await
        .expect("replay");
    assert_eq!(report.items_skipped, 1);
    assert_eq!(
        harness.rows().await,
        owned(&[(1, "placed"), (2, "shipped"), (3, "cancelled")])
    );
    assert_eq!(harness.platform_rows("load_ledger").await, 3);
}

async fn appends_merge_on_lineage_so_repacked_records_load_once(harness: &dyn Harness) {
    let (dataset, warehouse) = harness.with_target(false).await;
    warehouse
        .load_rows(
            &dataset,
            &load_schema(),
            &[item(1, 3, &[(10, "a", 1), (11, "b", 2), (12, "c", 3)])],
        )
        .await
        .expect("first");
    // Packed differently on a retry: a new key, but records 2 and 3 are loaded.
    let report = warehouse
        .load_rows(
            &dataset,
            &load_schema(),
            &[item(2, 4, &[(11, "b", 2), (12, "c", 3), (13, "d", 4)])],
        )
        .await
        .expect("repacked");
    assert_eq!(
        (report.items_loaded, report.rows_staged, report.rows_written),
        (1, 3, 1)
    );
    assert_eq!(
        harness.rows().await,
        owned(&[(10, "a"), (11, "b"), (12, "c"), (13, "d")])
    );
}

async fn rejects_and_ledger_are_written_with_the_rows(harness: &dyn Harness) {
    let (dataset, warehouse) = harness.with_target(true).await;
    let mut with_rejects = item(1, 3, &[(1, "placed", 1)]);
    with_rejects.rejects = vec![
        Reject {
            row_number: Some(2),
            raw: Some("two,placed".into()),
            reason: "order_id: \"two\" is not an int64".into(),
        },
        Reject {
            row_number: Some(3),
            raw: None,
            reason: "order_id is required".into(),
        },
    ];
    let report = warehouse
        .load_rows(&dataset, &load_schema(), &[with_rejects])
        .await
        .expect("load");
    assert_eq!((report.rows_written, report.rows_rejected), (1, 2));
    assert_eq!(
        harness.rejects().await,
        vec![
            (
                2,
                Some("two,placed".to_owned()),
                "order_id: \"two\" is not an int64".to_owned()
            ),
            (3, None, "order_id is required".to_owned()),
        ]
    );
    assert_eq!(harness.platform_rows("load_ledger").await, 1);
}

/// `processor status` counts, per dataset and window, the items, rows and files the
/// ledger and `file_loads` hold — the same answers from every sink.
async fn activity_counts_items_rows_and_files_of_the_window(harness: &dyn Harness) {
    use processor::warehouse::activity::ActivityQuery;
    use std::time::{Duration, SystemTime};
    let (dataset, warehouse) = harness.with_target(true).await;
    let started = SystemTime::now() - Duration::from_secs(60);
    let file_part = |n: u64, file: &str, parts_total: i32| {
        let mut rows = item(n, n, &[(n as i64, "placed", n)]);
        rows.source = format!("s3://landing/{file}");
        if n == 1 {
            rows.rejects = vec![Reject {
                row_number: Some(2),
                raw: None,
                reason: "order_id is required".into(),
            }];
        }
        let mut source = rows.into_source();
        source.file = Some(FilePart {
            file_id: format!("landing/{file}@etag"),
            dataset: dataset.name.clone(),
            bucket: "landing".into(),
            key: file.into(),
            version_id: None,
            etag: "etag".into(),
            parts_total,
        });
        source
    };
    // a.csv whole, one of b.csv's two parts, and a stream item of two records.
    let mut records = item(10, 11, &[(10, "placed", 10), (11, "placed", 11)]);
    records.source = "kinesis://orders-stream".into();
    let arrived_ms = shared::stream::epoch_millis(SystemTime::now()) - 300_123;
    let mut records = records.into_source();
    records.stream = Some(processor::warehouse::streams::StreamPart {
        stream: "orders-stream".into(),
        shard_id: "shardId-000000000000".into(),
        first_sequence: "10".into(),
        last_sequence: "11".into(),
        records: 2,
        newest_arrival_ms: Some(arrived_ms),
    });
    for source in [file_part(1, "a.csv", 1), file_part(2, "b.csv", 2), records] {
        warehouse
            .load(&dataset, &load_schema(), vec![source])
            .await
            .expect("load");
    }
    // b.csv counts as incomplete once its first part is older than the cut-off.
    let query = ActivityQuery {
        since: started,
        bucket_ms: 3_600_000,
        incomplete_before: SystemTime::now() + Duration::from_secs(1),
    };
    let still_loading = ActivityQuery {
        incomplete_before: started,
        ..query
    };
    let found = warehouse.activity(&still_loading).await.expect("activity");
    assert_eq!(
        (found[0].files_completed, found[0].files_incomplete),
        (1, 0)
    );
    let found = warehouse.activity(&query).await.expect("activity");
    assert_eq!(found.len(), 1, "{found:?}");
    let orders = &found[0];
    assert_eq!(orders.dataset, dataset.name);
    assert_eq!((orders.file_items, orders.stream_items), (2, 1));
    assert_eq!((orders.rows_loaded, orders.rows_rejected), (4, 1));
    assert_eq!((orders.files_completed, orders.files_incomplete), (1, 1));
    assert_eq!(
        orders.last_arrival_ms,
        Some(arrived_ms),
        "the stream's newest arrival"
    );
    let last = orders.last_loaded_ms.expect("a last load");
    let now_ms = shared::stream::epoch_millis(SystemTime::now());
    assert!(
        (now_ms - 60_000..=now_ms + 5_000).contains(&last),
        "last load {last}, now {now_ms}"
    );
    let series_rows: u64 = orders.series.iter().map(|p| p.rows_loaded).sum();
    let series_rejected: u64 = orders.series.iter().map(|p| p.rows_rejected).sum();
    assert_eq!((series_rows, series_rejected), (4, 1));
    assert!(
        orders
            .series
            .iter()
            .all(|p| p.start_ms % 3_600_000 == 0 && p.start_ms <= last)
    );
    // A window starting after the loads counts none of them.
    let later = ActivityQuery {
        since: SystemTime::now() + Duration::from_secs(60),
        ..query
    };
    assert_eq!(warehouse.activity(&later).await.expect("activity"), []);
}

/// `processor rejects` finds rejected rows by dataset, source, reason and time, newest
/// first, a page at a time — the same answers from every sink.
async fn rejects_are_found_by_dataset_source_reason_and_time(harness: &dyn Harness) {
    use processor::warehouse::rejects::RejectQuery;
    let (dataset, warehouse) = harness.with_target(true).await;
    let reject = |row: u64, reason: &str| Reject {
        row_number: Some(row),
        raw: Some(format!("row {row}")),
        reason: reason.into(),
    };
    let mut first = item(1, 3, &[(1, "placed", 1)]);
    first.source = "s3://landing/orders/a.csv".into();
    first.rejects = vec![
        reject(2, "order_id is required"),
        reject(3, "status: too long"),
    ];
    let mut second = item(4, 5, &[(4, "placed", 4)]);
    second.source = "s3://landing/orders/b.csv".into();
    second.rejects = vec![reject(5, "order_id is required")];
    for item in [first, second] {
        warehouse
            .load_rows(&dataset, &load_schema(), &[item])
            .await
            .expect("load");
    }
    let all = RejectQuery {
        dataset: None,
        source: None,
        reason: None,
        keys: Vec::new(),
        since: None,
        limit: 50,
        offset: 0,
    };
    let found = |query: RejectQuery| {
        let warehouse = Arc::clone(&warehouse);
        async move {
            let rows = warehouse.find_rejects(&query).await.expect("find");
            rows.iter()
                .map(|r| {
                    (
                        r.source.rsplit('/').next().unwrap_or_default().to_owned(),
                        r.row_number,
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let mut every = found(all.clone()).await;
    every.sort();
    assert_eq!(
        every,
        [
            ("a.csv".to_owned(), Some(2)),
            ("a.csv".to_owned(), Some(3)),
            ("b.csv".to_owned(), Some(5))
        ]
    );
    let page = warehouse.find_rejects(&all).await.expect("find");
    assert!(
        page[0].rejected_at >= page[2].rejected_at,
        "newest first: {page:?}"
    );
    assert!(
        page.iter()
            .any(|r| r.raw.as_deref() == Some("row 2") && r.dataset == dataset.name),
        "{page:?}"
    );
    let by_file = RejectQuery {
        source: Some("a.csv".into()),
        ..all.clone()
    };
    assert_eq!(found(by_file).await.len(), 2);
    let by_reason = RejectQuery {
        reason: Some("required".into()),
        ..all.clone()
    };
    assert_eq!(found(by_reason).await.len(), 2);
    let by_dataset = RejectQuery {
        dataset: Some("payments".into()),
        ..all.clone()
    };
    assert_eq!(found(by_dataset).await.len(), 0);
    let later = RejectQuery {
        since: Some(std::time::SystemTime::now() + std::time::Duration::from_secs(3600)),
        ..all.clone()
    };
    assert_eq!(found(later).await.len(), 0);
    let earlier = RejectQuery {
        since: Some(std::time::SystemTime::now() - std::time::Duration::from_secs(3600)),
        ..all.clone()
    };
    assert_eq!(found(earlier).await.len(), 3);
    let second_page = RejectQuery {
        limit: 2,
        offset: 2,
        ..all
    };
    assert_eq!(found(second_page).await.len(), 1);
}

/// Rows that fail after their first batch, like a file that turns out corrupt half-way.
#[derive(Debug)]
struct FailsHalfWay(Option<RecordBatch>);

#[derive(Debug, thiserror::Error)]
#[error("the source broke half-way")]
struct Broke;

impl Classify for Broke {
    fn retryability(&self) -> Retryability {
        Retryability::Retryable
    }
}

#[async_trait]
impl RowSource for FailsHalfWay {
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>, SourceError> {
        match self.0.take() {
            Some(batch) => Ok(Some(batch)),
            None => Err(Broke.into()),
        }
    }

    fn take_rejects(&mut self) -> Vec<Reject> {
        Vec::new()
    }
}

async fn a_failed_load_leaves_nothing_behind_and_can_be_retried(harness: &dyn Harness) {
    let (dataset, warehouse) = harness.with_target(true).await;
    let items = vec![
        item(1, 1, &[(1, "placed", 1)]).into_source(),
        ItemSource {
            key: key(2, 3),
            source: "kinesis://orders".into(),
            rows: Box::new(FailsHalfWay(Some(batch(&[(2, "placed", 2)])))),
            file: None,
            stream: None,
        },
    ];
    let err = warehouse
        .load(&dataset, &load_schema(), items)
        .await
        .expect_err("breaks");
    assert!(err.is_retryable(), "{err}");
    assert!(harness.rows().await.is_empty(), "nothing of the load stays");
    assert_eq!(harness.platform_rows("load_ledger").await, 0);
    let items = vec![
        item(1, 1, &[(1, "placed", 1)]).into_source(),
        ItemSource {
            key: key(2, 3),
            source: "kinesis://orders".into(),
            rows: Box::new(MemoryRows::new(
                vec![batch(&[(2, "placed", 2), (3, "placed", 3)])],
                Vec::new(),
            )),
            file: None,
            stream: None,
        },
    ];
    let report = warehouse
        .load(&dataset, &load_schema(), items)
        .await
        .expect("retry");
    assert_eq!((report.items_loaded, report.rows_written), (2, 3));
}

async fn concurrent_loads_of_the_same_item_write_it_once(harness: &dyn Harness) {
    let dataset = harness.dataset(false);
    harness
        .connect()
        .await
        .ensure_target(&dataset, &load_schema())
        .await
        .expect("target");
    let rows: Vec<(i64, &str, u64)> = (0..2000).map(|i| (i, "placed", i as u64)).collect();
    let the_item = item(0, 1999, &rows);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let warehouse = harness.connect().await;
        let (dataset, the_item) = (dataset.clone(), the_item.clone());
        tasks.push(tokio::spawn(async move {
            // As a worker does: a retryable failure (Redshift's loser of the race finds
            // the item committed under its lock) is retried, and the retry skips it.
            let mut attempts = 0;
            loop {
                attempts += 1;
                match warehouse
                    .load_rows(&dataset, &load_schema(), std::slice::from_ref(&the_item))
                    .await
                {
                    Ok(report) => break report,
                    Err(err) if err.is_retryable() && attempts < 5 => continue,
                    Err(err) => panic!("load: {err}"),
                }
            }
        }));
    }
    let (mut loaded, mut skipped) = (0, 0);
    for task in tasks {
        let report = task.await.expect("task");
        loaded += report.items_loaded;
        skipped += report.items_skipped;
    }
    assert_eq!((loaded, skipped), (1, 3));
    assert_eq!(harness.rows().await.len(), 2000);
}

async fn a_completed_file_is_claimed_once(harness: &dyn Harness) {
    let (dataset, warehouse) = harness.with_target(true).await;
    let part = |n: u64| {
        let mut source = item(n, n, &[(n as i64, "placed", n)]).into_source();
        source.file = Some(FilePart {
            file_id: "landing/orders.csv@etag".into(),
            dataset: "orders".into(),
            bucket: "landing".into(),
            key: "orders.csv".into(),
            version_id: None,
            etag: "etag".into(),
            parts_total: 2,
        });
        source
    };
    warehouse
        .load(&dataset, &load_schema(), vec![part(1)])
        .await
        .expect("part 1");
    let file = "landing/orders.csv@etag";
    assert_eq!(
        warehouse
            .claim_file_completion(file, "message-1")
            .await
            .expect("claim"),
        Claim::NotComplete
    );
    warehouse
        .load(&dataset, &load_schema(), vec![part(2)])
        .await
        .expect("part 2");
    let Claim::Claimed(completion) = warehouse
        .claim_file_completion(file, "message-1")
        .await
        .expect("claim")
    else {
        panic!("the completed file is claimable");
    };
    assert_eq!((completion.parts, completion.rows_loaded), (2, 2));
    let other = harness.connect().await;
    assert_eq!(
        other
            .claim_file_completion(file, "message-2")
            .await
            .expect("claim"),
        Claim::ClaimedElsewhere
    );
    // The same message again (its earlier attempt lost the warehouse or died before ending
    // the claim) takes its own claim over at once; the earlier attempt's token is stale.
    let Claim::Claimed(retaken) = other
        .claim_file_completion(file, "message-1")
        .await
        .expect("claim")
    else {
        panic!("a message takes over its own claim");
    };
    assert_ne!(retaken.claim_token, completion.claim_token);
    warehouse
        .finish_file_claim(&completion, false)
        .await
        .expect("stale");
    assert_eq!(
        warehouse
            .claim_file_completion(file, "message-2")
            .await
            .expect("claim"),
        Claim::ClaimedElsewhere,
        "a stale token gives nothing back"
    );
    warehouse
        .finish_file_claim(&retaken, false)
        .await
        .expect("give back");
    let Claim::Claimed(again) = warehouse
        .claim_file_completion(file, "message-2")
        .await
        .expect("claim")
    else {
        panic!("a claim given back can be taken again");
    };
    // The first claims' tokens no longer end anything.
    warehouse
        .finish_file_claim(&completion, true)
        .await
        .expect("stale");
    warehouse
        .finish_file_claim(&retaken, true)
        .await
        .expect("stale");
    assert_eq!(
        warehouse
            .claim_file_completion(file, "message-3")
            .await
            .expect("claim"),
        Claim::ClaimedElsewhere
    );
    warehouse
        .finish_file_claim(&again, true)
        .await
        .expect("published");
    assert_eq!(
        warehouse
            .claim_file_completion(file, "message-1")
            .await
            .expect("claim"),
        Claim::Published
    );
}

/// Values are data, never SQL: rows, sources and rejects that look like SQL come back
/// verbatim, and the tables are still there afterwards.
async fn values_that_look_like_sql_are_stored_verbatim(harness: &dyn Harness) {
    let (dataset, warehouse) = harness.with_target(true).await;
    let hostile = [
        "'); DROP TABLE orders; --",
        "Robert'); DELETE FROM ingest_load_ledger;--",
        "$1 \\' \" ` ; /* */ -- ",
        "x' OR '1'='1",
        "Ünïcödé 🚚 ' ;",
    ];
    let rows: Vec<(i64, &str, u64)> = hostile
        .iter()
        .enumerate()
        .map(|(i, status)| (i as i64 + 1, *status, i as u64 + 1))
        .collect();
    let mut item = item(1, 5, &rows);
    item.source = "kinesis://orders'; DROP TABLE x; --".into();
    item.rejects = vec![Reject {
        row_number: Some(6),
        raw: Some("6,'); TRUNCATE ingest_rejects; --".into()),
        reason: "column order_id: \"'; --\" is not a valid int64".into(),
    }];
    warehouse
        .load_rows(&dataset, &load_schema(), &[item])
        .await
        .expect("load");
    let expected: Vec<(i64, String)> = hostile
        .iter()
        .enumerate()
        .map(|(i, status)| (i as i64 + 1, (*status).to_owned()))
        .collect();
    assert_eq!(harness.rows().await, expected);
    assert_eq!(
        harness.rejects().await,
        vec![(
            6,
            Some("6,'); TRUNCATE ingest_rejects; --".to_owned()),
            "column order_id: \"'; --\" is not a valid int64".to_owned()
        )]
    );
    assert_eq!(harness.platform_rows("load_ledger").await, 1);
}

/// One item of one whole file with one reject: a ledger row, a completed `file_loads` row
/// and a rejects row.
fn file_with_a_reject(n: u64) -> ItemSource {
    let mut rows = item(n, n, &[(n as i64, "placed", n)]);
    rows.rejects = vec![Reject {
        row_number: Some(2),
        raw: None,
        reason: "order_id is required".into(),
    }];
    let mut source = rows.into_source();
    source.file = Some(FilePart {
        file_id: format!("landing/orders-{n}.csv@etag"),
        dataset: "orders".into(),
        bucket: "landing".into(),
        key: format!("orders-{n}.csv"),
        version_id: None,
        etag: "etag".into(),
        parts_total: 1,
    });
    source
}

async fn prune_deletes_the_rows_older_than_their_cut_off_and_keeps_the_rest(harness: &dyn Harness) {
    use processor::warehouse::retention::{PruneReport, PruneRequest};
    use std::time::{Duration, SystemTime};
    let (dataset, warehouse) = harness.with_target(true).await;
    let load = async |n: u64| {
        let report = warehouse
            .load(&dataset, &load_schema(), vec![file_with_a_reject(n)])
            .await
            .expect("load");
        assert_eq!((report.items_loaded, report.rows_rejected), (1, 1));
    };
    load(1).await;
    // Redshift's GETDATE() has whole seconds: the cut-off lies a second from each load.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let between = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    load(2).await;
    let before = |cut_off: SystemTime, dry_run: bool| PruneRequest {
        rejects_before: Some(cut_off),
        file_loads_before: Some(cut_off),
        ledger_before: Some(cut_off),
        dry_run,
    };
    let one_each = PruneReport {
        rejects: 1,
        file_loads: 1,
        ledger: 1,
        ..PruneReport::default()
    };
    let counted = warehouse
        .prune(&before(between, true))
        .await
        .expect("dry run");
    assert_eq!(counted, one_each);
    assert_eq!(harness.platform_rows("load_ledger").await, 2);
    let pruned = warehouse
        .prune(&before(between, false))
        .await
        .expect("prune");
    assert_eq!(pruned, one_each);
    for table in ["load_ledger", "rejects", "file_loads"] {
        assert_eq!(harness.platform_rows(table).await, 1, "{table}");
    }
    // Again: nothing older is left. A table without a cut-off is kept whole.
    let again = warehouse
        .prune(&before(between, false))
        .await
        .expect("again");
    assert_eq!(again, PruneReport::default());
    let only_rejects = PruneRequest {
        rejects_before: Some(SystemTime::now() + Duration::from_secs(60)),
        file_loads_before: None,
        ledger_before: None,
        dry_run: false,
    };
    let pruned = warehouse.prune(&only_rejects).await.expect("rejects");
    assert_eq!(
        pruned,
        PruneReport {
            rejects: 1,
            ..PruneReport::default()
        }
    );
    assert_eq!(harness.platform_rows("load_ledger").await, 1);
    // The rows that were kept still make a redelivery a skip.
    let report = warehouse
        .load(&dataset, &load_schema(), vec![file_with_a_reject(2)])
        .await
        .expect("redelivery");
    assert_eq!(report.items_skipped, 1);
}

/// The orders load schema with `extra` columns after `status`, and `status` typed
/// `status_type`.
fn schema_with(status_type: DataType, extra: &[(&str, DataType)]) -> SchemaRef {
    let mut fields = vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("status", status_type, true),
    ];
    fields.extend(
        extra
            .iter()
            .map(|(name, t)| Field::new(*name, t.clone(), true)),
    );
    fields.extend(lineage::fields());
    Arc::new(Schema::new(fields))
}

async fn a_catalog_change_adds_columns_and_refuses_a_type_change(harness: &dyn Harness) {
    let (dataset, warehouse) = harness.with_target(true).await;
    let old_rows = item(1, 2, &[(1, "placed", 1), (2, "placed", 2)]);
    warehouse
        .load_rows(&dataset, &load_schema(), &[old_rows])
        .await
        .expect("old rows");
    // The catalog gains `channel`: added, nullable; the rows already loaded hold NULL.
    let wider = schema_with(DataType::Utf8, &[("channel", DataType::Utf8)]);
    let plan = warehouse
        .ensure_target(&dataset, &wider)
        .await
        .expect("evolve");
    assert!(!plan.create && plan.steps.len() == 1, "{plan}");
    assert!(plan.to_string().contains("+ add column channel"), "{plan}");
    let again = warehouse
        .ensure_target(&dataset, &wider)
        .await
        .expect("again");
    assert!(
        again.is_unchanged(),
        "a second start-up changes nothing: {again}"
    );
    let base = batch(&[(3, "placed", 3), (1, "shipped", 4)]);
    let mut columns = base.columns().to_vec();
    columns.insert(
        2,
        Arc::new(StringArray::from(vec!["web", "shop"])) as ArrayRef,
    );
    let rows = RecordBatch::try_new(Arc::clone(&wider), columns).expect("batch");
    let new_rows = ItemRows {
        key: key(3, 4),
        source: "kinesis://orders".into(),
        batches: vec![rows],
        rejects: Vec::new(),
    };
    warehouse
        .load_rows(&dataset, &wider, &[new_rows])
        .await
        .expect("new rows");
    assert_eq!(
        harness.column_text("channel").await,
        [
            (1, Some("shop".to_owned())),
            (2, None),
            (3, Some("web".to_owned()))
        ]
    );
    // The old load schema still loads: the column it lacks stays NULL.
    warehouse
        .load_rows(&dataset, &load_schema(), &[item(5, 5, &[(4, "placed", 5)])])
        .await
        .expect("old schema");
    assert_eq!(harness.column_text("channel").await[3], (4, None));
    // `status` becomes an integer: refused before anything changes, naming both types.
    let changed = schema_with(DataType::Int64, &[("channel", DataType::Utf8)]);
    let planned = warehouse
        .plan_target(&dataset, &changed)
        .await
        .expect("plan");
    assert!(planned.is_refused(), "{planned}");
    let err = warehouse
        .ensure_target(&dataset, &changed)
        .await
        .expect_err("refused");
    let message = err.to_string();
    assert!(
        message.contains("orders (orders)") && message.contains("refused: column status"),
        "{message}"
    );
    assert!(!err.is_retryable());
    assert_eq!(harness.rows().await.len(), 4);
}

macro_rules! contract {
    ($($check:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(&super::Postgres::new()).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(&super::Sqlite::new()).await;
                }
            )*
        }
        mod redshift {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(&super::Redshift::new().await).await;
                }
            )*
        }
    };
}

contract!(
    keyed_loads_are_idempotent_and_the_last_update_in_a_batch_wins,
    appends_merge_on_lineage_so_repacked_records_load_once,
    rejects_and_ledger_are_written_with_the_rows,
    a_failed_load_leaves_nothing_behind_and_can_be_retried,
    concurrent_loads_of_the_same_item_write_it_once,
    a_completed_file_is_claimed_once,
    values_that_look_like_sql_are_stored_verbatim,
    prune_deletes_the_rows_older_than_their_cut_off_and_keeps_the_rest,
    rejects_are_found_by_dataset_source_reason_and_time,
    activity_counts_items_rows_and_files_of_the_window,
    a_catalog_change_adds_columns_and_refuses_a_type_change,
);

/// The embedded warehouse stores each supported type as the module documents.
#[tokio::test]
async fn sqlite_stores_every_supported_type_readably() {
    use datafusion::arrow::array::{
        BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array,
        TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::TimeUnit;
    let harness = Sqlite::new();
    let text = r#"
[datasets.kinds]
format = "csv"
target = "sales.kinds"
s3 = { prefix = "kinds/" }
columns = [
  { name = "flag", type = "bool" },
  { name = "small", type = "int32" },
  { name = "ratio", type = "float64" },
  { name = "day", type = "date" },
  { name = "at", type = "timestamptz" },
  { name = "amount", type = "decimal(12,2)" },
]
"#;
    let dataset = Catalog::from_toml(text, "test")
        .expect("valid")
        .get("kinds")
        .expect("present")
        .clone();
    let mut fields = vec![
        Field::new("flag", DataType::Boolean, true),
        Field::new("small", DataType::Int32, true),
        Field::new("ratio", DataType::Float64, true),
        Field::new("day", DataType::Date32, true),
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("amount", DataType::Decimal128(12, 2), true),
    ];
    fields.extend(lineage::fields());
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(BooleanArray::from(vec![Some(true), None])),
        Arc::new(Int32Array::from(vec![Some(-7), None])),
        Arc::new(Float64Array::from(vec![Some(0.25), None])),
        Arc::new(Date32Array::from(vec![Some(20_781), None])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![Some(1_795_946_400_123_456), None])
                .with_timezone("UTC"),
        ),
        Arc::new(
            Decimal128Array::from(vec![Some(123_456), None])
                .with_precision_and_scale(12, 2)
                .expect("decimal"),
        ),
        Arc::new(StringArray::from(vec!["s3://b/k", "s3://b/k"])),
        Arc::new(StringArray::from(vec!["etag", "etag"])),
        Arc::new(StringArray::from(vec!["0", "10"])),
        Arc::new(Int64Array::from(vec![0, 0])),
    ];
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).expect("batch");
    let warehouse = harness.connect().await;
    warehouse
        .ensure_target(&dataset, &schema)
        .await
        .expect("target");
    let rows = ItemRows {
        key: key(1, 1),
        source: "s3://b/k".into(),
        batches: vec![batch],
        rejects: Vec::new(),
    };
    warehouse
        .load_rows(&dataset, &schema, &[rows])
        .await
        .expect("load");
    let stored = harness.query(
        "SELECT flag, small, ratio, day, at, amount, typeof(amount) FROM sales_kinds ORDER BY _ingest_offset",
        |r| {
            Ok((
                r.get::<_, Option<i64>>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, Option<f64>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, String>(6)?,
            ))
        },
    );
    assert_eq!(
        stored[0],
        (
            Some(1),
            Some(-7),
            Some(0.25),
            Some("2026-11-24".to_owned()),
            Some("2026-11-29T10:00:00.123456Z".to_owned()),
            Some("1234.56".to_owned()),
            "text".to_owned()
        )
    );
    assert_eq!(
        stored[1],
        (None, None, None, None, None, None, "null".to_owned())
    );
}

/// A string column is `VARCHAR(max_length)` bytes on Redshift (256 unless the catalog says)
/// and a columnar COPY has no MAXERROR: the sink rejects a row with a longer string, with
/// the reason, and loads the rest (the stand-in fails the whole COPY on such a value, as
/// Redshift does).
#[tokio::test]
async fn redshift_rejects_a_row_whose_string_is_too_long_and_loads_the_rest() {
    let harness = Redshift::new().await;
    let (dataset, warehouse) = harness.with_target(true).await;
    let long = "é".repeat(40_000);
    let rows = [(1, "placed", 0), (2, long.as_str(), 1), (3, "shipped", 2)];
    let report = warehouse
        .load_rows(&dataset, &load_schema(), &[item(0, 2, &rows)])
        .await
        .expect("load");
    assert_eq!((report.rows_staged, report.rows_rejected), (2, 1));
    assert_eq!(
        harness.rows().await,
        owned(&[(1, "placed"), (3, "shipped")])
    );
    let sql = format!("SELECT reason FROM {}.rejects", harness.postgres.platform);
    let reasons: Vec<String> = harness
        .postgres
        .client()
        .await
        .query(&sql, &[])
        .await
        .expect("rejects")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].starts_with("column status: 80000 bytes, longer than the 256 bytes its Redshift VARCHAR holds (raise its max_length in the catalog)"),
        "{reasons:?}"
    );
    assert!(
        reasons[0].contains("kinesis://orders offset 1"),
        "{reasons:?}"
    );
}

/// Where the catalog says `too_long = "truncate"`, a longer string is cut to the column's
/// bytes at a character boundary (never inside a multibyte character), the row loads, and
/// the cuts are counted in the load's report: nothing rejected, nothing silent.
#[tokio::test]
async fn redshift_truncates_and_counts_strings_where_the_catalog_asks() {
    let harness = Redshift::new().await;
    let mut dataset = harness.dataset(true);
    let status = dataset
        .columns
        .iter_mut()
        .find(|c| c.name == "status")
        .expect("a status column");
    status.max_length = Some(8);
    status.too_long = TooLong::Truncate;
    let warehouse = harness.connect().await;
    warehouse
        .ensure_target(&dataset, &load_schema())
        .await
        .expect("target");
    let five_e = "é".repeat(5);
    let rows = [
        (1, "placed", 0),
        (2, "délivré à temps", 1),
        (3, five_e.as_str(), 2),
    ];
    let report = warehouse
        .load_rows(&dataset, &load_schema(), &[item(0, 2, &rows)])
        .await
        .expect("load");
    assert_eq!(
        (
            report.rows_staged,
            report.rows_rejected,
            report.values_truncated
        ),
        (3, 0, 2)
    );
    assert_eq!(
        harness.rows().await,
        owned(&[(1, "placed"), (2, "délivr"), (3, "éééé")])
    );
    assert_eq!(harness.platform_rows("rejects").await, 0);
}

/// Redshift's catch-all `XX000`: S3 failing under COPY and a serializable conflict (1023)
/// are retried; a data error is not; a failed load commits nothing and leaves no staged
/// files; the retry loads the item once.
#[tokio::test]
async fn redshift_retries_s3_failures_and_conflicts_but_not_data_errors() {
    let harness = Redshift::new().await;
    let (dataset, warehouse) = harness.with_target(true).await;
    let rows = [(1, "placed", 0), (2, "shipped", 1)];
    let the_item = item(0, 1, &rows);
    let faults = [
        (
            "S3ServiceException:Please reduce your request rate.,Status 503,Error SlowDown",
            None,
            true,
        ),
        (
            "1023",
            Some(
                "Serializable isolation violation on table - 156057, transactions forming the cycle are: 10230, 10231",
            ),
            true,
        ),
        (
            "Load into table 'orders' failed. Check 'stl_load_errors' system table for details (query 1023)",
            None,
            false,
        ),
    ];
    for (message, detail, retryable) in faults {
        harness.peer.standin.fail_next_copy(message, detail);
        let err = warehouse
            .load_rows(&dataset, &load_schema(), std::slice::from_ref(&the_item))
            .await
            .expect_err("the COPY fails");
        assert_eq!(err.is_retryable(), retryable, "{message}: {err}");
        assert!(
            harness.rows().await.is_empty(),
            "{message}: nothing committed"
        );
        assert_eq!(
            harness.peer.staged_objects().await,
            0,
            "{message}: no staged files left"
        );
    }
    let report = warehouse
        .load_rows(&dataset, &load_schema(), std::slice::from_ref(&the_item))
        .await
        .expect("the retry loads");
    assert_eq!(report.items_loaded, 1);
    assert_eq!(
        harness.rows().await,
        owned(&[(1, "placed"), (2, "shipped")])
    );
    assert_eq!(harness.platform_rows("load_ledger").await, 1);
}

/// Loads of two datasets on the Redshift sink `COPY` at the same time: staging runs
/// outside any lock, and only the short merges queue on the ledger's.
#[tokio::test]
async fn redshift_loads_of_two_datasets_copy_in_parallel() {
    let harness = Redshift::new().await;
    let other_schema = format!("{}_other", harness.postgres.schema);
    let datasets = [harness.dataset(true), orders_dataset(&other_schema, true)];
    for dataset in &datasets {
        harness
            .connect()
            .await
            .ensure_target(dataset, &load_schema())
            .await
            .expect("target");
    }
    harness
        .peer
        .standin
        .slow_copies(std::time::Duration::from_millis(1500));
    let mut loads = Vec::new();
    for (n, dataset) in datasets.into_iter().enumerate() {
        let warehouse = harness.connect().await;
        let first = n as u64 * 100;
        let rows = [(first as i64, "placed", first)];
        let the_item = item(first, first, &rows);
        loads.push(tokio::spawn(async move {
            warehouse
                .load_rows(&dataset, &load_schema(), &[the_item])
                .await
                .expect("load")
        }));
    }
    for load in loads {
        assert_eq!(load.await.expect("task").items_loaded, 1);
    }
    let spans = harness.peer.standin.copy_spans();
    assert_eq!(spans.len(), 2, "{spans:?}");
    let ((a_start, a_end), (b_start, b_end)) = (spans[0], spans[1]);
    assert!(
        a_start < b_end && b_start < a_end,
        "the two COPYs ran one after the other: {spans:?}"
    );
}

/// Redshift takes at most 16 MB in one statement: a load with 300 rejects of 120 KB each
/// (36 MB) writes them all, in statements under the limit.
#[tokio::test]
async fn redshift_writes_many_large_rejects_in_statements_under_16_mb() {
    let harness = Redshift::new().await;
    let (dataset, warehouse) = harness.with_target(true).await;
    let rejects = (1..=300)
        .map(|n| Reject {
            row_number: Some(n),
            raw: Some("r".repeat(60_000)),
            reason: format!("{n}: {}", "why ".repeat(15_000)),
        })
        .collect();
    let item = ItemSource {
        key: key(0, 0),
        source: "kinesis://orders".into(),
        rows: Box::new(MemoryRows::new(vec![batch(&[(1, "placed", 0)])], rejects)),
        file: None,
        stream: None,
    };
    let report = warehouse
        .load(&dataset, &load_schema(), vec![item])
        .await
        .expect("load");
    assert_eq!(report.rows_rejected, 300);
    assert_eq!(harness.platform_rows("rejects").await, 300);
    let largest = harness
        .peer
        .standin
        .statements()
        .iter()
        .map(|s| s.bytes)
        .max()
        .unwrap_or_default();
    assert!(
        largest <= test_support::redshift::gate::MAX_STATEMENT_BYTES,
        "a statement of {largest} bytes"
    );
}

/// A Redshift layout that names a column the transform does not output is refused when
/// the target is set up (at start-up), naming the column.
#[tokio::test]
async fn redshift_refuses_a_layout_naming_a_column_the_output_lacks() {
    let harness = Redshift::new().await;
    let text = format!(
        r#"
[datasets.orders]
format = "csv"
target = "{}.orders"
s3 = {{ prefix = "orders/" }}
transform = "SELECT order_id AS id, status FROM input"
redshift = {{ sort_key = ["order_id"] }}
columns = [
  {{ name = "order_id", type = "int64", nullable = false }},
  {{ name = "status", type = "string" }},
]
"#,
        harness.postgres.schema
    );
    let dataset = Catalog::from_toml(&text, "test")
        .expect("valid: the output is known only once the transform is planned")
        .get("orders")
        .expect("present")
        .clone();
    let mut fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new("status", DataType::Utf8, true),
    ];
    fields.extend(lineage::fields());
    let output: SchemaRef = Arc::new(Schema::new(fields));
    let err = harness
        .connect()
        .await
        .ensure_target(&dataset, &output)
        .await
        .expect_err("refused");
    assert!(
        shared::error::report(&err).contains("names \"order_id\""),
        "{err}"
    );
    assert!(!err.is_retryable());
}
