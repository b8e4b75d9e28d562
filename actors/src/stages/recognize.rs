//! Recognize: batches tiles across frames and runs them through ONNX Runtime. One dedicated
//! OS thread per session (`Session::run` takes `&mut self`), all taking batches from one
//! shared queue, so whichever session is free runs the next batch; a session stays on its
//! thread, with no hop through a thread pool between model runs. A batching thread turns the
//! incoming tiles into batches with the pure [`Batcher`] (full, or due after
//! `recognize.max_batch_delay`), copying each tile into the batch's pooled tensor. The stage
//! is an actor so the supervisor restarts it (with fresh threads) if a thread dies.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ort::environment::Environment;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tessera_models::{BatchDim, Head, Model, ModelError, ModelSession, SessionConfig, TileOutput};
use tessera_operators::batching::Batcher;
use tokio::sync::OwnedSemaphorePermit;

use crate::observe::{LOG_INTERVAL, Monitor, Queue, Step, Throttle};
use crate::protocol::messages::{Prepared, PreparedTile, Recognized, TileOutputs};
use crate::protocol::tensor::{PooledTensor, TensorPool};
use crate::protocol::{AckHandle, DeadLetterKind, FrameKey, Rejection, StageFailure, StageId};
use crate::stage::{ChildSpec, Edge, FailureReporter, StageThreads};

static MODEL_FAILED: Throttle = Throttle::new(LOG_INTERVAL);

/// What recognize needs to (re)build its sessions.
#[derive(Debug, Clone)]
pub struct RecognizeSettings {
    pub env: Arc<Environment>,
    pub model: Arc<Model>,
    pub session: SessionConfig,
    /// Sessions, each on its own thread (`recognize.workers`).
    pub workers: usize,
    /// The model's batch dimension (probed at start).
    pub batch_dim: BatchDim,
    /// Most tiles per run (`recognize.max_batch`) for a dynamic batch dimension.
    pub max_batch: usize,
    /// Longest a batch that is not full waits for more tiles.
    pub max_batch_delay: Duration,
    /// Batch input tensors, reused.
    pub tensors: TensorPool,
    /// Test hook: panic on every Nth model run (`recognize.panic_every_nth_batch`).
    pub fault: Option<Arc<InjectedFault>>,
    pub monitor: Arc<Monitor>,
}

impl RecognizeSettings {
    /// Slots of one model run: the model's fixed batch, else `max_batch`.
    pub fn batch_capacity(&self) -> usize {
        batch_capacity(self.batch_dim, self.max_batch)
    }
}

/// Slots of one model run: the model's fixed batch, else `max_batch`.
pub fn batch_capacity(batch_dim: BatchDim, max_batch: usize) -> usize {
    match batch_dim {
        BatchDim::Fixed(n) => n.max(1),
        BatchDim::Dynamic => max_batch.max(1),
    }
}

/// The supervisor's entry for recognize. `input` is the receiving end of the queue from
/// prepare: it outlives the stage, so tiles wait through a restart.
pub fn child(
    settings: RecognizeSettings,
    input: Receiver<Prepared>,
    out: Edge<Recognized>,
) -> ChildSpec {
    ChildSpec::actor(StageId::Recognize, RecognizePool, move |ctx| {
        RecognizeArgs {
            settings: settings.clone(),
            input: input.clone(),
            out: out.clone(),
            failures: ctx.failures.clone(),
            threads: ctx.threads.clone(),
        }
    })
}

/// Replaces the classifications of every tile whose frame pinned a head with the head's, from
/// the tile's embedding: one head computation per head in the batch (normally one).
fn apply_heads(
    slots: &[TileSlot],
    outputs: &mut [TileOutput],
    top_k: usize,
) -> Result<(), ModelError> {
    let mut done = vec![false; slots.len()];
    for first in 0..slots.len() {
        let Some(head) = slots[first].head.as_ref().filter(|_| !done[first]) else {
            continue;
        };
        let members: Vec<usize> = (first..slots.len())
            .filter(|&i| !done[i] && slots[i].head.as_ref().is_some_and(|h| Arc::ptr_eq(h, head)))
            .collect();
        let mut embeddings = Vec::with_capacity(members.len() * head.meta().embedding_dim);
        for &i in &members {
            embeddings.extend_from_slice(&outputs[i].embedding);
        }
        if embeddings.len() != members.len() * head.meta().embedding_dim {
            return Err(ModelError::Shape(format!(
                "head v{} reads {}-d embeddings; the model gave {} values for {} tiles",
                head.version(),
                head.meta().embedding_dim,
                embeddings.len(),
                members.len()
            )));
        }
        for (&i, classes) in members.iter().zip(head.classify(&embeddings, top_k)?) {
            outputs[i].classifications = classes;
            done[i] = true;
        }
    }
    Ok(())
}

