//! What operators see and control of a pipeline: its metrics, liveness, readiness, status and
//! the operator pause. Created before the pipeline starts, so the HTTP endpoints answer while
//! the model loads, and shared by every actor; it outlives restarts of any of them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::learn::Learning;
use tokio::sync::watch;

use super::metrics::Metrics;
use crate::protocol::{PartitionId, PartitionProgress, now_ms};

/// Where each assigned partition stands (the delivery ledger's snapshot).
pub type ProgressProbe = Box<dyn Fn() -> Vec<PartitionProgress> + Send + Sync>;
/// Whether the actor tree is still up (its root not stopping or stopped).
pub type TreeProbe = Box<dyn Fn() -> bool + Send + Sync>;

/// Where the pipeline is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Loading the model and starting the actors.
    Starting,
    /// Consuming and processing.
    Running,
    /// Shutdown requested: no new frames, finishing those in flight.
    Draining,
    /// Shut down cleanly.
    Stopped,
    /// Could not start, or stopped on a restart storm.
    Failed,
}

/// The model in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelStatus {
    pub name: String,
    pub version: String,
    /// The fine-tuned head in use; `None` until heads exist.
    pub head_version: Option<String>,
    pub execution_provider: String,
    /// Model input, `[width, height]` pixels.
    pub input: [u32; 2],
    /// The batch dimension: a number, or `dynamic`.
    pub batch: String,
}

/// What is known of one assigned partition's offsets: the committed one from librdkafka's
/// statistics, the broker's watermarks from a periodic query, and the lag derived from them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionStats {
    pub high_watermark: Option<i64>,
    pub committed_offset: Option<i64>,
    pub lag: Option<i64>,
}

/// One assigned partition in the status document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    /// Bumped on every assignment of the partition to this consumer.
    pub generation: u64,
    pub in_flight: usize,
    pub oldest_in_flight_offset: Option<i64>,
    /// Everything below this offset is acknowledged (stored, then committed).
    pub committable_offset: Option<i64>,
    pub committed_offset: Option<i64>,
    pub high_watermark: Option<i64>,
    pub lag: Option<i64>,
}

/// Totals since start, from the metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub frames_consumed: u64,
    pub frames_published: u64,
    pub frames_skipped: u64,
    pub frames_dead_lettered: u64,
    pub tiles_inferred: u64,
}

/// The document of `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    pub instance: String,
    pub phase: Phase,
    pub live: bool,
    pub ready: bool,
    pub uptime_seconds: f64,
    /// Start time, ms since the epoch.
    pub started_ms: i64,
    pub paused_by_operator: bool,
    pub consumer_group: String,
    /// Whether the consumer has joined its group (with partitions, or idle).
    pub consumer_joined: bool,
    pub frames_in_flight: usize,
    pub partitions: Vec<PartitionStatus>,
    pub model: Option<ModelStatus>,
    pub totals: Totals,
    /// Heads and fine-tuning; absent when the model has no embedding.
    pub learning: Option<LearningStatus>,
}

/// Learning on the job, in the status document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LearningStatus {
    /// The live global head's version, 0 for none.
    pub live_head: u64,
    /// The live head's version of every scope that has one.
    pub live_heads: std::collections::BTreeMap<String, u64>,
    /// Head versions this replica knows.
    pub head_versions: usize,
    /// Whether this replica is the group's trainer (it owns the labels topic).
    pub trainer: bool,
    /// The last fine-tune round on this replica.
    pub last_round: Option<crate::learn::RoundReport>,
    /// The last round of every scope on this replica.
    pub rounds: std::collections::BTreeMap<String, crate::learn::RoundReport>,
}

/// Why the pipeline is not ready (the body of a failing `/readyz`), or why it is not live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady(pub String);

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Default)]
struct ConsumerState {
    joined: bool,
    stats: BTreeMap<PartitionId, PartitionStats>,
}

