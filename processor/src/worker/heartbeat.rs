//! Keeps a received message hidden while its work goes on.

use std::sync::Arc;
use std::time::Duration;

use shared::queue::WorkQueue;
use shared::telemetry::names;

/// Extends a message's visibility every `interval` until dropped: the heartbeat ends
/// when its work ends in any way — done, failed, panicked or cancelled — so a worker that
/// dies mid-load lets its message come back after one visibility timeout.
#[derive(Debug)]
pub(crate) struct Heartbeat(tokio::task::AbortHandle);

impl Heartbeat {
    /// Starts beating for the message with `receipt_handle`.
    pub fn start(
        queue: Arc<dyn WorkQueue>,
        receipt_handle: String,
        interval: Duration,
        visibility_timeout: Duration,
    ) -> Self {
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                match queue
                    .extend_visibility(&receipt_handle, visibility_timeout)
                    .await
                {
                    Ok(()) => metrics::counter!(names::HEARTBEAT_EXTENSIONS_TOTAL).increment(1),
                    Err(err) => {
                        tracing::warn!(error = %shared::error::Report(&err), "heartbeat failed to extend visibility")
                    }
                }
            }
        });
        Self(task.abort_handle())
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}