/// A deliberate, counted panic for fault-injection tests.
#[derive(Debug)]
pub struct InjectedFault {
    pub every_nth: u64,
    /// Model runs so far.
    pub runs: AtomicU64,
}

impl InjectedFault {
    pub fn every(every_nth: u64) -> Self {
        Self {
            every_nth,
            runs: AtomicU64::new(0),
        }
    }

    fn maybe_panic(&self) {
        let run = self.runs.fetch_add(1, Ordering::Relaxed) + 1;
        if self.every_nth > 0 && run.is_multiple_of(self.every_nth) {
            panic!("injected fault: panic on model run {run}");
        }
    }
}

/// Which tile of which frame a batch slot holds.
#[derive(Debug, Clone)]
struct TileSlot {
    frame: AckHandle,
    /// The head pinned on the frame.
    head: Option<Arc<Head>>,
    /// Tile index within the frame.
    tile: usize,
    /// Time spent preparing this tile.
    preprocess: Duration,
}

/// Tiles of one or more frames in one input tensor: one model run.
#[derive(Debug)]
struct TileBatch {
    /// What the batch's first `slots.len()` slots hold, in order.
    slots: Vec<TileSlot>,
    /// NCHW input, `batch` slots.
    tensor: PooledTensor,
    /// The batch dimension of `tensor` (may exceed `slots.len()` for fixed-batch models).
    batch: usize,
    /// When the batch was queued for a session.
    queued_at: Instant,
    /// Tile credits, returned when the batch is dropped (after its model run).
    _credits: Option<OwnedSemaphorePermit>,
}

/// Messages of the recognize pool.
#[derive(Debug)]
pub enum RecognizeMsg {
    /// A thread stopped on its own (its session could not be replaced): the stage fails and
    /// the supervisor restarts it.
    ThreadLost(StageFailure),
}

/// The recognize actor.
#[derive(Debug, Clone, Copy)]
pub struct RecognizePool;

/// Start arguments of [`RecognizePool`].
#[derive(Debug)]
pub struct RecognizeArgs {
    settings: RecognizeSettings,
    input: Receiver<Prepared>,
    out: Edge<Recognized>,
    failures: FailureReporter,
    threads: StageThreads,
}

/// The running threads, which stop when `stop` is dropped.
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
        let (batches, queued) = crossbeam_channel::unbounded::<TileBatch>();
        let mut state = RecognizeState {
            stop: Some(stop),
            threads: Vec::new(),
        };
        let mut ready = Vec::new();
        for index in 0..args.settings.workers.max(1) {
            let (loaded, load_outcome) = tokio::sync::oneshot::channel();
            let thread = SessionThread {
                settings: args.settings.clone(),
                out: args.out.clone(),
                failures: args.failures.clone(),
                pool: myself.clone(),
                batches: queued.clone(),
                stopped: stopped.clone(),
            };
            state.threads.push(
                args.threads
                    .spawn(format!("tessera-recognize-{index}"), move || {
                        thread.run(loaded)
                    })?,
            );
            ready.push(load_outcome);
        }
        for outcome in ready {
            let loaded = match outcome.await {
                Ok(loaded) => loaded,
                Err(_) => Err(StageFailure::internal(
                    StageId::Recognize,
                    "session thread ended while loading",
                )),
            };
            if let Err(failure) = loaded {
                stop_threads(&mut state).await;
                return Err(failure.into());
            }
        }
        let batching = BatchingThread {
            batcher: Batcher::new(
                args.settings.batch_capacity(),
                args.settings.max_batch_delay,
            ),
            open: None,
            settings: args.settings,
            input: args.input,
            batches,
            out: args.out,
            stopped,
        };
        state.threads.push(
            args.threads
                .spawn("tessera-batching".into(), move || batching.run())?,
        );
        tracing::debug!(
            sessions = state.threads.len() - 1,
            "Recognize sessions ready"
        );
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<RecognizeMsg>,
        message: RecognizeMsg,
        _state: &mut RecognizeState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RecognizeMsg::ThreadLost(failure) => Err(failure.into()),
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

