//! Object stores for the buckets work items name, built from the platform's AWS settings
//! so the processor reads S3 through the same endpoint, region and credentials as every
//! SDK client (one credential chain: IAM task role on Fargate, environment locally).

pub mod folder;
pub mod sdk_object;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use object_store::aws::{AmazonS3Builder, AwsCredential};
use object_store::path::Path as ObjectPath;
use object_store::{CredentialProvider, ObjectStore};
use shared::aws::{AwsSettings, s3_client};

use crate::objects::sdk_object::SdkObject;

/// Credentials are refreshed this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// Hands the AWS SDK's credential chain to `object_store`, caching until near expiry.
#[derive(Debug)]
struct SdkCredentials {
    provider: SharedCredentialsProvider,
    cached: Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

#[async_trait]
impl CredentialProvider for SdkCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        if let Ok(cached) = self.cached.lock()
            && let Some((credential, expiry)) = cached.as_ref()
            && expiry.is_none_or(|at| SystemTime::now() + REFRESH_BEFORE_EXPIRY < at)
        {
            return Ok(Arc::clone(credential));
        }
        let fresh = self.provider.provide_credentials().await.map_err(|err| {
            object_store::Error::Generic {
                store: "S3",
                source: Box::new(err),
            }
        })?;
        let credential = Arc::new(AwsCredential {
            key_id: fresh.access_key_id().to_owned(),
            secret_key: fresh.secret_access_key().to_owned(),
            token: fresh.session_token().map(str::to_owned),
        });
        if let Ok(mut cached) = self.cached.lock() {
            *cached = Some((Arc::clone(&credential), fresh.expiry()));
        }
        Ok(credential)
    }
}

/// One object to read: the store that reads it and its path there.
#[derive(Debug, Clone)]
pub struct StoredObject {
    pub store: Arc<dyn ObjectStore>,
    pub path: ObjectPath,
}

/// Where objects are read from.
pub trait ObjectStores: Send + Sync + std::fmt::Debug {
    /// The store holding `bucket`'s objects (keys are object paths within it).
    fn for_bucket(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, object_store::Error>;

    /// A store of the one object `key`, for keys an object path cannot hold (empty, `.`
    /// or `..` segments, control characters); `None` where there is no other way to read
    /// them.
    fn for_unaddressable(&self, _bucket: &str, _key: &str) -> Option<Arc<dyn ObjectStore>> {
        None
    }

    /// The object `key` of `bucket`, taken as it is (`Path::from` would percent-encode
    /// non-ASCII characters and name another key).
    fn for_object(&self, bucket: &str, key: &str) -> Result<StoredObject, object_store::Error> {
        match ObjectPath::parse(key) {
            Ok(path) => Ok(StoredObject {
                store: self.for_bucket(bucket)?,
                path,
            }),
            Err(err) => match self.for_unaddressable(bucket, key) {
                // The store answers for its one object whatever path it is given.
                Some(store) => Ok(StoredObject {
                    store,
                    path: ObjectPath::from("object"),
                }),
                None => Err(err.into()),
            },
        }
    }
}

/// One S3 store per bucket, built on first use.
#[derive(Debug)]
pub struct S3Stores {
    region: String,
    endpoint: Option<String>,
    path_style: bool,
    credentials: Option<Arc<SdkCredentials>>,
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    /// Reads the keys an object path cannot hold.
    sdk_client: aws_sdk_s3::Client,
}

impl S3Stores {
    pub fn new(sdk_config: &SdkConfig, settings: &AwsSettings) -> Self {
        Self {
            region: sdk_config
                .region()
                .map_or_else(|| "us-east-1".to_owned(), |r| r.to_string()),
            endpoint: settings
                .s3_endpoint_url
                .clone()
                .or_else(|| settings.endpoint_url.clone()),
            path_style: settings.s3_force_path_style,
            credentials: sdk_config.credentials_provider().map(|provider| {
                Arc::new(SdkCredentials {
                    provider,
                    cached: Mutex::new(None),
                })
            }),
            stores: Mutex::new(HashMap::new()),
            sdk_client: s3_client(sdk_config, settings),
        }
    }
}

impl ObjectStores for S3Stores {
    fn for_bucket(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
        let mut stores = self
            .stores
            .lock()
            .map_err(|_| object_store::Error::Generic {
                store: "S3",
                source: "object store cache poisoned".into(),
            })?;
        if let Some(store) = stores.get(bucket) {
            return Ok(Arc::clone(store));
        }
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&self.region)
            .with_virtual_hosted_style_request(!self.path_style);
        if let Some(endpoint) = &self.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(credentials) = &self.credentials {
            builder = builder.with_credentials(Arc::clone(credentials) as _);
        }
        let store: Arc<dyn ObjectStore> = Arc::new(builder.build()?);
        stores.insert(bucket.to_owned(), Arc::clone(&store));
        Ok(store)
    }

    fn for_unaddressable(&self, bucket: &str, key: &str) -> Option<Arc<dyn ObjectStore>> {
        Some(Arc::new(SdkObject {
            client: self.sdk_client.clone(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        }))
    }
}

/// A fixed store for every bucket (tests; the embedded demo).
#[derive(Debug, Clone)]
pub struct FixedStore(pub Arc<dyn ObjectStore>);

impl ObjectStores for FixedStore {
    fn for_bucket(&self, _bucket: &str) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
        Ok(Arc::clone(&self.0))
    }
}
