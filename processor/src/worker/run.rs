//! The receive loop of a worker: long-polls the queue, routes stream items and small
//! files into micro-batches and handles larger files one at a time, until shutdown.

use std::time::Duration;

use shared::envelope::WorkItem;
use shared::queue::ReceivedMessage;
use tokio::sync::watch;

use super::Worker;
use super::batching::Batches;
use super::heartbeat::Heartbeat;

/// At most this many messages per receive while the work is batchable.
const RECEIVE_MANY: u8 = 10;

impl Worker {
    /// Receives and handles messages until `shutdown` turns true. Records items and small
    /// whole files are micro-batched per dataset until a row, byte or time limit is
    /// reached, so a burst of small items becomes one load; larger files are loaded one at
    /// a time. Pending batches are flushed before returning.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let mut batches = Batches::default();
        let mut after_retryable_failure = false;
        // One message at a time while the work is large files, so a worker never holds
        // files it is not loading: a crash (or a kill) costs each message it held a
        // receive, and after `maxReceiveCount` of those SQS dead-letters it. Up to ten
        // while the work is batchable, where holding a few for at most `max_wait` is the
        // price of loading them together.
        let mut receive_at_most: u8 = 1;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if std::mem::take(&mut after_retryable_failure)
                && !self
                    .wait_for_warehouse(shutdown_changed(&mut shutdown))
                    .await
            {
                break;
            }
            let wait = batches
                .next_due(self.batching.max_wait)
                .map_or(self.settings.wait_time, |due| {
                    due.min(self.settings.wait_time)
                });
            let messages = tokio::select! {
                messages = self.receive(receive_at_most, wait) => messages,
                _ = shutdown.changed() => break,
            };
            if !messages.is_empty() {
                receive_at_most = 1;
            }
            // Messages waiting their turn stay hidden too.
            let waiting: Vec<(ReceivedMessage, Heartbeat)> = messages
                .into_iter()
                .map(|message| {
                    let heartbeat = self.heartbeat(&message);
                    (message, heartbeat)
                })
                .collect();
            for (message, heartbeat) in waiting {
                let item = match WorkItem::from_json(&message.body) {
                    Ok(item) if self.batchable(&item) => item,
                    // Anything else is handled alone (and reported there).
                    parsed => {
                        drop(heartbeat);
                        let outcome = self.handle_parsed(&message, parsed).await;
                        after_retryable_failure |= outcome.is_released();
                        continue;
                    }
                };
                receive_at_most = RECEIVE_MANY;
                if let Some(full) = batches.add(message, item, heartbeat, &self.batching) {
                    after_retryable_failure |= self.flush(full).await;
                }
            }
            for batch in batches.take_due(self.batching.max_wait) {
                after_retryable_failure |= self.flush(batch).await;
            }
        }
        for batch in batches.take_all() {
            self.flush(batch).await;
        }
    }

    /// Up to `at_most` messages, waiting at most `wait`; none when the receive failed.
    async fn receive(&self, at_most: u8, wait: Duration) -> Vec<ReceivedMessage> {
        match self
            .queue
            .receive(at_most, wait, self.settings.visibility_timeout)
            .await
        {
            Ok(messages) => messages,
            Err(err) => {
                tracing::warn!(error = %shared::error::Report(&err), "receive failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                Vec::new()
            }
        }
    }

    /// Whether an item can join a micro-batch: its dataset is in the catalog and it is a
    /// records item or a small whole file.
    fn batchable(&self, item: &WorkItem) -> bool {
        self.pipeline.catalog().get(item.dataset()).is_some() && self.batching.admits(item)
    }

    /// Pings the warehouse until it answers (`true`) or `give_up` completes first
    /// (`false`). After a retryable failure a worker takes no more work until the
    /// warehouse answers, so an outage cannot use up the receives messages have before
    /// the dead-letter queue.
    pub(super) async fn wait_for_warehouse(
        &self,
        give_up: impl std::future::Future<Output = ()>,
    ) -> bool {
        tokio::pin!(give_up);
        let mut delay = Duration::from_millis(250);
        let mut unreachable_since: Option<std::time::Instant> = None;
        loop {
            match self.warehouse.ping().await {
                Ok(()) => {
                    if let Some(since) = unreachable_since {
                        tracing::info!(
                            after_secs = since.elapsed().as_secs(),
                            "the warehouse answers again; taking work"
                        );
                    }
                    return true;
                }
                Err(err) if unreachable_since.is_none() => {
                    tracing::warn!(error = %shared::error::Report(&err), "the warehouse does not answer; taking no work until it does");
                    unreachable_since = Some(std::time::Instant::now());
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = &mut give_up => return false,
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}

/// Completes when `shutdown` changes (or its sender is gone).
async fn shutdown_changed(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.changed().await;
}
