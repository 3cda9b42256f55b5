//! Buckets, objects and queues in the AWS emulator, and a queue that needs none.

use std::time::Duration;

use crate::names::unique_name;

/// Creates a bucket with a unique name starting with `prefix`; returns its name.
pub async fn create_bucket(s3: &aws_sdk_s3::Client, prefix: &str) -> String {
    let bucket = unique_name(prefix).to_lowercase();
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap_or_else(|err| panic!("create bucket {bucket}: {err:?}"));
    bucket
}

/// An object's bytes from the emulator's S3.
pub async fn get_object_bytes(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    s3.get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|err| panic!("get s3://{bucket}/{key}: {err:?}"))
        .body
        .collect()
        .await
        .expect("object body")
        .into_bytes()
        .to_vec()
}

/// Creates a standard queue with a unique name and the given attributes; returns its URL.
pub async fn create_queue(
    client: &aws_sdk_sqs::Client,
    attributes: &[(aws_sdk_sqs::types::QueueAttributeName, String)],
) -> String {
    let mut request = client.create_queue().queue_name(unique_name("work"));
    for (name, value) in attributes {
        request = request.attributes(name.clone(), value.clone());
    }
    let output = request.send().await.expect("create queue");
    output.queue_url().expect("queue url").to_owned()
}

/// Creates a dead-letter queue and a work queue that moves a message there after
/// `max_receive_count` receives; returns (work queue URL, dead-letter queue URL).
pub async fn create_queue_with_dlq(
    client: &aws_sdk_sqs::Client,
    max_receive_count: u32,
) -> (String, String) {
    use aws_sdk_sqs::types::QueueAttributeName;
    let dlq_url = create_queue(client, &[]).await;
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("dlq attributes")
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("dlq arn");
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": max_receive_count.to_string(),
    })
    .to_string();
    let url = create_queue(client, &[(QueueAttributeName::RedrivePolicy, redrive)]).await;
    (url, dlq_url)
}

/// (visible, in flight) message counts of a queue.
pub async fn queue_depth(client: &aws_sdk_sqs::Client, url: &str) -> (u64, u64) {
    use shared::queue::{SqsQueue, WorkQueue};
    let queue = SqsQueue::new(
        client.clone(),
        url,
        shared::envelope::MessageSizeLimit::default(),
    );
    let depth = queue.depth().await.expect("queue attributes");
    (depth.visible, depth.in_flight)
}

/// Uploads `body` to the emulator's S3 and returns the `file` work item for it, with the
/// compression inferred from the key.
pub async fn upload_file(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    dataset: &str,
    format: shared::catalog::FileFormat,
) -> shared::envelope::WorkItem {
    let size = body.len() as u64;
    let put = s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(aws_sdk_s3::primitives::ByteStream::from(body))
        .send()
        .await
        .expect("put object");
    shared::envelope::WorkItem::File(shared::envelope::FileItem {
        dataset: dataset.to_owned(),
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        version_id: put.version_id().map(str::to_owned),
        etag: put.e_tag().expect("etag").to_owned(),
        size,
        range: None,
        part: None,
        format,
        compression: shared::catalog::Compression::from_key(key),
        created_at_ms: None,
    })
}

/// A work queue that confirms every message it is given and keeps nothing: for
/// benchmarks that exclude SQS calls.
#[derive(Debug, Default)]
pub struct AcceptingQueue;

#[async_trait::async_trait]
impl shared::queue::WorkQueue for AcceptingQueue {
    async fn send(&self, messages: &[shared::queue::OutgoingMessage]) -> shared::queue::SendReport {
        shared::queue::SendReport {
            succeeded: (0..messages.len()).map(|i| (i, i.to_string())).collect(),
            failed: Vec::new(),
        }
    }
    async fn receive(
        &self,
        _: u8,
        _: Duration,
        _: Duration,
    ) -> Result<Vec<shared::queue::ReceivedMessage>, shared::queue::QueueError> {
        Ok(Vec::new())
    }
    async fn delete(&self, _: &[String]) -> shared::queue::DeleteReport {
        shared::queue::DeleteReport::default()
    }
    async fn depth(&self) -> Result<shared::queue::QueueDepth, shared::queue::QueueError> {
        Ok(shared::queue::QueueDepth::default())
    }
    async fn extend_visibility(
        &self,
        _: &str,
        _: Duration,
    ) -> Result<(), shared::queue::QueueError> {
        Ok(())
    }
}
