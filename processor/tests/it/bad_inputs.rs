//! The bad-input corpus (`testdata/bad-inputs/`, outcomes in its `manifest.toml`): every
//! file is read the way a worker reads it, and each has a defined outcome — rows loaded and
//! rows rejected with a reason (which go to the rejects table), or a permanent error naming
//! the problem (the item goes to the dead-letter queue with it). None panics or hangs.
//! Every file is read three ways, each with the same outcome: from memory, from the
//! emulator's S3 through `object_store`, and from a key only the AWS SDK can read. Then the
//! whole corpus is loaded through each sink — PostgreSQL, SQLite and the Redshift sink on
//! its stand-in — with the manifest's rows, rejects, ledger rows and errors checked exactly.

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
use shared::error::report;
use test_support::EXAMPLE_CATALOG as CATALOG;
use test_support::{Corpus, clients, create_bucket, emulator_settings, upload_file};

use crate::support::platform::{ensure_targets, s3_pipeline};
use crate::support::sinks::{Harness, Postgres, Redshift, Sqlite};

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
    /// The outcome through the Redshift sink where its column sizes make it another.
    redshift: Option<SinkOutcome>,
}

/// Rows and rejects of a file through one sink, and a text one of its rejects contains.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SinkOutcome {
    why: String,
    rows: usize,
    rejects: usize,
    reason: String,
}

impl Case {
    /// What loading the file through `sink` must give: `None` when it must fail.
    fn outcome_on(&self, sink: Sink) -> Option<SinkOutcome> {
        if self.error {
            return None;
        }
        match (&self.redshift, sink) {
            (Some(outcome), Sink::Redshift) => Some(outcome.clone()),
            _ => Some(SinkOutcome {
                why: self.why.clone(),
                rows: self.rows.unwrap_or_default(),
                rejects: self.rejects.unwrap_or_default(),
                reason: self.reason.clone().unwrap_or_default(),
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Postgres,
    Sqlite,
    Redshift,
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

/// The corpus loaded through a sink as a worker loads it (read, typed, transformed,
/// staged, merged or appended): each readable file gives the manifest's rows and rejects
/// (Redshift's own where its column sizes differ) with one ledger row; an unreadable one
/// fails permanently and leaves no ledger row and no reject behind.
async fn the_corpus_loads_through(harness: &dyn Harness, sink: Sink) {
    let corpus = Corpus::<Case>::load("bad-inputs", |case| &case.file);
    let catalog = Catalog::from_toml(&harness.retarget(CATALOG), "example").expect("catalog");
    let pipeline = s3_pipeline(Arc::new(catalog)).await;
    let warehouse = harness.connect().await;
    ensure_targets(warehouse.as_ref(), &pipeline).await;
    let s3 = clients().await.s3;
    let bucket = create_bucket(&s3, "bad-loads").await;
    let mut failures = Vec::new();
    for case in &corpus.cases {
        let format = pipeline
            .catalog()
            .get(&case.dataset)
            .expect("dataset")
            .format;
        let bytes = std::fs::read(corpus.dir.join(&case.file)).expect("corpus file");
        let key = format!("landing/{}/{}", case.dataset, case.file.replace('/', "-"));
        let item = upload_file(&s3, &bucket, &key, bytes, &case.dataset, format).await;
        let before = platform_counts(harness).await;
        let (source, dataset, schema) = pipeline.item_source(&item).expect("a catalog dataset");
        let result = warehouse.load(dataset, schema, vec![source]).await;
        let after = platform_counts(harness).await;
        let added = (after.0 - before.0, after.1 - before.1);
        let found = match (&result, case.outcome_on(sink)) {
            (Ok(report), Some(want)) => {
                let reasons = harness.reject_reasons().await;
                let matches = (
                    report.items_loaded,
                    report.rows_staged,
                    report.rows_rejected,
                ) == (1, want.rows as u64, want.rejects as u64)
                    && added == (1, want.rejects as i64)
                    && (want.rejects == 0 || reasons.iter().any(|r| r.contains(&want.reason)));
                (!matches)
                    .then(|| format!("{report:?}, ledger and rejects +{added:?} ({})", want.why))
            }
            (Err(err), None) => {
                let matches = !err.is_retryable()
                    && added == (0, 0)
                    && report(err).contains(case.reason.as_deref().unwrap_or_default());
                (!matches).then(|| format!("{}, ledger and rejects +{added:?}", report(err)))
            }
            (Ok(report), None) => Some(format!("loaded {report:?}, but an error was expected")),
            (Err(err), Some(_)) => Some(format!("error: {}", report(err))),
        };
        if let Some(found) = found {
            failures.push(format!("{}: {found}", case.file));
        }
    }
    assert!(
        failures.is_empty(),
        "unexpected outcomes on {sink:?}:\n{}",
        failures.join("\n")
    );
}

/// (ledger rows, rejects) of the harness's platform tables.
async fn platform_counts(harness: &dyn Harness) -> (i64, i64) {
    (
        harness.platform_rows("load_ledger").await,
        harness.platform_rows("rejects").await,
    )
}

#[tokio::test]
async fn the_corpus_loads_through_postgres() {
    the_corpus_loads_through(&Postgres::new(), Sink::Postgres).await;
}

#[tokio::test]
async fn the_corpus_loads_through_sqlite() {
    the_corpus_loads_through(&Sqlite::new(), Sink::Sqlite).await;
}

#[tokio::test]
async fn the_corpus_loads_through_redshift() {
    the_corpus_loads_through(&Redshift::new().await, Sink::Redshift).await;
}
