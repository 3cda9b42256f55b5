//! One module per subcommand: its arguments, what it prints and its exit code. What a
//! command does lives in the library (`operations`, `serve`, `local`), where tests reach it.

pub mod backfill;
pub mod catalog;
pub mod check;
pub mod demo;
pub mod dev;
pub mod dlq;
pub mod healthcheck;
pub mod prune;
pub mod put;
pub mod query;
pub mod redrive;
pub mod rejects;
pub mod replay;
pub mod serve;
pub mod status;
pub mod trace;

/// The local platform's folder: `--dir` if given, else `[local] dir`, else `demo-data`.
pub fn local_dir(
    config: &shared::config::PlatformConfig,
    dir: Option<std::path::PathBuf>,
) -> std::path::PathBuf {
    dir.or_else(|| config.local.as_ref().map(|local| local.dir.clone()))
        .unwrap_or_else(|| std::path::PathBuf::from("demo-data"))
}

/// The local platform of `[local]`, when the config runs the local mode.
pub fn local_layout(config: &shared::config::PlatformConfig) -> Option<processor::local::Layout> {
    config.local.as_ref().map(|local| processor::local::Layout {
        dir: local.dir.clone(),
    })
}

/// The catalog file `[catalog] path` names; the local mode needs one as AWS does.
pub fn configured_catalog_path(
    config: &shared::config::PlatformConfig,
) -> anyhow::Result<&std::path::Path> {
    use anyhow::Context;
    config
        .catalog_path
        .as_deref()
        .context("no catalog: set [catalog] path in the config (or INGEST_CATALOG__PATH)")
}

/// The catalog `[catalog] path` names, read.
pub fn configured_catalog(
    config: &shared::config::PlatformConfig,
) -> anyhow::Result<std::sync::Arc<shared::catalog::Catalog>> {
    let path = configured_catalog_path(config)?;
    Ok(std::sync::Arc::new(shared::catalog::Catalog::from_file(
        path,
    )?))
}

/// The SQS work queue and dead-letter queue, for the commands that need both.
pub async fn sqs_queue_pair(
    config: &shared::config::PlatformConfig,
) -> anyhow::Result<(shared::queue::SqsQueue, shared::queue::SqsQueue)> {
    let shared::config::RedriveView {
        queue,
        dead_letter_url,
    } = config.redrive()?;
    let clients = shared::aws::AwsClients::new(&config.aws).await;
    let queue_at =
        |url: &str| shared::queue::SqsQueue::new(clients.sqs.clone(), url, queue.max_message_bytes);
    Ok((queue_at(&queue.url), queue_at(dead_letter_url)))
}

/// Completes on SIGTERM (ECS stopping the task) or Ctrl-C.
pub async fn shutdown_signal() {
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

/// A watch that turns true at the first SIGTERM or Ctrl-C, after `on_signal` ran.
pub fn stop_on_signal(
    on_signal: impl FnOnce() + Send + 'static,
) -> tokio::sync::watch::Receiver<bool> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        on_signal();
        let _ = stop.send(true);
    });
    stopped
}

/// Exit status of a command whose outcome is a yes or no.
pub fn exit_code(success: bool) -> std::process::ExitCode {
    if success {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
