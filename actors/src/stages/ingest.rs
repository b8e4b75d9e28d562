//! Ingest: the Kafka consumer, the source of the frame path. Consumes frames while in-flight
//! credits last (pausing its partitions when they run out), hands them to prepare, stores
//! each partition's offset once everything below it is acknowledged, and dispatches again the
//! frames whose stage failed. Frames settle through their ack handles into the delivery
//! ledger; ingest takes the resulting work from there, so no stage sends anything back to it.
//! On a partition revoke it drains the partition's frames within a deadline and commits.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tessera_models::Head;
use tokio::sync::{Semaphore, TryAcquireError, watch};

use crate::config::{FlowConfig, KafkaConfig};
use crate::delivery::{Committable, Ledger};
use crate::learn::Learning;
use crate::observe::{LOG_INTERVAL, Monitor, Queue, Throttle};
use crate::protocol::{Clock, Frame, FrameMeta, PartitionId, StageFailure, StageId, now_ms};
use crate::stage::kafka::consumer_config;
use crate::stage::{ChildSpec, Edge, StageTask};

static CONSUMER_ERROR: Throttle = Throttle::new(LOG_INTERVAL);
/// Back-pressure pauses come several times a second at full load: one summary line per
/// interval, the count in `tessera_ingest_pauses_total{reason="budget"}`.
static BACK_PRESSURE: Throttle = Throttle::new(LOG_INTERVAL);

/// What ingest is built from.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub kafka: KafkaConfig,
    pub flow: FlowConfig,
    /// Fed each consumed frame's capture time (a stream clock judges age by it).
    pub clock: Clock,
    /// In-flight frame credits shared with the rest of the pipeline.
    pub credits: Arc<Semaphore>,
    /// Frames in flight; outlives this stage so a restarted ingest sees what is pending.
    pub ledger: Arc<Ledger>,
    /// Set when the pipeline drains for shutdown: consumption stops (partitions paused).
    pub draining: watch::Receiver<bool>,
    pub monitor: Arc<Monitor>,
    /// Heads and scopes (`None`: no backbone for heads): each frame pins the head serving its
    /// camera when it is consumed.
    pub learning: Option<Arc<Learning>>,
}

/// The supervisor's entry for ingest, the source.
pub fn child(settings: IngestSettings, out: Edge<Frame>) -> ChildSpec {
    ChildSpec::actor(StageId::Ingest, Ingest, move |_| {
        (settings.clone(), out.clone())
    })
    .into_source()
}

/// The ingest actor.
#[derive(Debug, Clone, Copy)]
pub struct Ingest;

/// Messages to [`Ingest`].
#[derive(Debug)]
pub enum IngestMsg {
    /// Periodic check for frames that have been in flight too long.
    Tick,
    /// Periodic query of the assigned partitions' watermarks, for the consumer lag.
    MeasureLag,
}

/// The consumer's context: serves the rebalance callbacks from the shared in-flight registry.
#[derive(Debug)]
pub struct IngestContext {
    ledger: Arc<Ledger>,
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
        let revoked = block_in_place_if_possible(|| self.ledger.revoke(&partitions, deadline));
        self.monitor.partitions_revoked(&partitions);
        if !revoked.committable.is_empty() {
            let offsets = offsets_list(&revoked.committable);
            if let Err(error) = consumer
                .store_offsets(&offsets)
                .and_then(|()| consumer.commit(&offsets, CommitMode::Sync))
            {
                self.monitor.metrics.commit_failures.inc();
                tracing::warn!(%error, "Commit on revoke failed");
            }
        }
        tracing::info!(
            partitions = partitions.len(),
            abandoned = revoked.abandoned,
            "Partitions revoked; offsets committed"
        );
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(assigned) => {
                let partitions = partition_ids(assigned);
                self.ledger.assign(&partitions);
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

/// State of [`Ingest`].
pub struct IngestState {
    consumer: Arc<IngestConsumer>,
    flow: FlowConfig,
    ledger: Arc<Ledger>,
    out: Edge<Frame>,
    monitor: Arc<Monitor>,
    /// Whether a watermark query is under way.
    measuring_lag: Arc<AtomicBool>,
    /// The task that polls the consumer.
    consume_loop: StageTask,
    /// The task that stores offsets and dispatches frames again as frames settle.
    settle_loop: StageTask,
    /// How long the final commit may keep trying through a rebalance in progress.
    final_commit_within: Duration,
}

impl std::fmt::Debug for IngestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestState").finish_non_exhaustive()
    }
}

