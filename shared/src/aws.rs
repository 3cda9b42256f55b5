//! One place that builds the AWS SDK configuration and clients, so every binary talks to
//! AWS, or to an emulator, the same way.
//!
//! The SDK's own environment handling stays in force (`AWS_REGION`, credentials,
//! `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_SQS` …); settings given here take precedence.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// AWS connection settings, usually from the `[aws]` section of the platform config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    /// Region; `None` leaves it to the SDK's provider chain (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// One endpoint for every service (an emulator); `None` leaves it to the SDK.
    pub endpoint_url: Option<String>,
    pub sqs_endpoint_url: Option<String>,
    pub kinesis_endpoint_url: Option<String>,
    pub s3_endpoint_url: Option<String>,
    /// Path-style S3 addressing (`http://host/bucket/key`), needed by emulators.
    pub s3_force_path_style: bool,
    /// Attempts per SDK call, including the first.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub connect_timeout: Duration,
    /// Per attempt; must exceed the SQS long-poll wait.
    pub attempt_timeout: Duration,
    /// Per call, all attempts together.
    pub operation_timeout: Duration,
}

impl Default for AwsSettings {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            sqs_endpoint_url: None,
            kinesis_endpoint_url: None,
            s3_endpoint_url: None,
            s3_force_path_style: false,
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(30),
            operation_timeout: Duration::from_secs(120),
        }
    }
}

impl AwsSettings {
    /// Settings for a local emulator at `endpoint_url` (path-style S3, short timeouts).
    pub fn emulator(endpoint_url: &str, region: &str) -> Self {
        Self {
            region: Some(region.to_owned()),
            endpoint_url: Some(endpoint_url.to_owned()),
            s3_force_path_style: true,
            max_attempts: 3,
            ..Self::default()
        }
    }
}

/// Loads the shared SDK configuration: the SDK's default chain with these settings on top.
pub async fn load_sdk_config(settings: &AwsSettings) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(settings.max_attempts)
                .with_initial_backoff(settings.initial_backoff),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(settings.connect_timeout)
                .operation_attempt_timeout(settings.attempt_timeout)
                .operation_timeout(settings.operation_timeout)
                .build(),
        );
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &settings.endpoint_url {
        loader = loader.endpoint_url(endpoint.clone());
    }
    loader.load().await
}

/// The SDK clients the platform uses, built once and shared (they are cheap to clone).
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub sqs: aws_sdk_sqs::Client,
    pub kinesis: aws_sdk_kinesis::Client,
    pub s3: aws_sdk_s3::Client,
}

impl AwsClients {
    pub async fn new(settings: &AwsSettings) -> Self {
        let sdk_config = load_sdk_config(settings).await;
        Self::from_sdk_config(&sdk_config, settings)
    }

    /// Builds the clients from an already loaded SDK config, applying the per-service
    /// endpoint overrides and path-style S3.
    pub fn from_sdk_config(sdk_config: &SdkConfig, settings: &AwsSettings) -> Self {
        let mut sqs = aws_sdk_sqs::config::Builder::from(sdk_config);
        if let Some(endpoint) = &settings.sqs_endpoint_url {
            sqs = sqs.endpoint_url(endpoint.clone());
        }
        let mut kinesis = aws_sdk_kinesis::config::Builder::from(sdk_config);
        if let Some(endpoint) = &settings.kinesis_endpoint_url {
            kinesis = kinesis.endpoint_url(endpoint.clone());
        }
        Self {
            sqs: aws_sdk_sqs::Client::from_conf(sqs.build()),
            kinesis: aws_sdk_kinesis::Client::from_conf(kinesis.build()),
            s3: s3_client(sdk_config, settings),
        }
    }
}

/// The S3 client of the settings: their S3 endpoint (if any) and path-style addressing.
pub fn s3_client(sdk_config: &SdkConfig, settings: &AwsSettings) -> aws_sdk_s3::Client {
    let mut s3 = aws_sdk_s3::config::Builder::from(sdk_config)
        .force_path_style(settings.s3_force_path_style);
    if let Some(endpoint) = &settings.s3_endpoint_url {
        s3 = s3.endpoint_url(endpoint.clone());
    }
    aws_sdk_s3::Client::from_conf(s3.build())
}
