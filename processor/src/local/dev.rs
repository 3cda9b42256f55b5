//! `processor dev`: watches the local landing folder and ingests what is dropped into it,
//! the way S3 uploads trigger the batch path in AWS, with any catalog. A file is taken
//! once its size and modification time have stayed the same for one scan (so a file still
//! being copied is not read half-written), and again whenever it changes. Each file's
//! outcome is told once: loaded (rows, rejects), already loaded, or dead-lettered with the
//! reason. Files already there at start are looked up, not queued again, when the ledger
//! holds them or the dead-letter queue does.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ingest_stream::poller::ReadProgress;
use shared::catalog::Catalog;
use tokio::sync::watch;

use super::file_outcomes::{self, Outcome, PendingFile};
use super::kinesis::{self, KinesisApi};
use super::{BUCKET, DemoError, EXAMPLE_CATALOG, Layout, LocalPlatform, counts, step};
use crate::serve::status_page::StatusPage;

#[derive(Debug, Clone)]
pub struct DevOptions {
    pub dir: PathBuf,
    /// The catalog file; `None` runs the example catalog.
    pub catalog: Option<PathBuf>,
    pub workers: usize,
    /// Moves every dead letter back to the work queue at start (after a catalog fix).
    pub redrive: bool,
    pub visibility_timeout: Duration,
    pub scan_interval: Duration,
    /// The loopback port of the Kinesis-compatible endpoint (0: a free one); `None`
    /// serves none.
    pub kinesis_port: Option<u16>,
    /// The loopback port of the status page (0: a free one); `None` serves none.
    pub status_port: Option<u16>,
}

/// What `dev` reports as it goes: each file once, when its outcome is known.
#[derive(Debug, Clone, PartialEq)]
pub enum DevEvent {
    Watching {
        folder: PathBuf,
        /// `prefix → dataset` of every S3 route of the catalog.
        routes: Vec<String>,
    },
    /// The Kinesis-compatible endpoint listens (for `AWS_ENDPOINT_URL_KINESIS`).
    KinesisEndpoint {
        url: String,
        streams: Vec<String>,
    },
    /// The status page is served (`/status`, `/status.json`).
    StatusPage {
        url: String,
    },
    /// Dead letters moved back to the work queue at start (`--redrive`).
    Redriven {
        messages: u64,
    },
    Queued {
        key: String,
        work_items: usize,
    },
    /// A file whose dead letters `--redrive` moved back: followed to its outcome.
    Requeued {
        key: String,
    },
    /// Every work item of the file is in the ledger: nothing is queued.
    AlreadyLoaded {
        key: String,
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
        key: String,
        table: String,
        rows: i64,
        rejected: i64,
    },
    /// Records from the local stream reached a table (rows and rejects since the last
    /// report).
    StreamLoaded {
        table: String,
        rows: i64,
        rejected: i64,
    },
    /// A work item of the file is in the dead-letter queue (`again`: it was there before
    /// this offer, so it was not queued again).
    DeadLettered {
        key: String,
        reason: String,
        again: bool,
    },
}

/// The catalog `dev` runs: the file named, or the example.
fn catalog(options: &DevOptions) -> Result<Catalog, DemoError> {
    Ok(match &options.catalog {
        Some(path) => Catalog::from_file(path)?,
        None => Catalog::from_toml(EXAMPLE_CATALOG, "catalog/ecommerce.toml")?,
    })
}