impl Actor for Ingest {
    type Msg = IngestMsg;
    type State = IngestState;
    type Arguments = (IngestSettings, Edge<Frame>);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (settings, out): (IngestSettings, Edge<Frame>),
    ) -> Result<Self::State, ActorProcessingErr> {
        let paused = Arc::new(AtomicBool::new(false));
        let context = IngestContext {
            ledger: settings.ledger.clone(),
            revoke_drain: settings.kafka.revoke_drain_timeout,
            paused: paused.clone(),
            monitor: settings.monitor.clone(),
        };
        // A consumer that cannot be created or subscribed is a configuration error.
        let consumer: IngestConsumer = consumer_config(&settings.kafka)
            .create_with_context(context)
            .map_err(|e| StageFailure::config(StageId::Ingest, e))?;
        let topics: Vec<&str> = settings
            .kafka
            .input_topics
            .iter()
            .map(String::as_str)
            .collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| StageFailure::config(StageId::Ingest, e))?;
        let consumer = Arc::new(consumer);
        tracing::info!(topics = ?topics, group = %settings.kafka.group_id, "Subscribed to input topics");
        let consume_loop = StageTask::spawn(consume_loop(ConsumeLoop {
            consumer: consumer.clone(),
            out: out.clone(),
            credits: settings.credits.clone(),
            ledger: settings.ledger.clone(),
            paused,
            operator_pause: settings.monitor.watch_pause(),
            draining: settings.draining.clone(),
            monitor: settings.monitor.clone(),
            learning: settings.learning.clone(),
            clock: settings.clock.clone(),
        }));
        let settle_loop = StageTask::spawn(settle_loop(
            consumer.clone(),
            settings.ledger.clone(),
            out.clone(),
            settings.monitor.clone(),
        ));
        myself.send_interval(Duration::from_secs(1), || IngestMsg::Tick);
        if !settings.kafka.statistics_interval.is_zero() {
            myself.send_interval(settings.kafka.statistics_interval, || IngestMsg::MeasureLag);
        }
        Ok(IngestState {
            consumer,
            flow: settings.flow,
            ledger: settings.ledger,
            out,
            monitor: settings.monitor,
            measuring_lag: Arc::new(AtomicBool::new(false)),
            consume_loop,
            settle_loop,
            final_commit_within: settings.kafka.revoke_drain_timeout,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: IngestMsg,
        state: &mut IngestState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            IngestMsg::Tick => {
                // Revokes forget frames too: keep the gauge true between acknowledgements.
                state
                    .monitor
                    .metrics
                    .frames_in_flight
                    .set(state.ledger.len() as i64);
                let frames = state.ledger.timed_out(state.flow.frame_timeout);
                if !frames.is_empty() {
                    tracing::warn!(frames = frames.len(), timeout = ?state.flow.frame_timeout, "Frames timed out; dispatching them again");
                }
                for frame in frames {
                    dispatch(&state.out, &state.monitor, frame);
                }
            }
            IngestMsg::MeasureLag => measure_lag(state),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut IngestState,
    ) -> Result<(), ActorProcessingErr> {
        // The loops hold the consumer too: end them, so the consumer closes (leaving its group
        // and committing on the final revoke) when this state drops, while the broker is known
        // to be reachable, not later from a task nobody waits for.
        state.consume_loop.stop().await;
        state.settle_loop.stop().await;
        // The last acknowledgements' offsets, then one synchronous commit.
        store(&state.consumer, &state.ledger.take_work().store);
        commit_final(&state.consumer, &state.monitor, state.final_commit_within).await;
        Ok(())
    }
}

