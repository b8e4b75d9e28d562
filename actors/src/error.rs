//! Errors of the actor layer, classified so the supervisor can decide restart vs escalate.

use tessera_models::ModelError;

/// An invalid configuration value.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration `{field}`: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Errors raised while starting or running the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("model: {0}")]
    Model(#[from] ModelError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("actor: {0}")]
    Actor(String),
    #[error("restart storm: {restarts} restarts within {window:?} (last: {last})")]
    RestartStorm {
        restarts: usize,
        window: std::time::Duration,
        last: String,
    },
}

impl PipelineError {
    /// Whether retrying later might succeed (an external system was unavailable), as opposed
    /// to a configuration or programming error that will fail the same way again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Kafka(_) => true,
            Self::Model(e) => e.is_retryable(),
            Self::Config(_) | Self::Actor(_) | Self::RestartStorm { .. } => false,
        }
    }
}
