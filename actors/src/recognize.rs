//! Recognize pool: one dedicated OS thread per ONNX Runtime session (`Session::run` takes
//! `&mut self`), all taking tile batches from one shared queue, so whichever session is free
//! runs the next batch. A session stays on its thread: no hop through a thread pool or the
//! actor system between model runs, which on a small machine costs idle cores and cache.
//! The pool is an actor so the supervisor restarts it (with fresh threads) if a thread dies.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ort::environment::Environment;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tessera_models::{Model, ModelSession, SessionConfig, TileOutput};

use crate::frame::FrameKey;
use crate::ingest::IngestMsg;
use crate::merge::MergeMsg;
use crate::metrics::{Queue, Stage};
use crate::monitor::Monitor;
use crate::names::{ActorNames, lookup, lookup_patiently_blocking};
use crate::tensor_pool::PooledTensor;
use crate::throttle::{LOG_INTERVAL, Throttle};
static MODEL_FAILED: Throttle = Throttle::new(LOG_INTERVAL);

/// Which tile of which frame a batch slot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileSlot {
    pub frame: FrameKey,
    /// Tile index within the frame.
    pub tile: usize,
    /// Time spent preparing this tile (crop, resize, normalise).
    pub preprocess: Duration,
}

/// Tiles of one or more consecutive frames, preprocessed into one input tensor.
#[derive(Debug)]
pub struct TileBatch {
    /// What the batch's first `slots.len()` slots hold, in order.
    pub slots: Vec<TileSlot>,
    /// NCHW input, `batch` slots, from the preparation's buffer pool.
    pub tensor: PooledTensor,
    /// The batch dimension of `tensor` (may exceed `slots.len()` for fixed-batch models).
    pub batch: usize,
    /// When the batch was handed to the pool (queue wait = until a worker takes it).
    pub queued_at: Instant,
    /// Tile credits, returned when the batch is dropped (after its model run).
    pub _credit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// The queue from preparation to the recognize pool. It outlives the pool's actor, so batches
/// wait through a pool restart instead of being lost. Its length is bounded by the tile
/// credits the batches hold, not by the channel.
#[derive(Debug, Clone)]
pub struct BatchQueue {
    sender: Sender<TileBatch>,
    receiver: Receiver<TileBatch>,
}

impl Default for BatchQueue {
    fn default() -> Self {
        let (sender, receiver) = crossbeam_channel::unbounded();
        BatchQueue { sender, receiver }
    }
}

impl BatchQueue {
    /// Hands a batch to the pool.
    pub fn send(&self, batch: TileBatch, monitor: &Monitor) {
        // Cannot fail: the queue holds its own receiver.
        if self.sender.send(batch).is_ok() {
            monitor.metrics.queue(Queue::Recognize).pushed.inc();
        }
    }
}

/// Messages of the recognize pool.
#[derive(Debug)]
pub enum RecognizeMsg {
    /// A session thread stopped on its own (its session could not be replaced): the pool
    /// fails, and the supervisor restarts it.
    SessionLost(String),
}

/// The recognize pool actor.
#[derive(Debug)]
pub struct RecognizePool;

/// What the pool needs to (re)build its sessions.
#[derive(Debug, Clone)]
pub struct RecognizeArgs {
    pub env: Arc<Environment>,
    pub model: Arc<Model>,
    pub session: SessionConfig,
    /// Sessions, each on its own thread (`recognize.workers`).
    pub workers: usize,
    /// Most tiles per run (`recognize.max_batch`), for warming up a dynamic batch dimension.
    pub max_batch: usize,
    pub batches: BatchQueue,
    pub names: ActorNames,
    /// Test hook: panic on every Nth model run of the pool (`recognize.panic_every_nth_batch`).
    pub fault: Option<Arc<InjectedFault>>,
    pub monitor: Arc<Monitor>,
}

/// A deliberate, counted panic for fault-injection tests.
#[derive(Debug)]
pub struct InjectedFault {
    pub every_nth: u64,
    /// Model runs of the pool so far.
    pub runs: AtomicU64,
}

impl InjectedFault {
    fn maybe_panic(&self) {
        let run = self.runs.fetch_add(1, Ordering::Relaxed) + 1;
        if self.every_nth > 0 && run.is_multiple_of(self.every_nth) {
            panic!("injected fault: panic on model run {run}");
        }
    }
}

/// State of the pool: its session threads, which stop when `stop` is dropped.
#[derive(Debug)]
pub struct RecognizeState {
    stop: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Actor for RecognizePool {
    type Msg = RecognizeMsg;
    type State = RecognizeState;
    type Arguments = RecognizeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RecognizeMsg>,
        args: RecognizeArgs,
    ) -> Result<RecognizeState, ActorProcessingErr> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let mut threads = Vec::with_capacity(args.workers);
        let mut ready = Vec::with_capacity(args.workers);
        for index in 0..args.workers.max(1) {
            let (loaded, load_outcome) = tokio::sync::oneshot::channel();
            let thread = SessionThread {
                args: args.clone(),
                pool: myself.clone(),
                stopped: stopped.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("tessera-recognize-{index}"))
                .spawn(move || thread.run(loaded))?;
            threads.push(handle);
            ready.push(load_outcome);
        }
        let mut state = RecognizeState {
            stop: Some(stop),
            threads,
        };
        for outcome in ready {
            let loaded = outcome
                .await
                .map_err(|_| ActorProcessingErr::from("session thread ended while loading"))
                .and_then(|loaded| loaded.map_err(ActorProcessingErr::from));
            if let Err(error) = loaded {
                stop_threads(&mut state).await;
                return Err(error);
            }
        }
        tracing::debug!(sessions = state.threads.len(), "Recognize sessions ready");
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<RecognizeMsg>,
        message: RecognizeMsg,
        _state: &mut RecognizeState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RecognizeMsg::SessionLost(reason) => Err(reason.into()),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<RecognizeMsg>,
        state: &mut RecognizeState,
    ) -> Result<(), ActorProcessingErr> {
        stop_threads(state).await;
        Ok(())
    }
}

