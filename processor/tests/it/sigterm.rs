//! The `processor serve` binary stopped with SIGTERM in the middle of a load: it finishes
//! the item in hand within the grace period, loses nothing, duplicates nothing, and exits 0.

use std::process::{Command, Stdio};
use std::time::Duration;

use shared::catalog::FileFormat;
use shared::envelope::MessageSizeLimit;
use shared::queue::{SqsQueue, WorkQueue};
use test_support::EXAMPLE_CATALOG as CATALOG;
use test_support::{
    TestSchemas, binary_config, clients, create_bucket, create_queue_with_dlq, eventually,
    postgres_url, queue_depth, upload_file,
};

#[tokio::test]
async fn sigterm_during_a_load_finishes_it_and_exits_cleanly() {
    let clients = clients().await;
    let schemas = TestSchemas::new();
    let (sales, platform) = (&schemas.sales, &schemas.platform);

    let bucket = create_bucket(&clients.s3, "landing").await;
    let rows = 150_000;
    let mut csv = String::from("order_id,line_number,product_sku,quantity,unit_price\n");
    for i in 0..rows {
        csv.push_str(&format!(
            "{},{},SKU-{},{},{}.50\n",
            i / 3,
            i % 3,
            i % 101,
            i % 7 + 1,
            i % 40
        ));
    }
    let key = "landing/order_items/big.csv";
    let item = upload_file(
        &clients.s3,
        &bucket,
        key,
        csv.into_bytes(),
        "order_items",
        FileFormat::Csv,
    )
    .await;
    let (queue_url, dlq_url) = create_queue_with_dlq(&clients.sqs, 5).await;
    let queue = SqsQueue::new(clients.sqs.clone(), &queue_url, MessageSizeLimit::default());

    let sections = format!(
        r#"
[queue]
url = "{queue_url}"
dead_letter_url = "{dlq_url}"
wait_time_secs = 1
visibility_timeout_secs = 60

[warehouse]
url = "{warehouse}"

[processor]
workers = 1
platform_schema = "{platform}"
shutdown_grace_secs = 20
health_address = "off"

[telemetry]
log_format = "text"
metrics_export = "emf"
"#,
        warehouse = postgres_url(),
    );
    let config_path = binary_config("sigterm", &schemas.retarget(CATALOG), &sections);
    let dir = config_path.parent().expect("a folder").to_owned();

    let child = Command::new(crate::PROCESSOR)
        .arg("--config")
        .arg(&config_path)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start processor");
    let mut guard = KillOnDrop(Some(child.id()));

    let pg = test_support::pg_client().await;
    // Wait for start-up (the target table exists), then hand it the item.
    let table = format!("{sales}.order_items");
    eventually(
        "the processor to start",
        Duration::from_secs(60),
        || async {
            pg.query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    assert!(
        queue
            .send(&[item
                .to_json(MessageSizeLimit::default())
                .expect("json")
                .into()])
            .await
            .all_succeeded()
    );
    eventually("the COPY to start", Duration::from_secs(60), || async {
        let active: i64 = pg
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'COPY %'",
                &[],
            )
            .await
            .ok()?
            .get(0);
        (active > 0).then_some(())
    })
    .await;

    let stopped_at = std::time::Instant::now();
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    guard.0 = None;
    let output = exit;
    let exit = output.status;
    // The metrics went out as Embedded Metric Format on stdout, the last ones at shutdown.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut rows_loaded = 0.0;
    for line in stdout.lines() {
        let (values, dimensions) = test_support::check_emf(line, "processor");
        if dimensions.get("dataset").map(String::as_str) == Some("order_items") {
            rows_loaded += values
                .get("ingest_rows_loaded_total")
                .copied()
                .unwrap_or(0.0);
        }
    }
    assert!(exit.success(), "processor exited with {exit}");
    assert!(
        stopped_at.elapsed() < Duration::from_secs(20),
        "exited after {:?}",
        stopped_at.elapsed()
    );

    let loaded: i64 = pg
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        loaded, rows as i64,
        "the item in hand was finished, every row once"
    );
    assert_eq!(rows_loaded, rows as f64, "EMF counted the rows: {stdout}");
    let ledger: i64 = pg
        .query_one(&format!("SELECT count(*) FROM {platform}.load_ledger"), &[])
        .await
        .expect("ledger")
        .get(0);
    assert_eq!(ledger, 1);
    assert_eq!(
        queue_depth(&clients.sqs, &queue_url).await,
        (0, 0),
        "the message was deleted after its load"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Kills the processor if the test fails before it exits, so no server outlives the test.
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
    }
}
