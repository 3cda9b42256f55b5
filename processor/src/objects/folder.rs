//! The local object store of the embedded mode: each bucket is a folder under one root
//! (`<root>/<bucket>/<key>`), read and written through `object_store`'s local file system,
//! with the same interfaces the S3 paths use: the processor's [`ObjectStores`], the batch
//! planner's [`ObjectReader`] and the stream handler's [`ObjectWriter`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use ingest_batch::events::CreatedObject;
use ingest_batch::plan::{ObjectReadError, ObjectReader};
use ingest_stream::handler::{ObjectWriter, PutError};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};
use shared::envelope::normalize_etag;
use shared::error::BoxError;

use crate::objects::ObjectStores;

/// Buckets as folders under `root`.
#[derive(Debug, Clone)]
pub struct LocalBuckets {
    root: PathBuf,
}

impl LocalBuckets {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of a bucket (created on first use).
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.join(bucket)
    }

    /// Every object of `bucket` with its size and modification time, by key (files being
    /// written, `*.partial`, left out).
    pub fn files(&self, bucket: &str) -> BTreeMap<String, (u64, SystemTime)> {
        let folder = self.bucket_dir(bucket);
        let mut found = BTreeMap::new();
        let mut stack = vec![folder.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                if meta.is_dir() {
                    stack.push(path);
                    continue;
                }
                let Ok(relative) = path.strip_prefix(&folder) else {
                    continue;
                };
                let key = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                if key.ends_with(".partial") {
                    continue;
                }
                let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                found.insert(key, (meta.len(), modified));
            }
        }
        found
    }

    fn store(&self, bucket: &str) -> Result<LocalFileSystem, object_store::Error> {
        if bucket.is_empty() || bucket.contains(['/', '\\']) || bucket.starts_with('.') {
            return Err(object_store::Error::Generic {
                store: "local",
                source: format!("{bucket:?} is not a bucket name").into(),
            });
        }
        let dir = self.bucket_dir(bucket);
        std::fs::create_dir_all(&dir).map_err(|err| object_store::Error::Generic {
            store: "local",
            source: Box::new(err),
        })?;
        LocalFileSystem::new_with_prefix(dir)
    }

    /// What an S3 notification would say about an object: its size and entity tag.
    pub async fn created_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<CreatedObject, object_store::Error> {
        let store = self.store(bucket)?;
        let meta = store.head(&object_path(key)?).await?;
        Ok(CreatedObject {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            size: meta.size,
            etag: meta
                .e_tag
                .as_deref()
                .map(normalize_etag)
                .unwrap_or_default(),
            version_id: None,
            event_time_ms: Some(meta.last_modified.timestamp_millis()),
            undecoded_key: None,
        })
    }
}

fn object_path(key: &str) -> Result<ObjectPath, object_store::Error> {
    ObjectPath::parse(key).map_err(|err| object_store::Error::Generic {
        store: "local",
        source: Box::new(err),
    })
}

impl ObjectStores for LocalBuckets {
    fn for_bucket(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
        Ok(Arc::new(self.store(bucket)?))
    }
}

#[async_trait]
impl ObjectReader for LocalBuckets {
    async fn read_range(
        &self,
        object: &CreatedObject,
        start: u64,
        end: u64,
    ) -> Result<Bytes, ObjectReadError> {
        let failed = |source: BoxError| ObjectReadError::Failed {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            start,
            end,
            source,
            retryable: false,
        };
        let gone = |source: BoxError| ObjectReadError::Gone {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            source,
        };
        let store = self
            .store(&object.bucket)
            .map_err(|err| failed(err.into()))?;
        let path = object_path(&object.key).map_err(|err| failed(err.into()))?;
        let options = GetOptions {
            range: Some(GetRange::Bounded(start..end)),
            ..GetOptions::default()
        };
        let result = match store.get_opts(&path, options).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Err(gone("not found".into())),
            Err(err) => return Err(failed(err.into())),
        };
        let found = result.meta.e_tag.as_deref().map(normalize_etag);
        if found.as_deref() != Some(normalize_etag(&object.etag).as_str()) {
            return Err(gone(
                format!("entity tag is now {}", found.unwrap_or_default()).into(),
            ));
        }
        result.bytes().await.map_err(|err| failed(err.into()))
    }
}

#[async_trait]
impl ObjectWriter for LocalBuckets {
    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), PutError> {
        let failed = |source: BoxError| PutError {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            source,
            retryable: false,
        };
        let store = self.store(bucket).map_err(|err| failed(err.into()))?;
        let path = object_path(key).map_err(|err| failed(err.into()))?;
        store
            .put(&path, PutPayload::from(body))
            .await
            .map(|_| ())
            .map_err(|err| failed(err.into()))
    }
}
