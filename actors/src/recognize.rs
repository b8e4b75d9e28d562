//! Recognize pool: a ractor factory whose workers each own an ONNX Runtime session
//! (`Session::run` takes `&mut self`). Model runs happen on blocking threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ort::environment::Environment;
use ractor::factory::{FactoryMessage, FactoryRef, Job, Worker, WorkerId};
use ractor::{ActorProcessingErr, ActorRef};
use tessera_models::{Model, ModelSession, SessionConfig, TileOutput};
use tokio::sync::Semaphore;

use crate::frame::FrameKey;
use crate::ingest::IngestMsg;
use crate::merge::MergeMsg;
use crate::metrics::{Queue, Stage};
use crate::monitor::Monitor;
use crate::names::{ActorNames, lookup, lookup_patiently};
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

/// Messages of the recognize factory.
pub type RecognizeMsg = FactoryMessage<(), TileBatch>;
/// Reference to the recognize factory.
pub type RecognizeRef = FactoryRef<(), TileBatch>;

/// One recognize worker.
#[derive(Debug, Clone)]
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
    session: Arc<Mutex<ModelSession>>,
    /// Runs handed to blocking threads and not finished: at most two, so that the next run
    /// waits ready at the session's lock while one runs, and the model never idles between
    /// runs for the hops through the actor system.
    runs: Arc<Semaphore>,
}

impl std::fmt::Debug for RecognizeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecognizeState").finish_non_exhaustive()
    }
}

/// Runs a worker may have started at once (one running, one ready).
const RUNS_AHEAD: usize = 2;

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
        let worker = self.clone();
        let session = tokio::task::spawn_blocking(move || worker.new_session()).await??;
        tracing::debug!(
            worker = wid,
            provider = session.execution_provider(),
            "Session ready"
        );
        Ok(RecognizeState {
            session: Arc::new(Mutex::new(session)),
            runs: Arc::new(Semaphore::new(RUNS_AHEAD)),
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
        // Waits while two runs are under way: the factory keeps the rest queued, for
        // whichever worker frees up first.
        let permit = state.runs.clone().acquire_owned().await?;
        self.monitor.metrics.queue(Queue::Recognize).popped.inc();
        let run = Run {
            worker: self.clone(),
            session: state.session.clone(),
        };
        tokio::spawn(async move {
            run.run(batch).await;
            drop(permit);
        });
        Ok(key)
    }
}

impl RecognizeWorker {
    /// A warmed-up session of the worker's model.
    fn new_session(&self) -> Result<ModelSession, tessera_models::ModelError> {
        let mut session = ModelSession::load(&self.env, self.model.clone(), &self.session)?;
        warm_up(&mut session)?;
        Ok(session)
    }
}

/// One model run and the delivery of its outputs.
struct Run {
    worker: RecognizeWorker,
    session: Arc<Mutex<ModelSession>>,
}

impl Run {
    async fn run(self, batch: TileBatch) {
        let TileBatch {
            slots,
            tensor,
            batch: batch_size,
            queued_at,
            _credit: credit,
        } = batch;
        let frames = frames_of(&slots);
        let (session, worker) = (self.session.clone(), self.worker.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            let mut session = match session.lock() {
                Ok(session) => session,
                // A run panicked holding the session: go on with a new one, as a restarted
                // worker would.
                Err(poisoned) => {
                    session.clear_poison();
                    let mut session = poisoned.into_inner();
                    match worker.new_session() {
                        Ok(fresh) => *session = fresh,
                        Err(error) => return (Err(error), Duration::ZERO),
                    }
                    tracing::info!("Model session replaced after a panicked run");
                    session
                }
            };
            worker
                .monitor
                .metrics
                .stage(Stage::QueueWait)
                .observe(queued_at.elapsed().as_secs_f64());
            let started = Instant::now();
            if let Some(fault) = &worker.fault {
                fault.maybe_panic();
            }
            let outcome = session.run(&tensor, batch_size);
            // The tensor is consumed: let preparation fill the next one.
            drop((tensor, credit));
            (outcome, started.elapsed())
        })
        .await;
        match outcome {
            Err(panicked) => {
                // Its frames go back for another attempt; the next run replaces the session.
                crate::recovery::stage_failed(
                    &self.worker.names,
                    &frames,
                    "recognize",
                    &panicked.to_string(),
                );
            }
            Ok((outcome, elapsed)) => self.deliver(slots, frames, outcome, elapsed).await,
        }
    }

    /// Sends a run's outputs to merge, split by frame; or the frames back for another
    /// attempt, or to the dead-letter topic, when the run failed.
    async fn deliver(
        &self,
        slots: Vec<TileSlot>,
        frames: Vec<FrameKey>,
        outcome: Result<Vec<TileOutput>, tessera_models::ModelError>,
        elapsed: Duration,
    ) {
        let names = &self.worker.names;
        let Some(merge) =
            lookup_patiently::<MergeMsg>(&names.merge(), Duration::from_secs(30)).await
        else {
            // The frames stay in flight; the frame timeout re-dispatches them.
            tracing::error!("Merge actor unavailable; model outputs dropped");
            return;
        };
        let metrics = &self.worker.monitor.metrics;
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
                redispatch(names, &frames);
            }
            Err(error) => {
                if let Some(held_back) = MODEL_FAILED.allow() {
                    tracing::warn!(%error, held_back, "Model run failed");
                }
                for frame in frames {
                    let _ = merge.cast(MergeMsg::TilesFailed {
                        frame,
                        kind: error.kind(),
                        message: error.to_string(),
                    });
                }
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

/// One model run on a blank input: ONNX Runtime allocates and plans on the first run, which
/// would otherwise land on the first frame.
fn warm_up(session: &mut ModelSession) -> Result<(), tessera_models::ModelError> {
    let batch = match session.batch_dim() {
        tessera_models::BatchDim::Fixed(n) => n.max(1),
        tessera_models::BatchDim::Dynamic => 1,
    };
    let blank = vec![0.0f32; batch * session.tensor_len()];
    session.run(&blank, batch).map(drop)
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
