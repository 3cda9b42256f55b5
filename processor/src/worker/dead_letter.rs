//! Permanent failures: the message goes to the dead-letter queue at once, with its reason.

use std::time::Duration;

use shared::queue::{DATASET_ATTRIBUTE, OutgoingMessage, REASON_ATTRIBUTE, ReceivedMessage};
use shared::telemetry::{names, outcome};

use super::{Outcome, Worker};

/// The most bytes of a reason kept as a message attribute.
const MAX_REASON_BYTES: usize = 4096;

impl Worker {
    /// Sends `message` to the dead-letter queue with `reason` (and its dataset, when the
    /// item named a known one) and deletes it from the work queue; without a dead-letter
    /// queue of our own, makes it visible again for the queue's redrive policy.
    pub(super) async fn dead_letter(
        &self,
        message: &ReceivedMessage,
        dataset: Option<&str>,
        reason: &str,
    ) -> Outcome {
        tracing::error!(message_id = %message.message_id, reason, "permanent failure");
        let label = self.dataset_label(dataset.unwrap_or_default());
        metrics::counter!(names::WORK_ITEMS_PROCESSED_TOTAL, "dataset" => label, "outcome" => outcome::DEAD_LETTERED).increment(1);
        let outcome = Outcome::DeadLettered {
            reason: reason.to_owned(),
        };
        let Some(dead_letter) = &self.dead_letter else {
            // The queue's redrive policy moves it after maxReceiveCount receives.
            let _ = self
                .queue
                .extend_visibility(&message.receipt_handle, Duration::ZERO)
                .await;
            return outcome;
        };
        let mut outgoing = OutgoingMessage::from(message.body.clone())
            .with_attribute(REASON_ATTRIBUTE, truncate(reason, MAX_REASON_BYTES));
        if let Some(dataset) = dataset {
            outgoing = outgoing.with_attribute(DATASET_ATTRIBUTE, dataset);
        }
        let sent = dead_letter.send(&[outgoing]).await;
        if !sent.all_succeeded() {
            tracing::warn!(message_id = %message.message_id, ?sent, "could not send to the dead-letter queue; the redrive policy will");
            return outcome;
        }
        let deleted = self
            .queue
            .delete(std::slice::from_ref(&message.receipt_handle))
            .await;
        if !deleted.all_succeeded() {
            tracing::warn!(message_id = %message.message_id, "dead-lettered message could not be deleted; it may be dead-lettered twice");
        }
        outcome
    }
}

/// `text` cut to at most `max_bytes` on a character boundary, marked with an ellipsis.
fn truncate(text: &str, max_bytes: usize) -> String {
    let kept = crate::text::byte_prefix(text, max_bytes);
    if kept.len() == text.len() {
        return text.to_owned();
    }
    format!("{kept}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_reason_is_cut_on_a_character_boundary() {
        assert_eq!(truncate("ééé", 3), "é…");
        assert_eq!(truncate("short", 10), "short");
    }
}
