//! Ingest: the Kafka consumer. Consumes frames while in-flight credits last (pausing its
//! partitions when they run out), hands them to the prepare pool, re-dispatches frames whose
//! stage failed, and stores each partition's offset once everything below it is acknowledged.
//! On a partition revoke it drains the partition's frames within a deadline and commits.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{Semaphore, TryAcquireError, watch};
use tokio::task::JoinHandle;

use crate::config::{FlowConfig, KafkaConfig};
use crate::frame::{Frame, FrameMeta, PartitionId, now_ms};
use crate::inflight::{Committable, InFlight};
use crate::kafka::consumer_config;
use crate::merge::MergeMsg;
use crate::metrics::Queue;
use crate::monitor::Monitor;
use crate::names::{ActorNames, lookup, lookup_patiently};
use crate::prepare::{PrepareFailure, PrepareMsg};
use crate::throttle::{LOG_INTERVAL, Throttle};

/// Dead-letter kind of a frame that failed every attempt (`flow.max_attempts`).
pub const PROCESSING_FAILED: &str = "processing_failed";

static CONSUMER_ERROR: Throttle = Throttle::new(LOG_INTERVAL);
static COMMIT_FAILED: Throttle = Throttle::new(LOG_INTERVAL);

/// The ingest actor.
#[derive(Debug)]
pub struct Ingest;

/// Start arguments of [`Ingest`].
#[derive(Debug)]
pub struct IngestArgs {
    pub kafka: KafkaConfig,
    pub flow: FlowConfig,
    pub names: ActorNames,
    /// In-flight frame credits shared with the rest of the pipeline.
    pub credits: Arc<Semaphore>,
    /// Frames in flight; outlives this actor so a restarted ingest sees what is pending.
    pub inflight: Arc<InFlight>,
    pub monitor: Arc<Monitor>,
}

/// Messages to [`Ingest`].
#[derive(Debug)]
pub enum IngestMsg {
    /// A frame's output (result or dead letter) was acknowledged by Kafka.
    Acked(crate::frame::FrameKey),
    /// A stage failed while holding this frame: dispatch it again (bounded attempts).
    Redispatch(crate::frame::FrameKey),
    /// A stage was restarted and may have lost frames: dispatch every frame in flight again.
    RedispatchAll,
    /// Periodic check for frames that have been in flight too long.
    Tick,
    /// Periodic query of the assigned partitions' watermarks, for the consumer lag.
    MeasureLag,
    /// Stop consuming new frames; frames in flight go on.
    StopConsuming(RpcReplyPort<()>),
    /// Commit the stored offsets now (synchronously) and reply.
    Commit(RpcReplyPort<()>),
    /// Frames consumed but not yet acknowledged.
    InFlight(RpcReplyPort<usize>),
}

/// The consumer's context: serves the rebalance callbacks from the shared in-flight registry.
#[derive(Debug)]
pub struct IngestContext {
    inflight: Arc<InFlight>,
    revoke_drain: Duration,
    /// Whether consumption is paused (newly assigned partitions are paused too).
    paused: Arc<AtomicBool>,
    monitor: Arc<Monitor>,
}

impl ClientContext for IngestContext {
    fn stats(&self, statistics: Statistics) {
        let committed = statistics
            .topics
            .into_iter()
            .flat_map(|(topic, stats)| {
                let topic: Arc<str> = Arc::from(topic);
                stats
                    .partitions
                    .into_values()
                    // -1 is librdkafka's internal "unassigned" partition.
                    .filter(|p| p.partition >= 0)
                    .map(move |p| {
                        let partition = PartitionId {
                            topic: topic.clone(),
                            partition: p.partition,
                        };
                        (
                            partition,
                            (p.committed_offset >= 0).then_some(p.committed_offset),
                        )
                    })
            })
            .collect();
        self.monitor.committed_offsets(committed);
    }
}

