//! The work queue on Amazon SQS.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, DeleteMessageBatchRequestEntry, MessageAttributeValue,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};

use super::{
    DeleteReport, OutgoingMessage, QueueDepth, QueueError, ReceivedMessage, SQS_MAX_BATCH_ENTRIES,
    SendReport, WorkQueue, plan_batches,
};
use crate::envelope::MessageSizeLimit;
use crate::error::{Classify, Retryability, classify_sdk_error, is_retryable_service_code, report};
use crate::retry::{EntryFailure, EntryReport, RetryPolicy, retry_failed_entries};

/// An SQS queue, standard or FIFO (FIFO needs group ids, which the platform does not use).
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    size_limit: MessageSizeLimit,
    retry: RetryPolicy,
}

impl SqsQueue {
    pub fn new(
        client: aws_sdk_sqs::Client,
        url: impl Into<String>,
        size_limit: MessageSizeLimit,
    ) -> Self {
        Self {
            client,
            url: url.into(),
            size_limit,
            retry: RetryPolicy::default(),
        }
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn client(&self) -> &aws_sdk_sqs::Client {
        &self.client
    }

    /// The queue's ARN (needed by `StartMessageMoveTask`).
    pub async fn arn(&self) -> Result<String, QueueError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|err| self.call_error("GetQueueAttributes", err))?;
        output
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .ok_or_else(|| QueueError {
                operation: "GetQueueAttributes",
                queue_url: self.url.clone(),
                source: "the queue has no QueueArn attribute".into(),
                retryability: Retryability::Permanent,
            })
    }

    fn call_error<E>(
        &self,
        operation: &'static str,
        err: aws_sdk_sqs::error::SdkError<E>,
    ) -> QueueError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        QueueError {
            operation,
            queue_url: self.url.clone(),
            retryability: classify_sdk_error(&err),
            source: err.into(),
        }
    }

    /// Every entry of a batch call that failed as a whole fails with the call's error.
    fn call_failure<E, S>(
        &self,
        operation: &'static str,
        indices: &[usize],
        err: aws_sdk_sqs::error::SdkError<E>,
    ) -> EntryReport<S>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let code = err.code().unwrap_or("CallFailed").to_owned();
        let error = self.call_error(operation, err);
        EntryReport::all_failed(indices, &code, &report(&error), error.is_retryable())
    }

    async fn send_batch_once(
        &self,
        messages: &[OutgoingMessage],
        indices: Vec<usize>,
    ) -> SendReport {
        let entries: Vec<SendMessageBatchRequestEntry> = indices
            .iter()
            .map(|&index| {
                let message = &messages[index];
                let attributes = message
                    .attributes
                    .iter()
                    .map(|(name, value)| {
                        let value = MessageAttributeValue::builder()
                            .data_type("String")
                            .string_value(value)
                            .build()
                            .expect("data type is set");
                        (name.clone(), value)
                    })
                    .collect();
                SendMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message_body(message.body.clone())
                    .set_message_attributes((!message.attributes.is_empty()).then_some(attributes))
                    .build()
                    .expect("id and body are set")
            })
            .collect();
        let result = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await;
        match result {
            Ok(output) => EntryReport {
                succeeded: output
                    .successful()
                    .iter()
                    .filter_map(|ok| {
                        Some((ok.id().parse::<usize>().ok()?, ok.message_id().to_owned()))
                    })
                    .collect(),
                failed: entry_failures(output.failed()),
            },
            Err(err) => self.call_failure("SendMessageBatch", &indices, err),
        }
    }

    async fn delete_batch_once(&self, handles: &[String], indices: Vec<usize>) -> DeleteReport {
        let entries: Vec<DeleteMessageBatchRequestEntry> = indices
            .iter()
            .map(|&index| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(handles[index].clone())
                    .build()
                    .expect("id and receipt handle are set")
            })
            .collect();
        let result = self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await;
        match result {
            Ok(output) => EntryReport {
                succeeded: output
                    .successful()
                    .iter()
                    .filter_map(|ok| Some((ok.id().parse::<usize>().ok()?, ())))
                    .collect(),
                failed: entry_failures(output.failed()),
            },
            Err(err) => self.call_failure("DeleteMessageBatch", &indices, err),
        }
    }
}

