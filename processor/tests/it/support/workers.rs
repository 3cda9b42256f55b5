//! Workers as the tests build them: short polls and backoffs, no dead-letter queue of
//! their own, default micro-batching, no `File Loaded` events (tests add what they need).

use std::sync::Arc;
use std::time::Duration;

use processor::pipeline::Pipeline;
use processor::warehouse::Warehouse;
use processor::worker::{BatchSettings, Worker, WorkerSettings};
use shared::queue::WorkQueue;

/// A worker of `queue` whose messages stay hidden for `visibility` while it works.
pub fn worker(
    queue: Arc<dyn WorkQueue>,
    pipeline: Arc<Pipeline>,
    warehouse: Arc<dyn Warehouse>,
    visibility: Duration,
) -> Worker {
    Worker {
        queue,
        dead_letter: None,
        pipeline,
        warehouse,
        settings: WorkerSettings {
            wait_time: Duration::from_secs(1),
            visibility_timeout: visibility,
            retry_backoff: Duration::from_secs(1),
            max_retry_backoff: Duration::from_secs(5),
        },
        batching: BatchSettings::default(),
        announcer: None,
    }
}
