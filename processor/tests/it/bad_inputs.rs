//! The bad-input corpus (`testdata/bad-inputs/`, outcomes in its `manifest.toml`): every
//! file is read the way a worker reads it, and each has a defined outcome — rows loaded and
//! rows rejected with a reason (which go to the rejects table), or a permanent error naming
//! the problem (the item goes to the dead-letter queue with it). None panics or hangs.
//! Every file is read three ways, each with the same outcome: from memory, from the
//! emulator's S3 through `object_store`, and from a key only the AWS SDK can read.

use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use processor::objects::{ObjectStores, S3Stores, StoredObject};
use processor::pipeline::read::{read_object, row_count};
use shared::aws::load_sdk_config;
use shared::catalog::{Catalog, Compression, Dataset};
use shared::envelope::{FileItem, WorkItem};
use shared::error::Classify;
use test_support::EXAMPLE_CATALOG as CATALOG;
use test_support::{Corpus, clients, create_bucket, emulator_settings, upload_file};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    file: String,
    dataset: String,
    why: String,
    /// Rows loaded and rows rejected, when the file reads.
    rows: Option<usize>,
    rejects: Option<usize>,
    /// A text every reject reason of the file… or the error contains.
    reason: Option<String>,
    /// The file cannot be read: a permanent error containing `reason`.
    #[serde(default)]
    error: bool,
}

/// Where a case's file is read from: each must give the case's outcome.
#[derive(Debug, Clone, Copy)]
enum Place {
    Memory,
    /// The emulator's S3 under a plain key, read through `object_store`.
    S3,
    /// The emulator's S3 under a key with empty, `.` and `..` segments and a tab, which
    /// an object path cannot hold: read through the AWS SDK.
    S3OddKey,
}

struct Places {
    s3: aws_sdk_s3::Client,
    bucket: String,
    stores: S3Stores,
}

impl Places {
    async fn new() -> Self {
        let settings = emulator_settings();
        let sdk_config = load_sdk_config(&settings).await;
        let s3 = clients().await.s3;
        let bucket = create_bucket(&s3, "bad-inputs").await;
        Self {
            stores: S3Stores::new(&sdk_config, &settings),
            s3,
            bucket,
        }
    }

    /// Stores `bytes` in `place` and returns the object to read and its work item.
    async fn store(
        &self,
        place: Place,
        case: &Case,
        dataset: &Dataset,
        bytes: Vec<u8>,
    ) -> (StoredObject, FileItem) {
        let name = case.file.replace('/', "-");
        let key = match place {
            Place::Memory | Place::S3 => format!("landing/{}/{name}", case.dataset),
            Place::S3OddKey => format!("landing/{}//odd/./x/../\ttab/{name}", case.dataset),
        };
        if let Place::Memory = place {
            let store = Arc::new(InMemory::new());
            let path = ObjectPath::parse(&key).expect("path");
            let stored = store
                .put(&path, PutPayload::from(bytes.clone()))
                .await
                .expect("put");
            let item = FileItem {
                dataset: case.dataset.clone(),
                bucket: "landing".into(),
                key: key.clone(),
                version_id: None,
                etag: stored.e_tag.expect("etag"),
                size: bytes.len() as u64,
                range: None,
                part: None,
                format: dataset.format,
                compression: Compression::from_key(&key),
                created_at_ms: None,
            };
            return (StoredObject { store, path }, item);
        }
        let WorkItem::File(item) = upload_file(
            &self.s3,
            &self.bucket,
            &key,
            bytes,
            &case.dataset,
            dataset.format,
        )
        .await
        else {
            unreachable!("a file item")
        };
        let object = self
            .stores
            .for_object(&self.bucket, &key)
            .expect("every S3 key is readable");
        (object, item)
    }
}

#[tokio::test]
async fn every_bad_input_has_its_defined_outcome() {
    let corpus = Corpus::<Case>::load("bad-inputs", |case| &case.file);
    let catalog = Catalog::from_toml(CATALOG, "example").expect("catalog");
    let places = Places::new().await;

    let mut failures = Vec::new();
    for (case, place) in corpus
        .cases
        .iter()
        .flat_map(|case| [Place::Memory, Place::S3, Place::S3OddKey].map(|place| (case, place)))
    {
        let dataset = catalog
            .get(&case.dataset)
            .expect("a catalog dataset")
            .clone();
        let bytes = std::fs::read(corpus.dir.join(&case.file)).expect("corpus file");
        let (object, item) = places.store(place, case, &dataset, bytes).await;
        let outcome =
            tokio::time::timeout(Duration::from_secs(30), read_object(object, item, dataset))
                .await
                .unwrap_or_else(|_| panic!("{} ({place:?}): reading hangs", case.file));
        let found = match (&outcome, case.error) {
            (Ok((batches, rejects)), false) => {
                let reasons: Vec<&str> = rejects.iter().map(|r| r.reason.as_str()).collect();
                let matches = Some(row_count(batches)) == case.rows
                    && Some(rejects.len()) == case.rejects
                    && case
                        .reason
                        .as_deref()
                        .is_none_or(|want| reasons.iter().all(|r| r.contains(want)));
                (!matches).then(|| format!("{} rows, rejects {reasons:?}", row_count(batches)))
            }
            (Err(err), true) => {
                let matches = !err.is_retryable()
                    && case
                        .reason
                        .as_deref()
                        .is_none_or(|want| shared::error::report(err).contains(want));
                (!matches).then(|| format!("error (retryable: {}): {err}", err.is_retryable()))
            }
            (Ok((batches, rejects)), true) => Some(format!(
                "read: {} rows, {} rejects, but an error was expected",
                row_count(batches),
                rejects.len()
            )),
            (Err(err), false) => Some(format!("error: {err}")),
        };
        if let Some(found) = found {
            failures.push(format!("{} ({}, {place:?}): {found}", case.file, case.why));
        }
    }
    assert!(
        failures.is_empty(),
        "unexpected outcomes:\n{}",
        failures.join("\n")
    );
}