/// Stops the threads and waits for each to finish its current run.
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
        tracing::warn!(%error, "Could not join the recognize threads");
    }
}

/// The batch being filled: its tensor and the tile credits of its slots.
#[derive(Debug)]
struct OpenTensor {
    tensor: PooledTensor,
    credits: Option<OwnedSemaphorePermit>,
}

/// Turns incoming tiles into batches; forwards everything else to merge.
struct BatchingThread {
    settings: RecognizeSettings,
    batcher: Batcher<TileSlot>,
    open: Option<OpenTensor>,
    input: Receiver<Prepared>,
    batches: Sender<TileBatch>,
    out: Edge<Recognized>,
    /// Disconnected when the stage stops.
    stopped: Receiver<()>,
}

impl BatchingThread {
    fn run(mut self) {
        loop {
            let timeout = self
                .batcher
                .deadline()
                .map(|deadline| deadline.saturating_duration_since(Instant::now()));
            let message = match timeout {
                Some(timeout) => crossbeam_channel::select! {
                    recv(self.input) -> message => message.ok(),
                    recv(self.stopped) -> _ => return,
                    default(timeout) => None,
                },
                None => crossbeam_channel::select! {
                    recv(self.input) -> message => match message {
                        Ok(message) => Some(message),
                        Err(_) => return,
                    },
                    recv(self.stopped) -> _ => return,
                },
            };
            match message {
                Some(Prepared::Layout(layout)) => self.forward(Recognized::Expect(layout)),
                Some(Prepared::Unprocessed(frame)) => self.forward(Recognized::Unprocessed(frame)),
                Some(Prepared::Tiles(chunk)) => {
                    for tile in chunk.tiles {
                        self.push(&chunk.frame, &chunk.head, tile);
                    }
                }
                None => {}
            }
            if let Some(slots) = self.batcher.poll(Instant::now()) {
                self.dispatch(slots);
            }
        }
    }

    fn forward(&self, message: Recognized) {
        if let Err(error) = self.out.send(message) {
            // The frame stays in flight: it is dispatched again once merge is back.
            tracing::debug!(%error, "Frame not handed on");
        }
    }

    /// Copies a tile into the open batch's next slot (a one-slot batch takes the tile's own
    /// tensor); dispatches the batch if it is full.
    fn push(&mut self, frame: &AckHandle, head: &Option<Arc<Head>>, tile: PreparedTile) {
        let capacity = self.batcher.capacity();
        let len = tile.tensor.len();
        let slot = self.batcher.len();
        let open = match self.open.take() {
            Some(mut open) => {
                open.tensor[slot * len..(slot + 1) * len].copy_from_slice(&tile.tensor);
                open
            }
            None if capacity == 1 => OpenTensor {
                tensor: tile.tensor,
                credits: None,
            },
            None => {
                let mut tensor = self.settings.tensors.take(capacity * len);
                tensor[..len].copy_from_slice(&tile.tensor);
                OpenTensor {
                    tensor,
                    credits: None,
                }
            }
        };
        let open = self.open.insert(open);
        if let Some(credit) = tile.credit {
            match &mut open.credits {
                Some(credits) => credits.merge(credit),
                None => open.credits = Some(credit),
            }
        }
        let slot = TileSlot {
            frame: frame.clone(),
            head: head.clone(),
            tile: tile.index,
            preprocess: tile.preprocess,
        };
        if let Some(slots) = self.batcher.push(slot, Instant::now()) {
            self.dispatch(slots);
        }
    }

    /// Hands a batch to the sessions: a fixed batch keeps its size (unused slots zeroed), a
    /// dynamic one shrinks to its tiles.
    fn dispatch(&mut self, slots: Vec<TileSlot>) {
        let Some(OpenTensor {
            mut tensor,
            credits,
        }) = self.open.take()
        else {
            return;
        };
        let capacity = self.batcher.capacity();
        let tensor_len = tensor.len() / capacity;
        let filled = slots.len();
        let batch = match self.settings.batch_dim {
            BatchDim::Fixed(n) => {
                tensor[filled * tensor_len..].fill(0.0);
                n.max(1)
            }
            BatchDim::Dynamic => {
                tensor.truncate(filled * tensor_len);
                filled
            }
        };
        let batch = TileBatch {
            slots,
            tensor,
            batch,
            queued_at: Instant::now(),
            _credits: credits,
        };
        // Cannot fail while the sessions run: they hold the receiver.
        if self.batches.send(batch).is_ok() {
            self.settings
                .monitor
                .metrics
                .queue(Queue::Recognize)
                .pushed
                .inc();
        }
    }
}

