//! Publish: the Kafka producer. Sends results and dead letters in the order merge releases
//! them, and tells ingest once Kafka has acknowledged each, so its offset may be stored.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::frame::{FrameMeta, HEADER_ERROR, HEADER_ERROR_KIND};
use crate::ingest::IngestMsg;
use crate::kafka::producer_config;
use crate::names::{ActorNames, lookup};
use crate::result::FrameResult;

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
}

/// State of [`Publish`].
pub struct PublishState {
    producer: FutureProducer,
    kafka: KafkaConfig,
    names: ActorNames,
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
        let producer: FutureProducer = producer_config(&args.kafka).create()?;
        Ok(PublishState {
            producer,
            kafka: args.kafka,
            names: args.names,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: PublishMsg,
        state: &mut PublishState,
    ) -> Result<(), ActorProcessingErr> {
        let PublishMsg::Publish(outcome) = message;
        let meta = outcome.meta().clone();
        let record = to_record(&state.kafka, outcome)?;
        let delivery = enqueue(&state.producer, &record).await;
        let producer = state.producer.clone();
        let ingest_name = state.names.ingest();
        // Awaiting delivery off the actor keeps later records flowing; idempotence keeps order.
        tokio::spawn(async move {
            let mut delivery = delivery;
            let mut backoff = Duration::from_millis(100);
            loop {
                match delivery.await {
                    Ok(Ok(_)) => break,
                    Ok(Err((error, _))) => {
                        tracing::warn!(%error, topic = %record.topic, offset = meta.key.offset, "Delivery failed; retrying");
                    }
                    Err(_) => tracing::warn!("Producer dropped a delivery; retrying"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                delivery = enqueue(&producer, &record).await;
            }
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

/// Enqueues a record in the producer, waiting while librdkafka's local queue is full.
async fn enqueue(
    producer: &FutureProducer,
    record: &OwnedRecord,
) -> rdkafka::producer::DeliveryFuture {
    loop {
        let mut future = FutureRecord::to(&record.topic)
            .payload(&record.value)
            .headers(record.headers.clone());
        if let Some(key) = &record.key {
            future = future.key(key);
        }
        match producer.send_result(future) {
            Ok(delivery) => return delivery,
            Err((
                rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                _,
            )) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err((error, _)) => {
                tracing::warn!(%error, "Could not enqueue a record; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
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
        },
        Outcome::DeadLetter {
            meta,
            payload,
            kind,
            message,
        } => {
            tracing::info!(kind, error = %message, offset = meta.key.offset, "Frame dead-lettered");
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
            }
        }
    })
}