/// `prefix → dataset` of every S3 route.
fn routes(catalog: &Catalog) -> Vec<String> {
    catalog
        .datasets()
        .filter_map(|d| {
            let route = d.s3.as_ref()?;
            Some(format!("{}*{} → {}", route.prefix, route.suffix, d.name))
        })
        .collect()
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
    let catalog = Arc::new(catalog(options)?);
    let routes = routes(&catalog);
    let platform = LocalPlatform::open(&layout, catalog, options.visibility_timeout).await?;
    let landing = layout.landing();
    std::fs::create_dir_all(&landing).map_err(|err| DemoError::Folder {
        path: landing.clone(),
        source: err,
    })?;
    report(DevEvent::Watching {
        folder: landing.clone(),
        routes,
    });
    let _endpoint = match options.kinesis_port {
        Some(port) => Some(start_kinesis_endpoint(&platform, port, report).await?),
        None => None,
    };
    let _status_page = match options.status_port {
        Some(port) => Some(start_status_page(&platform, port, report).await?),
        None => None,
    };
    // The keys of the dead letters moved back: their files are followed to an outcome.
    let mut redriven = std::collections::BTreeSet::new();
    if options.redrive {
        redriven.extend(file_outcomes::dead_letters(&platform).await?.into_keys());
        let messages = platform
            .queue
            .move_from(platform.dead_letter.name(), u64::MAX)
            .await
            .map_err(|err| step("moving the dead letters back")(err))?;
        report(DevEvent::Redriven { messages });
    }
    let (stop, stopped) = watch::channel(false);
    let mut workers = Vec::new();
    for _ in 0..options.workers.max(1) {
        let (worker, stopped) = (Arc::clone(&platform.worker), stopped.clone());
        workers.push(tokio::spawn(async move { worker.run(stopped).await }));
    }

    // The stream path: records put to the local stream (`processor put`) are read, packed
    // and loaded as the Kinesis trigger does in AWS.
    let (read_tx, _read) = watch::channel(ReadProgress::default());
    let poller = super::spawn_poller(&platform, layout.checkpoints(), stopped.clone(), read_tx);
    let streamed = stream_tables(&platform);
    let mut stream_rows = counts(platform.warehouse.db(), streamed.clone()).await?;

    let mut last_seen: BTreeMap<String, (u64, SystemTime)> = BTreeMap::new();
    let mut ingested: HashMap<String, (u64, SystemTime)> = HashMap::new();
    let mut pending: Vec<PendingFile> = Vec::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(options.scan_interval) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            break;
        }
        let now = super::landed_files(&platform.buckets);
        let ready: Vec<&String> = now
            .iter()
            .filter(|(key, state)| {
                last_seen.get(*key) == Some(*state) && ingested.get(*key) != Some(*state)
            })
            .map(|(key, _)| key)
            .collect();
        if !ready.is_empty() {
            // One read of the dead-letter queue for every file of this scan.
            let dead = file_outcomes::dead_letters(&platform).await?;
            for key in ready {
                ingested.insert(key.clone(), now[key]);
                report(offer(&platform, key, &dead, &redriven, &mut pending).await?);
            }
        }
        last_seen = now;
        settle(&platform, &mut pending, report).await?;
        let rows = counts(platform.warehouse.db(), streamed.clone()).await?;
        report_stream_loads(&streamed, &stream_rows, &rows, report);
        stream_rows = rows;
    }
    stop.send_replace(true);
    match poller.await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => return Err(step("reading the stream")(err)),
        Err(err) => return Err(step("reading the stream")(err)),
    }
    for worker in workers {
        worker.await.map_err(|err| DemoError::Step {
            what: "running a worker",
            source: err.into(),
        })?;
    }
    Ok(())
}

/// Aborts the task it holds when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A listener on the loopback `port` (0: a free one) and the address it took.
async fn listen(
    port: u16,
    what: &str,
) -> Result<(tokio::net::TcpListener, std::net::SocketAddr), DemoError> {
    let listener = kinesis::bind(port).await.map_err(|err| {
        DemoError::Setup(format!("starting {what}: {}", shared::error::report(&err)))
    })?;
    let address = listener.local_addr().map_err(|err| {
        DemoError::Setup(format!(
            "reading the address of {what}: {}",
            shared::error::report(&err)
        ))
    })?;
    Ok((listener, address))
}

/// Serves the platform's stream on a Kinesis-compatible endpoint on the loopback port.
async fn start_kinesis_endpoint(
    platform: &LocalPlatform,
    port: u16,
    report: &mut (dyn FnMut(DevEvent) + Send),
) -> Result<AbortOnDrop, DemoError> {
    let (listener, address) = listen(port, "the Kinesis endpoint").await?;
    let api = Arc::new(KinesisApi::new([platform.stream.as_ref().clone()]));
    report(DevEvent::KinesisEndpoint {
        url: format!("http://{address}"),
        streams: api.stream_names(),
    });
    Ok(AbortOnDrop(tokio::spawn(kinesis::serve(listener, api))))
}

/// Serves the status page of the platform on the loopback port.
async fn start_status_page(
    platform: &LocalPlatform,
    port: u16,
    report: &mut (dyn FnMut(DevEvent) + Send),
) -> Result<AbortOnDrop, DemoError> {
    let (listener, address) = listen(port, "the status page").await?;
    let page = StatusPage::new(
        Arc::clone(&platform.catalog),
        Arc::clone(&platform.warehouse) as _,
        Arc::clone(&platform.queue) as _,
        Some(Arc::clone(&platform.dead_letter) as _),
    );
    report(DevEvent::StatusPage {
        url: format!("http://{address}/status"),
    });
    Ok(AbortOnDrop(tokio::spawn(crate::serve::health::serve(
        listener,
        Arc::new(page),
    ))))
}

