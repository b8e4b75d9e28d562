//! Errors of starting and running the pipeline, classified so the binary can tell an
//! operator's mistake from an outage.

use tessera_models::ModelError;

pub use crate::config::ConfigError;
use crate::protocol::ErrorDomain;

/// Errors raised while starting or running the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The model could not be loaded or run (its own message says which file and why).
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The actor system refused to spawn or to answer.
    #[error("actor system: {0}")]
    Actor(#[from] ractor::SpawnErr),
    /// A stage failed in a way restarting cannot fix.
    #[error("{stage} cannot run ({domain} error)")]
    Escalated {
        stage: crate::protocol::StageId,
        domain: ErrorDomain,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The supervisor did not answer the shutdown in time (no typed error exists for that).
    #[error("shutdown did not complete: {0}")]
    ShutdownIncomplete(String),
    #[error("restart storm: {restarts} restarts within {window:?} (last: {last})")]
    RestartStorm {
        restarts: usize,
        window: std::time::Duration,
        last: String,
    },
}

impl PipelineError {
    /// Whose fault the error is.
    pub fn domain(&self) -> ErrorDomain {
        match self {
            Self::Config(_) => ErrorDomain::User,
            Self::Model(e) => e.origin().into(),
            Self::Kafka(_) => ErrorDomain::External,
            Self::Escalated { domain, .. } => *domain,
            Self::Actor(_) | Self::ShutdownIncomplete(_) | Self::RestartStorm { .. } => {
                ErrorDomain::Internal
            }
        }
    }

    /// Whether retrying later might succeed (an external system was unavailable), as opposed
    /// to a configuration or programming error that will fail the same way again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Kafka(_) => true,
            Self::Model(e) => e.is_retryable(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_error_is_printed_once() {
        let error = PipelineError::from(ModelError::RuntimeInit {
            context: "creating the environment",
            source: "library too old".into(),
        });
        // Printed as a chain (`{:#}` at the binary's edge), the cause appears once: transparent
        // errors forward their source instead of printing it and returning it too.
        let mut chain = Vec::new();
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(error) = source {
            chain.push(error.to_string());
            source = error.source();
        }
        let joined = chain.join(": ");
        assert_eq!(joined.matches("library too old").count(), 1, "{joined}");
        assert_eq!(error.domain(), ErrorDomain::User);
    }

    #[test]
    fn an_escalated_failure_prints_each_cause_once() {
        let model = ModelError::Inference {
            context: "running the model".into(),
            source: Some(ort::Error::new("device lost")),
        };
        let failure =
            crate::protocol::StageFailure::external(crate::protocol::StageId::Recognize, model);
        let error = PipelineError::Escalated {
            stage: crate::protocol::StageId::Recognize,
            domain: ErrorDomain::External,
            source: Box::new(failure),
        };
        let chain = tessera_models::error_chain(&error);
        assert_eq!(
            chain,
            "recognize cannot run (external error): recognize failed (external error): \
             inference failed (running the model): device lost"
        );
    }

    #[test]
    fn a_kafka_error_is_printed_once() {
        let error = PipelineError::from(rdkafka::error::KafkaError::ClientCreation(
            "bad bootstrap".into(),
        ));
        let mut chain = Vec::new();
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(error) = source {
            chain.push(error.to_string());
            source = error.source();
        }
        assert_eq!(chain.join(": ").matches("bad bootstrap").count(), 1);
    }
}
