//! Ingest: the Kafka consumer. Consumes frames within the in-flight budget, hands them to the
//! prepare pool, and stores each partition's offset once everything below it is acknowledged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::config::KafkaConfig;
use crate::frame::{Frame, FrameKey, FrameMeta, PartitionId, now_ms};
use crate::kafka::consumer_config;
use crate::names::{ActorNames, lookup_patiently};
use crate::prepare::PrepareRef;
use crate::watermark::OffsetWatermark;

/// The ingest actor.
#[derive(Debug)]
pub struct Ingest;

/// Start arguments of [`Ingest`].
#[derive(Debug)]
pub struct IngestArgs {
    pub kafka: KafkaConfig,
    pub names: ActorNames,
    /// In-flight frame credits shared with the rest of the pipeline.
    pub credits: Arc<Semaphore>,
}

/// Messages to [`Ingest`].
#[derive(Debug)]
pub enum IngestMsg {
    /// A frame was consumed and handed on (sent by the consume loop, before the frame can finish).
    Consumed(FrameKey),
    /// A frame's output (result or dead letter) was acknowledged by Kafka.
    Acked(FrameKey),
    /// Stop consuming new frames; frames in flight go on.
    StopConsuming(RpcReplyPort<()>),
    /// Commit the stored offsets now (synchronously) and reply.
    Commit(RpcReplyPort<()>),
    /// Frames consumed but not yet acknowledged.
    InFlight(RpcReplyPort<usize>),
}

/// State of [`Ingest`].
pub struct IngestState {
    consumer: Arc<StreamConsumer>,
    /// Per-partition watermarks of acknowledged offsets.
    watermarks: HashMap<PartitionId, OffsetWatermark>,
    /// The task that polls the consumer; aborted to stop consuming.
    consume_loop: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for IngestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestState")
            .field("partitions", &self.watermarks.len())
            .finish_non_exhaustive()
    }
}

impl Actor for Ingest {
    type Msg = IngestMsg;
    type State = IngestState;
    type Arguments = IngestArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: IngestArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let consumer: StreamConsumer = consumer_config(&args.kafka).create()?;
        let topics: Vec<&str> = args.kafka.input_topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let consumer = Arc::new(consumer);
        tracing::info!(topics = ?topics, group = %args.kafka.group_id, "Subscribed to input topics");
        let consume_loop = tokio::spawn(consume_loop(
            consumer.clone(),
            myself,
            args.names,
            args.credits,
        ));
        Ok(IngestState {
            consumer,
            watermarks: HashMap::new(),
            consume_loop: Some(consume_loop),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: IngestMsg,
        state: &mut IngestState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            IngestMsg::Consumed(key) => {
                state
                    .watermarks
                    .entry(key.partition)
                    .or_default()
                    .consumed(key.offset);
            }
            IngestMsg::Acked(key) => {
                let Some(watermark) = state.watermarks.get_mut(&key.partition) else {
                    return Ok(());
                };
                watermark.acknowledged(key.offset);
                if let Some(next) = watermark.committable() {
                    let mut offsets = TopicPartitionList::new();
                    offsets.add_partition_offset(
                        &key.partition.topic,
                        key.partition.partition,
                        Offset::Offset(next),
                    )?;
                    if let Err(error) = state.consumer.store_offsets(&offsets) {
                        // The partition may have been revoked meanwhile; its new owner re-reads.
                        tracing::warn!(%error, topic = %key.partition.topic, partition = key.partition.partition, "Could not store offset");
                    }
                }
            }
            IngestMsg::StopConsuming(reply) => {
                if let Some(task) = state.consume_loop.take() {
                    task.abort();
                    let _ = task.await;
                    tracing::info!("Stopped consuming");
                }
                let _ = reply.send(());
            }
            IngestMsg::Commit(reply) => {
                commit(&state.consumer);
                let _ = reply.send(());
            }
            IngestMsg::InFlight(reply) => {
                let _ = reply.send(state.watermarks.values().map(|w| w.in_flight()).sum());
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut IngestState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(task) = state.consume_loop.take() {
            task.abort();
        }
        commit(&state.consumer);
        Ok(())
    }
}

fn commit(consumer: &StreamConsumer) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => tracing::debug!("Committed stored offsets"),
        // Nothing stored since the last commit is not an error worth reporting.
        Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::NoOffset,
        )) => {}
        Err(error) => tracing::warn!(%error, "Offset commit failed"),
    }
}

/// Polls the consumer while credits are available and hands each frame to the prepare pool.
async fn consume_loop(
    consumer: Arc<StreamConsumer>,
    ingest: ActorRef<IngestMsg>,
    names: ActorNames,
    credits: Arc<Semaphore>,
) {
    // Sequence numbers are contiguous per partition so the merge stage can restore order.
    let mut next_seq: HashMap<PartitionId, u64> = HashMap::new();
    let mut topics: HashMap<String, Arc<str>> = HashMap::new();
    loop {
        // Waiting for a credit before polling bounds the frames in memory.
        let Ok(credit) = credits.clone().acquire_owned().await else {
            return;
        };
        let message = match consumer.recv().await {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "Kafka consumer error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let topic = topics
            .entry(message.topic().to_owned())
            .or_insert_with(|| Arc::from(message.topic()))
            .clone();
        let partition = PartitionId {
            topic,
            partition: message.partition(),
        };
        let seq = next_seq.entry(partition.clone()).or_insert(0);
        let key = FrameKey {
            partition,
            generation: 0,
            seq: *seq,
            offset: message.offset(),
        };
        *seq += 1;
        let frame = frame_from_message(&message, key.clone(), credit);
        drop(message);
        if ingest.cast(IngestMsg::Consumed(key)).is_err() {
            return;
        }
        let Some(prepare) = lookup_patiently::<crate::prepare::PrepareMsg>(
            &names.prepare(),
            Duration::from_secs(30),
        )
        .await
        else {
            tracing::error!("Prepare pool unavailable; stopping consumption");
            return;
        };
        let prepare: PrepareRef = prepare;
        if let Err(error) = prepare.dispatch((), frame) {
            tracing::error!(%error, "Could not hand a frame to the prepare pool");
        }
    }
}

fn frame_from_message(
    message: &BorrowedMessage<'_>,
    key: FrameKey,
    credit: tokio::sync::OwnedSemaphorePermit,
) -> Frame {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    let meta = FrameMeta {
        key,
        record_key: message.key().map(<[u8]>::to_vec),
        headers,
        kafka_timestamp_ms: message.timestamp().to_millis(),
        received_ms: now_ms(),
        received_at: Instant::now(),
        _credit: Some(credit),
    };
    Frame {
        meta: Arc::new(meta),
        payload: Arc::from(message.payload().unwrap_or_default()),
    }
}