impl ConsumerContext for IngestContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let partitions = partition_ids(revoked);
        if partitions.is_empty() {
            return;
        }
        let deadline = Instant::now() + self.revoke_drain;
        // Waiting here holds the rebalance until our frames are done (or the deadline), so the
        // next owner starts after the last offset we committed.
        let (committable, abandoned) =
            block_in_place_if_possible(|| self.inflight.revoke(&partitions, deadline));
        self.monitor.partitions_revoked(&partitions);
        if !committable.is_empty() {
            let offsets = offsets_list(&committable);
            if let Err(error) = consumer
                .store_offsets(&offsets)
                .and_then(|()| consumer.commit(&offsets, CommitMode::Sync))
            {
                tracing::warn!(%error, "Commit on revoke failed");
            }
        }
        tracing::info!(
            partitions = partitions.len(),
            abandoned,
            "Partitions revoked; offsets committed"
        );
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(assigned) => {
                let partitions = partition_ids(assigned);
                self.inflight.assign(&partitions);
                self.monitor.partitions_assigned(&partitions);
                if self.paused.load(Ordering::SeqCst) {
                    if let Err(error) = consumer.pause(assigned) {
                        tracing::warn!(%error, "Could not pause newly assigned partitions");
                    }
                    if let Ok(assignment) = consumer.assignment() {
                        self.monitor
                            .metrics
                            .partitions_paused
                            .set(assignment.count() as i64);
                    }
                }
                tracing::info!(partitions = partitions.len(), "Partitions assigned");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "Rebalance error"),
        }
    }
}

/// Runs blocking work from within the runtime without starving it (the rebalance callback
/// runs inside the consume loop's poll).
fn block_in_place_if_possible<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

fn partition_ids(list: &TopicPartitionList) -> Vec<PartitionId> {
    list.elements()
        .iter()
        .map(|e| PartitionId {
            topic: Arc::from(e.topic()),
            partition: e.partition(),
        })
        .collect()
}

fn offsets_list(committable: &[Committable]) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for c in committable {
        // Adding an offset to a fresh list cannot fail for a valid offset.
        let _ = list.add_partition_offset(
            &c.partition.topic,
            c.partition.partition,
            Offset::Offset(c.offset),
        );
    }
    list
}

type IngestConsumer = StreamConsumer<IngestContext>;

/// Aborts the consume loop when the actor's state is dropped, whether it stopped or failed.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// State of [`Ingest`].
pub struct IngestState {
    consumer: Arc<IngestConsumer>,
    flow: FlowConfig,
    names: ActorNames,
    inflight: Arc<InFlight>,
    monitor: Arc<Monitor>,
    /// Whether a watermark query is under way.
    measuring_lag: Arc<AtomicBool>,
    /// The task that polls the consumer; dropped (aborted) to stop consuming.
    consume_loop: Option<AbortOnDrop>,
}

