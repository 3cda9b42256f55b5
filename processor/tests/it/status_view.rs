//! `processor status` and the `/status` page against the AWS path (the emulator's S3 and
//! SQS, PostgreSQL): a loaded file with a reject, a file over its reject limit in the
//! dead-letter queue, a stream item with a reject and a body that is no work item. Every
//! figure shown is checked against the warehouse's own tables, on the command line, in
//! `/status.json` and in the page as headless Chromium renders it.

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use shared::catalog::{Catalog, FileFormat};
use shared::config::PlatformConfig;
use shared::envelope::{
    MessageSizeLimit, RecordsItem, RecordsPayload, StreamPosition, StreamRecord, WorkItem,
};
use shared::queue::{OutgoingMessage, SqsQueue, WorkQueue};
use test_support::EXAMPLE_CATALOG as CATALOG;
use test_support::{
    TestSchemas, binary_config, clients, count, create_bucket, create_queue_with_dlq, eventually,
    http_get, pg_client, postgres_url, queue_depth, upload_file,
};

use crate::support::browser;

const ITEMS: &str = "order_items";
const EVENTS: &str = "order_status_events";

fn records_item() -> WorkItem {
    let position = |n: &str| StreamPosition {
        sequence_number: n.to_owned(),
        sub_sequence_number: 0,
    };
    let event = |id: &str, order: serde_json::Value| serde_json::json!({"event_type": "order_status_changed", "event_id": id, "order_id": order, "status": "shipped", "occurred_at": "2024-06-01T10:00:00Z"});
    // The newest record arrived in the stream five minutes ago: the stream's lag.
    let five_minutes_ago = shared::stream::epoch_millis(std::time::SystemTime::now()) - 300_000;
    let record = |n: &str, order: serde_json::Value| StreamRecord {
        position: position(n),
        arrival_ms: Some(five_minutes_ago - 1000 + n.parse::<i64>().unwrap_or(0)),
        data: event(&format!("e{n}"), order),
    };
    WorkItem::Records(RecordsItem {
        dataset: EVENTS.into(),
        stream: "order-events".into(),
        shard_id: "shardId-000000000000".into(),
        first: position("1"),
        last: position("3"),
        payload: RecordsPayload::Inline(vec![
            record("1", 1.into()),
            record("2", "not a number".into()),
            record("3", 2.into()),
        ]),
        created_at_ms: None,
        replay: None,
    })
}

fn processor(config: &std::path::Path, args: &[&str]) -> Output {
    crate::support::local::processor_output(Some(config), args)
}

/// What the warehouse's tables say about a dataset, to hold the view against.
struct Counted {
    rows: i64,
    rejected: i64,
    files_completed: i64,
    file_items: i64,
    stream_items: i64,
}

