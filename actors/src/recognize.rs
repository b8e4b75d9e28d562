//! Recognize pool: a ractor factory whose workers each own an ONNX Runtime session
//! (`Session::run` takes `&mut self`). Model runs happen on blocking threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ort::environment::Environment;
use ractor::factory::{FactoryMessage, FactoryRef, Job, Worker, WorkerId};
use ractor::{ActorProcessingErr, ActorRef};
use tessera_models::{Model, ModelSession, SessionConfig};

use crate::frame::FrameKey;
use crate::ingest::IngestMsg;
use crate::merge::MergeMsg;
use crate::metrics::{Queue, Stage};
use crate::monitor::Monitor;
use crate::names::{ActorNames, lookup, lookup_patiently};
use crate::throttle::{LOG_INTERVAL, Throttle};

static MODEL_FAILED: Throttle = Throttle::new(LOG_INTERVAL);

/// A group of tiles of one frame, preprocessed into one input tensor.
#[derive(Debug)]
pub struct TileBatch {
    pub frame: FrameKey,
    /// Tile indices (within the frame) of the batch's first `tiles.len()` slots.
    pub tiles: Vec<usize>,
    /// NCHW input, `batch` slots.
    pub tensor: Vec<f32>,
    /// The batch dimension of `tensor` (may exceed `tiles.len()` for fixed-batch models).
    pub batch: usize,
    /// When the batch was handed to the pool (queue wait = until a worker takes it).
    pub queued_at: Instant,
    /// Tile credits, returned when the batch is dropped (after its model run).
    pub _credit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Messages of the recognize factory.
pub type RecognizeMsg = FactoryMessage<(), TileBatch>;
/// Reference to the recognize factory.
pub type RecognizeRef = FactoryRef<(), TileBatch>;

/// One recognize worker.
#[derive(Debug)]
pub struct RecognizeWorker {
    pub env: Arc<Environment>,
    pub model: Arc<Model>,
    pub session: SessionConfig,
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

/// State of a recognize worker.
pub struct RecognizeState {
    /// Taken while a model run is in progress on a blocking thread.
    session: Option<ModelSession>,
}

impl std::fmt::Debug for RecognizeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecognizeState").finish_non_exhaustive()
    }
}

impl Worker for RecognizeWorker {
    type Key = ();
    type Message = TileBatch;
    type Arguments = ();
    type State = RecognizeState;

    async fn pre_start(
        &self,
        wid: WorkerId,
        _factory: &ActorRef<RecognizeMsg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        let (env, model, config) = (self.env.clone(), self.model.clone(), self.session.clone());
        let session =
            tokio::task::spawn_blocking(move || ModelSession::load(&env, model, &config)).await??;
        tracing::debug!(
            worker = wid,
            provider = session.execution_provider(),
            "Session ready"
        );
        Ok(RecognizeState {
            session: Some(session),
        })
    }

    async fn handle(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<RecognizeMsg>,
        Job {
            key, msg: batch, ..
        }: Job<(), TileBatch>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let mut session = state
            .session
            .take()
            .ok_or("session lost by an earlier failure")?;
        let TileBatch {
            frame,
            tiles,
            tensor,
            batch: batch_size,
            queued_at,
            _credit: credit,
        } = batch;
        let metrics = &self.monitor.metrics;
        metrics.queue(Queue::Recognize).popped.inc();
        metrics
            .stage(Stage::QueueWait)
            .observe(queued_at.elapsed().as_secs_f64());
        let fault = self.fault.clone();
        let run = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            if let Some(fault) = &fault {
                fault.maybe_panic();
            }
            let outcome = session.run(&tensor, batch_size);
            // The tensor is consumed: let preparation fill the next one.
            drop((tensor, credit));
            (session, outcome, started.elapsed())
        })
        .await;
        let (session, outcome, elapsed) = match run {
            Ok(done) => done,
            Err(panicked) => {
                // The session went down with the panic; the worker restarts with a new one.
                crate::recovery::stage_failed(
                    &self.names,
                    &frame,
                    "recognize",
                    &panicked.to_string(),
                );
                return Err(panicked.into());
            }
        };
        state.session = Some(session);

        let merge = lookup_patiently::<MergeMsg>(&self.names.merge(), Duration::from_secs(30))
            .await
            .ok_or("merge actor unavailable")?;
        match outcome {
            Ok(mut outputs) => {
                outputs.truncate(tiles.len());
                metrics
                    .stage(Stage::Inference)
                    .observe(elapsed.as_secs_f64());
                metrics.tiles_inferred.inc_by(tiles.len() as u64);
                metrics.batch_size.observe(tiles.len() as f64);
                merge.cast(MergeMsg::Tiles {
                    frame,
                    tiles,
                    outputs,
                    inference: elapsed,
                })?;
            }
            Err(error) if error.is_retryable() => {
                if let Some(held_back) = MODEL_FAILED.allow() {
                    tracing::warn!(%error, held_back, "Model run failed; retrying the frame");
                }
                if let Some(ingest) = lookup::<IngestMsg>(&self.names.ingest()) {
                    ingest.cast(IngestMsg::Redispatch(frame))?;
                }
            }
            Err(error) => {
                if let Some(held_back) = MODEL_FAILED.allow() {
                    tracing::warn!(%error, held_back, "Model run failed");
                }
                merge.cast(MergeMsg::TilesFailed {
                    frame,
                    kind: error.kind(),
                    message: error.to_string(),
                })?;
            }
        }
        Ok(key)
    }
}
