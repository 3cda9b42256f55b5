//! The bad-input corpus (`testdata/bad-inputs/`, outcomes in its `manifest.toml`): every
//! file is read the way a worker reads it, and each has a defined outcome — rows loaded and
//! rows rejected with a reason (which go to the rejects table), or a permanent error naming
//! the problem (the item goes to the dead-letter queue with it). None panics or hangs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use processor::read::{read_all, row_count};
use shared::catalog::{Catalog, Compression};
use shared::envelope::FileItem;
use shared::error::Classify;

const CATALOG: &str = include_str!("../../catalog/ecommerce.toml");

#[derive(Debug, serde::Deserialize)]
struct Manifest {
    case: Vec<Case>,
}

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

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/bad-inputs")
}

#[tokio::test]
async fn every_bad_input_has_its_defined_outcome() {
    let manifest: Manifest =
        toml::from_str(&std::fs::read_to_string(corpus().join("manifest.toml")).expect("manifest"))
            .expect("a valid manifest");
    let catalog = Catalog::from_toml(CATALOG, "example").expect("catalog");
    let mut listed: Vec<String> = manifest.case.iter().map(|c| c.file.clone()).collect();
    listed.sort();
    let mut on_disk = Vec::new();
    for entry in walk(&corpus()) {
        let relative = entry
            .strip_prefix(corpus())
            .expect("inside")
            .to_string_lossy()
            .into_owned();
        if relative != "manifest.toml" {
            on_disk.push(relative);
        }
    }
    on_disk.sort();
    assert_eq!(
        listed, on_disk,
        "every corpus file has an expected outcome, and only they"
    );

    let mut failures = Vec::new();
    for case in &manifest.case {
        let dataset = catalog
            .get(&case.dataset)
            .expect("a catalog dataset")
            .clone();
        let bytes = std::fs::read(corpus().join(&case.file)).expect("corpus file");
        let store = Arc::new(InMemory::new());
        let key = format!("landing/{}/{}", case.dataset, case.file.replace('/', "-"));
        let stored = store
            .put(
                &ObjectPath::parse(&key).expect("path"),
                PutPayload::from(bytes.clone()),
            )
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
        let outcome = tokio::time::timeout(Duration::from_secs(30), read_all(store, item, dataset))
            .await
            .unwrap_or_else(|_| panic!("{}: reading hangs", case.file));
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
                        .is_none_or(|want| err.to_string().contains(want));
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
            failures.push(format!("{} ({}): {found}", case.file, case.why));
        }
    }
    assert!(
        failures.is_empty(),
        "unexpected outcomes:\n{}",
        failures.join("\n")
    );
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("corpus folder").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
