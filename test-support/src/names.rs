//! Names no other test uses: one PostgreSQL, one emulator and one temp folder serve every
//! test at once.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A name no other test (or earlier run) uses: prefix, process id, time and a counter.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Warehouse schema names used by one test only, so tests can share one PostgreSQL.
#[derive(Debug, Clone)]
pub struct TestSchemas {
    /// Replaces `sales` in the example catalog's targets.
    pub sales: String,
    /// Replaces `events` in the example catalog's targets.
    pub events: String,
    /// For the ledger and rejects tables.
    pub platform: String,
}

impl TestSchemas {
    pub fn new() -> Self {
        let schema = |prefix: &str| unique_name(prefix).replace('-', "_");
        Self {
            sales: schema("sales"),
            events: schema("events"),
            platform: schema("ingest"),
        }
    }

    /// A catalog's text with its `sales.` and `events.` targets moved to this test's schemas.
    pub fn retarget(&self, catalog_text: &str) -> String {
        catalog_text
            .replace("target = \"sales.", &format!("target = \"{}.", self.sales))
            .replace(
                "target = \"events.",
                &format!("target = \"{}.", self.events),
            )
    }
}

impl Default for TestSchemas {
    fn default() -> Self {
        Self::new()
    }
}

/// A SQLite database file in the temp folder, removed with its WAL and shared-memory
/// files when dropped (also when a test panics).
#[derive(Debug)]
pub struct TempDatabase(pub std::path::PathBuf);

impl TempDatabase {
    pub fn new(prefix: &str) -> Self {
        Self(std::env::temp_dir().join(format!("{}.sqlite", unique_name(prefix))))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}
