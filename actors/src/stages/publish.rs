//! Publish: the Kafka producer, the sink of the frame path. Sends results and dead letters in
//! the order the sequencer releases them and settles each frame through its ack handle once
//! Kafka has acknowledged its output.
//!
//! One delivery loop per producer owns the producer and every record not yet acknowledged,
//! in send order. A failed delivery stops the line: everything still queued in librdkafka is
//! purged (failing fast), the loop waits for what is in flight, then sends the failed records
//! again in their original order, so a partition's results stay in input order across an
//! outage of any length. A producer with a fatal error (librdkafka's rule: it must be
//! replaced) is replaced, and its unacknowledged records go out again through the new one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer, PurgeConfig};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::KafkaConfig;
use crate::observe::{LOG_INTERVAL, Metrics, Monitor, Queue, Step, Throttle};
use crate::protocol::{
    DeadLetterKind, ErrorDomain, FrameMeta, Outcome, StageFailure, StageId, headers, now_ms,
};
use crate::stage::kafka::producer_config;
use crate::stage::{ChildSpec, Edge, FrameStage, frame_stage};

static DELIVERY_FAILED: Throttle = Throttle::new(LOG_INTERVAL);
static DEAD_LETTERED: Throttle = Throttle::new(LOG_INTERVAL);

/// Longest and shortest pause before records are sent again after a failure.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long publish's stop waits for the records still in flight before giving them up
/// (their frames stay unacknowledged and are read again by the next owner).
const STOP_BUDGET: Duration = Duration::from_secs(5);

/// What the publish stage is built from.
#[derive(Debug, Clone)]
pub struct PublishSettings {
    pub kafka: KafkaConfig,
    /// Largest accepted input payload (`limits.max_bytes`): a dead letter carries it back.
    pub max_payload_bytes: usize,
    /// Records handed to the delivery loop and not yet acknowledged, at most.
    pub max_pending: usize,
    pub monitor: Arc<Monitor>,
}

/// The supervisor's entry for publish.
pub fn child(settings: PublishSettings, input: Edge<Outcome>) -> ChildSpec {
    frame_stage(
        StageId::Publish,
        1,
        move || Publish::start(settings.clone()),
        input,
        Edge::new(StageId::Publish),
    )
}

/// The publish stage.
pub struct Publish {
    /// Records for the delivery loop; taken (closing the loop's inbox) on stop.
    inbox: Option<mpsc::Sender<Outgoing>>,
    delivery_loop: Option<JoinHandle<()>>,
    /// Set by the delivery loop when it cannot go on (a producer could not be replaced).
    failed: Arc<Mutex<Option<StageFailure>>>,
    kafka: KafkaConfig,
    monitor: Arc<Monitor>,
}

impl std::fmt::Debug for Publish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publish").finish_non_exhaustive()
    }
}

impl Publish {
    /// Creates the producer and starts the delivery loop (must run inside the runtime).
    pub fn start(settings: PublishSettings) -> Result<Self, StageFailure> {
        let factory = ProducerFactory {
            kafka: settings.kafka.clone(),
            max_payload_bytes: settings.max_payload_bytes,
        };
        // A producer that cannot be created is a configuration error: restarting cannot help.
        let producer = factory
            .create()
            .map_err(|e| StageFailure::config(StageId::Publish, e))?;
        let (inbox, receiver) = mpsc::channel(settings.max_pending.max(1));
        let failed = Arc::new(Mutex::new(None));
        let delivery = DeliveryLoop {
            producer,
            factory,
            sent: VecDeque::new(),
            max_sent: settings.max_pending.max(1),
            backoff: BACKOFF_MIN,
            metrics: settings.monitor.metrics.clone(),
            failed: failed.clone(),
        };
        let delivery_loop = tokio::spawn(delivery.run(receiver));
        Ok(Self {
            inbox: Some(inbox),
            delivery_loop: Some(delivery_loop),
            failed,
            kafka: settings.kafka,
            monitor: settings.monitor,
        })
    }

    fn check(&self) -> Result<(), StageFailure> {
        match self.failed.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }
}

