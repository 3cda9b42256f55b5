//! `processor dev`: watches the local landing folder and ingests what is dropped into it,
//! the way S3 uploads trigger the batch path in AWS. A file is taken once its size and
//! modification time have stayed the same for one scan (so a file still being copied is
//! not read half-written), and again whenever it changes. Files already there at start
//! are offered once more; the ledger makes that harmless.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shared::catalog::Catalog;
use tokio::sync::watch;

use super::{BUCKET, DemoError, EXAMPLE_CATALOG, Layout, LocalPlatform, counts};

/// Prefixes of the landing bucket the platform writes itself.
const OWN_PREFIXES: &[&str] = &["quarantine/", "claim-checks/"];

#[derive(Debug, Clone)]
pub struct DevOptions {
    pub dir: PathBuf,
    pub workers: usize,
    pub visibility_timeout: Duration,
    pub scan_interval: Duration,
}

/// What `dev` reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum DevEvent {
    Watching {
        folder: PathBuf,
    },
    Queued {
        key: String,
        work_items: usize,
    },
    Skipped {
        key: String,
        reasons: String,
    },
    Failed {
        key: String,
        reason: String,
    },
    Loaded {
        table: String,
        rows: i64,
        rejected: i64,
    },
}

/// Every file under `folder` with its size and modification time, by object key.
fn scan(folder: &Path) -> BTreeMap<String, (u64, SystemTime)> {
    let mut found = BTreeMap::new();
    let mut stack = vec![folder.to_owned()];
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
            let Ok(relative) = path.strip_prefix(folder) else {
                continue;
            };
            let key = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            if key.ends_with(".partial") || OWN_PREFIXES.iter().any(|p| key.starts_with(p)) {
                continue;
            }
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            found.insert(key, (meta.len(), modified));
        }
    }
    found
}

/// Runs until `shutdown` turns true.
pub async fn run_dev(
    options: &DevOptions,
    mut shutdown: watch::Receiver<bool>,
    report: &mut (dyn FnMut(DevEvent) + Send),
) -> Result<(), DemoError> {
    let layout = Layout {
        dir: options.dir.clone(),
    };
    let catalog = Arc::new(Catalog::from_toml(
        EXAMPLE_CATALOG,
        "catalog/ecommerce.toml",
    )?);
    let platform = LocalPlatform::open(&layout, catalog, options.visibility_timeout).await?;
    let landing = layout.landing();
    std::fs::create_dir_all(&landing).map_err(|err| DemoError::Folder {
        path: landing.clone(),
        source: err,
    })?;
    report(DevEvent::Watching {
        folder: landing.clone(),
    });
    let (stop, stopped) = watch::channel(false);
    let mut workers = Vec::new();
    for _ in 0..options.workers.max(1) {
        let (worker, stopped) = (Arc::clone(&platform.worker), stopped.clone());
        workers.push(tokio::spawn(async move { worker.run(stopped).await }));
    }

    let mut last_seen: BTreeMap<String, (u64, SystemTime)> = BTreeMap::new();
    let mut ingested: HashMap<String, (u64, SystemTime)> = HashMap::new();
    let mut loaded = counts(platform.warehouse.db(), platform.tables.clone()).await?;
    loop {
        tokio::select! {
            () = tokio::time::sleep(options.scan_interval) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            break;
        }
        let now = scan(&landing);
        for (key, state) in &now {
            let stable = last_seen.get(key) == Some(state);
            if stable && ingested.get(key) != Some(state) {
                ingested.insert(key.clone(), *state);
                report(offer(&platform, key).await);
            }
        }
        last_seen = now;
        loaded = report_loaded(&platform, loaded, report).await?;
    }
    stop.send_replace(true);
    for worker in workers {
        worker.await.map_err(|err| DemoError::Step {
            what: "running a worker",
            source: err.into(),
        })?;
    }
    Ok(())
}

/// Offers the file under `key` to the batch path, as an S3 notification would.
async fn offer(platform: &LocalPlatform, key: &str) -> DevEvent {
    let failed = |reason: String| DevEvent::Failed {
        key: key.to_owned(),
        reason,
    };
    let object = match platform.buckets.created_object(BUCKET, key).await {
        Ok(object) => object,
        Err(err) => return failed(shared::error::report(&err)),
    };
    match platform.file_ingest.ingest(&[object]).await {
        Ok(done) if done.work_items_sent > 0 => DevEvent::Queued {
            key: key.to_owned(),
            work_items: done.work_items_sent,
        },
        Ok(done) => DevEvent::Skipped {
            key: key.to_owned(),
            reasons: done
                .skipped
                .iter()
                .map(|(reason, count)| format!("{reason} ×{count}"))
                .collect::<Vec<_>>()
                .join(", "),
        },
        Err(err) => failed(shared::error::report(&err)),
    }
}

/// Reports each table whose rows or rejects changed since `before`; returns the counts
/// now.
async fn report_loaded(
    platform: &LocalPlatform,
    before: BTreeMap<String, (i64, i64, i64)>,
    report: &mut (dyn FnMut(DevEvent) + Send),
) -> Result<BTreeMap<String, (i64, i64, i64)>, DemoError> {
    let counted = counts(platform.warehouse.db(), platform.tables.clone()).await?;
    for (dataset, table) in &platform.tables {
        let (rows, rejects, _) = counted.get(dataset).copied().unwrap_or_default();
        let (rows_before, rejects_before, _) = before.get(dataset).copied().unwrap_or_default();
        if (rows, rejects) != (rows_before, rejects_before) {
            report(DevEvent::Loaded {
                table: table.clone(),
                rows: rows - rows_before,
                rejected: rejects - rejects_before,
            });
        }
    }
    Ok(counted)
}