/// One session's thread: loads and warms up its session, then runs batches until the stage
/// stops.
struct SessionThread {
    settings: RecognizeSettings,
    out: Edge<Recognized>,
    failures: FailureReporter,
    pool: ActorRef<RecognizeMsg>,
    batches: Receiver<TileBatch>,
    /// Disconnected when the stage stops.
    stopped: Receiver<()>,
}

impl SessionThread {
    fn run(self, loaded: tokio::sync::oneshot::Sender<Result<(), StageFailure>>) {
        let mut session = match new_session(&self.settings) {
            Ok(session) => session,
            Err(error) => {
                let _ = loaded.send(Err(session_failure(error)));
                return;
            }
        };
        tracing::debug!(provider = session.execution_provider(), "Session ready");
        if loaded.send(Ok(())).is_err() {
            return;
        }
        loop {
            let batch = crossbeam_channel::select! {
                recv(self.batches) -> batch => match batch {
                    Ok(batch) => batch,
                    Err(_) => return,
                },
                recv(self.stopped) -> _ => return,
            };
            if let Err(failure) = self.run_batch(&mut session, batch) {
                tracing::error!(failure = %tessera_models::error_chain(&failure), "Model session lost");
                let _ = self.pool.cast(RecognizeMsg::ThreadLost(failure));
                return;
            }
        }
    }

    /// Runs one batch and delivers its outputs. After a panicked run the session is replaced;
    /// an error means that failed too.
    fn run_batch(&self, session: &mut ModelSession, batch: TileBatch) -> Result<(), StageFailure> {
        let TileBatch {
            slots,
            tensor,
            batch: batch_size,
            queued_at,
            _credits: credits,
        } = batch;
        let metrics = &self.settings.monitor.metrics;
        metrics.queue(Queue::Recognize).popped.inc();
        metrics
            .stage(Step::QueueWait)
            .observe(queued_at.elapsed().as_secs_f64());
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if let Some(fault) = &self.settings.fault {
                fault.maybe_panic();
            }
            session.run(&tensor, batch_size)
        }));
        let elapsed = started.elapsed();
        // The tensor is consumed: let preparation fill the next one.
        drop((tensor, credits));
        match outcome {
            Ok(outcome) => {
                self.deliver(slots, outcome, elapsed);
                Ok(())
            }
            Err(panic) => {
                // Its frames go back for another attempt, on a new session (the panic may
                // have left this one inconsistent), and the supervisor counts the failure.
                let message = panic_message(panic.as_ref());
                tracing::warn!(error = %message, frames = slots.len(), "Model run panicked; retrying its frames on a new session");
                for frame in frames_of(&slots) {
                    frame.retry();
                }
                self.failures
                    .report(StageFailure::internal(StageId::Recognize, message));
                *session = new_session(&self.settings).map_err(session_failure)?;
                tracing::info!("Model session replaced after a panicked run");
                Ok(())
            }
        }
    }

    /// Sends a run's outputs to merge, split by frame; or the frames back for another
    /// attempt, or to the dead-letter topic, when the run failed.
    fn deliver(
        &self,
        slots: Vec<TileSlot>,
        outcome: Result<Vec<TileOutput>, ModelError>,
        elapsed: Duration,
    ) {
        let metrics = &self.settings.monitor.metrics;
        let top_k = self.settings.model.manifest.thresholds.top_k;
        let outcome = outcome.and_then(|mut outputs| {
            outputs.truncate(slots.len());
            apply_heads(&slots, &mut outputs, top_k)?;
            Ok(outputs)
        });
        match outcome {
            Ok(outputs) => {
                metrics
                    .stage(Step::Inference)
                    .observe(elapsed.as_secs_f64());
                metrics.tiles_inferred.inc_by(slots.len() as u64);
                metrics.batch_size.observe(slots.len() as f64);
                let filled = slots.len().max(1);
                for share in split_by_frame(slots, outputs) {
                    // A shared run's time is split by the frames' share of its tiles.
                    let inference = elapsed.mul_f64(share.tiles.len() as f64 / filled as f64);
                    self.forward(Recognized::Tiles(TileOutputs { inference, ..share }));
                }
            }
            Err(error) if error.is_retryable() => {
                if let Some(held_back) = MODEL_FAILED.allow() {
                    tracing::warn!(error = %error.detail(), held_back, "Model run failed; retrying the frames");
                }
                for frame in frames_of(&slots) {
                    frame.retry();
                }
            }
            Err(error) => {
                if let Some(held_back) = MODEL_FAILED.allow() {
                    tracing::warn!(error = %error.detail(), held_back, "Model run failed");
                }
                let kind =
                    DeadLetterKind::of_model(&error).unwrap_or(DeadLetterKind::ProcessingFailed);
                for frame in frames_of(&slots) {
                    self.forward(Recognized::TilesFailed {
                        frame: frame.key().clone(),
                        rejection: Rejection::new(kind, error.detail()),
                    });
                }
            }
        }
    }

    fn forward(&self, message: Recognized) {
        if let Err(error) = self.out.send(message) {
            // The frame stays in flight: it is dispatched again once merge is back.
            tracing::debug!(%error, "Model outputs not handed on");
        }
    }
}