impl Drop for Publish {
    fn drop(&mut self) {
        // A failed stage's loop must not go on beside its replacement: its frames are
        // dispatched again by the supervisor.
        if let Some(delivery_loop) = self.delivery_loop.take() {
            delivery_loop.abort();
        }
    }
}

impl FrameStage for Publish {
    type In = Outcome;
    type Out = ();

    async fn process(&mut self, outcome: Outcome, _out: &Edge<()>) -> Result<(), StageFailure> {
        self.check()?;
        self.monitor.metrics.queue(Queue::Publish).popped.inc();
        let counted = Counted::of(&outcome);
        let meta = outcome.meta().clone();
        let record = to_record(&self.kafka, outcome)
            .map_err(|e| StageFailure::internal(StageId::Publish, e))?;
        let outgoing = Outgoing {
            record,
            meta,
            counted,
            first_enqueued: None,
        };
        let inbox = self.inbox.as_ref().ok_or_else(|| {
            StageFailure::internal(StageId::Publish, "the delivery loop is closed")
        })?;
        inbox
            .send(outgoing)
            .await
            .map_err(|_| StageFailure::internal(StageId::Publish, "the delivery loop ended"))
    }

    fn tick_every(&self) -> Option<Duration> {
        Some(Duration::from_secs(1))
    }

    async fn on_tick(&mut self, _out: &Edge<()>) -> Result<(), StageFailure> {
        self.check()
    }

    async fn on_stop(&mut self, _out: &Edge<()>) {
        // Closing the inbox lets the loop end once every record is acknowledged.
        drop(self.inbox.take());
        if let Some(mut delivery_loop) = self.delivery_loop.take()
            && tokio::time::timeout(STOP_BUDGET, &mut delivery_loop)
                .await
                .is_err()
        {
            delivery_loop.abort();
            tracing::warn!("Records still unacknowledged at stop; their frames will be read again");
        }
    }
}

/// Creates producers: the first, and replacements after a fatal error.
#[derive(Debug, Clone)]
struct ProducerFactory {
    kafka: KafkaConfig,
    max_payload_bytes: usize,
}

impl ProducerFactory {
    fn create(&self) -> Result<FutureProducer, KafkaError> {
        let mut client = producer_config(&self.kafka);
        // Room for the largest payload tessera accepts plus headers, unless set explicitly, so
        // dead letters keep their value wherever the broker allows it.
        if !self
            .kafka
            .producer_properties
            .contains_key("message.max.bytes")
        {
            let max = (self.max_payload_bytes + (1 << 20)).clamp(1_000_000, 1_000_000_000);
            client.set("message.max.bytes", max.to_string());
        }
        client.create()
    }
}

/// A record on its way to Kafka, with the frame it settles.
struct Outgoing {
    record: OwnedRecord,
    meta: Arc<FrameMeta>,
    counted: Counted,
    /// When it was first handed to the producer (for the publish latency).
    first_enqueued: Option<Instant>,
}

/// A record handed to the producer: its delivery, or why it could not even be enqueued.
struct Sent {
    outgoing: Outgoing,
    delivery: Result<DeliveryFuture, KafkaError>,
}

/// How a delivery ended.
type Delivered = Result<(), KafkaError>;

/// Owns the producer and every unacknowledged record, in send order.
struct DeliveryLoop {
    producer: FutureProducer,
    factory: ProducerFactory,
    sent: VecDeque<Sent>,
    /// Records awaiting acknowledgement at most, before the inbox waits.
    max_sent: usize,
    backoff: Duration,
    metrics: Metrics,
    failed: Arc<Mutex<Option<StageFailure>>>,
}

enum Event {
    Delivered(Delivered),
    Incoming(Option<Outgoing>),
}

