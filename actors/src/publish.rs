//! Publish: the Kafka producer. Sends results and dead letters in the order merge releases
//! them, and tells ingest once Kafka has acknowledged each, so its offset may be stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::frame::now_ms;
use crate::frame::{
    FrameMeta, HEADER_ERROR, HEADER_ERROR_KIND, HEADER_PAYLOAD_OMITTED, HEADER_SOURCE,
};
use crate::ingest::IngestMsg;
use crate::kafka::producer_config;
use crate::metrics::{Metrics, Queue, Stage};
use crate::monitor::Monitor;
use crate::names::{ActorNames, lookup};
use crate::result::{FrameResult, FrameStatus};
use crate::throttle::{LOG_INTERVAL, Throttle};

static DELIVERY_FAILED: Throttle = Throttle::new(LOG_INTERVAL);
static ENQUEUE_FAILED: Throttle = Throttle::new(LOG_INTERVAL);
static DEAD_LETTERED: Throttle = Throttle::new(LOG_INTERVAL);

/// What becomes of one frame.
#[derive(Debug)]
pub enum Outcome {
    /// A result document for the results topic.
    Result {
        meta: Arc<FrameMeta>,
        result: Box<FrameResult>,
    },
    /// The original record, for the dead-letter topic, with the reason.
    DeadLetter {
        meta: Arc<FrameMeta>,
        payload: Arc<[u8]>,
        kind: &'static str,
        message: String,
    },
}

impl Outcome {
    pub fn meta(&self) -> &Arc<FrameMeta> {
        match self {
            Self::Result { meta, .. } | Self::DeadLetter { meta, .. } => meta,
        }
    }
}

/// Messages to [`Publish`].
#[derive(Debug)]
pub enum PublishMsg {
    Publish(Outcome),
}

/// The publish actor.
#[derive(Debug)]
pub struct Publish;

/// Start arguments of [`Publish`].
#[derive(Debug)]
pub struct PublishArgs {
    pub kafka: KafkaConfig,
    pub names: ActorNames,
    /// Largest accepted input payload (`limits.max_bytes`): a dead letter carries it back.
    pub max_payload_bytes: usize,
    pub monitor: Arc<Monitor>,
}

/// State of [`Publish`].
pub struct PublishState {
    producer: FutureProducer,
    kafka: KafkaConfig,
    names: ActorNames,
    monitor: Arc<Monitor>,
}

impl std::fmt::Debug for PublishState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishState").finish_non_exhaustive()
    }
}

/// A record ready to send, owning its bytes so it can be re-sent after a failure.
struct OwnedRecord {
    topic: String,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: OwnedHeaders,
    /// Dead letters only, until their value is omitted: where the original record lies
    /// (`topic/partition/offset`), named in the header that replaces an oversized value.
    source: Option<String>,
}

impl OwnedRecord {
    /// Shrinks a dead letter that Kafka refused as too large (the producer's or the broker's
    /// `message.max.bytes`): the value is dropped, and headers say how large it was and where
    /// the original record lies. Retrying the same bytes could never succeed and would stall
    /// every later frame. False, and nothing changed, for results and already-shrunk letters.
    fn omit_value(&mut self) -> bool {
        let Some(source) = self.source.take() else {
            return false;
        };
        let len = self.value.len().to_string();
        self.headers = std::mem::replace(&mut self.headers, OwnedHeaders::new())
            .insert(Header {
                key: HEADER_PAYLOAD_OMITTED,
                value: Some(len.as_str()),
            })
            .insert(Header {
                key: HEADER_SOURCE,
                value: Some(source.as_str()),
            });
        self.value = Vec::new();
        true
    }
}

/// Kafka refuses the record for its size; sending it again unchanged cannot succeed.
fn too_large(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge
        )
    )
}

