//! What every error of the platform can say about itself: may the same work succeed if
//! it is tried again?

use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;

/// A cause kept as a typed source where its concrete type varies by adapter (an SDK
/// error, an I/O error, a database error); `downcast_ref` recovers it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What was being done when a cause was met: one link of a cause chain, for an error
/// whose variant carries no field to say it.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct Context {
    what: String,
    source: BoxError,
}

/// `source`, said to have happened while doing `what`.
pub fn context(what: impl Into<String>, source: impl Into<BoxError>) -> BoxError {
    Box::new(Context {
        what: what.into(),
        source: source.into(),
    })
}

/// Renders an error with its whole cause chain on one line: "what failed: why: why".
///
/// The platform's errors say only their own layer in `Display` and keep the cause as
/// `source()`, so a chain is printed once, whole, wherever an error leaves the process:
/// logs, dead-letter and ledger reasons, command output (`anyhow`'s `{:#}` does the same).
#[derive(Debug)]
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(err) = cause {
            // Some libraries' errors print their own cause too: print it once.
            let said = err.to_string();
            if !text.ends_with(&said) {
                text.push_str(": ");
                text.push_str(&said);
            }
            cause = err.source();
        }
        f.write_str(&text)
    }
}

/// [`Report`] as a `String`.
pub fn report(err: &(dyn std::error::Error + 'static)) -> String {
    Report(err).to_string()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_names_every_cause_once_in_order() {
        let io = std::io::Error::other("disk full");
        let err = context("writing part 3", context("flushing the buffer", io));
        assert_eq!(
            report(err.as_ref()),
            "writing part 3: flushing the buffer: disk full"
        );
        // A cause whose own message already ends with its cause's is not repeated.
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct SaysItsCause(#[source] std::io::Error);
        let err = SaysItsCause(std::io::Error::other("reset"));
        assert_eq!(report(&err), "outer: reset");
    }

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