impl std::fmt::Debug for IngestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestState").finish_non_exhaustive()
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
        let paused = Arc::new(AtomicBool::new(false));
        let context = IngestContext {
            inflight: args.inflight.clone(),
            revoke_drain: args.kafka.revoke_drain_timeout,
            paused: paused.clone(),
            monitor: args.monitor.clone(),
        };
        let consumer: IngestConsumer = consumer_config(&args.kafka).create_with_context(context)?;
        let topics: Vec<&str> = args.kafka.input_topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let consumer = Arc::new(consumer);
        tracing::info!(topics = ?topics, group = %args.kafka.group_id, "Subscribed to input topics");
        let consume_loop = tokio::spawn(consume_loop(ConsumeLoop {
            consumer: consumer.clone(),
            names: args.names.clone(),
            credits: args.credits,
            inflight: args.inflight.clone(),
            paused,
            operator_pause: args.monitor.watch_pause(),
            monitor: args.monitor.clone(),
        }));
        myself.send_interval(Duration::from_secs(1), || IngestMsg::Tick);
        if !args.kafka.statistics_interval.is_zero() {
            myself.send_interval(args.kafka.statistics_interval, || IngestMsg::MeasureLag);
        }
        Ok(IngestState {
            consumer,
            flow: args.flow,
            names: args.names,
            inflight: args.inflight,
            monitor: args.monitor,
            measuring_lag: Arc::new(AtomicBool::new(false)),
            consume_loop: Some(AbortOnDrop(consume_loop)),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: IngestMsg,
        state: &mut IngestState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            IngestMsg::Acked(key) => {
                if let Some(committable) = state.inflight.acknowledge(&key)
                    && let Err(error) = state
                        .consumer
                        .store_offsets(&offsets_list(std::slice::from_ref(&committable)))
                {
                    // The partition may have been revoked meanwhile; its new owner re-reads.
                    tracing::debug!(%error, "Could not store offset");
                }
                state
                    .monitor
                    .metrics
                    .frames_in_flight
                    .set(state.inflight.len() as i64);
            }
            IngestMsg::Redispatch(key) => {
                if let Some(frame) = state.inflight.redispatch(&key) {
                    redispatch(state, vec![frame]).await;
                }
            }
            IngestMsg::RedispatchAll => {
                // The merge stage may have lost its ordering state: tell it where each
                // partition stands before the frames come back.
                if let Some(merge) = lookup::<MergeMsg>(&state.names.merge()) {
                    let _ = merge.cast(MergeMsg::Resume(state.inflight.lowest_unacknowledged()));
                }
                let frames = state.inflight.for_redispatch(None);
                if !frames.is_empty() {
                    tracing::warn!(
                        frames = frames.len(),
                        "Re-dispatching frames after a restart"
                    );
                }
                redispatch(state, frames).await;
            }
            IngestMsg::Tick => {
                // Revokes forget frames too: keep the gauge true between acknowledgements.
                state
                    .monitor
                    .metrics
                    .frames_in_flight
                    .set(state.inflight.len() as i64);
                let frames = state
                    .inflight
                    .for_redispatch(Some(state.flow.frame_timeout));
                if !frames.is_empty() {
                    tracing::warn!(frames = frames.len(), timeout = ?state.flow.frame_timeout, "Frames timed out; re-dispatching");
                }
                redispatch(state, frames).await;
            }
            IngestMsg::MeasureLag => measure_lag(state),
            IngestMsg::StopConsuming(reply) => {
                if state.consume_loop.take().is_some() {
                    tracing::info!("Stopped consuming");
                }
                let _ = reply.send(());
            }
            IngestMsg::Commit(reply) => {
                commit(&state.consumer);
                let _ = reply.send(());
            }
            IngestMsg::InFlight(reply) => {
                let _ = reply.send(state.inflight.len());
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut IngestState,
    ) -> Result<(), ActorProcessingErr> {
        state.consume_loop.take();
        commit(&state.consumer);
        Ok(())
    }
}

/// Queries the assigned partitions' watermarks off the actor (each is a broker round trip)
/// and hands them to the monitor, which derives the lag. One query at a time.
fn measure_lag(state: &IngestState) {
    if state.measuring_lag.swap(true, Ordering::SeqCst) {
        return;
    }
    let (consumer, monitor, measuring) = (
        state.consumer.clone(),
        state.monitor.clone(),
        state.measuring_lag.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let assignment = consumer.assignment().unwrap_or_default();
        let watermarks = assignment
            .elements()
            .iter()
            .filter_map(|e| {
                let (low, high) = consumer
                    .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(5))
                    .ok()?;
                let partition = PartitionId {
                    topic: Arc::from(e.topic()),
                    partition: e.partition(),
                };
                Some((partition, low, high))
            })
            .collect();
        monitor.partition_watermarks(watermarks);
        measuring.store(false, Ordering::SeqCst);
    });
}

