//! The Redshift sink on the stand-in (`test_support::RedshiftStandIn`): a staging bucket in
//! the emulator's S3 and a connected `RedshiftWarehouse`.

use std::sync::Arc;

use object_store::ObjectStore;
use processor::objects::{ObjectStores, S3Stores};
use processor::warehouse::connection::{Connector, Login};
use processor::warehouse::redshift::RedshiftWarehouse;
use shared::aws::load_sdk_config;
use shared::config::RedshiftSettings;
use test_support::{RedshiftStandIn, clients, create_bucket, emulator_settings};

/// A new bucket in the emulator's S3 and a store on it.
pub async fn staging_store() -> (Arc<dyn ObjectStore>, String) {
    let bucket = create_bucket(&clients().await.s3, "staging").await;
    let sdk_config = load_sdk_config(&emulator_settings()).await;
    let stores = S3Stores::new(&sdk_config, &emulator_settings());
    (stores.for_bucket(&bucket).expect("store"), bucket)
}

/// A stand-in and a staging bucket for Redshift sinks to load through.
pub struct RedshiftPeer {
    pub standin: RedshiftStandIn,
    pub store: Arc<dyn ObjectStore>,
    pub settings: RedshiftSettings,
}

impl RedshiftPeer {
    pub async fn start() -> Self {
        let standin = RedshiftStandIn::start(clients().await.s3).await;
        let (store, bucket) = staging_store().await;
        let settings = RedshiftSettings {
            iam_role: "arn:aws:iam::123456789012:role/redshift-copy".to_owned(),
            staging_bucket: bucket,
            staging_prefix: "ingest/".to_owned(),
            staging_files: 2,
        };
        Self {
            standin,
            store,
            settings,
        }
    }

    /// Objects left in the staging bucket.
    pub async fn staged_objects(&self) -> usize {
        use futures::TryStreamExt;
        let listed: Vec<_> = self.store.list(None).try_collect().await.expect("list");
        listed.len()
    }

    /// A new connection of the sink, its platform tables in `platform`.
    pub async fn connect(&self, platform: &str) -> RedshiftWarehouse {
        RedshiftWarehouse::connect(
            self.standin.url(),
            Connector::Plain,
            Login::Url,
            &self.settings,
            self.store.clone(),
            platform,
        )
        .await
        .expect("connect to the Redshift stand-in")
    }
}
