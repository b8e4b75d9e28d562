//! The embedded Kafka-protocol broker (librdkafka's mock cluster) and the client helpers the
//! demo, the integration tests and the benchmarks share: publish frames as a camera would,
//! and read back what tessera published.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use tessera_actors::FrameResult;
use tessera_actors::protocol::headers;

/// A Kafka-protocol broker running inside this process.
pub struct EmbeddedKafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl std::fmt::Debug for EmbeddedKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedKafka")
            .field("bootstrap_servers", &self.bootstrap_servers())
            .finish()
    }
}

impl EmbeddedKafka {
    /// Starts a mock cluster of `brokers` brokers.
    pub fn start(brokers: i32) -> anyhow::Result<Self> {
        let cluster = MockCluster::new(brokers)?;
        Ok(Self { cluster })
    }

    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Creates a topic (the mock broker does not support the CreateTopics admin API).
    pub fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        self.cluster.create_topic(name, partitions, 1)?;
        Ok(())
    }

    /// The mock cluster, for fault injection.
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.cluster
    }
}

/// A frame as a camera publishes it.
#[derive(Debug, Clone)]
pub struct CameraFrame {
    /// Record key: the camera id.
    pub camera: Vec<u8>,
    /// `tessera-frame-id` header.
    pub frame_id: String,
    /// Encoded image bytes.
    pub payload: Vec<u8>,
    /// `content-type` header, if any.
    pub content_type: Option<String>,
    /// `tessera-ts` header (capture time, ms since the epoch).
    pub capture_ms: i64,
}

impl CameraFrame {
    /// The headers a camera sends with the frame: frame id, capture time, content type.
    pub fn headers(&self) -> Vec<(String, Option<Vec<u8>>)> {
        let mut all = vec![
            (
                headers::FRAME_ID.to_owned(),
                Some(self.frame_id.clone().into_bytes()),
            ),
            (
                headers::CAPTURE_TS.to_owned(),
                Some(self.capture_ms.to_string().into_bytes()),
            ),
        ];
        if let Some(content_type) = &self.content_type {
            all.push((
                headers::CONTENT_TYPE.to_owned(),
                Some(content_type.clone().into_bytes()),
            ));
        }
        all
    }
}

/// Where a published frame landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Landed {
    pub partition: i32,
    pub offset: i64,
}

/// Publishes frames in order, waiting for each to be acknowledged so that the input order
/// per camera is exactly the order given.
pub async fn publish_frames(
    brokers: &str,
    topic: &str,
    frames: &[CameraFrame],
) -> anyhow::Result<Vec<Landed>> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("message.max.bytes", "67108864")
        .create()?;
    let mut landed = Vec::with_capacity(frames.len());
    for frame in frames {
        let record = FutureRecord::to(topic)
            .key(&frame.camera)
            .payload(&frame.payload)
            .headers(crate::feed::owned_headers(&frame.headers()));
        let delivered = producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("publishing frame {}: {e}", frame.frame_id))?;
        landed.push(Landed {
            partition: delivered.partition,
            offset: delivered.offset,
        });
    }
    Ok(landed)
}

/// A record read back from the results or dead-letter topic.
#[derive(Debug, Clone)]
pub enum Output {
    Result {
        key: Option<Vec<u8>>,
        partition: i32,
        result: Box<FrameResult>,
    },
    DeadLetter {
        key: Option<Vec<u8>>,
        frame_id: Option<String>,
        /// `topic/partition/offset` of the frame (the `tessera-source` header).
        source: Option<String>,
        kind: String,
        error: String,
        payload_len: usize,
    },
}

impl Output {
    /// Reads a record of the results topic (`results_topic`) or of the dead-letter topic.
    pub fn from_message(message: &impl Message, results_topic: &str) -> anyhow::Result<Self> {
        let key = message.key().map(<[u8]>::to_vec);
        if message.topic() == results_topic {
            let result: FrameResult =
                serde_json::from_slice(message.payload().unwrap_or_default())?;
            return Ok(Output::Result {
                key,
                partition: message.partition(),
                result: Box::new(result),
            });
        }
        let header = |name: &str| {
            message.headers().and_then(|headers| {
                headers
                    .iter()
                    .find(|h| h.key == name)
                    .map(|h| String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
            })
        };
        Ok(Output::DeadLetter {
            key,
            frame_id: header(headers::FRAME_ID),
            source: header(headers::SOURCE),
            kind: header(headers::ERROR_KIND).unwrap_or_default(),
            error: header(headers::ERROR).unwrap_or_default(),
            payload_len: message.payload().map_or(0, <[u8]>::len),
        })
    }

    /// The frame id the output refers to.
    pub fn frame_id(&self) -> Option<&str> {
        match self {
            Output::Result { result, .. } => Some(&result.frame_id),
            Output::DeadLetter { frame_id, .. } => frame_id.as_deref(),
        }
    }

    /// `topic/partition/offset` of the frame the output answers.
    pub fn source(&self) -> Option<String> {
        match self {
            Output::Result { result, .. } => Some(headers::source_text(
                &result.source.topic,
                result.source.partition,
                result.source.offset,
            )),
            Output::DeadLetter { source, .. } => source.clone(),
        }
    }

    /// The result, for a result record.
    pub fn result(&self) -> Option<&FrameResult> {
        match self {
            Output::Result { result, .. } => Some(result),
            Output::DeadLetter { .. } => None,
        }
    }
}

/// A consumer of the results and dead-letter topics from their beginning, in a group of its
/// own (nothing committed).
pub fn output_consumer(
    brokers: &str,
    results_topic: &str,
    dlq_topic: &str,
) -> anyhow::Result<StreamConsumer> {
    static READERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let reader = READERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("tessera-reader-{}-{reader}", std::process::id()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()?;
    consumer.subscribe(&[results_topic, dlq_topic])?;
    Ok(consumer)
}

/// Reads the results and dead-letter topics from the beginning until `done` says enough was
/// read or `timeout` passes. `on_output` sees each output as it arrives (progress display).
pub async fn read_outputs(
    brokers: &str,
    results_topic: &str,
    dlq_topic: &str,
    timeout: Duration,
    mut on_output: impl FnMut(&Output),
    mut done: impl FnMut(&[Output]) -> bool,
) -> anyhow::Result<Vec<Output>> {
    let consumer = output_consumer(brokers, results_topic, dlq_topic)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut outputs = Vec::new();
    while !done(&outputs) {
        let message = match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Err(_) => break,
            Ok(Err(error)) => {
                tracing::debug!(%error, "Reader error");
                continue;
            }
            Ok(Ok(message)) => message,
        };
        let output = Output::from_message(&message, results_topic)?;
        on_output(&output);
        outputs.push(output);
    }
    Ok(outputs)
}
