//! The handler fed with the notifications the emulator's S3 really sends to an SQS queue,
//! sending its work items to a real (emulated) SQS work queue.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
use ingest_batch::FileIngest;
use ingest_batch::plan::{FilePlanner, S3Objects};
use shared::catalog::Catalog;
use shared::envelope::{FileItem, MessageSizeLimit, WorkItem};
use shared::queue::{SqsQueue, WorkQueue};
use test_support::{clients, create_bucket, create_queue};

const CATALOG: &str = r#"
[datasets.orders]
format = "jsonl"
target = "sales.orders"
key = ["order_id"]
s3 = { prefix = "landing/orders/" }
columns = [{ name = "order_id", type = "int64", nullable = false }, { name = "note", type = "string" }]

[datasets.customers]
format = "csv"
target = "sales.customers"
key = ["customer_id"]
s3 = { prefix = "landing/customers/" }
columns = [{ name = "customer_id", type = "int64", nullable = false }, { name = "name", type = "string" }]
"#;

const PART_SIZE: u64 = 64 * 1024;

/// A JSON-lines body of about `bytes` bytes.
fn jsonl_body(bytes: usize) -> Vec<u8> {
    let mut body = Vec::new();
    let mut id = 0;
    while body.len() < bytes {
        id += 1;
        body.extend(
            format!(
                "{{\"order_id\":{id},\"note\":\"{}\"}}\n",
                "n".repeat(id % 97)
            )
            .bytes(),
        );
    }
    body
}

/// A CSV body whose quoted names hold newlines, commas and doubled quotes, so that many
/// naive cut points fall inside a field.
fn csv_body(bytes: usize) -> Vec<u8> {
    let mut body = b"customer_id,name\n".to_vec();
    let mut id = 0;
    while body.len() < bytes {
        id += 1;
        let filler = "x\n".repeat(id % 300);
        body.extend(format!("{id},\"Name {id}, \"\"the\"\"\n{filler}\"\n").bytes());
    }
    body
}

async fn upload(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, body: Vec<u8>) {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .unwrap_or_else(|err| panic!("put {key}: {err:?}"));
}