impl DeliveryLoop {
    async fn run(mut self, mut inbox: mpsc::Receiver<Outgoing>) {
        let mut closed = false;
        loop {
            if closed && self.sent.is_empty() {
                return;
            }
            let event = tokio::select! {
                biased;
                // Acknowledgements first: they free room and settle frames.
                delivered = head(&mut self.sent), if !self.sent.is_empty() => Event::Delivered(delivered),
                incoming = inbox.recv(), if !closed && self.sent.len() < self.max_sent => Event::Incoming(incoming),
            };
            match event {
                Event::Incoming(Some(outgoing)) => {
                    let sent = self.enqueue(outgoing).await;
                    self.sent.push_back(sent);
                }
                Event::Incoming(None) => closed = true,
                Event::Delivered(delivered) => {
                    let Some(head) = self.sent.pop_front() else {
                        continue;
                    };
                    match delivered {
                        Ok(()) => {
                            self.backoff = BACKOFF_MIN;
                            self.settle(head.outgoing);
                        }
                        Err(error) => {
                            if let Err(failure) = self.recover(head.outgoing, error).await {
                                tracing::error!(failure = %tessera_models::error_chain(&failure), "Publish cannot go on");
                                *self.failed.lock().unwrap_or_else(|e| e.into_inner()) =
                                    Some(failure);
                                return;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Hands a record to the producer, waiting while librdkafka's local queue is full. A dead
    /// letter larger than the producer accepts is enqueued without its value.
    async fn enqueue(&self, mut outgoing: Outgoing) -> Sent {
        if outgoing.first_enqueued.is_none() {
            outgoing.first_enqueued = Some(Instant::now());
            self.metrics.queue(Queue::Delivery).pushed.inc();
        }
        let delivery = enqueue_record(&self.producer, &mut outgoing.record).await;
        Sent { outgoing, delivery }
    }

    /// Kafka acknowledged the record: count it and settle its frame.
    fn settle(&self, outgoing: Outgoing) {
        let metrics = &self.metrics;
        metrics.queue(Queue::Delivery).popped.inc();
        if let Some(at) = outgoing.first_enqueued {
            metrics
                .stage(Step::Publish)
                .observe(at.elapsed().as_secs_f64());
        }
        outgoing.counted.count(metrics, &outgoing.meta);
        outgoing.meta.ack.delivered();
        // Dropping the last reference to `meta` returns the frame's in-flight credit.
    }

    /// After a failed delivery: fails everything still queued in librdkafka (so nothing
    /// queued behind the failed record is written before it), waits for the rest, replaces
    /// the producer if it hit a fatal error, and sends every failed record again in its
    /// original order. An error only when no producer can be created.
    async fn recover(
        &mut self,
        mut failed: Outgoing,
        error: KafkaError,
    ) -> Result<(), StageFailure> {
        self.metrics.delivery_failed(ErrorDomain::External);
        if let Some(held_back) = DELIVERY_FAILED.allow() {
            tracing::warn!(%error, topic = %failed.record.topic, offset = failed.meta.key.offset, behind = self.sent.len(), held_back, "Delivery failed; sending again in order");
        }
        if too_large(&error) && failed.record.omit_value() {
            tracing::warn!(%error, topic = %failed.record.topic, offset = failed.meta.key.offset, "Dead letter too large for Kafka; sending it without its value");
        }
        let mut again = vec![failed];
        self.producer.purge(PurgeConfig::default().queue());
        // After a fatal error librdkafka's ordering promise is void: records in flight behind
        // the failed one may have been written. They are all written again after it, so the
        // partition ends in input order (a consumer keeping the last result per frame sees it).
        let fatal = self.producer.client().fatal_error().is_some();
        let patience = self.factory.kafka.message_timeout + Duration::from_secs(5);
        for sent in std::mem::take(&mut self.sent) {
            let Sent { outgoing, delivery } = sent;
            let delivered = match delivery {
                Ok(delivery) => match tokio::time::timeout(patience, delivery).await {
                    Ok(Ok(Ok(_))) => Ok(()),
                    Ok(Ok(Err((error, _)))) => Err(error),
                    Ok(Err(_)) => Err(KafkaError::Canceled),
                    // Given up on: sent again (at least once; a duplicate at worst).
                    Err(_) => Err(KafkaError::MessageProduction(
                        RDKafkaErrorCode::MessageTimedOut,
                    )),
                },
                Err(error) => Err(error),
            };
            match delivered {
                Ok(()) if !fatal => self.settle(outgoing),
                _ => again.push(outgoing),
            }
        }
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            tracing::error!(?code, %reason, records = again.len(), "Producer hit a fatal error; replacing it");
            self.producer = self
                .factory
                .create()
                .map_err(|e| StageFailure::external(StageId::Publish, e))?;
            self.metrics.producers_replaced.inc();
        } else {
            tokio::time::sleep(self.backoff).await;
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        }
        for outgoing in again {
            let sent = self.enqueue(outgoing).await;
            self.sent.push_back(sent);
        }
        Ok(())
    }
}

/// The delivery outcome of the oldest unacknowledged record.
async fn head(sent: &mut VecDeque<Sent>) -> Delivered {
    match sent.front_mut().map(|s| &mut s.delivery) {
        Some(Ok(delivery)) => match delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((error, _))) => Err(error),
            Err(_) => Err(KafkaError::Canceled),
        },
        Some(Err(error)) => Err(error.clone()),
        None => std::future::pending().await,
    }
}

/// Enqueues a record in the producer, waiting while librdkafka's local queue is full. A dead
/// letter larger than the producer accepts is enqueued without its value. Any other refusal
/// (a fatal error, for one) is returned: retrying the same call cannot help.
async fn enqueue_record(
    producer: &FutureProducer,
    record: &mut OwnedRecord,
) -> Result<DeliveryFuture, KafkaError> {
    loop {
        let mut future = FutureRecord::to(&record.topic)
            .payload(&record.value)
            .headers(record.headers.clone());
        if let Some(key) = &record.key {
            future = future.key(key);
        }
        let error = match producer.send_result(future) {
            Ok(delivery) => return Ok(delivery),
            Err((error, _)) => error,
        };
        if error == KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        } else if too_large(&error) && record.omit_value() {
            tracing::warn!(%error, topic = %record.topic, "Dead letter too large for the producer; sending it without its value");
        } else {
            return Err(error);
        }
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
        // Every dead letter names its source already (`tessera-source`).
        if self.source.take().is_none() {
            return false;
        }
        let len = self.value.len().to_string();
        self.headers = std::mem::replace(&mut self.headers, OwnedHeaders::new()).insert(Header {
            key: headers::PAYLOAD_OMITTED,
            value: Some(len.as_str()),
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

/// What an acknowledged output adds to the metrics.
#[derive(Debug, Clone, Copy)]
enum Counted {
    Published,
    Skipped,
    DeadLettered(DeadLetterKind),
}

impl Counted {
    fn of(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Result { .. } if outcome.is_skipped() => Counted::Skipped,
            Outcome::Result { .. } => Counted::Published,
            Outcome::DeadLetter { rejection, .. } => Counted::DeadLettered(rejection.kind),
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

fn to_record(kafka: &KafkaConfig, outcome: Outcome) -> Result<OwnedRecord, serde_json::Error> {
    Ok(match outcome {
        Outcome::Result { meta, result, .. } => OwnedRecord {
            topic: kafka.results_topic.clone(),
            key: meta.record_key.clone(),
            value: serde_json::to_vec(&result)?,
            headers: OwnedHeaders::new(),
            source: None,
        },
        Outcome::DeadLetter {
            meta,
            payload,
            rejection,
        } => {
            let kind = rejection.kind;
            if let Some(held_back) = DEAD_LETTERED.allow() {
                tracing::warn!(%kind, error = %rejection.message, offset = meta.key.offset, held_back, "Frame dead-lettered");
            }
            let mut record_headers = OwnedHeaders::new_with_capacity(meta.headers.len() + 4);
            for (key, value) in &meta.headers {
                record_headers = record_headers.insert(Header {
                    key,
                    value: value.as_deref(),
                });
            }
            record_headers = record_headers
                .insert(Header {
                    key: headers::ERROR_KIND,
                    value: Some(kind.as_str()),
                })
                .insert(Header {
                    key: headers::ERROR,
                    value: Some(rejection.message.as_str()),
                })
                .insert(Header {
                    key: headers::ERROR_DOMAIN,
                    value: Some(kind.domain().as_str()),
                })
                .insert(Header {
                    key: headers::SOURCE,
                    value: Some(meta.source().as_str()),
                });
            OwnedRecord {
                topic: kafka.dlq_topic.clone(),
                key: meta.record_key.clone(),
                value: payload.to_vec(),
                headers: record_headers,
                source: Some(meta.source()),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;

    use super::*;

    use crate::delivery::Ledger;
    use crate::protocol::result::{FrameResult, ModelRef};
    use crate::protocol::{Frame, FrameMeta, PartitionId};

    /// A publish stage on `brokers` with a short message timeout, its ledger and monitor.
    fn publish_stage(brokers: &str, timeout: Duration) -> (Publish, Arc<Ledger>, Arc<Monitor>) {
        let mut kafka = KafkaConfig {
            brokers: brokers.to_owned(),
            message_timeout: timeout,
            ..KafkaConfig::default()
        };
        kafka
            .producer_properties
            .insert("linger.ms".into(), "0".into());
        let monitor = Monitor::new("publish-test", "g", Duration::ZERO);
        let stage = Publish::start(PublishSettings {
            kafka,
            max_payload_bytes: 1 << 20,
            max_pending: 64,
            monitor: monitor.clone(),
        })
        .expect("publish starts");
        let ledger = Ledger::new();
        ledger.assign(&[input_partition()]);
        (stage, ledger, monitor)
    }

    fn input_partition() -> PartitionId {
        PartitionId {
            topic: Arc::from("frames"),
            partition: 0,
        }
    }

    /// The outcome of input offset `offset`, registered in the ledger.
    fn outcome(ledger: &Arc<Ledger>, offset: i64) -> Outcome {
        let frame = ledger.register(input_partition(), offset, |key, ack| {
            let mut meta = FrameMeta::detached(key, Some(b"cam-1".to_vec()));
            meta.ack = ack;
            Frame {
                meta: Arc::new(meta),
                payload: Arc::from(&b""[..]),
                attempt: 0,
            }
        });
        Outcome::skipped(
            frame.meta.clone(),
            ModelRef {
                name: "m".into(),
                version: "1".into(),
            },
        )
    }

    /// Polls until the ledger holds no frame (every output acknowledged).
    async fn settled(ledger: &Ledger, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        assert!(
            ledger.drained(deadline).await,
            "{} frames unacknowledged",
            ledger.len()
        );
    }

    /// The input offsets of the results on the topic, in topic order: at least `expected`.
    fn published_offsets(brokers: &str, expected: usize) -> Vec<i64> {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "publish-test-reader")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        consumer.subscribe(&["detections"]).expect("subscribe");
        let mut offsets = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        // Until at least `expected` are read and a second passes without another.
        while std::time::Instant::now() < deadline {
            match consumer.poll(Duration::from_secs(1)) {
                Some(Ok(message)) => {
                    let result: FrameResult =
                        serde_json::from_slice(message.payload().unwrap_or_default())
                            .expect("json");
                    offsets.push(result.source.offset);
                }
                _ if offsets.len() >= expected => break,
                _ => {}
            }
        }
        offsets
    }

    /// First occurrences, in order (a record sent again after a failure may be a duplicate).
    fn first_occurrences(offsets: &[i64]) -> Vec<i64> {
        let mut seen = std::collections::HashSet::new();
        offsets
            .iter()
            .copied()
            .filter(|o| seen.insert(*o))
            .collect()
    }

    /// Last occurrences, in order.
    fn last_occurrences(offsets: &[i64]) -> Vec<i64> {
        let mut reversed: Vec<i64> = offsets.iter().rev().copied().collect();
        reversed = first_occurrences(&reversed);
        reversed.reverse();
        reversed
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn results_keep_input_order_across_an_outage_longer_than_the_message_timeout() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("detections", 1, 1).expect("topic");
        let brokers = cluster.bootstrap_servers();
        let (mut stage, ledger, monitor) = publish_stage(&brokers, Duration::from_secs(1));
        let out = Edge::new(StageId::Publish);
        for offset in 0..5 {
            stage
                .process(outcome(&ledger, offset), &out)
                .await
                .expect("process");
        }
        settled(&ledger, Duration::from_secs(30)).await;
        // Down for three message timeouts, while results keep coming: the early ones time
        // out during the outage, the late ones are still queued when the broker returns.
        cluster.broker_down(1).expect("down");
        for offset in 5..35 {
            stage
                .process(outcome(&ledger, offset), &out)
                .await
                .expect("process");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cluster.broker_up(1).expect("up");
        settled(&ledger, Duration::from_secs(60)).await;
        assert!(
            monitor
                .metrics
                .encode_text()
                .contains("tessera_publish_delivery_failures_total{cause=\"external\"}"),
        );
        let offsets = published_offsets(&brokers, 35);
        assert_eq!(
            first_occurrences(&offsets),
            (0..35).collect::<Vec<_>>(),
            "{offsets:?}"
        );
        stage.on_stop(&out).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fatal_producer_error_replaces_the_producer_and_loses_nothing() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("detections", 1, 1).expect("topic");
        let brokers = cluster.bootstrap_servers();
        let (mut stage, ledger, monitor) = publish_stage(&brokers, Duration::from_secs(10));
        let out = Edge::new(StageId::Publish);
        stage
            .process(outcome(&ledger, 0), &out)
            .await
            .expect("process");
        settled(&ledger, Duration::from_secs(30)).await;
        // A broker that lost the producer's state: librdkafka raises a fatal error, after
        // which the producer must be replaced.
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
        );
        for offset in 1..10 {
            stage
                .process(outcome(&ledger, offset), &out)
                .await
                .expect("process");
        }
        settled(&ledger, Duration::from_secs(60)).await;
        assert_eq!(monitor.metrics.producers_replaced.get(), 1);
        let offsets = published_offsets(&brokers, 10);
        // Records written behind the failed one by the old producer are written again after
        // it: the partition ends in input order.
        assert_eq!(
            last_occurrences(&offsets),
            (0..10).collect::<Vec<_>>(),
            "{offsets:?}"
        );
        stage.on_tick(&out).await.expect("publish goes on");
        stage.on_stop(&out).await;
    }

    fn dead_letter(len: usize) -> OwnedRecord {
        OwnedRecord {
            topic: "frames.dlq".into(),
            key: Some(b"cam-1".to_vec()),
            value: vec![7; len],
            headers: OwnedHeaders::new()
                .insert(Header {
                    key: headers::ERROR_KIND,
                    value: Some("payload_too_large"),
                })
                .insert(Header {
                    key: headers::SOURCE,
                    value: Some("frames/0/42"),
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
            header(&letter.headers, headers::PAYLOAD_OMITTED),
            Some(&b"100"[..])
        );
        assert_eq!(
            header(&letter.headers, headers::SOURCE),
            Some(&b"frames/0/42"[..])
        );
        assert_eq!(
            header(&letter.headers, headers::ERROR_KIND),
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
        let delivery = tokio::time::timeout(
            Duration::from_secs(10),
            enqueue_record(&producer, &mut record),
        )
        .await
        .expect("enqueue does not stall")
        .expect("enqueued");
        let delivered = delivery.await.expect("not cancelled");
        assert!(delivered.is_ok(), "{delivered:?}");
        assert!(record.value.is_empty());
        assert_eq!(
            header(&record.headers, headers::PAYLOAD_OMITTED),
            Some(&b"65536"[..])
        );
        // Within the limit, a dead letter keeps its value.
        let mut small = dead_letter(1000);
        let delivered = enqueue_record(&producer, &mut small)
            .await
            .expect("enqueued")
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
        let delivered = enqueue_record(&producer, &mut record)
            .await
            .expect("enqueued")
            .await
            .expect("not cancelled");
        match delivered {
            Err((error, _)) => assert!(too_large(&error), "{error}"),
            Ok(_) => panic!("the injected error was not reported"),
        }
        assert!(record.omit_value());
        let delivered = enqueue_record(&producer, &mut record)
            .await
            .expect("enqueued")
            .await
            .expect("not cancelled");
        assert!(delivered.is_ok(), "{delivered:?}");
    }
}
