use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use ingest_batch::FileIngest;
use processor::backfill;
use processor::check::{check_catalog, render_report};
use processor::cli::{Cli, Command};
use processor::demo;
use processor::redrive::{RedriveOptions, RedriveOutcome, redrive};
use shared::aws::AwsClients;
use shared::catalog::Catalog;
use shared::config::{PlatformConfig, Section};
use shared::queue::SqsQueue;
use shared::telemetry::init_tracing;

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = PlatformConfig::load(cli.config.as_deref(), std::env::vars())?;
    match cli.command {
        Command::Check { catalog } => {
            let path = catalog
                .or_else(|| config.catalog_path.clone())
                .context("no catalog: pass --catalog FILE or set [catalog] path in the config")?;
            let catalog = Catalog::from_file(&path)?;
            let checks = check_catalog(&catalog).await;
            print!("{}", render_report(&catalog, &checks));
            let failed = checks.iter().filter(|c| !c.is_ok()).count();
            println!(
                "catalog {}: {} dataset(s), {} with problems",
                path.display(),
                checks.len(),
                failed
            );
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Serve => {
            config.require(&[Section::Queue, Section::Catalog, Section::Warehouse])?;
            init_tracing(&config.telemetry)?;
            let path = config
                .catalog_path
                .clone()
                .context("[catalog] path is required")?;
            let catalog = Arc::new(Catalog::from_file(&path)?);
            processor::service::serve(&config, catalog, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Backfill {
            bucket,
            prefix,
            since,
            dry_run,
        } => {
            config.require(&[Section::Queue, Section::Catalog])?;
            let since_ms = since
                .as_deref()
                .map(backfill::parse_since)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let (Some(queue), Some(catalog_path)) = (&config.queue, &config.catalog_path) else {
                anyhow::bail!("[queue] and [catalog] are required");
            };
            let catalog = Arc::new(Catalog::from_file(catalog_path)?);
            let clients = AwsClients::new(&config.aws).await;
            let ingest = FileIngest::new(catalog, &clients, queue, config.files, "backfill");
            let options = backfill::BackfillOptions {
                bucket,
                prefix,
                since_ms,
                dry_run,
            };
            let started = std::time::Instant::now();
            let mut progress = |p: &backfill::BackfillProgress| {
                let secs = started.elapsed().as_secs_f64().max(0.001);
                eprint!(
                    "\rlisted {} objects ({} older than --since), planned {} ({:.1} MiB), {} work item(s) {}, {} skipped — {:.0} objects/s",
                    p.listed,
                    p.older,
                    p.planned,
                    p.bytes as f64 / (1024.0 * 1024.0),
                    p.work_items,
                    if dry_run { "planned" } else { "sent" },
                    p.skipped,
                    p.listed as f64 / secs
                );
            };
            let done = backfill::backfill(&clients.s3, &ingest, &options, &mut progress).await?;
            eprintln!();
            println!(
                "{} {} work item(s) for {} object(s) under s3://{}/{} ({} split into parts, {} skipped: folder markers, empty, unrouted or gone)",
                if dry_run { "would enqueue" } else { "enqueued" },
                done.work_items,
                done.planned,
                options.bucket,
                options.prefix,
                done.files_split,
                done.skipped
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            stream,
            from,
            to,
            checkpoint,
            batch_size,
        } => {
            config.require(&[Section::Queue, Section::Catalog, Section::Stream])?;
            let (Some(queue), Some(catalog_path), Some(stream_settings)) =
                (&config.queue, &config.catalog_path, &config.stream)
            else {
                anyhow::bail!("[queue], [catalog] and [stream] are required");
            };
            let from_ms = backfill::parse_since(&from).map_err(anyhow::Error::msg)?;
            let to_ms = match to.as_deref() {
                Some(text) => backfill::parse_since(text).map_err(anyhow::Error::msg)?,
                None => shared::stream::epoch_millis(std::time::SystemTime::now()),
            };
            anyhow::ensure!(from_ms < to_ms, "--from must be before --to");
            let catalog = Arc::new(Catalog::from_file(catalog_path)?);
            let clients = AwsClients::new(&config.aws).await;
            let ingest = ingest_stream::handler::StreamIngest::new(
                catalog,
                &clients,
                queue,
                stream_settings,
            );
            let kinesis = shared::stream::KinesisStream::new(clients.kinesis.clone(), &stream);
            let (stop, stopped) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                shutdown_signal().await;
                eprintln!(
                    "\nstopping: checkpoints are saved; run again with the same --checkpoint to resume"
                );
                let _ = stop.send(true);
            });
            let started = std::time::Instant::now();
            let mut progress = |p: &ingest_stream::poller::ReadProgress| {
                eprint!(
                    "\rreplay {stream}: {} records ({:.0}/s), {} work items, {} quarantined, {}/{} shards done, {:.1} s behind the tip   ",
                    p.records,
                    p.records as f64 / started.elapsed().as_secs_f64().max(0.001),
                    p.work_items_sent,
                    p.quarantined,
                    p.shards_finished,
                    p.shards,
                    p.millis_behind_latest as f64 / 1000.0
                );
            };
            let options = processor::replay::ReplayOptions {
                from_ms,
                to_ms,
                checkpoint_file: checkpoint,
                batch_size,
            };
            let done =
                processor::replay::replay(&kinesis, &ingest, &options, stopped, &mut progress)
                    .await?;
            eprintln!();
            println!(
                "replayed {} records of {stream} into {} work items ({} quarantined)",
                done.records, done.work_items_sent, done.quarantined
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            dir,
            customers,
            orders,
            events,
            dirty_share,
            seed,
            rate,
            workers,
            visibility_timeout_secs,
            quiet,
        } => {
            anyhow::ensure!(
                (0.0..=0.5).contains(&dirty_share),
                "--dirty-share must be between 0 and 0.5"
            );
            let options = demo::DemoOptions {
                dir,
                size: demo::generate::DemoSize {
                    customers,
                    orders,
                    events,
                    dirty_share,
                    seed,
                },
                events_per_second: rate,
                workers,
                visibility_timeout: std::time::Duration::from_secs(visibility_timeout_secs.max(1)),
            };
            eprintln!(
                "demo in {}: {customers} customers, {orders} orders (with items and payments) as files, {events} events at {rate}/s into the stream",
                options.dir.display()
            );
            let mut last_line = std::time::Instant::now();
            let mut progress = |p: &demo::Progress| {
                if quiet || last_line.elapsed() < std::time::Duration::from_millis(900) {
                    return;
                }
                last_line = std::time::Instant::now();
                eprintln!(
                    "[{:5.1} s] files {} ({} items sent) · events {}/{} put, {} read, {} quarantined · queue {} waiting, {} in flight · {} rows loaded",
                    p.elapsed.as_secs_f64(),
                    p.files,
                    p.file_items_sent,
                    p.events_put,
                    p.events_total,
                    p.stream.records,
                    p.stream.quarantined,
                    p.queue_visible,
                    p.queue_in_flight,
                    p.rows_loaded
                );
            };
            let summary = demo::run_demo(&options, &mut progress).await?;
            print!("{}", demo::render_summary(&summary));
            Ok(if summary.matches_expectation() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Dev {
            dir,
            workers,
            scan_interval_secs,
        } => {
            let options = demo::dev::DevOptions {
                dir,
                workers,
                visibility_timeout: std::time::Duration::from_secs(30),
                scan_interval: std::time::Duration::from_secs(scan_interval_secs.max(1)),
            };
            let (stop, stopped) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = stop.send(true);
            });
            let mut report = |event: demo::dev::DevEvent| match event {
                demo::dev::DevEvent::Watching { folder } => eprintln!(
                    "watching {} — drop files under landing/<dataset>/ (customers, orders, order_items, payments); Ctrl-C stops",
                    folder.display()
                ),
                demo::dev::DevEvent::Queued { key, work_items } => {
                    eprintln!("queued {key}: {work_items} work item(s)")
                }
                demo::dev::DevEvent::Skipped { key, reasons } => {
                    eprintln!("skipped {key}: {reasons}")
                }
                demo::dev::DevEvent::Failed { key, reason } => {
                    eprintln!("failed {key}: {reason}")
                }
                demo::dev::DevEvent::Loaded {
                    table,
                    rows,
                    rejected,
                } => eprintln!("loaded {table}: {rows:+} row(s), {rejected:+} rejected"),
            };
            demo::dev::run_dev(&options, stopped, &mut report).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck { address } => {
            let address = address
                .or(config.processor.health_address)
                .context("processor.health_address is \"off\": there is no endpoint to ask")?;
            match processor::health::probe(address, std::time::Duration::from_secs(3)).await {
                Ok(answer) => {
                    println!("{answer}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(reason) => {
                    eprintln!("unhealthy: {reason}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Query { dir, sql } => {
            let layout = demo::Layout { dir };
            print!("{}", demo::query::run_query(&layout.database(), &sql)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Redrive {
            dry_run,
            max,
            rate,
            max_redrives,
        } => {
            config.require(&[Section::Queue])?;
            let queue = config.queue.as_ref().context("[queue] is required")?;
            let dead_letter_url = queue
                .dead_letter_url
                .as_ref()
                .context("queue.dead_letter_url is required to redrive")?;
            let clients = AwsClients::new(&config.aws).await;
            let dead_letter = SqsQueue::new(
                clients.sqs.clone(),
                dead_letter_url,
                queue.max_message_bytes,
            );
            let target = SqsQueue::new(clients.sqs.clone(), &queue.url, queue.max_message_bytes);
            let options = RedriveOptions {
                dry_run,
                max_messages: max,
                max_per_second: rate,
                max_redrives,
            };
            let mut progress =
                |moved: u64, expected: u64| eprint!("\rmoved {moved} of ~{expected}");
            let outcome = redrive(&dead_letter, &target, options, &mut progress).await?;
            eprintln!();
            match outcome {
                RedriveOutcome::WouldMove { messages } => {
                    println!(
                        "dry run: the dead-letter queue holds about {messages} message(s); nothing moved"
                    )
                }
                RedriveOutcome::MoveTaskStarted {
                    task_handle,
                    messages,
                } => println!(
                    "SQS is moving about {messages} message(s) (task {task_handle}); follow it with `aws sqs list-message-move-tasks`"
                ),
                RedriveOutcome::Moved {
                    moved,
                    failed,
                    held,
                } => {
                    println!(
                        "moved {moved} message(s); {failed} could not be moved and {held} were redriven too often: they stay in the dead-letter queue"
                    )
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Completes on SIGTERM (ECS stopping the task) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