impl Counted {
    /// Each figure with the name the view gives it.
    fn fields(&self) -> [(&'static str, i64); 5] {
        [
            ("rows_loaded", self.rows),
            ("rows_rejected", self.rejected),
            ("files_completed", self.files_completed),
            ("file_items", self.file_items),
            ("stream_items", self.stream_items),
        ]
    }
}

async fn counted(dataset: &str, table: &str, platform: &str) -> Counted {
    let client = pg_client().await;
    let ledger = |kind: &str| {
        format!(
            "SELECT count(*) FROM {platform}.load_ledger WHERE dataset = '{dataset}' AND source LIKE '{kind}://%'"
        )
    };
    Counted {
        rows: count(&client, &format!("SELECT count(*) FROM {table}")).await,
        rejected: count(
            &client,
            &format!("SELECT count(*) FROM {platform}.rejects WHERE dataset = '{dataset}'"),
        )
        .await,
        files_completed: count(&client, &format!("SELECT count(*) FROM {platform}.file_loads WHERE dataset = '{dataset}' AND completed_at IS NOT NULL")).await,
        file_items: count(&client, &ledger("s3")).await,
        stream_items: count(&client, &ledger("kinesis")).await,
    }
}

fn assert_json_matches(report: &serde_json::Value, dataset: &str, expected: &Counted) {
    let line = report["datasets"]
        .as_array()
        .expect("datasets")
        .iter()
        .find(|d| d["dataset"] == dataset)
        .unwrap_or_else(|| panic!("no {dataset} in {report}"));
    for (field, value) in expected.fields() {
        assert_eq!(line[field], value, "{dataset} {field} in {line}");
    }
}

fn assert_page_matches(dom: &str, dataset: &str, expected: &Counted) {
    for (field, value) in expected.fields() {
        assert_eq!(
            browser::cell(dom, dataset, field),
            value.to_string(),
            "{dataset} {field} on the page"
        );
    }
}

#[tokio::test]
async fn status_shows_what_the_warehouse_holds_on_the_command_line_and_the_page() {
    let clients = clients().await;
    let schemas = TestSchemas::new();
    let catalog_text = schemas.retarget(CATALOG).replace(
        "key = [\"order_id\", \"line_number\"]",
        "key = [\"order_id\", \"line_number\"]\nreject_limit = 2",
    );
    let catalog = Arc::new(Catalog::from_toml(&catalog_text, "test catalog").expect("valid"));
    let bucket = create_bucket(&clients.s3, "landing").await;
    let header = "order_id,line_number,product_sku,quantity,unit_price\n";
    let upload = |key: &'static str, rows: &'static str| {
        let body = format!("{header}{rows}").into_bytes();
        upload_file(&clients.s3, &bucket, key, body, ITEMS, FileFormat::Csv)
    };
    let good = upload(
        "landing/order_items/good.csv",
        "1,1,SKU-1,2,9.99\n1,2,SKU-2,1,5.00\n2,1,SKU-3,3,1.10\n2,2,SKU-4,many,1.00\n",
    )
    .await;
    let over_limit = upload(
        "landing/order_items/bad.csv",
        "3,1,SKU-1,x,1\n3,2,SKU-2,y,1\n3,3,SKU-3,z,1\n",
    )
    .await;
    let (queue_url, dlq_url) = create_queue_with_dlq(&clients.sqs, 5).await;
    let queue = SqsQueue::new(clients.sqs.clone(), &queue_url, MessageSizeLimit::default());
    let limit = MessageSizeLimit::default();
    let messages: Vec<OutgoingMessage> = vec![
        good.to_json(limit).expect("json").into(),
        over_limit.to_json(limit).expect("json").into(),
        records_item().to_json(limit).expect("json").into(),
        "{not a work item".to_owned().into(),
    ];
    assert!(queue.send(&messages).await.all_succeeded());

    let platform = &schemas.platform;
    let sections = format!(
        "[queue]\nurl = \"{queue_url}\"\ndead_letter_url = \"{dlq_url}\"\nwait_time_secs = 1\n\n\
[warehouse]\nurl = \"{}\"\n\n[processor]\nworkers = 2\nplatform_schema = \"{platform}\"\nhealth_address = \"127.0.0.1:0\"\n",
        postgres_url()
    );
    let config_path = binary_config("status", &catalog_text, &sections);
    let config_text = std::fs::read_to_string(&config_path).expect("config");
    let config = PlatformConfig::from_toml(&config_text, "test config", Vec::new()).expect("valid");
    let service = processor::serve::start(&config, catalog)
        .await
        .expect("start");
    let health = service.health_address.expect("bound");
    eventually(
        "two loads and two dead letters",
        Duration::from_secs(60),
        || async {
            let client = pg_client().await;
            let loads = test_support::try_count(
                &client,
                &format!("SELECT count(*) FROM {platform}.load_ledger"),
            )
            .await;
            let (dead, _) = queue_depth(&clients.sqs, &dlq_url).await;
            (loads == Some(2) && dead == 2).then_some(())
        },
    )
    .await;

    let items = counted(ITEMS, &format!("{}.order_items", schemas.sales), platform).await;
    let events = counted(
        EVENTS,
        &format!("{}.order_status", schemas.events),
        platform,
    )
    .await;
    assert_eq!(
        (items.rows, items.rejected, events.rows, events.rejected),
        (3, 1, 2, 1)
    );

    // The command line, as JSON.
    let output = processor(&config_path, &["status", "--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_json_matches(&report, ITEMS, &items);
    assert_json_matches(&report, EVENTS, &events);
    assert_eq!(report["dead_letters"]["depth"], 2, "{report}");
    assert_eq!(report["dead_letters"]["without_dataset"], 1, "{report}");
    let items_line = report["datasets"]
        .as_array()
        .expect("datasets")
        .iter()
        .find(|d| d["dataset"] == ITEMS)
        .expect("items");
    assert_eq!(items_line["dead_letters"], 1);
    let reason = items_line["top_reasons"][0]["reason"]
        .as_str()
        .expect("a reason");
    assert!(reason.contains("rows rejected"), "{reason}");
    assert!(
        !reason.contains("bad.csv") && !reason.contains("\"x\""),
        "values masked: {reason}"
    );
    let events_line = report["datasets"]
        .as_array()
        .expect("datasets")
        .iter()
        .find(|d| d["dataset"] == EVENTS)
        .expect("events");
    let lag = events_line["lag_seconds"].as_u64().expect("a lag");
    assert!((295..400).contains(&lag), "{events_line}");
    assert!(items_line["lag_seconds"].is_null(), "{items_line}");
    assert_eq!(
        report["datasets"].as_array().expect("datasets").len(),
        5,
        "every dataset of the catalog has a line: {report}"
    );

    // The table, and the conditions a cron job alerts on.
    let output = processor(&config_path, &["status", "--fail-on", "incomplete"]);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{table}");
    assert!(table.contains("dead-letter queue: 2 message(s)"), "{table}");
    let items_row = table
        .lines()
        .find(|l| l.starts_with(ITEMS))
        .unwrap_or_else(|| panic!("no {ITEMS} row in\n{table}"));
    let cells: Vec<&str> = items_row.split_whitespace().collect();
    assert_eq!(
        &cells[..8],
        [ITEMS, "files", "1", "1", "0", "3", "1", "0"],
        "{table}"
    );
    let output = processor(&config_path, &["status", "--fail-on", "lag=10m"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = processor(&config_path, &["status", "--fail-on", "lag=2m"]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.code() == Some(1)
            && said.contains("order_status_events: the newest record loaded arrived at"),
        "{said}"
    );
    let output = processor(
        &config_path,
        &["status", "--fail-on", "dlq", "--fail-on", "rejects"],
    );
    assert_eq!(output.status.code(), Some(1));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("the dead-letter queue holds 2 message(s)"),
        "{said}"
    );
    assert!(said.contains("order_items: 1 row(s) rejected"), "{said}");
    for (bad, expected) in [
        (vec!["status", "--since", "yesterday"], "is not a window"),
        (vec!["status", "--fail-on", "lag"], "is not a condition"),
        (vec!["status", "--fail-on", "lag=soon"], "is not a length"),
        (vec!["status", "--since", "2999-01-01"], "in the future"),
    ] {
        let output = processor(&config_path, &bad);
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && said.contains(expected),
            "{bad:?}: {said}"
        );
    }

    // Where each file is: loaded, dead-lettered with its next step, not routed, absent.
    let trace = |url: String| {
        let output = processor(&config_path, &["trace", &url, "--json"]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout).expect("json")
    };
    let loaded = trace(format!("s3://{bucket}/landing/order_items/good.csv"));
    assert_eq!(loaded["dataset"], ITEMS, "{loaded}");
    assert_eq!(loaded["parts"][0]["state"], "loaded", "{loaded}");
    assert_eq!(loaded["parts"][0]["rows_loaded"], items.rows, "{loaded}");
    assert_eq!(loaded["rejects"], items.rejected, "{loaded}");
    assert_eq!(loaded["file_load"]["parts_loaded"], 1, "{loaded}");
    assert!(
        loaded["verdict"]
            .as_str()
            .is_some_and(|v| v.starts_with("loaded into order_items: 3 row(s), 1 rejected")),
        "{loaded}"
    );
    let dead = trace(format!("s3://{bucket}/landing/order_items/bad.csv"));
    assert_eq!(dead["parts"][0]["state"], "dead_lettered", "{dead}");
    assert!(dead["file_load"].is_null(), "{dead}");
    let next = dead["next_step"].as_str().expect("a next step");
    assert!(
        next.contains("raise reject_limit of order_items") && next.contains("processor redrive"),
        "{next}"
    );
    clients
        .s3
        .put_object()
        .bucket(&bucket)
        .key("elsewhere/notes.csv")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(
            b"a,b\n1,2\n",
        ))
        .send()
        .await
        .expect("put");
    let unrouted = trace(format!("s3://{bucket}/elsewhere/notes.csv"));
    assert_eq!(unrouted["skipped"], "unrouted", "{unrouted}");
    assert!(
        unrouted["verdict"]
            .as_str()
            .is_some_and(|v| v.contains("landing/order_items/* → order_items")),
        "{unrouted}"
    );
    let absent = trace(format!("s3://{bucket}/landing/order_items/none.csv"));
    assert!(
        absent["object"].is_null()
            && absent["verdict"]
                .as_str()
                .is_some_and(|v| v.starts_with("no object")),
        "{absent}"
    );
    let output = processor(
        &config_path,
        &[
            "trace",
            &format!("s3://{bucket}/landing/order_items/bad.csv"),
        ],
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains("=> dead-lettered: 1 of 1 work item(s)")
            && said.contains("next: raise reject_limit"),
        "{said}"
    );
    let output = processor(&config_path, &["trace", "landing/x.csv"]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && said.contains("is not an S3 URL"),
        "{said}"
    );

    // The page's data, and the page as a browser shows it.
    let (status, body) = http_get(health, "/status.json").await;
    assert_eq!(status, 200, "{body}");
    let served: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_json_matches(&served, ITEMS, &items);
    assert_json_matches(&served, EVENTS, &events);
    let (status, body) = http_get(health, "/status?since=soon").await;
    assert_eq!(status, 400, "{body}");
    let url = format!("http://{health}/status");
    let dom = browser::page_dom(&url).await;
    assert_page_matches(&dom, ITEMS, &items);
    assert_page_matches(&dom, EVENTS, &events);
    assert_eq!(browser::cell(&dom, ITEMS, "dead_letters"), "1");
    assert!(
        dom.contains("id=\"dead-letters\" class=\"bad\">2<"),
        "{dom}"
    );
    assert!(dom.contains("data-chart=\"order_items\""), "{dom}");
    assert!(!dom.contains("many"), "no row value on the page");
    let desktop = browser::screenshot(&url, "status-page-desktop", 1280, 900).await;
    let phone = browser::screenshot(&url, "status-page-phone", 390, 844).await;
    eprintln!("screenshots: {} {}", desktop.display(), phone.display());

    service.shutdown().await;
    let _ = std::fs::remove_dir_all(config_path.parent().expect("dir"));
}
