//! Recognize pool: a ractor factory whose workers each own an ONNX Runtime session
//! (`Session::run` takes `&mut self`). Model runs happen on blocking threads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ort::environment::Environment;
use ractor::factory::{FactoryMessage, FactoryRef, Job, Worker, WorkerId};
use ractor::{ActorProcessingErr, ActorRef};
use tessera_models::{Model, ModelSession, SessionConfig};

use crate::frame::FrameKey;
use crate::merge::MergeMsg;
use crate::names::{ActorNames, lookup_patiently};

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
        } = batch;
        let (session, outcome, elapsed) = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let outcome = session.run(&tensor, batch_size);
            (session, outcome, started.elapsed())
        })
        .await?;
        state.session = Some(session);

        let merge = lookup_patiently::<MergeMsg>(&self.names.merge(), Duration::from_secs(30))
            .await
            .ok_or("merge actor unavailable")?;
        match outcome {
            Ok(mut outputs) => {
                outputs.truncate(tiles.len());
                merge.cast(MergeMsg::Tiles {
                    frame,
                    tiles,
                    outputs,
                    inference: elapsed,
                })?;
            }
            Err(error) => {
                tracing::warn!(%error, "Model run failed");
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
