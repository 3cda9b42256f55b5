//! The kit an operator runs on a real cluster (`infra/redshift-check/`: a catalog with a
//! column of every type, a CSV of NULLs, extremes, 65,535- and 65,536-byte multibyte
//! strings, time zones and decimals of each precision class, and `check.sql`) runs here
//! end to end: `processor serve` on the Redshift sink, through the stand-in, loads the file
//! and `check.sql` says ok on every line. On a cluster the same kit answers what the
//! stand-in cannot.

use std::sync::Arc;
use std::time::Duration;

use shared::catalog::{Catalog, FileFormat};
use shared::config::PlatformConfig;
use shared::envelope::MessageSizeLimit;
use shared::queue::{OutgoingMessage, SqsQueue, WorkQueue};
use test_support::{
    TestSchemas, aws_endpoint, clients, create_bucket, create_queue_with_dlq, eventually,
    pg_client, try_count, upload_file,
};

use crate::support::redshift::RedshiftPeer;

const KIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/redshift-check");

fn kit_file(name: &str) -> String {
    std::fs::read_to_string(format!("{KIT}/{name}"))
        .unwrap_or_else(|err| panic!("read {KIT}/{name}: {err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_cluster_check_passes_on_the_stand_in() {
    let clients = clients().await;
    let schemas = TestSchemas::new();
    let retarget = |text: &str| text.replace("ingest_check.", &format!("{}.", schemas.sales));
    let catalog = Arc::new(
        Catalog::from_toml(&retarget(&kit_file("catalog.toml")), "the kit's catalog")
            .expect("valid"),
    );
    let peer = RedshiftPeer::start().await;
    let landing = create_bucket(&clients.s3, "landing").await;
    let item = upload_file(
        &clients.s3,
        &landing,
        "ingest-check/type_matrix/type_matrix.csv",
        kit_file("type_matrix.csv").into_bytes(),
        "type_matrix",
        FileFormat::Csv,
    )
    .await;
    let (queue_url, dlq_url) = create_queue_with_dlq(&clients.sqs, 5).await;
    let queue = SqsQueue::new(clients.sqs.clone(), &queue_url, MessageSizeLimit::default());
    let message: OutgoingMessage = item
        .to_json(MessageSizeLimit::default())
        .expect("json")
        .into();
    assert!(queue.send(&[message]).await.all_succeeded());

    let config_text = format!(
        r#"
[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"
s3_force_path_style = true

[queue]
url = "{queue_url}"
dead_letter_url = "{dlq_url}"
wait_time_secs = 1

[warehouse]
url = "{warehouse}"
kind = "redshift"
tls = "disable"

[warehouse.redshift]
iam_role = "{role}"
staging = "s3://{staging}/{prefix}"

[processor]
workers = 1
platform_schema = "{platform}"
health_address = "off"
"#,
        endpoint = aws_endpoint(),
        warehouse = peer.standin.url(),
        role = peer.settings.iam_role,
        staging = peer.settings.staging_bucket,
        prefix = peer.settings.staging_prefix,
        platform = schemas.platform,
    );
    let config =
        PlatformConfig::from_toml(&config_text, "test config", Vec::new()).expect("valid config");
    let service = processor::serve::start(&config, catalog)
        .await
        .expect("start");
    let client = pg_client().await;
    let ledger = format!(
        "SELECT count(*) FROM {}.load_ledger WHERE dataset = 'type_matrix'",
        schemas.platform
    );
    eventually("the file to load", Duration::from_secs(60), || async {
        (try_count(&client, &ledger).await == Some(1)).then_some(())
    })
    .await;
    tokio::time::timeout(Duration::from_secs(30), service.shutdown())
        .await
        .expect("stops");

    let check = retarget(&kit_file("check.sql")).replace(
        "FROM ingest.rejects",
        &format!("FROM {}.rejects", schemas.platform),
    );
    let results: Vec<(String, String)> = client
        .query(check.trim().trim_end_matches(';'), &[])
        .await
        .expect("check.sql runs")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(results.len(), 6, "{results:#?}");
    let failed: Vec<&(String, String)> = results.iter().filter(|(_, r)| r != "ok").collect();
    assert!(failed.is_empty(), "check.sql: {failed:#?}");
    assert!(
        !peer.standin.copy_spans().is_empty(),
        "the rows came through Redshift's COPY"
    );
}