/// Offers the file under `key` to the batch path, as an S3 notification would, unless the
/// ledger holds all of it or a part of it waits in the dead-letter queue.
async fn offer(
    platform: &LocalPlatform,
    key: &str,
    dead: &BTreeMap<String, String>,
    redriven: &std::collections::BTreeSet<String>,
    pending: &mut Vec<PendingFile>,
) -> Result<DevEvent, DemoError> {
    let failed = |reason: String| DevEvent::Failed {
        key: key.to_owned(),
        reason,
    };
    let object = match platform.buckets.created_object(BUCKET, key).await {
        Ok(object) => object,
        Err(err) => return Ok(failed(shared::error::report(&err))),
    };
    let (items, planned) = match platform.file_ingest.plan_objects(&[object]).await {
        Ok(planned) => planned,
        Err(err) => return Ok(failed(shared::error::report(&err))),
    };
    let Some(file) = PendingFile::of(key, &items) else {
        return Ok(DevEvent::Skipped {
            key: key.to_owned(),
            reasons: planned
                .skipped
                .iter()
                .map(|(reason, count)| format!("{reason} ×{count}"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    if let Some(reason) = file.item_keys.iter().find_map(|k| dead.get(k)) {
        return Ok(DevEvent::DeadLettered {
            key: key.to_owned(),
            reason: reason.clone(),
            again: true,
        });
    }
    if file.item_keys.iter().any(|k| redriven.contains(k)) {
        pending.push(file);
        return Ok(DevEvent::Requeued {
            key: key.to_owned(),
        });
    }
    if file_outcomes::all_loaded(platform, file.item_keys.clone()).await? {
        return Ok(DevEvent::AlreadyLoaded {
            key: key.to_owned(),
        });
    }
    match platform.file_ingest.send(&items).await {
        Ok(sent) => {
            pending.push(file);
            Ok(DevEvent::Queued {
                key: key.to_owned(),
                work_items: sent,
            })
        }
        Err(err) => Ok(failed(shared::error::report(&err))),
    }
}

/// Reports the files of `pending` whose outcome is now known, and forgets them.
async fn settle(
    platform: &LocalPlatform,
    pending: &mut Vec<PendingFile>,
    report: &mut (dyn FnMut(DevEvent) + Send),
) -> Result<(), DemoError> {
    if pending.is_empty() {
        return Ok(());
    }
    let dead = file_outcomes::dead_letters(platform).await?;
    let mut waiting = Vec::with_capacity(pending.len());
    for file in pending.drain(..) {
        let key = file.key.clone();
        match file_outcomes::outcome(platform, &file, &dead).await? {
            Some(Outcome::Loaded { rows, rejected }) => report(DevEvent::Loaded {
                key,
                table: table_of(platform, &file.dataset),
                rows,
                rejected,
            }),
            Some(Outcome::DeadLettered { reason }) => report(DevEvent::DeadLettered {
                key,
                reason,
                again: false,
            }),
            None => waiting.push(file),
        }
    }
    *pending = waiting;
    Ok(())
}

/// (dataset, table) of the datasets a stream feeds.
fn stream_tables(platform: &LocalPlatform) -> Vec<(String, String)> {
    platform
        .tables
        .iter()
        .filter(|(name, _)| {
            platform
                .catalog
                .get(name)
                .is_some_and(|dataset| dataset.stream.is_some())
        })
        .cloned()
        .collect()
}

/// Tells each stream-fed table whose rows or rejects changed.
fn report_stream_loads(
    tables: &[(String, String)],
    before: &BTreeMap<String, (i64, i64, i64)>,
    now: &BTreeMap<String, (i64, i64, i64)>,
    report: &mut (dyn FnMut(DevEvent) + Send),
) {
    for (dataset, table) in tables {
        let (rows, rejected, _) = now.get(dataset).copied().unwrap_or_default();
        let (rows_before, rejected_before, _) = before.get(dataset).copied().unwrap_or_default();
        if (rows, rejected) != (rows_before, rejected_before) {
            report(DevEvent::StreamLoaded {
                table: table.clone(),
                rows: rows - rows_before,
                rejected: rejected - rejected_before,
            });
        }
    }
}

fn table_of(platform: &LocalPlatform, dataset: &str) -> String {
    platform
        .tables
        .iter()
        .find(|(name, _)| name == dataset)
        .map_or_else(|| dataset.to_owned(), |(_, table)| table.clone())
}
