//! The work queue in the local platform's embedded database.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::params;

use super::{
    DeleteReport, OutgoingMessage, QueueDepth, QueueError, ReceivedMessage, SendReport, WorkQueue,
};
use crate::embedded::{
    EmbeddedDb, EmbeddedError, entry_report, millis, now_ms, sql_error, whole_call_failed,
};
use crate::envelope::MessageSizeLimit;
use crate::error::{Classify, Retryability};
use crate::retry::{EntryFailure, EntryReport};

/// How often a long poll looks for messages sent by another process.
const RECEIVE_POLL: Duration = Duration::from_millis(25);

/// A queue of the embedded database, with an optional dead-letter queue.
#[derive(Debug, Clone)]
pub struct EmbeddedQueue {
    db: EmbeddedDb,
    name: String,
    size_limit: MessageSizeLimit,
    redrive: Option<Redrive>,
}

/// Like an SQS redrive policy: a message received `max_receive_count` times and not
/// deleted moves to `dead_letter` instead of being received again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    pub dead_letter: String,
    pub max_receive_count: u32,
}

impl EmbeddedQueue {
    pub fn new(
        db: EmbeddedDb,
        name: impl Into<String>,
        size_limit: MessageSizeLimit,
        redrive: Option<Redrive>,
    ) -> Self {
        Self {
            db,
            name: name.into(),
            size_limit,
            redrive,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn error(&self, operation: &'static str, err: EmbeddedError) -> QueueError {
        QueueError {
            operation,
            queue_url: format!("sqlite://{}#{}", self.db.path().display(), self.name),
            retryability: err.retryability(),
            source: Box::new(err),
        }
    }

    /// Moves up to `limit` messages of another queue (a dead-letter queue) to this one,
    /// oldest first, with their receive counts reset, like SQS's `StartMessageMoveTask`.
    pub async fn move_from(&self, source: &str, limit: u64) -> Result<u64, QueueError> {
        let (queue, source) = (self.name.clone(), source.to_owned());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .call("moving messages", move |conn| {
                conn.execute(
                    "UPDATE queue_messages SET queue = ?1, receive_count = 0, receipt = NULL, visible_at_ms = ?2
                     WHERE id IN (SELECT id FROM queue_messages WHERE queue = ?3 ORDER BY id LIMIT ?4)",
                    params![queue, now_ms(), source, limit],
                )
                .map(|moved| moved as u64)
                .map_err(sql_error("moving messages"))
            })
            .await
            .map_err(|err| self.error("MoveMessages", err))
    }

    /// The bodies and attributes of the messages the queue holds, oldest first, without
    /// receiving them (for inspection: the demo's summary of dead letters).
    pub async fn peek(
        &self,
        limit: u32,
    ) -> Result<Vec<(String, std::collections::BTreeMap<String, String>)>, QueueError> {
        let queue = self.name.clone();
        self.db
            .call("reading messages", move |conn| {
                let mut select = conn
                    .prepare_cached(
                        "SELECT body, attributes FROM queue_messages WHERE queue = ?1 ORDER BY id LIMIT ?2",
                    )
                    .map_err(sql_error("reading messages"))?;
                select
                    .query_map(params![queue, limit], |row| {
                        let attributes: String = row.get(1)?;
                        Ok((
                            row.get(0)?,
                            serde_json::from_str(&attributes).unwrap_or_default(),
                        ))
                    })
                    .and_then(Iterator::collect)
                    .map_err(sql_error("reading messages"))
            })
            .await
            .map_err(|err| self.error("PeekMessages", err))
    }

    async fn receive_once(
        &self,
        max_messages: u8,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, EmbeddedError> {
        let queue = self.name.clone();
        let redrive = self.redrive.clone();
        let visibility = millis(visibility);
        self.db
            .call("receiving messages", move |conn| {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql_error("receiving messages"))?;
                let now = now_ms();
                if let Some(redrive) = &redrive {
                    tx.execute(
                        "UPDATE queue_messages SET queue = ?1, receive_count = 0, receipt = NULL
                         WHERE queue = ?2 AND visible_at_ms <= ?3 AND receive_count >= ?4",
                        params![redrive.dead_letter, queue, now, redrive.max_receive_count],
                    )
                    .map_err(sql_error("moving messages to the dead-letter queue"))?;
                }
                let ids: Vec<i64> = {
                    let mut select = tx
                        .prepare_cached(
                            "SELECT id FROM queue_messages WHERE queue = ?1 AND visible_at_ms <= ?2 ORDER BY id LIMIT ?3",
                        )
                        .map_err(sql_error("receiving messages"))?;
                    select
                        .query_map(params![queue, now, max_messages], |row| row.get(0))
                        .and_then(Iterator::collect)
                        .map_err(sql_error("receiving messages"))?
                };
                let mut received = Vec::with_capacity(ids.len());
                for id in ids {
                    let receipt = format!("{id}-{:016x}", rand::random::<u64>());
                    let message = tx
                        .query_row(
                            "UPDATE queue_messages SET visible_at_ms = ?1, receive_count = receive_count + 1, receipt = ?2
                             WHERE id = ?3
                             RETURNING message_id, body, receive_count, sent_at_ms, attributes",
                            params![now.saturating_add(visibility), receipt, id],
                            |row| {
                                Ok((
                                    row.get::<_, String>(0)?,
                                    row.get::<_, String>(1)?,
                                    row.get::<_, u32>(2)?,
                                    row.get::<_, i64>(3)?,
                                    row.get::<_, String>(4)?,
                                ))
                            },
                        )
                        .map_err(sql_error("receiving messages"))?;
                    let (message_id, body, receive_count, sent_at_ms, attributes) = message;
                    received.push(ReceivedMessage {
                        message_id,
                        receipt_handle: receipt,
                        body,
                        receive_count,
                        sent_at_ms: Some(sent_at_ms),
                        // Written by `send` from a map: a parse failure means a damaged file.
                        attributes: serde_json::from_str(&attributes).unwrap_or_default(),
                    });
                }
                tx.commit().map_err(sql_error("receiving messages"))?;
                Ok(received)
            })
            .await
    }
}

#[async_trait]
impl WorkQueue for EmbeddedQueue {
    async fn send(&self, messages: &[OutgoingMessage]) -> SendReport {
        let limit = self.size_limit.bytes();
        let (sendable, oversized): (Vec<usize>, Vec<usize>) =
            (0..messages.len()).partition(|&i| messages[i].size() <= limit);
        let mut report = EntryReport::all_failed(
            &oversized,
            "MessageTooLong",
            &format!("message is over the {limit}-byte limit"),
            false,
        );
        let rows: Vec<(usize, String, String)> = sendable
            .iter()
            .map(|&i| {
                let attributes = serde_json::to_string(&messages[i].attributes)
                    .expect("a map of strings serialises");
                (i, messages[i].body.clone(), attributes)
            })
            .collect();
        let queue = self.name.clone();
        let sent = self
            .db
            .call("sending messages", move |conn| {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql_error("sending messages"))?;
                let now = now_ms();
                let mut ids = Vec::with_capacity(rows.len());
                {
                    let mut insert = tx
                        .prepare_cached(
                            "INSERT INTO queue_messages (queue, message_id, body, attributes, sent_at_ms, visible_at_ms)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                        )
                        .map_err(sql_error("sending messages"))?;
                    for (index, body, attributes) in rows {
                        let message_id = format!(
                            "{:08x}-{:04x}-{:04x}-{:016x}",
                            rand::random::<u32>(),
                            rand::random::<u16>(),
                            rand::random::<u16>(),
                            rand::random::<u64>()
                        );
                        insert
                            .execute(params![queue, message_id, body, attributes, now])
                            .map_err(sql_error("sending messages"))?;
                        ids.push((index, message_id));
                    }
                }
                tx.commit().map_err(sql_error("sending messages"))?;
                Ok(ids)
            })
            .await;
        report.merge(entry_report(&sendable, sent));
        report.sort_by_index();
        report
    }

    async fn receive(
        &self,
        max_messages: u8,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let max_messages = max_messages.clamp(1, 10);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let received = self
                .receive_once(max_messages, visibility)
                .await
                .map_err(|err| self.error("ReceiveMessage", err))?;
            if !received.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(received);
            }
            tokio::time::sleep(RECEIVE_POLL.min(deadline - tokio::time::Instant::now())).await;
        }
    }

