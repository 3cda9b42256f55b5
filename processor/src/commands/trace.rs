//! `processor trace`: where one file is, and why — in one answer with the next step.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use ingest_batch::FileIngest;
use processor::operations::trace::{
    FileTrace, PartState, TraceSources, head_object, parse_s3_url, trace_file,
};
use processor::serve::connect_warehouse;
use shared::aws::AwsClients;
use shared::catalog::Catalog;
use shared::config::PlatformConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file: s3://bucket/key (the key as S3 lists it); under [local], the key alone
    /// names a file of the local bucket.
    file: String,
    /// One JSON document, for scripts.
    #[arg(long)]
    json: bool,
}

pub async fn run(config: &PlatformConfig, args: Args) -> anyhow::Result<ExitCode> {
    let trace = match super::local_layout(config) {
        Some(layout) => {
            let (bucket, key) = match parse_s3_url(&args.file) {
                Ok(found) => found,
                Err(_) if !args.file.contains("://") => {
                    (processor::local::BUCKET.to_owned(), args.file.clone())
                }
                Err(reason) => anyhow::bail!(reason),
            };
            let catalog = super::configured_catalog(config)?;
            processor::local::operations::trace_file(&layout, catalog, &bucket, &key).await?
        }
        None => trace_in_aws(config, &args.file).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&trace)?);
    } else {
        print!("{}", render(&trace));
    }
    Ok(ExitCode::SUCCESS)
}

async fn trace_in_aws(config: &PlatformConfig, file: &str) -> anyhow::Result<FileTrace> {
    let (bucket, key) = parse_s3_url(file).map_err(anyhow::Error::msg)?;
    let view = config.file_ingest()?;
    let catalog = Arc::new(Catalog::from_file(view.catalog_path)?);
    let clients = AwsClients::new(&config.aws).await;
    let ingest = FileIngest::new(
        Arc::clone(&catalog),
        &clients,
        view.queue,
        config.files,
        "trace",
    );
    let object = head_object(&clients.s3, &bucket, &key).await?;
    let warehouse = connect_warehouse(config, config.warehouse()?)
        .await
        .context("connecting the warehouse")?;
    let (work_queue, dead_letter) = processor::serve::queues(&clients, view.queue);
    let sources = TraceSources {
        catalog: &catalog,
        planner: &ingest.planner,
        warehouse: warehouse.as_ref(),
        work_queue: work_queue.as_ref(),
        dead_letter: dead_letter.as_deref(),
    };
    Ok(trace_file(&sources, file, object).await?)
}

/// The trace as lines: the object, its route, each work item, the verdict, the next step.
pub fn render(trace: &FileTrace) -> String {
    let mut out = format!("{}\n", trace.url);
    if let Some(object) = &trace.object {
        out.push_str(&format!(
            "  object: {} bytes, etag {}{}\n",
            object.size,
            object.etag,
            object
                .version_id
                .as_deref()
                .map(|v| format!(", version {v}"))
                .unwrap_or_default()
        ));
    }
    if let Some(dataset) = &trace.dataset {
        out.push_str(&format!("  routed to dataset {dataset}\n"));
    }
    for part in &trace.parts {
        let state = match &part.state {
            PartState::Loaded {
                loaded_at,
                rows_loaded,
                rows_rejected,
            } => format!(
                "loaded at {loaded_at}: {rows_loaded} row(s), {rejected} rejected",
                rejected = rows_rejected
            ),
            PartState::DeadLettered {
                reason,
                receives,
                redrives,
            } => format!("dead-lettered (received {receives}×, redriven {redrives}×): {reason}"),
            PartState::NotLoaded => "not loaded: queued, in flight, or never enqueued".to_owned(),
        };
        out.push_str(&format!(
            "  work item {} of {} ({}): {state}\n",
            part.part, part.of, part.idempotency_key
        ));
    }
    if let Some(file) = &trace.file_load {
        out.push_str(&format!(
            "  file: {} of {} part(s) loaded, {} row(s), {} rejected\n",
            file.parts_loaded, file.parts_total, file.rows_loaded, file.rows_rejected
        ));
    }
    if trace.rejects > 0 {
        out.push_str(&format!("  rejects: {}", trace.rejects));
        if !trace.reject_reasons.is_empty() {
            out.push_str(&format!(" — {}", trace.reject_reasons.join("; ")));
        }
        out.push('\n');
    }
    out.push_str(&format!("=> {}\n", trace.verdict));
    if let Some(next) = &trace.next_step {
        out.push_str(&format!("next: {next}\n"));
    }
    out
}