/// Dispatches frames again, or dead-letters those out of attempts.
async fn redispatch(state: &IngestState, frames: Vec<Frame>) {
    if frames.is_empty() {
        return;
    }
    let max_attempts = state.flow.max_attempts;
    for frame in frames {
        if frame.attempt >= max_attempts {
            tracing::error!(
                offset = frame.meta.key.offset,
                attempts = frame.attempt,
                "Frame failed every attempt; dead-lettering it"
            );
            if let Some(merge) = lookup::<MergeMsg>(&state.names.merge()) {
                let _ = merge.cast(MergeMsg::Failed {
                    meta: frame.meta,
                    payload: frame.payload,
                    failure: PrepareFailure {
                        kind: PROCESSING_FAILED,
                        message: format!("processing failed {max_attempts} times"),
                    },
                });
            }
            continue;
        }
        dispatch(&state.names, &state.monitor, frame).await;
    }
}

/// Hands a frame to the prepare pool, waiting briefly if the pool is being restarted.
async fn dispatch(names: &ActorNames, monitor: &Monitor, frame: Frame) {
    let Some(prepare) =
        lookup_patiently::<PrepareMsg>(&names.prepare(), Duration::from_secs(30)).await
    else {
        // The frame stays in flight; the timeout check re-dispatches it later.
        tracing::error!("Prepare pool unavailable");
        return;
    };
    match prepare.dispatch((), frame) {
        Ok(()) => monitor.metrics.queue(Queue::Prepare).pushed.inc(),
        Err(error) => tracing::error!(%error, "Could not hand a frame to the prepare pool"),
    }
}

fn commit(consumer: &IngestConsumer) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => tracing::debug!("Committed stored offsets"),
        // Nothing stored since the last commit is not an error worth reporting.
        Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::NoOffset,
        )) => {}
        Err(error) => {
            if let Some(held_back) = COMMIT_FAILED.allow() {
                tracing::warn!(%error, held_back, "Offset commit failed");
            }
        }
    }
}

/// What the consume loop works with.
struct ConsumeLoop {
    consumer: Arc<IngestConsumer>,
    names: ActorNames,
    credits: Arc<Semaphore>,
    inflight: Arc<InFlight>,
    /// Whether the assigned partitions are paused (shared with the rebalance callbacks).
    paused: Arc<AtomicBool>,
    /// The operator pause (`POST /v1/pause`).
    operator_pause: watch::Receiver<bool>,
    monitor: Arc<Monitor>,
}

/// Why consumption is paused.
#[derive(Debug, Clone, Copy)]
enum PauseReason {
    Budget,
    Operator,
}

impl PauseReason {
    fn describe(self) -> &'static str {
        match self {
            PauseReason::Budget => "Paused partitions: in-flight budget exhausted",
            PauseReason::Operator => "Paused partitions: paused by an operator",
        }
    }
}

