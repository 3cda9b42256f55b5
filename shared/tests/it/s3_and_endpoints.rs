//! The SDK config builder: per-service endpoint overrides and path-style S3 against the
//! AWS emulator.

use aws_sdk_s3::primitives::ByteStream;
use shared::aws::{AwsClients, AwsSettings};
use test_support::{aws_endpoint, create_bucket};

#[tokio::test]
async fn per_service_endpoints_override_the_global_one() {
    let endpoint = aws_endpoint();
    let settings = AwsSettings {
        // Nothing listens here: only the per-service overrides can make the calls work.
        endpoint_url: Some("http://127.0.0.1:9".to_owned()),
        sqs_endpoint_url: Some(endpoint.clone()),
        kinesis_endpoint_url: Some(endpoint.clone()),
        s3_endpoint_url: Some(endpoint.clone()),
        max_attempts: 1,
        ..AwsSettings::emulator(&endpoint, "us-east-1")
    };
    let clients = AwsClients::new(&settings).await;
    clients
        .sqs
        .list_queues()
        .send()
        .await
        .expect("sqs through its own endpoint");
    clients
        .kinesis
        .list_streams()
        .send()
        .await
        .expect("kinesis through its own endpoint");
    clients
        .s3
        .list_buckets()
        .send()
        .await
        .expect("s3 through its own endpoint");

    let broken = AwsClients::new(&AwsSettings {
        sqs_endpoint_url: None,
        ..settings
    })
    .await;
    assert!(
        broken.sqs.list_queues().send().await.is_err(),
        "control: without the override SQS goes to the dead global endpoint"
    );
}

#[tokio::test]
async fn path_style_s3_stores_keys_with_spaces_and_unicode() {
    let clients = test_support::clients().await;
    let bucket = create_bucket(&clients.s3, "landing").await;
    let key = "landing/orders/2024 01/façade+été 🚚.csv";
    clients
        .s3
        .put_object()
        .bucket(&bucket)
        .key(key)
        .body(ByteStream::from_static(b"order_id\n1\n"))
        .send()
        .await
        .expect("put object");
    let listed = clients
        .s3
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .expect("list");
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, [key]);
    let body = clients
        .s3
        .get_object()
        .bucket(&bucket)
        .key(key)
        .send()
        .await
        .expect("get object")
        .body
        .collect()
        .await
        .expect("read body")
        .into_bytes();
    assert_eq!(&body[..], b"order_id\n1\n");
}