impl Actor for Publish {
    type Msg = PublishMsg;
    type State = PublishState;
    type Arguments = PublishArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: PublishArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut client = producer_config(&args.kafka);
        // Room for the largest payload tessera accepts plus headers, unless set explicitly, so
        // dead letters keep their value wherever the broker allows it.
        if !args
            .kafka
            .producer_properties
            .contains_key("message.max.bytes")
        {
            let max = (args.max_payload_bytes + (1 << 20)).clamp(1_000_000, 1_000_000_000);
            client.set("message.max.bytes", max.to_string());
        }
        let producer: FutureProducer = client.create()?;
        Ok(PublishState {
            producer,
            kafka: args.kafka,
            names: args.names,
            monitor: args.monitor,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: PublishMsg,
        state: &mut PublishState,
    ) -> Result<(), ActorProcessingErr> {
        let PublishMsg::Publish(outcome) = message;
        let metrics = state.monitor.metrics.clone();
        metrics.queue(Queue::Publish).popped.inc();
        let meta = outcome.meta().clone();
        let counted = Counted::of(&outcome);
        let mut record = to_record(&state.kafka, outcome)?;
        let enqueued_at = Instant::now();
        let delivery = enqueue(&state.producer, &mut record).await;
        metrics.queue(Queue::Delivery).pushed.inc();
        let producer = state.producer.clone();
        let ingest_name = state.names.ingest();
        // Awaiting delivery off the actor keeps later records flowing; idempotence keeps order.
        tokio::spawn(async move {
            let mut delivery = delivery;
            let mut backoff = Duration::from_millis(100);
            loop {
                match delivery.await {
                    Ok(Ok(_)) => break,
                    Ok(Err((error, _))) if too_large(&error) && record.omit_value() => {
                        tracing::warn!(%error, topic = %record.topic, offset = meta.key.offset, "Dead letter too large for the broker; sending it without its value");
                        delivery = enqueue(&producer, &mut record).await;
                        continue;
                    }
                    Ok(Err((error, _))) => {
                        if let Some(held_back) = DELIVERY_FAILED.allow() {
                            tracing::warn!(%error, topic = %record.topic, offset = meta.key.offset, held_back, "Delivery failed; retrying");
                        }
                    }
                    Err(_) => {
                        if let Some(held_back) = DELIVERY_FAILED.allow() {
                            tracing::warn!(held_back, "Producer dropped a delivery; retrying");
                        }
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                delivery = enqueue(&producer, &mut record).await;
            }
            metrics.queue(Queue::Delivery).popped.inc();
            metrics
                .stage(Stage::Publish)
                .observe(enqueued_at.elapsed().as_secs_f64());
            counted.count(&metrics, &meta);
            if let Some(ingest) = lookup::<IngestMsg>(&ingest_name) {
                let _ = ingest.cast(IngestMsg::Acked(meta.key.clone()));
            }
            // Dropping the last reference to `meta` returns the frame's in-flight credit.
            drop(meta);
        });
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut PublishState,
    ) -> Result<(), ActorProcessingErr> {
        if let Err(error) = state.producer.flush(Duration::from_secs(10)) {
            tracing::error!(%error, "Producer flush failed at shutdown");
        }
        Ok(())
    }
}

/// What an acknowledged output adds to the metrics.
#[derive(Debug, Clone, Copy)]
enum Counted {
    Published,
    Skipped,
    DeadLettered(&'static str),
}

impl Counted {
    fn of(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Result { result, .. } if result.status == FrameStatus::Skipped => {
                Counted::Skipped
            }
            Outcome::Result { .. } => Counted::Published,
            Outcome::DeadLetter { kind, .. } => Counted::DeadLettered(kind),
        }
    }

    /// Counts the acknowledged output and, for results, the frame's end-to-end latency
    /// (from its Kafka timestamp, else from its consumption).
    fn count(self, metrics: &Metrics, meta: &FrameMeta) {
        match self {
            Counted::Published => metrics.frames_published.inc(),
            Counted::Skipped => metrics.frames_skipped.inc(),
            Counted::DeadLettered(kind) => metrics.dead_lettered(kind),
        }
        if !matches!(self, Counted::DeadLettered(_)) {
            let latency = match meta.kafka_timestamp_ms {
                Some(ts) if ts > 0 => now_ms().saturating_sub(ts).max(0) as f64 / 1000.0,
                _ => meta.received_at.elapsed().as_secs_f64(),
            };
            metrics.end_to_end_latency.observe(latency);
        }
    }
}

/// Enqueues a record in the producer, waiting while librdkafka's local queue is full. A dead
/// letter larger than the producer accepts is enqueued without its value.
async fn enqueue(
    producer: &FutureProducer,
    record: &mut OwnedRecord,
) -> rdkafka::producer::DeliveryFuture {
    loop {
        let mut future = FutureRecord::to(&record.topic)
            .payload(&record.value)
            .headers(record.headers.clone());
        if let Some(key) = &record.key {
            future = future.key(key);
        }
        let error = match producer.send_result(future) {
            Ok(delivery) => return delivery,
            Err((error, _)) => error,
        };
        if error == KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        } else if too_large(&error) && record.omit_value() {
            tracing::warn!(%error, topic = %record.topic, "Dead letter too large for the producer; sending it without its value");
        } else {
            if let Some(held_back) = ENQUEUE_FAILED.allow() {
                tracing::warn!(%error, held_back, "Could not enqueue a record; retrying");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn to_record(kafka: &KafkaConfig, outcome: Outcome) -> Result<OwnedRecord, serde_json::Error> {
    Ok(match outcome {
        Outcome::Result { meta, result } => OwnedRecord {
            topic: kafka.results_topic.clone(),
            key: meta.record_key.clone(),
            value: serde_json::to_vec(&result)?,
            headers: OwnedHeaders::new(),
            source: None,
        },
        Outcome::DeadLetter {
            meta,
            payload,
            kind,
            message,
        } => {
            if let Some(held_back) = DEAD_LETTERED.allow() {
                tracing::warn!(kind, error = %message, offset = meta.key.offset, held_back, "Frame dead-lettered");
            }
            let mut headers = OwnedHeaders::new_with_capacity(meta.headers.len() + 2);
            for (key, value) in &meta.headers {
                headers = headers.insert(Header {
                    key,
                    value: value.as_deref(),
                });
            }
            headers = headers
                .insert(Header {
                    key: HEADER_ERROR_KIND,
                    value: Some(kind),
                })
                .insert(Header {
                    key: HEADER_ERROR,
                    value: Some(message.as_str()),
                });
            OwnedRecord {
                topic: kafka.dlq_topic.clone(),
                key: meta.record_key.clone(),
                value: payload.to_vec(),
                headers,
                source: Some(format!(
                    "{}/{}/{}",
                    meta.key.partition.topic, meta.key.partition.partition, meta.key.offset
                )),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    use super::*;

    fn dead_letter(len: usize) -> OwnedRecord {
        OwnedRecord {
            topic: "frames.dlq".into(),
            key: Some(b"cam-1".to_vec()),
            value: vec![7; len],
            headers: OwnedHeaders::new().insert(Header {
                key: HEADER_ERROR_KIND,
                value: Some("payload_too_large"),
            }),
            source: Some("frames/0/42".into()),
        }
    }

    fn header<'a>(headers: &'a OwnedHeaders, name: &str) -> Option<&'a [u8]> {
        headers.iter().find(|h| h.key == name).and_then(|h| h.value)
    }

    /// The production producer settings (idempotent, acks=all), with a small size limit.
    fn producer(cluster: &MockCluster<'_, impl rdkafka::ClientContext>) -> FutureProducer {
        let kafka = KafkaConfig {
            brokers: cluster.bootstrap_servers(),
            ..KafkaConfig::default()
        };
        producer_config(&kafka)
            .set("message.max.bytes", "10000")
            .set("message.timeout.ms", "10000")
            .create()
            .expect("producer")
    }

    #[test]
    fn only_dead_letters_are_shrunk_and_only_once() {
        let mut letter = dead_letter(100);
        assert!(letter.omit_value());
        assert!(letter.value.is_empty());
        assert_eq!(
            header(&letter.headers, HEADER_PAYLOAD_OMITTED),
            Some(&b"100"[..])
        );
        assert_eq!(
            header(&letter.headers, HEADER_SOURCE),
            Some(&b"frames/0/42"[..])
        );
        assert_eq!(
            header(&letter.headers, HEADER_ERROR_KIND),
            Some(&b"payload_too_large"[..])
        );
        assert!(!letter.omit_value(), "already shrunk");
        let mut result = OwnedRecord {
            source: None,
            ..dead_letter(100)
        };
        assert!(!result.omit_value());
        assert_eq!(result.value.len(), 100);
    }

    #[tokio::test]
    async fn a_dead_letter_over_the_producer_limit_is_sent_without_its_value() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("frames.dlq", 1, 1).expect("topic");
        let producer = producer(&cluster);
        let mut record = dead_letter(64 * 1024);
        // Before the fix, enqueue retried the same oversized bytes forever.
        let delivery =
            tokio::time::timeout(Duration::from_secs(10), enqueue(&producer, &mut record))
                .await
                .expect("enqueue does not stall");
        let delivered = delivery.await.expect("not cancelled");
        assert!(delivered.is_ok(), "{delivered:?}");
        assert!(record.value.is_empty());
        assert_eq!(
            header(&record.headers, HEADER_PAYLOAD_OMITTED),
            Some(&b"65536"[..])
        );
        // Within the limit, a dead letter keeps its value.
        let mut small = dead_letter(1000);
        let delivered = enqueue(&producer, &mut small)
            .await
            .await
            .expect("not cancelled");
        assert!(delivered.is_ok(), "{delivered:?}");
        assert_eq!(small.value.len(), 1000);
    }

    #[tokio::test]
    async fn a_broker_refusing_the_size_is_detected() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("frames.dlq", 1, 1).expect("topic");
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
        );
        let producer = producer(&cluster);
        let mut record = dead_letter(1000);
        let delivered = enqueue(&producer, &mut record)
            .await
            .await
            .expect("not cancelled");
        match delivered {
            Err((error, _)) => assert!(too_large(&error), "{error}"),
            Ok(_) => panic!("the injected error was not reported"),
        }
        assert!(record.omit_value());
        let delivered = enqueue(&producer, &mut record)
            .await
            .await
            .expect("not cancelled");
        assert!(delivered.is_ok(), "{delivered:?}");
    }
}
