//! Failures classified the way Arroyo does it: whose fault (the user's input, an external
//! system, or tessera itself) and whether retrying with backoff can help. The supervisor
//! decides restart versus escalate from this; the dead-letter path from
//! [`super::DeadLetterKind`], which carries the same classification.

use std::error::Error;
use std::fmt;

use super::stage::StageId;

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorDomain {
    /// The user's input or configuration: fix the input; retrying the same cannot help.
    User,
    /// A system outside tessera (Kafka, ONNX Runtime, the device): may recover.
    External,
    /// tessera itself (a bug, an inconsistent state).
    Internal,
}

impl ErrorDomain {
    pub const ALL: [ErrorDomain; 3] = [
        ErrorDomain::User,
        ErrorDomain::External,
        ErrorDomain::Internal,
    ];

    /// Stable snake_case name (metric label, DLQ header).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorDomain::User => "user",
            ErrorDomain::External => "external",
            ErrorDomain::Internal => "internal",
        }
    }
}

impl From<tessera_models::ErrorOrigin> for ErrorDomain {
    /// A model's configuration or installation is the user's to fix.
    fn from(origin: tessera_models::ErrorOrigin) -> Self {
        match origin {
            tessera_models::ErrorOrigin::Config => ErrorDomain::User,
            tessera_models::ErrorOrigin::External => ErrorDomain::External,
            tessera_models::ErrorOrigin::Internal => ErrorDomain::Internal,
        }
    }
}

impl fmt::Display for ErrorDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether doing the same again later may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryHint {
    /// It will fail the same way: dead-letter the frame, or escalate.
    NoRetry,
    /// Retry (restart the stage) after a backoff.
    WithBackoff,
}

/// A stage that cannot go on. Returned as the actor's error, so the supervisor receives it
/// and decides from its domain and retry hint.
#[derive(Debug, thiserror::Error)]
#[error("{stage} failed ({domain} error)")]
pub struct StageFailure {
    pub stage: StageId,
    pub domain: ErrorDomain,
    pub retry: RetryHint,
    #[source]
    pub source: Box<dyn Error + Send + Sync>,
}

impl StageFailure {
    pub fn new(
        stage: StageId,
        domain: ErrorDomain,
        retry: RetryHint,
        source: impl Into<Box<dyn Error + Send + Sync>>,
    ) -> Self {
        Self {
            stage,
            domain,
            retry,
            source: source.into(),
        }
    }

    /// An external system failed; restarting later may help.
    pub fn external(stage: StageId, source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self::new(stage, ErrorDomain::External, RetryHint::WithBackoff, source)
    }

    /// tessera itself failed (a bug, a panic); a fresh stage may go on.
    pub fn internal(stage: StageId, source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self::new(stage, ErrorDomain::Internal, RetryHint::WithBackoff, source)
    }

    /// A failure classified by its domain: the user's cannot be fixed by a restart, the
    /// others may be.
    pub fn in_domain(
        stage: StageId,
        domain: ErrorDomain,
        source: impl Into<Box<dyn Error + Send + Sync>>,
    ) -> Self {
        let retry = match domain {
            ErrorDomain::User => RetryHint::NoRetry,
            ErrorDomain::External | ErrorDomain::Internal => RetryHint::WithBackoff,
        };
        Self::new(stage, domain, retry, source)
    }

    /// The configuration cannot work: restarting would fail the same way.
    pub fn config(stage: StageId, source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self::new(stage, ErrorDomain::User, RetryHint::NoRetry, source)
    }

    /// The classification of any actor error: a [`StageFailure`] says its own; anything
    /// else (a panic, an unexpected error) is tessera's and worth a restart.
    pub fn classify(error: &(dyn Error + 'static)) -> (ErrorDomain, RetryHint) {
        match error.downcast_ref::<StageFailure>() {
            Some(failure) => (failure.domain, failure.retry),
            None => (ErrorDomain::Internal, RetryHint::WithBackoff),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_errors_are_classified_by_downcast() {
        let failure: Box<dyn Error + Send + Sync> =
            Box::new(StageFailure::config(StageId::Publish, "invalid property"));
        assert_eq!(
            StageFailure::classify(failure.as_ref()),
            (ErrorDomain::User, RetryHint::NoRetry)
        );
        let panic: Box<dyn Error + Send + Sync> = "panicked".into();
        assert_eq!(
            StageFailure::classify(panic.as_ref()),
            (ErrorDomain::Internal, RetryHint::WithBackoff)
        );
        // The cause is the source, not repeated in the message (printed once in a chain).
        assert_eq!(
            tessera_models::error_chain(failure.as_ref()),
            "publish failed (user error): invalid property"
        );
    }
}