    async fn delete(&self, receipt_handles: &[String]) -> DeleteReport {
        let queue = self.name.clone();
        let handles = receipt_handles.to_vec();
        let deleted = self
            .db
            .call("deleting messages", move |conn| {
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(sql_error("deleting messages"))?;
                let mut found = Vec::with_capacity(handles.len());
                for handle in &handles {
                    let rows = tx
                        .execute(
                            "DELETE FROM queue_messages WHERE queue = ?1 AND receipt = ?2",
                            params![queue, handle],
                        )
                        .map_err(sql_error("deleting messages"))?;
                    found.push(rows > 0);
                }
                tx.commit().map_err(sql_error("deleting messages"))?;
                Ok(found)
            })
            .await;
        let indices: Vec<usize> = (0..receipt_handles.len()).collect();
        match deleted {
            Ok(found) => {
                let mut report = DeleteReport::default();
                for (index, found) in found.into_iter().enumerate() {
                    if found {
                        report.succeeded.push((index, ()));
                    } else {
                        // Received again by someone else (or already deleted): the handle
                        // no longer names the message.
                        report.failed.push(EntryFailure {
                            index,
                            code: "ReceiptHandleIsInvalid".to_owned(),
                            message: "the receipt handle is no longer valid".to_owned(),
                            retryable: false,
                        });
                    }
                }
                report
            }
            Err(err) => whole_call_failed(&indices, &err),
        }
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let queue = self.name.clone();
        self.db
            .call("counting messages", move |conn| {
                conn.query_row(
                    "SELECT coalesce(sum(visible_at_ms <= ?2), 0), coalesce(sum(visible_at_ms > ?2), 0),
                     min(sent_at_ms) FROM queue_messages WHERE queue = ?1",
                    params![queue, now_ms()],
                    |row| {
                        Ok(QueueDepth {
                            visible: row.get::<_, i64>(0)?.unsigned_abs(),
                            in_flight: row.get::<_, i64>(1)?.unsigned_abs(),
                            oldest_sent_ms: row.get(2)?,
                        })
                    },
                )
                .map_err(sql_error("counting messages"))
            })
            .await
            .map_err(|err| self.error("GetQueueAttributes", err))
    }

    async fn extend_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        let (queue, handle) = (self.name.clone(), receipt_handle.to_owned());
        let changed = self
            .db
            .call("extending visibility", move |conn| {
                conn.execute(
                    "UPDATE queue_messages SET visible_at_ms = ?1 WHERE queue = ?2 AND receipt = ?3",
                    params![now_ms().saturating_add(millis(timeout)), queue, handle],
                )
                .map_err(sql_error("extending visibility"))
            })
            .await
            .map_err(|err| self.error("ChangeMessageVisibility", err))?;
        if changed == 0 {
            return Err(QueueError {
                operation: "ChangeMessageVisibility",
                queue_url: format!("sqlite://{}#{}", self.db.path().display(), self.name),
                source: "the receipt handle is no longer valid".into(),
                retryability: Retryability::Permanent,
            });
        }
        Ok(())
    }
}