/// Stops the session threads and waits for each to finish its current run.
async fn stop_threads(state: &mut RecognizeState) {
    drop(state.stop.take());
    let threads = std::mem::take(&mut state.threads);
    let joined = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await;
    if let Err(error) = joined {
        tracing::warn!(%error, "Could not join the session threads");
    }
}

/// One session's thread: loads and warms up its session, then runs batches from the queue
/// until the pool stops.
struct SessionThread {
    args: RecognizeArgs,
    pool: ActorRef<RecognizeMsg>,
    /// Disconnected when the pool stops.
    stopped: Receiver<()>,
}

impl SessionThread {
    fn run(self, loaded: tokio::sync::oneshot::Sender<Result<(), String>>) {
        let mut session = match new_session(&self.args) {
            Ok(session) => session,
            Err(error) => {
                let _ = loaded.send(Err(error.to_string()));
                return;
            }
        };
        tracing::debug!(provider = session.execution_provider(), "Session ready");
        if loaded.send(Ok(())).is_err() {
            return;
        }
        let batches = self.args.batches.receiver.clone();
        loop {
            let batch = crossbeam_channel::select! {
                recv(batches) -> batch => match batch {
                    Ok(batch) => batch,
                    Err(_) => return,
                },
                recv(self.stopped) -> _ => return,
            };
            if let Err(error) = self.run_batch(&mut session, batch) {
                tracing::error!(%error, "Model session lost");
                let _ = self.pool.cast(RecognizeMsg::SessionLost(error));
                return;
            }
        }
    }

