//! The setup every pipeline test repeats: a broker (the one `TESSERA_TEST_BROKER` names: the
//! mock cluster or tansu) with the standard topics, a pipeline configuration pointing at it,
//! frames to publish, and reading the outputs back.

use std::ops::Range;
use std::time::Duration;

use tessera::embedded::{CameraFrame, Output, read_outputs};
use tessera_actors::PipelineConfig;

use crate::broker::{BrokerKind, TestBroker};
use crate::manifest;

/// Input topic of the default configuration.
pub const FRAMES: &str = "frames";
/// Results topic of the default configuration.
pub const RESULTS: &str = "detections";
/// Dead-letter topic of the default configuration.
pub const DLQ: &str = "frames.dlq";

/// A broker with the default topics.
#[derive(Debug)]
pub struct Harness {
    pub broker: TestBroker,
    pub brokers: String,
}

impl Harness {
    /// Starts the broker `TESSERA_TEST_BROKER` names with `frames` and `detections` of
    /// `partitions` partitions each and a one-partition `frames.dlq`.
    pub fn start(partitions: i32) -> anyhow::Result<Self> {
        Self::start_on(BrokerKind::from_env(), partitions)
    }

    /// [`Harness::start`] on a broker of `kind` (the mock cluster for fault injection).
    pub fn start_on(kind: BrokerKind, partitions: i32) -> anyhow::Result<Self> {
        init_logs();
        let broker = TestBroker::start(kind)?;
        broker.create_topic(FRAMES, partitions)?;
        broker.create_topic(RESULTS, partitions)?;
        broker.create_topic(DLQ, 1)?;
        let brokers = broker.bootstrap_servers();
        Ok(Self { broker, brokers })
    }

    /// The default pipeline configuration for this broker, consumer group `group`, YOLOX-Nano.
    pub fn config(&self, group: &str) -> PipelineConfig {
        let mut config = PipelineConfig::default();
        config.kafka.brokers = self.brokers.clone();
        config.kafka.group_id = group.into();
        config
            .kafka
            .producer_properties
            .extend(self.broker.producer_properties());
        config.model.manifest = manifest("yolox-nano");
        config
    }

    /// Reads results and dead letters from the beginning until `count` outputs have arrived
    /// or `timeout` passes.
    pub async fn read(&self, count: usize, timeout: Duration) -> anyhow::Result<Vec<Output>> {
        read_outputs(
            &self.brokers,
            RESULTS,
            DLQ,
            timeout,
            |_| {},
            |outputs| outputs.len() >= count,
        )
        .await
    }
}

/// Frames `camera-i` for i in `range`, all with the same payload, capture time i.
pub fn camera_frames(camera: &str, payload: &[u8], range: Range<usize>) -> Vec<CameraFrame> {
    range
        .map(|i| CameraFrame {
            camera: camera.as_bytes().to_vec(),
            frame_id: format!("{camera}-{i}"),
            payload: payload.to_vec(),
            content_type: None,
            capture_ms: i as i64,
        })
        .collect()
}

/// The frame ids of the results (dead letters left out), in the order read.
pub fn result_ids(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Result { result, .. } => Some(result.frame_id.clone()),
            Output::DeadLetter { .. } => None,
        })
        .collect()
}

/// Test logs, shown for a failing test (or with `--nocapture`), filtered by `RUST_LOG`
/// (default: warnings).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,librdkafka=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Polls `condition` until it gives a value or `timeout` passes (never sleep-and-hope).
pub async fn eventually<T>(
    timeout: Duration,
    mut condition: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
