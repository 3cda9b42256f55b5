//! What became of each file `dev` offered: loaded (with its rows and rejects), already
//! loaded, or dead-lettered with the reason — read from the ledger, the file-load table and
//! the dead-letter queue, so each file's outcome is told once and a restart does not queue
//! again what is loaded or waits in the dead-letter queue.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};
use shared::embedded::sql_error;
use shared::envelope::WorkItem;
use shared::queue::REASON_ATTRIBUTE;

use super::{DemoError, LocalPlatform, PLATFORM, step};

/// The most dead letters read to find a file's reason.
const DEAD_LETTERS_READ: u32 = 10_000;

/// A file queued whose outcome is not known yet.
#[derive(Debug, Clone)]
pub(crate) struct PendingFile {
    pub key: String,
    pub dataset: String,
    pub file_id: String,
    /// The idempotency keys of its work items (one per part).
    pub item_keys: Vec<String>,
}

impl PendingFile {
    /// The file the work items of one object make (all parts share the file id).
    pub fn of(key: &str, items: &[WorkItem]) -> Option<Self> {
        let WorkItem::File(first) = items.first()? else {
            return None;
        };
        Some(Self {
            key: key.to_owned(),
            dataset: first.dataset.clone(),
            file_id: first.file_id(),
            item_keys: items
                .iter()
                .map(|item| item.idempotency_key().to_string())
                .collect(),
        })
    }
}

/// How a file ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Loaded { rows: i64, rejected: i64 },
    DeadLettered { reason: String },
}

/// The reason each dead-lettered work item carries, by idempotency key.
pub(crate) async fn dead_letters(
    platform: &LocalPlatform,
) -> Result<BTreeMap<String, String>, DemoError> {
    let letters = platform
        .dead_letter
        .peek(DEAD_LETTERS_READ)
        .await
        .map_err(|err| step("reading the dead-letter queue")(err))?;
    Ok(letters
        .into_iter()
        .filter_map(|(body, attributes)| {
            let key = WorkItem::from_json(&body)
                .ok()?
                .idempotency_key()
                .to_string();
            let reason = attributes
                .get(REASON_ATTRIBUTE)
                .cloned()
                .unwrap_or_else(|| "moved after too many receives".to_owned());
            Some((key, reason))
        })
        .collect())
}

/// Whether the ledger holds every one of `keys`.
pub(crate) async fn all_loaded(
    platform: &LocalPlatform,
    keys: Vec<String>,
) -> Result<bool, DemoError> {
    platform
        .warehouse
        .db()
        .call("reading the ledger", move |conn| {
            let mut select = conn
                .prepare_cached(&format!(
                    "SELECT count(*) FROM {PLATFORM}_load_ledger WHERE idempotency_key = ?1"
                ))
                .map_err(sql_error("reading the ledger"))?;
            for key in &keys {
                let found: i64 = select
                    .query_row(params![key], |row| row.get(0))
                    .map_err(sql_error("reading the ledger"))?;
                if found == 0 {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await
        .map_err(|err| step("reading the ledger")(err))
}

/// The outcome of `file` if it has one: every part loaded, or a part dead-lettered.
pub(crate) async fn outcome(
    platform: &LocalPlatform,
    file: &PendingFile,
    dead: &BTreeMap<String, String>,
) -> Result<Option<Outcome>, DemoError> {
    let file_id = file.file_id.clone();
    let completed: Option<(i64, i64)> = platform
        .warehouse
        .db()
        .call("reading file loads", move |conn| {
            conn.query_row(
                &format!(
                    "SELECT rows_loaded, rows_rejected FROM {PLATFORM}_file_loads WHERE file_id = ?1 AND completed_at IS NOT NULL"
                ),
                params![file_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(sql_error("reading file loads"))
        })
        .await
        .map_err(|err| step("reading file loads")(err))?;
    if let Some((rows, rejected)) = completed {
        return Ok(Some(Outcome::Loaded { rows, rejected }));
    }
    Ok(file
        .item_keys
        .iter()
        .find_map(|key| dead.get(key))
        .map(|reason| Outcome::DeadLettered {
            reason: reason.clone(),
        }))
}