    /// Runs one batch and delivers its outputs. After a panicked run the session is replaced;
    /// an error means that failed too.
    fn run_batch(&self, session: &mut ModelSession, batch: TileBatch) -> Result<(), String> {
        let TileBatch {
            slots,
            tensor,
            batch: batch_size,
            queued_at,
            _credit: credit,
        } = batch;
        let metrics = &self.args.monitor.metrics;
        metrics.queue(Queue::Recognize).popped.inc();
        metrics
            .stage(Stage::QueueWait)
            .observe(queued_at.elapsed().as_secs_f64());
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if let Some(fault) = &self.args.fault {
                fault.maybe_panic();
            }
            session.run(&tensor, batch_size)
        }));
        let elapsed = started.elapsed();
        // The tensor is consumed: let preparation fill the next one.
        drop((tensor, credit));
        match outcome {
            Ok(outcome) => {
                deliver(&self.args, slots, outcome, elapsed);
                Ok(())
            }
            Err(panic) => {
                // Its frames go back for another attempt, on a new session (the panic may
                // have left this one inconsistent), as a restarted worker would.
                crate::recovery::stage_failed(
                    &self.args.names,
                    &frames_of(&slots),
                    "recognize",
                    &panic_message(panic.as_ref()),
                );
                *session = new_session(&self.args).map_err(|e| e.to_string())?;
                tracing::info!("Model session replaced after a panicked run");
                Ok(())
            }
        }
    }
}

/// A warmed-up session of the pool's model.
fn new_session(args: &RecognizeArgs) -> Result<ModelSession, tessera_models::ModelError> {
    let mut session = ModelSession::load(&args.env, args.model.clone(), &args.session)?;
    warm_up(&mut session, args.max_batch)?;
    Ok(session)
}

/// The text of a panic's payload.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "model run panicked".into())
}

/// Sends a run's outputs to merge, split by frame; or the frames back for another attempt,
/// or to the dead-letter topic, when the run failed.
fn deliver(
    args: &RecognizeArgs,
    slots: Vec<TileSlot>,
    outcome: Result<Vec<TileOutput>, tessera_models::ModelError>,
    elapsed: Duration,
) {
    let names = &args.names;
    let Some(merge) =
        lookup_patiently_blocking::<MergeMsg>(&names.merge(), Duration::from_secs(30))
    else {
        // The frames stay in flight; the frame timeout re-dispatches them.
        tracing::error!("Merge actor unavailable; model outputs dropped");
        return;
    };
    let metrics = &args.monitor.metrics;
    match outcome {
        Ok(mut outputs) => {
            outputs.truncate(slots.len());
            metrics
                .stage(Stage::Inference)
                .observe(elapsed.as_secs_f64());
            metrics.tiles_inferred.inc_by(slots.len() as u64);
            metrics.batch_size.observe(slots.len() as f64);
            let filled = slots.len().max(1);
            for share in split_by_frame(slots, outputs) {
                // A shared run's time is split by the frames' share of its tiles.
                let inference = elapsed.mul_f64(share.tiles.len() as f64 / filled as f64);
                let _ = merge.cast(MergeMsg::Tiles {
                    frame: share.frame,
                    tiles: share.tiles,
                    outputs: share.outputs,
                    preprocess: share.preprocess,
                    inference,
                });
            }
        }
        Err(error) if error.is_retryable() => {
            if let Some(held_back) = MODEL_FAILED.allow() {
                tracing::warn!(%error, held_back, "Model run failed; retrying the frames");
            }
            redispatch(names, &frames_of(&slots));
        }
        Err(error) => {
            if let Some(held_back) = MODEL_FAILED.allow() {
                tracing::warn!(%error, held_back, "Model run failed");
            }
            for frame in frames_of(&slots) {
                let _ = merge.cast(MergeMsg::TilesFailed {
                    frame,
                    kind: error.kind(),
                    message: error.to_string(),
                });
            }
        }
    }
}