/// The shared view and controls of one pipeline.
pub struct Monitor {
    pub metrics: Metrics,
    instance: String,
    consumer_group: String,
    started_at: Instant,
    started_ms: i64,
    phase: Mutex<Phase>,
    model: Mutex<Option<ModelStatus>>,
    consumer: Mutex<ConsumerState>,
    /// The operator pause; ingest watches it.
    pause: watch::Sender<bool>,
    progress: OnceLock<ProgressProbe>,
    /// Asks the root of the actor tree whether it is up.
    tree: OnceLock<TreeProbe>,
    /// Heads and the trainer, once the pipeline runs (for the status and admin endpoints).
    learning: OnceLock<Arc<Learning>>,
    /// Last time (ms since start) the consumer was seen serving its client (statistics are
    /// delivered from its poll), or 0 before the first time.
    consumer_heartbeat_ms: AtomicI64,
    /// How long the consumer may go unseen before the pipeline is reported not live.
    liveness_timeout: Duration,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("instance", &self.instance)
            .field("phase", &self.phase())
            .finish_non_exhaustive()
    }
}

impl Monitor {
    /// A monitor for a pipeline about to start. `liveness_timeout` bounds how long the
    /// consumer may go without serving its client (zero: not checked).
    pub fn new(instance: &str, consumer_group: &str, liveness_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            metrics: Metrics::new(),
            instance: instance.to_owned(),
            consumer_group: consumer_group.to_owned(),
            started_at: Instant::now(),
            started_ms: now_ms(),
            phase: Mutex::new(Phase::Starting),
            model: Mutex::new(None),
            consumer: Mutex::new(ConsumerState::default()),
            pause: watch::Sender::new(false),
            progress: OnceLock::new(),
            tree: OnceLock::new(),
            learning: OnceLock::new(),
            consumer_heartbeat_ms: AtomicI64::new(0),
            liveness_timeout,
        })
    }

    pub fn phase(&self) -> Phase {
        *lock(&self.phase)
    }

    pub fn set_phase(&self, phase: Phase) {
        let mut current = lock(&self.phase);
        // A failure is final: a later clean stop must not hide it.
        if *current != Phase::Failed {
            *current = phase;
        }
    }

    /// Records the model in use, also as the `tessera_model_info` metric.
    pub fn set_model(&self, model: ModelStatus) {
        self.metrics.set_model(
            &model.name,
            &model.version,
            model.head_version.as_deref().unwrap_or("base"),
            &model.execution_provider,
        );
        *lock(&self.model) = Some(model);
    }

    /// Records the heads live now: every scope's version in the metrics, the global one in
    /// the status and the `tessera_model_info` metric.
    pub fn set_live_heads(&self, heads: &crate::learn::LiveHeads) {
        for (scope, version) in heads.versions() {
            self.metrics.set_head_live_version(&scope, version);
        }
        let version = heads
            .get(tessera_operators::scopes::GLOBAL_SCOPE)
            .map(|h| h.version());
        if let Some(mut model) = self.model() {
            model.head_version = version.map(|v| v.to_string());
            self.set_model(model);
        }
    }

    pub fn model(&self) -> Option<ModelStatus> {
        lock(&self.model).clone()
    }

    /// Gives the monitor the ledger's view of the partitions (once, at start).
    pub(crate) fn attach_progress(&self, probe: ProgressProbe) {
        let _ = self.progress.set(probe);
    }

    /// Gives the monitor a probe of the actor tree's root (once, at start).
    pub(crate) fn attach_tree(&self, probe: TreeProbe) {
        let _ = self.tree.set(probe);
    }

    fn progress(&self) -> Vec<PartitionProgress> {
        self.progress.get().map(|probe| probe()).unwrap_or_default()
    }

    /// The consumer joined its group and got `partitions` (possibly none: idle).
    pub(crate) fn partitions_assigned(&self, partitions: &[PartitionId]) {
        let mut consumer = lock(&self.consumer);
        consumer.joined = true;
        for partition in partitions {
            consumer.stats.entry(partition.clone()).or_default();
        }
        self.count_assigned(&consumer);
    }

    /// The assignment gauges: partitions held, and whether this member holds none.
    fn count_assigned(&self, consumer: &ConsumerState) {
        let held = consumer.stats.len() as i64;
        self.metrics.partitions_assigned.set(held);
        self.metrics
            .idle_member
            .set(i64::from(consumer.joined && held == 0));
    }

    /// The consumer gave `partitions` up.
    pub(crate) fn partitions_revoked(&self, partitions: &[PartitionId]) {
        let mut consumer = lock(&self.consumer);
        for partition in partitions {
            consumer.stats.remove(partition);
            self.metrics
                .forget_consumer_lag(&partition.topic, partition.partition);
        }
        self.count_assigned(&consumer);
    }

    /// The committed offsets from librdkafka's statistics; also a sign of life of the
    /// consumer (statistics are delivered from its poll).
    pub(crate) fn committed_offsets(&self, committed: Vec<(PartitionId, Option<i64>)>) {
        self.consumer_heartbeat();
        let mut consumer = lock(&self.consumer);
        for (partition, offset) in committed {
            // Only partitions still assigned: statistics may trail a revoke.
            if let Some(slot) = consumer.stats.get_mut(&partition) {
                slot.committed_offset = offset;
            }
        }
    }

    /// The broker's watermarks `(partition, low, high)` of assigned partitions. The lag is
    /// the high watermark minus where this consumer stands: its committable offset, else the
    /// committed one, else the low watermark (nothing processed yet). Queried rather than
    /// taken from fetch statistics, which go stale while partitions are paused.
    pub(crate) fn partition_watermarks(&self, watermarks: Vec<(PartitionId, i64, i64)>) {
        let progress = self.progress();
        let mut consumer = lock(&self.consumer);
        for (partition, low, high) in watermarks {
            let Some(slot) = consumer.stats.get_mut(&partition) else {
                continue;
            };
            let committable = progress
                .iter()
                .find(|p| p.partition == partition)
                .and_then(|p| p.committable);
            let position = committable.or(slot.committed_offset).unwrap_or(low);
            let lag = high.saturating_sub(position).max(0);
            slot.high_watermark = Some(high);
            slot.lag = Some(lag);
            self.metrics
                .set_consumer_lag(&partition.topic, partition.partition, lag);
        }
    }

    /// The consumer served its client just now.
    pub(crate) fn consumer_heartbeat(&self) {
        let since_start = self.started_at.elapsed().as_millis().max(1) as i64;
        self.consumer_heartbeat_ms
            .store(since_start, Ordering::Relaxed);
    }

    /// Pauses consumption (frames in flight still finish). Returns whether this changed it.
    pub fn pause(&self) -> bool {
        let changed = self
            .pause
            .send_if_modified(|paused| !std::mem::replace(paused, true));
        self.metrics.operator_paused.set(1);
        changed
    }

    /// Resumes consumption after [`Monitor::pause`]. Returns whether this changed it.
    pub fn resume(&self) -> bool {
        let changed = self
            .pause
            .send_if_modified(|paused| std::mem::replace(paused, false));
        self.metrics.operator_paused.set(0);
        changed
    }

    pub fn is_paused(&self) -> bool {
        *self.pause.borrow()
    }

    /// A receiver of the operator pause, for the consume loop.
    pub(crate) fn watch_pause(&self) -> watch::Receiver<bool> {
        self.pause.subscribe()
    }

    /// Liveness: the actor tree is up (or still starting, or draining) and its consumer has
    /// not gone silent.
    pub fn liveness(&self) -> Result<(), NotReady> {
        let phase = self.phase();
        if phase == Phase::Failed {
            return Err(NotReady("the pipeline failed".into()));
        }
        if phase == Phase::Running
            && let Some(tree_is_up) = self.tree.get()
            && !tree_is_up()
        {
            return Err(NotReady("the actor tree has stopped".into()));
        }
        if phase == Phase::Running && !self.liveness_timeout.is_zero() {
            let last = self.consumer_heartbeat_ms.load(Ordering::Relaxed);
            let now = self.started_at.elapsed().as_millis() as i64;
            // Before the first heartbeat, the start time counts as one.
            let silent = Duration::from_millis(now.saturating_sub(last).max(0) as u64);
            if silent > self.liveness_timeout {
                return Err(NotReady(format!(
                    "the Kafka consumer has not polled for {}s",
                    silent.as_secs()
                )));
            }
        }
        Ok(())
    }

    /// Readiness: running, the model loaded, and the consumer in its group (with partitions
    /// or idle because the group has more members than partitions).
    pub fn readiness(&self) -> Result<(), NotReady> {
        let phase = self.phase();
        if phase != Phase::Running {
            return Err(NotReady(format!("phase is {}", phase_name(phase))));
        }
        if lock(&self.model).is_none() {
            return Err(NotReady("the model is not loaded".into()));
        }
        if !lock(&self.consumer).joined {
            return Err(NotReady("the consumer has not joined its group yet".into()));
        }
        Ok(())
    }

    /// The status document.
    pub fn status(&self) -> StatusReport {
        let progress = self.progress();
        let consumer = lock(&self.consumer);
        let partitions = consumer
            .stats
            .iter()
            .map(|(id, stats)| {
                let progress = progress.iter().find(|p| &p.partition == id);
                PartitionStatus {
                    topic: id.topic.to_string(),
                    partition: id.partition,
                    generation: progress.map_or(0, |p| p.generation),
                    in_flight: progress.map_or(0, |p| p.in_flight),
                    oldest_in_flight_offset: progress.and_then(|p| p.oldest_in_flight),
                    committable_offset: progress.and_then(|p| p.committable),
                    committed_offset: stats.committed_offset,
                    high_watermark: stats.high_watermark,
                    lag: stats.lag,
                }
            })
            .collect();
        let consumer_joined = consumer.joined;
        drop(consumer);
        let metrics = &self.metrics;
        StatusReport {
            instance: self.instance.clone(),
            phase: self.phase(),
            live: self.liveness().is_ok(),
            ready: self.readiness().is_ok(),
            uptime_seconds: self.started_at.elapsed().as_secs_f64(),
            started_ms: self.started_ms,
            paused_by_operator: self.is_paused(),
            consumer_group: self.consumer_group.clone(),
            consumer_joined,
            frames_in_flight: progress.iter().map(|p| p.in_flight).sum(),
            partitions,
            model: self.model(),
            totals: Totals {
                frames_consumed: metrics.frames_consumed.get(),
                frames_published: metrics.frames_published.get(),
                frames_skipped: metrics.frames_skipped.get(),
                frames_dead_lettered: metrics.dead_lettered_total(),
                tiles_inferred: metrics.tiles_inferred.get(),
            },
            learning: self.learning().map(|learning| LearningStatus {
                live_head: learning
                    .heads
                    .live_version(tessera_operators::scopes::GLOBAL_SCOPE),
                live_heads: learning.heads.live_heads().versions(),
                head_versions: learning.heads.list().len(),
                trainer: learning.trainer.is_owner(),
                last_round: learning.trainer.last(),
                rounds: learning.trainer.reports(),
            }),
        }
    }

    /// Makes heads and the trainer reachable from the status and admin endpoints.
    pub fn attach_learning(&self, learning: Arc<Learning>) {
        let _ = self.learning.set(learning);
    }

    /// Heads and the trainer, when the model has an embedding and the pipeline started.
    pub fn learning(&self) -> Option<&Arc<Learning>> {
        self.learning.get()
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Starting => "starting",
        Phase::Running => "running",
        Phase::Draining => "draining",
        Phase::Stopped => "stopped",
        Phase::Failed => "failed",
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a thread panicked while holding it; the data stays valid.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelStatus {
        ModelStatus {
            name: "yolox-nano".into(),
            version: "1".into(),
            head_version: None,
            execution_provider: "cpu".into(),
            input: [416, 416],
            batch: "1".into(),
        }
    }

    fn partition(n: i32) -> PartitionId {
        PartitionId {
            topic: Arc::from("frames"),
            partition: n,
        }
    }

    #[test]
    fn ready_only_when_running_with_a_model_and_a_group() {
        let monitor = Monitor::new("t", "g", Duration::ZERO);
        assert!(monitor.readiness().is_err());
        monitor.set_model(model());
        monitor.set_phase(Phase::Running);
        let error = monitor.readiness().expect_err("not joined yet");
        assert!(error.0.contains("joined"), "{error}");
        // An empty assignment (more replicas than partitions) still counts as joined.
        monitor.partitions_assigned(&[]);
        assert!(monitor.readiness().is_ok());
        monitor.set_phase(Phase::Draining);
        assert!(monitor.readiness().is_err());
        assert!(monitor.liveness().is_ok());
    }

    #[test]
    fn a_failure_is_final_and_not_live() {
        let monitor = Monitor::new("t", "g", Duration::ZERO);
        monitor.set_phase(Phase::Failed);
        monitor.set_phase(Phase::Stopped);
        assert_eq!(monitor.phase(), Phase::Failed);
        assert!(monitor.liveness().is_err());
    }

    #[test]
    fn a_silent_consumer_is_not_live() {
        let monitor = Monitor::new("t", "g", Duration::from_millis(1));
        monitor.set_phase(Phase::Running);
        std::thread::sleep(Duration::from_millis(20));
        assert!(monitor.liveness().is_err());
        monitor.consumer_heartbeat();
        assert!(monitor.liveness().is_ok());
    }

    #[test]
    fn pause_and_resume_report_changes_and_reach_watchers() {
        let monitor = Monitor::new("t", "g", Duration::ZERO);
        let watcher = monitor.watch_pause();
        assert!(monitor.pause());
        assert!(!monitor.pause());
        assert!(*watcher.borrow());
        assert_eq!(monitor.metrics.operator_paused.get(), 1);
        assert!(monitor.resume());
        assert!(!*watcher.borrow());
        assert!(!monitor.status().paused_by_operator);
    }

    #[test]
    fn revoked_partitions_leave_the_status_and_the_lag_metric() {
        let monitor = Monitor::new("t", "g", Duration::ZERO);
        monitor.partitions_assigned(&[partition(0), partition(1)]);
        monitor.committed_offsets(vec![(partition(0), Some(4)), (partition(7), Some(1))]);
        monitor.partition_watermarks(vec![(partition(0), 0, 10), (partition(7), 0, 10)]);
        let status = monitor.status();
        assert_eq!(status.partitions.len(), 2);
        assert_eq!(status.partitions[0].lag, Some(6));
        assert_eq!(status.partitions[0].committed_offset, Some(4));
        assert_eq!(status.partitions[1].lag, None);
        assert_eq!(monitor.metrics.partitions_assigned.get(), 2);
        assert!(
            monitor.metrics.encode_text().contains(
                r#"tessera_ingest_consumer_lag_messages{partition="0",topic="frames"} 6"#
            )
        );
        monitor.partitions_revoked(&[partition(0)]);
        assert_eq!(monitor.status().partitions.len(), 1);
        assert!(!monitor.metrics.encode_text().contains("partition=\"0\""));
    }

    #[test]
    fn a_member_without_partitions_is_flagged_idle() {
        let monitor = Monitor::new("t", "g", Duration::ZERO);
        // Not a member yet: not idle either.
        assert_eq!(monitor.metrics.idle_member.get(), 0);
        monitor.partitions_assigned(&[]);
        assert_eq!(monitor.metrics.idle_member.get(), 1);
        monitor.partitions_assigned(&[partition(3)]);
        assert_eq!(monitor.metrics.idle_member.get(), 0);
        monitor.partitions_revoked(&[partition(3)]);
        assert_eq!(monitor.metrics.idle_member.get(), 1);
        assert!(
            monitor
                .metrics
                .encode_text()
                .contains("tessera_ingest_idle_member 1")
        );
    }
}