/// Stores offsets as frames are delivered and dispatches again the frames whose stage
/// failed (or all of them, after a stage restarted).
async fn settle_loop(
    consumer: Arc<IngestConsumer>,
    ledger: Arc<Ledger>,
    out: Edge<Frame>,
    monitor: Arc<Monitor>,
) {
    loop {
        ledger.wait_for_work().await;
        let work = ledger.take_work();
        store(&consumer, &work.store);
        if work.redispatch.len() > 1 {
            tracing::warn!(
                frames = work.redispatch.len(),
                "Dispatching frames again after a stage failed"
            );
        }
        for frame in work.redispatch {
            dispatch(&out, &monitor, frame);
        }
        monitor.metrics.frames_in_flight.set(ledger.len() as i64);
    }
}

/// Stores offsets (committed by the periodic auto-commit, on revoke and at stop).
fn store(consumer: &IngestConsumer, committable: &[Committable]) {
    if committable.is_empty() {
        return;
    }
    if let Err(error) = consumer.store_offsets(&offsets_list(committable)) {
        // The partition may have been revoked meanwhile; its new owner re-reads.
        tracing::debug!(%error, "Could not store offsets");
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

/// Hands a frame to prepare (which dead-letters it if it is out of attempts). If prepare is
/// not running, the frame stays in the ledger and is dispatched again once it is back.
fn dispatch(out: &Edge<Frame>, monitor: &Monitor, frame: Frame) {
    let offset = frame.meta.key.offset;
    match out.send(frame) {
        Ok(()) => monitor.metrics.queue(Queue::Prepare).pushed.inc(),
        Err(error) => tracing::debug!(%error, offset, "Frame not handed on"),
    }
}

/// The commit at shutdown: while another member joins, the coordinator refuses commits until
/// the group is stable again, so a refused commit is tried again for a while (librdkafka
/// rejoins on its own threads) rather than leaving offsets for the next owner to re-process.
async fn commit_final(consumer: &IngestConsumer, monitor: &Monitor, within: Duration) {
    use rdkafka::error::KafkaError::ConsumerCommit;
    use rdkafka::types::RDKafkaErrorCode::{IllegalGeneration, NoOffset, RebalanceInProgress};
    let deadline = Instant::now() + within;
    loop {
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(ConsumerCommit(NoOffset)) => return,
            Err(ConsumerCommit(RebalanceInProgress | IllegalGeneration))
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => {
                monitor.metrics.commit_failures.inc();
                tracing::warn!(%error, "Final offset commit failed; the next owner re-reads from the last commit");
                return;
            }
        }
    }
}

/// What the consume loop works with.
struct ConsumeLoop {
    consumer: Arc<IngestConsumer>,
    out: Edge<Frame>,
    credits: Arc<Semaphore>,
    ledger: Arc<Ledger>,
    /// Whether the assigned partitions are paused (shared with the rebalance callbacks).
    paused: Arc<AtomicBool>,
    /// The operator pause (`POST /v1/pause`).
    operator_pause: watch::Receiver<bool>,
    /// Set when the pipeline drains for shutdown.
    draining: watch::Receiver<bool>,
    monitor: Arc<Monitor>,
    learning: Option<Arc<Learning>>,
    clock: Clock,
}

/// Why consumption is paused.
#[derive(Debug, Clone, Copy)]
enum PauseReason {
    Budget,
    Operator,
    Draining,
}

impl PauseReason {
    /// The `reason` label of `tessera_ingest_pauses_total`.
    fn label(self) -> &'static str {
        match self {
            PauseReason::Budget => "budget",
            PauseReason::Operator => "operator",
            PauseReason::Draining => "draining",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            PauseReason::Budget => "Paused partitions: in-flight budget exhausted",
            PauseReason::Operator => "Paused partitions: paused by an operator",
            PauseReason::Draining => "Paused partitions: draining for shutdown",
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
        if *ctx.draining.borrow() {
            // Polling goes on while paused, so rebalances are still served while draining.
            let mut never = ctx.draining.clone();
            let forever = async move { pause_becomes(&mut never, false).await };
            hold_paused(&ctx, &mut held, PauseReason::Draining, forever).await;
            continue;
        }
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
            Some(message) => register(
                &ctx.ledger,
                &message,
                credit,
                serving_head(&ctx.learning, &message),
            ),
            None => {
                let mut pause = ctx.operator_pause.clone();
                let mut draining = ctx.draining.clone();
                tokio::select! {
                    biased;
                    // A pause or a drain takes effect while waiting for the next record too.
                    () = pause_becomes(&mut pause, true) => continue,
                    () = pause_becomes(&mut draining, true) => continue,
                    message = ctx.consumer.recv() => match message {
                        Ok(message) => register(&ctx.ledger, &message, credit, serving_head(&ctx.learning, &message)),
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
        ctx.clock.observe(frame.meta.capture_ms());
        let metrics = &ctx.monitor.metrics;
        ctx.monitor.consumer_heartbeat();
        metrics.frames_consumed.inc();
        metrics.frames_in_flight.set(ctx.ledger.len() as i64);
        dispatch(&ctx.out, &ctx.monitor, frame);
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
    match (pause, was, reason) {
        (true, false, PauseReason::Budget) => {
            ctx.monitor.metrics.paused(reason.label());
            // Flow control, not a lifecycle event: a summary now and then.
            if let Some(held_back) = BACK_PRESSURE.allow() {
                tracing::info!(
                    partitions = assignment.count(),
                    in_flight = ctx.ledger.len(),
                    pauses_since_last_line = held_back,
                    "Back-pressure: {} (each pause counted in tessera_ingest_pauses_total)",
                    reason.describe()
                );
            } else {
                tracing::debug!(partitions = assignment.count(), "{}", reason.describe());
            }
        }
        (true, false, _) => {
            ctx.monitor.metrics.paused(reason.label());
            tracing::info!(
                partitions = assignment.count(),
                in_flight = ctx.ledger.len(),
                "{}",
                reason.describe()
            );
        }
        (false, true, PauseReason::Budget) => {
            tracing::debug!(partitions = assignment.count(), "Resumed partitions");
        }
        (false, true, _) => {
            tracing::info!(partitions = assignment.count(), "Resumed partitions");
        }
        _ => {}
    }
}

/// The head serving the message's camera now (its group's, else the global one).
fn serving_head<M: Message>(learning: &Option<Arc<Learning>>, message: &M) -> Option<Arc<Head>> {
    let learning = learning.as_ref()?;
    let camera = String::from_utf8_lossy(message.key().unwrap_or_default());
    learning.head_for(&camera)
}

/// Records a consumed message in flight and turns it into a frame holding `credit`.
fn register<M: Message>(
    ledger: &Arc<Ledger>,
    message: &M,
    credit: tokio::sync::OwnedSemaphorePermit,
    head: Option<Arc<Head>>,
) -> Frame {
    let partition = PartitionId {
        topic: Arc::from(message.topic()),
        partition: message.partition(),
    };
    let headers = crate::protocol::headers::of_message(message);
    let payload: Arc<[u8]> = Arc::from(message.payload().unwrap_or_default());
    let record_key = message.key().map(<[u8]>::to_vec);
    let kafka_timestamp_ms = message.timestamp().to_millis();
    ledger.register(partition, message.offset(), move |key, ack| Frame {
        meta: Arc::new(FrameMeta {
            key,
            ack,
            record_key,
            headers,
            kafka_timestamp_ms,
            received_ms: now_ms(),
            received_at: Instant::now(),
            head,
            _credit: Some(credit),
        }),
        payload,
        attempt: 0,
    })
}
