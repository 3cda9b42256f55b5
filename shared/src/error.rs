//! What every error of the platform can say about itself: may the same work succeed if
//! it is tried again?

use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;

/// Whether retrying the same operation may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retryability {
    /// A transient condition (throttling, timeout, connection reset, 5xx): try again later.
    Retryable,
    /// The input or the configuration is wrong: retrying cannot help.
    Permanent,
}

/// Implemented by every error type of the platform so callers decide retry, DLQ or
/// quarantine without matching on variants of other crates.
pub trait Classify {
    fn retryability(&self) -> Retryability;

    fn is_retryable(&self) -> bool {
        self.retryability() == Retryability::Retryable
    }
}

/// Error codes the AWS services use for throttling and transient server trouble.
const RETRYABLE_SERVICE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "KMSThrottlingException",
    "RequestLimitExceeded",
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "InternalFailureException",
    "RequestTimeout",
    "RequestTimeoutException",
    "LimitExceededException",
];

/// Whether an error code returned by a service for one entry of a batch (or for a whole
/// call) names a transient condition.
pub fn is_retryable_service_code(code: &str) -> bool {
    RETRYABLE_SERVICE_CODES.contains(&code)
}

/// Classifies an AWS SDK error: transport trouble and throttling are retryable, a service
/// error that names bad input is permanent. The SDK has already retried the call by the
/// time this is asked, so this decides what the *caller* does next.
pub fn classify_sdk_error<E>(err: &SdkError<E, HttpResponse>) -> Retryability
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Retryability::Retryable
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().unwrap_or_default();
            if status >= 500 || status == 429 || is_retryable_service_code(code) {
                Retryability::Retryable
            } else {
                Retryability::Permanent
            }
        }
        SdkError::ConstructionFailure(_) => Retryability::Permanent,
        _ => Retryability::Retryable,
    }
}

/// A one-line rendering of an SDK error with its whole cause chain, for error variants.
pub fn describe_sdk_error<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: std::error::Error + 'static,
{
    DisplayErrorContext(err).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_codes_are_retryable_and_validation_codes_are_not() {
        assert!(is_retryable_service_code("ThrottlingException"));
        assert!(is_retryable_service_code(
            "ProvisionedThroughputExceededException"
        ));
        assert!(!is_retryable_service_code("InvalidParameterValue"));
        assert!(!is_retryable_service_code(
            "AWS.SimpleQueueService.NonExistentQueue"
        ));
        assert!(!is_retryable_service_code(""));
    }
}