#[tokio::test]
async fn real_notifications_become_work_items_for_the_right_objects_and_parts() {
    let clients = clients().await;
    let bucket = create_bucket(&clients.s3, "landing").await;
    let notifications_url = create_queue(&clients.sqs, &[]).await;
    let work_url = create_queue(&clients.sqs, &[]).await;
    let notifications_arn = SqsQueue::new(
        clients.sqs.clone(),
        &notifications_url,
        MessageSizeLimit::default(),
    )
    .arn()
    .await
    .expect("queue arn");
    clients
        .s3
        .put_bucket_notification_configuration()
        .bucket(&bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .queue_arn(notifications_arn)
                        .events(Event::from("s3:ObjectCreated:*"))
                        .build()
                        .expect("queue configuration"),
                )
                .build(),
        )
        .send()
        .await
        .expect("configure notifications");

    let jsonl = jsonl_body(300 * 1024);
    let csv = csv_body(200 * 1024);
    let uploads: Vec<(&str, Vec<u8>)> = vec![
        (
            "landing/orders/2026 11 24/orders +1.jsonl",
            b"{\"order_id\":1}\n".to_vec(),
        ),
        (
            "landing/orders/Zürich/東京 📦.jsonl",
            b"{\"order_id\":2}\n".to_vec(),
        ),
        (
            "landing/orders/a%b&c=d.jsonl",
            b"{\"order_id\":3}\n".to_vec(),
        ),
        ("landing/orders/", Vec::new()),
        ("landing/orders/empty.jsonl", Vec::new()),
        ("landing/unknown/x.csv", b"a\n1\n".to_vec()),
        ("landing/orders/big.jsonl", jsonl.clone()),
        ("landing/customers/big file.csv", csv.clone()),
    ];
    for (key, body) in &uploads {
        upload(&clients.s3, &bucket, key, body.clone()).await;
    }

    let queue: Arc<dyn WorkQueue> = Arc::new(SqsQueue::new(
        clients.sqs.clone(),
        &work_url,
        MessageSizeLimit::default(),
    ));
    let ingest = FileIngest {
        planner: FilePlanner {
            catalog: Arc::new(Catalog::from_toml(CATALOG, "test").expect("catalog")),
            reader: Arc::new(S3Objects {
                client: clients.s3.clone(),
            }),
            part_size: PART_SIZE,
        },
        queue,
        size_limit: MessageSizeLimit::default(),
        source: "s3_event",
    };

    // Every notification the emulator produced (the test event included) goes through
    // the handler, as the Lambda would receive them.
    let mut totals = ingest_batch::IngestReport::default();
    let mut seen_notifications = 0;
    let mut quiet_polls = 0;
    while quiet_polls < 3 {
        let received = clients
            .sqs
            .receive_message()
            .queue_url(&notifications_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive notifications");
        let messages = received.messages();
        if messages.is_empty() {
            quiet_polls += 1;
            continue;
        }
        quiet_polls = 0;
        for message in messages {
            seen_notifications += 1;
            let payload: serde_json::Value =
                serde_json::from_str(message.body().expect("body")).expect("notification json");
            let report = ingest.handle(payload).await.expect("handled");
            totals.objects += report.objects;
            totals.files_split += report.files_split;
            totals.work_items_sent += report.work_items_sent;
            for (reason, n) in report.skipped {
                *totals.skipped.entry(reason).or_default() += n;
            }
            clients
                .sqs
                .delete_message()
                .queue_url(&notifications_url)
                .receipt_handle(message.receipt_handle().expect("handle"))
                .send()
                .await
                .expect("delete notification");
        }
    }
    assert!(
        seen_notifications >= uploads.len(),
        "{seen_notifications} notifications"
    );
    assert_eq!(totals.objects, uploads.len(), "{totals:?}");
    assert_eq!(totals.files_split, 2, "{totals:?}");
    let expected_skips: BTreeMap<&str, usize> = [
        ("empty_object", 1),
        ("folder_marker", 1),
        ("test_event", 1),
        ("unrouted", 1),
    ]
    .into();
    assert_eq!(totals.skipped, expected_skips);

    // The work items on the queue name the decoded keys and the right datasets.
    let mut items: Vec<FileItem> = Vec::new();
    let mut quiet_polls = 0;
    while quiet_polls < 2 {
        let received = clients
            .sqs
            .receive_message()
            .queue_url(&work_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(60)
            .send()
            .await
            .expect("receive work items");
        if received.messages().is_empty() {
            quiet_polls += 1;
        }
        for message in received.messages() {
            match WorkItem::from_json(message.body().expect("body")).expect("a work item") {
                WorkItem::File(file) => items.push(file),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(items.len(), totals.work_items_sent);
    let whole: BTreeMap<&str, &str> = items
        .iter()
        .filter(|i| i.part.is_none())
        .map(|i| (i.key.as_str(), i.dataset.as_str()))
        .collect();
    assert_eq!(
        whole,
        [
            ("landing/orders/2026 11 24/orders +1.jsonl", "orders"),
            ("landing/orders/Zürich/東京 📦.jsonl", "orders"),
            ("landing/orders/a%b&c=d.jsonl", "orders"),
        ]
        .into()
    );

    // The parts of each split file cover it exactly, each starting at a row start.
    for (key, body, dataset) in [
        ("landing/orders/big.jsonl", &jsonl, "orders"),
        ("landing/customers/big file.csv", &csv, "customers"),
    ] {
        let mut parts: Vec<&FileItem> = items.iter().filter(|i| i.key == key).collect();
        parts.sort_by_key(|p| p.part.expect("a part").index);
        let count = parts.len();
        assert!(count >= 3, "{key}: {count} parts");
        let mut expected_start = 0;
        for (index, part) in parts.iter().enumerate() {
            assert_eq!(part.dataset, dataset);
            let range = part.range.expect("a range");
            let label = part.part.expect("a part");
            assert_eq!(
                (label.index as usize, label.count as usize),
                (index + 1, count)
            );
            assert_eq!(range.start, expected_start, "{key}: parts are contiguous");
            expected_start = range.end;
            if range.start > 0 {
                assert_eq!(
                    body[range.start as usize - 1],
                    b'\n',
                    "{key}: cut after a row"
                );
            }
        }
        assert_eq!(
            expected_start,
            body.len() as u64,
            "{key}: parts cover the file"
        );
        if dataset == "customers" {
            assert_csv_parts_hold_the_same_rows(body, &parts);
        }
    }

    // Sending the same notifications again (a Lambda retry) yields the same keys.
    let again = ingest
        .ingest(&[ingest_batch::events::CreatedObject {
            bucket: bucket.clone(),
            key: "landing/orders/big.jsonl".into(),
            size: jsonl.len() as u64,
            etag: items
                .iter()
                .find(|i| i.key == "landing/orders/big.jsonl")
                .expect("present")
                .etag
                .clone(),
            version_id: None,
            event_time_ms: None,
            undecoded_key: None,
        }])
        .await
        .expect("planned again");
    assert_eq!(
        again.work_items_sent,
        items
            .iter()
            .filter(|i| i.key == "landing/orders/big.jsonl")
            .count()
    );
}

/// Parsing each part on its own (the header only in the first) gives the rows of the
/// whole file, in order: no row cut, lost or doubled at a boundary.
fn assert_csv_parts_hold_the_same_rows(body: &[u8], parts: &[&FileItem]) {
    let parse = |bytes: &[u8], header: bool| -> Vec<Vec<String>> {
        csv::ReaderBuilder::new()
            .has_headers(header)
            .from_reader(bytes)
            .records()
            .map(|r| r.expect("valid csv").iter().map(str::to_owned).collect())
            .collect()
    };
    let whole = parse(body, true);
    let mut joined = Vec::new();
    for part in parts {
        let range = part.range.expect("range");
        joined.extend(parse(
            &body[range.start as usize..range.end as usize],
            range.start == 0,
        ));
    }
    assert_eq!(joined.len(), whole.len());
    assert!(
        joined == whole,
        "the parts' rows differ from the whole file's"
    );
    assert!(whole.iter().any(|row| row[1].contains('\n')));
}

#[tokio::test]
async fn objects_changed_since_the_event_are_skipped_as_gone() {
    let clients = clients().await;
    let bucket = create_bucket(&clients.s3, "gone").await;
    let body = jsonl_body(200 * 1024);
    upload(&clients.s3, &bucket, "landing/orders/x.jsonl", body.clone()).await;
    let work_url = create_queue(&clients.sqs, &[]).await;
    let ingest = FileIngest {
        planner: FilePlanner {
            catalog: Arc::new(Catalog::from_toml(CATALOG, "test").expect("catalog")),
            reader: Arc::new(S3Objects {
                client: clients.s3.clone(),
            }),
            part_size: PART_SIZE,
        },
        queue: Arc::new(SqsQueue::new(
            clients.sqs.clone(),
            &work_url,
            MessageSizeLimit::default(),
        )),
        size_limit: MessageSizeLimit::default(),
        source: "s3_event",
    };
    // An event for content that was overwritten since: its entity tag no longer matches.
    let report = ingest
        .ingest(&[ingest_batch::events::CreatedObject {
            bucket: bucket.clone(),
            key: "landing/orders/x.jsonl".into(),
            size: body.len() as u64,
            etag: "0000000000000000000000000000dead".into(),
            version_id: None,
            event_time_ms: None,
            undecoded_key: None,
        }])
        .await
        .expect("handled");
    assert_eq!(report.work_items_sent, 0);
    assert_eq!(report.skipped.get("gone"), Some(&1));
}
