//! The pipeline on an embedded broker, for commands that need no Kafka of the user's:
//! `tessera detect`, `tessera replay verify` and the demo. The same stages and settings as
//! `tessera run`; only the brokers differ.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tessera_actors::{Monitor, PipelineConfig};

use crate::embedded::EmbeddedKafka;
use crate::feed::{EMBEDDED_BUDGET_BYTES, FeedEvent, FeedItem, FeedReport, FeedTopics, feed};

/// A running pipeline and the broker it runs on.
#[derive(Debug)]
pub struct LocalPipeline {
    /// The embedded broker (kept alive while the pipeline runs).
    kafka: EmbeddedKafka,
    config: PipelineConfig,
    pipeline: tessera_actors::PipelineHandle,
    monitor: Arc<Monitor>,
}

impl LocalPipeline {
    /// Starts an embedded broker with every topic `config` names (the input and the results
    /// with `partitions` partitions) and the pipeline on it, reporting to `monitor`; returns
    /// once the model is loaded.
    pub async fn start(
        mut config: PipelineConfig,
        instance: &str,
        assets_dir: Option<&Path>,
        partitions: i32,
        monitor: Arc<Monitor>,
    ) -> anyhow::Result<Self> {
        let kafka = EmbeddedKafka::start(1)?;
        config.kafka.brokers = kafka.bootstrap_servers();
        for topic in config
            .kafka
            .input_topics
            .iter()
            .chain([&config.kafka.results_topic])
        {
            kafka.create_topic(topic, partitions.max(1))?;
        }
        for topic in [
            &config.kafka.dlq_topic,
            &config.labels.topic,
            &config.labels.examples_topic,
            &config.heads.topic,
            &config.label_requests.topic,
        ] {
            kafka.create_topic(topic, 1)?;
        }
        let pipeline = tessera_actors::start_monitored(
            config.clone(),
            &unique_instance(instance),
            assets_dir,
            monitor.clone(),
        )
        .await?;
        Ok(Self {
            kafka,
            config,
            pipeline,
            monitor,
        })
    }

    /// The broker's address.
    pub fn brokers(&self) -> String {
        self.kafka.bootstrap_servers()
    }

    /// The configuration the pipeline runs with (brokers set to the embedded one).
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    pub fn pipeline(&self) -> &tessera_actors::PipelineHandle {
        &self.pipeline
    }

    pub fn monitor(&self) -> &Arc<Monitor> {
        &self.monitor
    }

    /// The input (first input topic), results and dead-letter topics.
    pub fn topics(&self) -> FeedTopics {
        topics_of(&self.config)
    }

    /// Feeds `frames` through the pipeline (see [`feed`]): never more than the broker keeps.
    pub async fn feed<I>(
        &self,
        frames: I,
        idle_timeout: Duration,
        on_event: impl FnMut(FeedEvent),
    ) -> anyhow::Result<FeedReport>
    where
        I: Iterator<Item = FeedItem> + Send + 'static,
    {
        feed(
            &self.brokers(),
            &self.topics(),
            frames,
            EMBEDDED_BUDGET_BYTES,
            idle_timeout,
            on_event,
        )
        .await
    }

    /// Drains and stops the pipeline, then the broker.
    pub async fn shutdown(self, drain: Duration) -> anyhow::Result<()> {
        self.pipeline.shutdown(drain).await?;
        drop(self.kafka);
        Ok(())
    }
}

/// `name`, or `name-2`, `name-3`, ... for later pipelines of this process: actor names are
/// process-wide, and a library user (a test) may run several at once.
pub fn unique_instance(name: &str) -> String {
    static STARTED: AtomicUsize = AtomicUsize::new(0);
    match STARTED.fetch_add(1, Ordering::Relaxed) {
        0 => name.to_owned(),
        n => format!("{name}-{}", n + 1),
    }
}

/// The topics a feed uses for `config`.
pub fn topics_of(config: &PipelineConfig) -> FeedTopics {
    FeedTopics {
        input: config
            .kafka
            .input_topics
            .first()
            .cloned()
            .unwrap_or_default(),
        results: config.kafka.results_topic.clone(),
        dlq: config.kafka.dlq_topic.clone(),
    }
}