/// A warmed-up session of the model.
fn new_session(settings: &RecognizeSettings) -> Result<ModelSession, ModelError> {
    let mut session = ModelSession::load(&settings.env, settings.model.clone(), &settings.session)?;
    warm_up(&mut session, settings.max_batch)?;
    Ok(session)
}

/// A session that cannot be loaded: a configuration or installation error is not worth a
/// restart; a run-time failure of ONNX Runtime may be.
fn session_failure(error: ModelError) -> StageFailure {
    StageFailure::in_domain(StageId::Recognize, error.origin().into(), error)
}

/// The text of a panic's payload.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "model run panicked".into())
}

/// Model runs on a blank input: ONNX Runtime allocates and plans on the first run of each
/// input shape, which would otherwise land on frames. A dynamic batch dimension is run at
/// every size up to `max_batch`, largest first, so its memory arena reaches its final size now
/// instead of growing each time a rarer partial batch comes along.
fn warm_up(session: &mut ModelSession, max_batch: usize) -> Result<(), ModelError> {
    let sizes: Vec<usize> = match session.batch_dim() {
        BatchDim::Fixed(n) => vec![n.max(1)],
        BatchDim::Dynamic => (1..=max_batch.max(1)).rev().collect(),
    };
    let blank = vec![0.0f32; sizes[0] * session.tensor_len()];
    for batch in sizes {
        session.run(&blank[..batch * session.tensor_len()], batch)?;
    }
    Ok(())
}

/// The distinct frames of a batch, in slot order.
fn frames_of(slots: &[TileSlot]) -> Vec<AckHandle> {
    let mut frames: Vec<AckHandle> = Vec::new();
    for slot in slots {
        if !frames.iter().any(|f| f.key() == slot.frame.key()) {
            frames.push(slot.frame.clone());
        }
    }
    frames
}

/// Groups a batch's outputs by frame, frames in slot order.
fn split_by_frame(slots: Vec<TileSlot>, outputs: Vec<TileOutput>) -> Vec<TileOutputs> {
    let mut shares: Vec<TileOutputs> = Vec::new();
    for (slot, output) in slots.into_iter().zip(outputs) {
        let key: &FrameKey = slot.frame.key();
        let index = match shares.iter().position(|s| &s.frame == key) {
            Some(index) => index,
            None => {
                shares.push(TileOutputs {
                    frame: key.clone(),
                    tiles: Vec::new(),
                    outputs: Vec::new(),
                    preprocess: Duration::ZERO,
                    inference: Duration::ZERO,
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
    use tessera_operators::detection::Classification;

    use super::*;
    use crate::protocol::PartitionId;

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
            frame: AckHandle::detached(key(seq)),
            head: None,
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
        let frames: Vec<FrameKey> = frames_of(&slots).iter().map(|f| f.key().clone()).collect();
        assert_eq!(frames, vec![key(1), key(2)]);
        let shares = split_by_frame(slots, outputs);
        assert_eq!(shares.len(), 2);
        assert_eq!(shares[0].tiles, vec![5, 6]);
        assert_eq!(shares[0].preprocess, Duration::from_millis(2));
        assert_eq!(shares[1].tiles, vec![0]);
        assert_eq!(shares[1].outputs[0].classifications[0].class_id, 2);
    }
}