/// Polls the consumer while credits are available and hands each frame to the prepare pool.
/// Without credits, or while an operator has paused consumption, it pauses the assigned
/// partitions (so nothing is fetched or buffered) but keeps polling, which serves rebalance
/// callbacks, until it may go on.
async fn consume_loop(ctx: ConsumeLoop) {
    // Records that arrived while pausing (fetched just before); processed first on resume.
    let mut held: VecDeque<OwnedMessage> = VecDeque::new();
    loop {
        if *ctx.operator_pause.borrow() {
            let mut pause = ctx.operator_pause.clone();
            let resumed = async move { pause_becomes(&mut pause, false).await };
            hold_paused(&ctx, &mut held, PauseReason::Operator, resumed).await;
            continue;
        }
        let credit = match ctx.credits.clone().try_acquire_owned() {
            Ok(credit) => credit,
            Err(TryAcquireError::Closed) => return,
            Err(TryAcquireError::NoPermits) => {
                let credits = ctx.credits.clone();
                let credit = async move { credits.acquire_owned().await.ok() };
                match hold_paused(&ctx, &mut held, PauseReason::Budget, credit).await {
                    Some(credit) => credit,
                    None => return,
                }
            }
        };
        let frame = match held.pop_front() {
            Some(message) => register(&ctx.inflight, &message, credit),
            None => {
                let mut pause = ctx.operator_pause.clone();
                tokio::select! {
                    biased;
                    // An operator pause takes effect while waiting for the next record too.
                    () = pause_becomes(&mut pause, true) => continue,
                    message = ctx.consumer.recv() => match message {
                        Ok(message) => register(&ctx.inflight, &message, credit),
                        Err(error) => {
                            if let Some(held_back) = CONSUMER_ERROR.allow() {
                                tracing::warn!(%error, held_back, "Kafka consumer error");
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                }
            }
        };
        let metrics = &ctx.monitor.metrics;
        ctx.monitor.consumer_heartbeat();
        metrics.frames_consumed.inc();
        metrics.frames_in_flight.set(ctx.inflight.len() as i64);
        dispatch(&ctx.names, &ctx.monitor, frame).await;
    }
}

/// Waits until the operator pause is `paused` (forever if its sender is gone, which cannot
/// happen while the monitor lives).
async fn pause_becomes(pause: &mut watch::Receiver<bool>, paused: bool) {
    if pause.wait_for(|p| *p == paused).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Keeps the assigned partitions paused, polling (and holding what still arrives), until
/// `until` completes.
async fn hold_paused<T>(
    ctx: &ConsumeLoop,
    held: &mut VecDeque<OwnedMessage>,
    reason: PauseReason,
    until: impl Future<Output = T>,
) -> T {
    set_paused(ctx, true, reason);
    let mut until = std::pin::pin!(until);
    let outcome = loop {
        tokio::select! {
            biased;
            outcome = &mut until => break outcome,
            message = ctx.consumer.recv() => match message {
                Ok(message) => {
                    held.push_back(message.detach());
                    // A partition assigned meanwhile may have delivered it.
                    set_paused(ctx, true, reason);
                }
                Err(error) => {
                    if let Some(held_back) = CONSUMER_ERROR.allow() {
                        tracing::warn!(%error, held_back, "Kafka consumer error");
                    }
                }
            },
        }
    };
    set_paused(ctx, false, reason);
    outcome
}

/// Pauses or resumes every assigned partition, logging transitions once.
fn set_paused(ctx: &ConsumeLoop, pause: bool, reason: PauseReason) {
    let was = ctx.paused.swap(pause, Ordering::SeqCst);
    let assignment = match ctx.consumer.assignment() {
        Ok(assignment) => assignment,
        Err(error) => {
            tracing::warn!(%error, "Could not read the assignment");
            return;
        }
    };
    let result = if pause {
        ctx.consumer.pause(&assignment)
    } else {
        ctx.consumer.resume(&assignment)
    };
    if let Err(error) = result {
        tracing::warn!(%error, pause, "Could not change the partitions' pause state");
    }
    let paused = if pause { assignment.count() } else { 0 };
    ctx.monitor.metrics.partitions_paused.set(paused as i64);
    if pause && !was {
        tracing::info!(
            partitions = assignment.count(),
            in_flight = ctx.inflight.len(),
            "{}",
            reason.describe()
        );
    } else if !pause && was {
        tracing::info!(partitions = assignment.count(), "Resumed partitions");
    }
}

/// Records a consumed message in flight and turns it into a frame holding `credit`.
fn register<M: Message>(
    inflight: &InFlight,
    message: &M,
    credit: tokio::sync::OwnedSemaphorePermit,
) -> Frame {
    let partition = PartitionId {
        topic: Arc::from(message.topic()),
        partition: message.partition(),
    };
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    let payload: Arc<[u8]> = Arc::from(message.payload().unwrap_or_default());
    let record_key = message.key().map(<[u8]>::to_vec);
    let kafka_timestamp_ms = message.timestamp().to_millis();
    inflight.register(partition, message.offset(), move |key| Frame {
        meta: Arc::new(FrameMeta {
            key,
            record_key,
            headers,
            kafka_timestamp_ms,
            received_ms: now_ms(),
            received_at: Instant::now(),
            _credit: Some(credit),
        }),
        payload,
        attempt: 0,
    })
}
