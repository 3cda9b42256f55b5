//! The platform's parts as the end-to-end tests assemble them on the emulator and
//! PostgreSQL: a pipeline reading the emulator's S3, a warehouse ready for a catalog, a
//! work queue and the batch Lambda's planner.

use std::sync::Arc;

use ingest_batch::FileIngest;
use ingest_batch::plan::{FilePlanner, S3Objects};
use processor::objects::S3Stores;
use processor::pipeline::Pipeline;
use processor::warehouse::Warehouse;
use processor::warehouse::postgres::PostgresWarehouse;
use shared::aws::{AwsClients, load_sdk_config};
use shared::catalog::Catalog;
use shared::envelope::MessageSizeLimit;
use shared::queue::{SqsQueue, WorkQueue};
use test_support::{create_queue, emulator_settings, postgres_url};

/// The pipeline of `catalog`, reading objects from the emulator's S3.
pub async fn s3_pipeline(catalog: Arc<Catalog>) -> Arc<Pipeline> {
    let sdk_config = load_sdk_config(&emulator_settings()).await;
    let stores = Arc::new(S3Stores::new(&sdk_config, &emulator_settings()));
    Arc::new(Pipeline::new(catalog, stores).await.expect("plans"))
}

/// A PostgreSQL warehouse with its platform tables in `platform`.
pub async fn postgres_with_platform_tables(platform: &str) -> PostgresWarehouse {
    let warehouse = PostgresWarehouse::connect(&postgres_url(), platform)
        .await
        .expect("connect");
    warehouse
        .ensure_platform_tables()
        .await
        .expect("platform tables");
    warehouse
}

/// A target table in `warehouse` for every dataset of the pipeline's catalog.
pub async fn ensure_targets(warehouse: &dyn Warehouse, pipeline: &Pipeline) {
    for dataset in pipeline.catalog().datasets() {
        let schema = pipeline.load_schema(&dataset.name).expect("planned");
        warehouse
            .ensure_target(dataset, schema)
            .await
            .expect("target");
    }
}

/// A PostgreSQL warehouse with its platform tables in `platform` and a target table for
/// every dataset of the pipeline's catalog.
pub async fn ready_postgres(pipeline: &Pipeline, platform: &str) -> PostgresWarehouse {
    let warehouse = postgres_with_platform_tables(platform).await;
    ensure_targets(&warehouse, pipeline).await;
    warehouse
}

/// A new work queue on the emulator.
pub async fn new_queue(clients: &AwsClients) -> Arc<SqsQueue> {
    let url = create_queue(&clients.sqs, &[]).await;
    Arc::new(SqsQueue::new(
        clients.sqs.clone(),
        &url,
        MessageSizeLimit::default(),
    ))
}

/// The batch Lambda's planner, reading objects from the emulator's S3.
pub fn s3_planner(clients: &AwsClients, catalog: Arc<Catalog>, part_size: u64) -> FilePlanner {
    FilePlanner {
        catalog,
        reader: Arc::new(S3Objects {
            client: clients.s3.clone(),
        }),
        part_size,
    }
}

/// The batch Lambda's ingest: plans with `planner`, sends to `queue`.
pub fn file_ingest(
    planner: FilePlanner,
    queue: Arc<dyn WorkQueue>,
    source: &'static str,
) -> FileIngest {
    FileIngest {
        planner,
        queue,
        size_limit: MessageSizeLimit::default(),
        source,
    }
}