#[async_trait]
impl WorkQueue for SqsQueue {
    async fn send(&self, messages: &[OutgoingMessage]) -> SendReport {
        let sizes: Vec<usize> = messages.iter().map(OutgoingMessage::size).collect();
        // A batch may not carry more than one message's limit in total.
        let (batches, oversized) =
            plan_batches(&sizes, SQS_MAX_BATCH_ENTRIES, self.size_limit.bytes());
        let mut report = EntryReport::all_failed(
            &oversized,
            "MessageTooLong",
            &format!("message is over the {}-byte limit", self.size_limit.bytes()),
            false,
        );
        for batch in batches {
            report.merge(
                retry_failed_entries(&self.retry, batch, |indices| {
                    self.send_batch_once(messages, indices)
                })
                .await,
            );
        }
        report.sort_by_index();
        report
    }

    async fn receive(
        &self,
        max_messages: u8,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(i32::from(max_messages.clamp(1, 10)))
            .wait_time_seconds(duration_secs_i32(wait.min(Duration::from_secs(20))))
            .visibility_timeout(duration_secs_i32(visibility))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|err| self.call_error("ReceiveMessage", err))?;
        Ok(output
            .messages()
            .iter()
            .filter_map(|message| {
                let attributes = message.attributes();
                let attribute = |name: MessageSystemAttributeName| {
                    attributes
                        .and_then(|a| a.get(&name))
                        .and_then(|v| v.parse::<i64>().ok())
                };
                Some(ReceivedMessage {
                    message_id: message.message_id()?.to_owned(),
                    receipt_handle: message.receipt_handle()?.to_owned(),
                    body: message.body().unwrap_or_default().to_owned(),
                    receive_count: attribute(MessageSystemAttributeName::ApproximateReceiveCount)
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(1),
                    sent_at_ms: attribute(MessageSystemAttributeName::SentTimestamp),
                    attributes: message
                        .message_attributes()
                        .map(|all| {
                            all.iter()
                                .filter_map(|(name, value)| {
                                    Some((name.clone(), value.string_value()?.to_owned()))
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                })
            })
            .collect())
    }

    async fn delete(&self, receipt_handles: &[String]) -> DeleteReport {
        let indices: Vec<usize> = (0..receipt_handles.len()).collect();
        let mut report = DeleteReport::default();
        for batch in indices.chunks(SQS_MAX_BATCH_ENTRIES) {
            report.merge(
                retry_failed_entries(&self.retry, batch.to_vec(), |indices| {
                    self.delete_batch_once(receipt_handles, indices)
                })
                .await,
            );
        }
        report
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|err| self.call_error("GetQueueAttributes", err))?;
        let count = |name: QueueAttributeName| {
            output
                .attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(QueueDepth {
            visible: count(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            oldest_sent_ms: None,
        })
    }

    async fn extend_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(duration_secs_i32(timeout))
            .send()
            .await
            .map_err(|err| self.call_error("ChangeMessageVisibility", err))?;
        Ok(())
    }
}

/// Entries SQS refused; the entry id is the index in the caller's list. A sender fault
/// (bad input) is permanent unless its code names throttling.
fn entry_failures(failed: &[BatchResultErrorEntry]) -> Vec<EntryFailure> {
    failed
        .iter()
        .filter_map(|bad| {
            Some(EntryFailure {
                index: bad.id().parse::<usize>().ok()?,
                code: bad.code().to_owned(),
                message: bad.message().unwrap_or_default().to_owned(),
                retryable: !bad.sender_fault() || is_retryable_service_code(bad.code()),
            })
        })
        .collect()
}

fn duration_secs_i32(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}
