//! One module per subcommand: its arguments, what it prints and its exit code. What a
//! command does lives in the library (`operations`, `serve`, `local`), where tests reach it.

pub mod backfill;
pub mod catalog;
pub mod check;
pub mod demo;
pub mod dev;
pub mod healthcheck;
pub mod prune;
pub mod put;
pub mod query;
pub mod redrive;
pub mod replay;
pub mod serve;

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