/// Hands frames back to ingest for another attempt.
fn redispatch(names: &ActorNames, frames: &[FrameKey]) {
    if let Some(ingest) = lookup::<IngestMsg>(&names.ingest()) {
        for frame in frames {
            let _ = ingest.cast(IngestMsg::Redispatch(frame.clone()));
        }
    }
}

/// Model runs on a blank input: ONNX Runtime allocates and plans on the first run of each
/// input shape, which would otherwise land on frames. A dynamic batch dimension is run at
/// every size up to `max_batch`, largest first, so its memory arena reaches its final size now
/// instead of growing each time a rarer partial batch comes along.
fn warm_up(session: &mut ModelSession, max_batch: usize) -> Result<(), tessera_models::ModelError> {
    let sizes: Vec<usize> = match session.batch_dim() {
        tessera_models::BatchDim::Fixed(n) => vec![n.max(1)],
        tessera_models::BatchDim::Dynamic => (1..=max_batch.max(1)).rev().collect(),
    };
    let blank = vec![0.0f32; sizes[0] * session.tensor_len()];
    for batch in sizes {
        session.run(&blank[..batch * session.tensor_len()], batch)?;
    }
    Ok(())
}

/// The distinct frames of a batch, in slot order.
fn frames_of(slots: &[TileSlot]) -> Vec<FrameKey> {
    let mut frames: Vec<FrameKey> = Vec::new();
    for slot in slots {
        if !frames.contains(&slot.frame) {
            frames.push(slot.frame.clone());
        }
    }
    frames
}

/// One frame's part of a batch.
#[derive(Debug)]
struct FrameShare {
    frame: FrameKey,
    tiles: Vec<usize>,
    outputs: Vec<TileOutput>,
    /// Preparation time of these tiles.
    preprocess: Duration,
}

/// Groups a batch's outputs by frame, frames in slot order.
fn split_by_frame(slots: Vec<TileSlot>, outputs: Vec<TileOutput>) -> Vec<FrameShare> {
    let mut shares: Vec<FrameShare> = Vec::new();
    for (slot, output) in slots.into_iter().zip(outputs) {
        let index = match shares.iter().position(|s| s.frame == slot.frame) {
            Some(index) => index,
            None => {
                shares.push(FrameShare {
                    frame: slot.frame,
                    tiles: Vec::new(),
                    outputs: Vec::new(),
                    preprocess: Duration::ZERO,
                });
                shares.len() - 1
            }
        };
        let share = &mut shares[index];
        share.tiles.push(slot.tile);
        share.outputs.push(output);
        share.preprocess += slot.preprocess;
    }
    shares
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tessera_operators::detection::Classification;

    use super::*;
    use crate::frame::PartitionId;

    fn key(seq: u64) -> FrameKey {
        FrameKey {
            partition: PartitionId {
                topic: Arc::from("frames"),
                partition: 0,
            },
            generation: 1,
            seq,
            offset: seq as i64,
        }
    }

    #[test]
    fn outputs_go_back_to_their_frames() {
        let slot = |seq, tile| TileSlot {
            frame: key(seq),
            tile,
            preprocess: Duration::from_millis(1),
        };
        let slots = vec![slot(1, 5), slot(1, 6), slot(2, 0)];
        let outputs = (0..3)
            .map(|class_id| TileOutput {
                classifications: vec![Classification {
                    class_id,
                    score: 1.0,
                }],
                ..TileOutput::default()
            })
            .collect();
        assert_eq!(frames_of(&slots), vec![key(1), key(2)]);
        let shares = split_by_frame(slots, outputs);
        assert_eq!(shares.len(), 2);
        assert_eq!(shares[0].tiles, vec![5, 6]);
        assert_eq!(shares[0].preprocess, Duration::from_millis(2));
        assert_eq!(shares[1].tiles, vec![0]);
        assert_eq!(shares[1].outputs[0].classifications[0].class_id, 2);
    }
}
