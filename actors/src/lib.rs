//! The actor tree of tessera (ractor on tokio), in layers whose dependencies point one way:
//!
//! ```text
//! protocol    frames, keys, messages, outcomes, DeadLetterKind, StageId, failures, headers
//! delivery    ledger of frames in flight, ack handles, watermarks, sequencer (no actors, no Kafka)
//! observe     metrics, monitor, rate-limited logs (label sets from protocol's enums)
//! stage       the stage kit: FrameStage and its actor, edges, child specs, Kafka settings
//! gate        the change gate: per-camera tile results prepare and merge share (plain code)
//! learn       heads per scope, the embedding cache, the trainer's state, one round (plain code)
//! stages      ingest -> prepare -> recognize -> merge -> [second stage] -> [label requests]
//!             -> sequencer -> publish; heads, labels, finetune beside them (never each other)
//! supervisor  the child list as data, restart with backoff, escalation
//! lib.rs      the wiring: one line per stage
//! ```
//!
//! A [`Monitor`] beside the tree holds the metrics, health, status and operator pause that
//! the `tessera` binary serves over HTTP.

// The public API: the configuration, the protocol (results, headers, kinds), what operators
// observe, errors, and the handle below. The machinery is the crate's own.
pub mod config;
pub(crate) mod delivery;
pub mod error;
pub(crate) mod gate;
pub mod learn;
pub mod observe;
pub mod protocol;
pub(crate) mod stage;
pub(crate) mod stages;
pub(crate) mod supervisor;

#[cfg(test)]
mod layering;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorRef, ActorStatus};
use tessera_models::{BatchDim, Embedder, Head, Model, ModelSession, init_runtime};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

pub use config::PipelineConfig;
pub use error::{ConfigError, PipelineError};
pub use observe::{Monitor, Phase, StatusReport};
pub use protocol::result::FrameResult;
pub use protocol::{DeadLetterKind, StageId};
pub use supervisor::ShutdownReport;

use delivery::Ledger;
use learn::{EmbeddingCache, HeadRegistry, Learning, TrainerState};
use protocol::tensor::TensorPool;
use stage::{Edge, StageThreads};
use stages::{
    finetune, heads, ingest, label_requests, labels, merge, prepare, publish, recognize,
    second_stage, sequencer,
};
use supervisor::{PipelineSupervisor, SupervisorArgs, SupervisorMsg};

/// A running pipeline.
#[derive(Debug)]
pub struct PipelineHandle {
    supervisor: ActorRef<SupervisorMsg>,
    join: JoinHandle<()>,
    exit: Arc<Mutex<Option<PipelineError>>>,
    model: Arc<Model>,
    execution_provider: String,
    instance: String,
    monitor: Arc<Monitor>,
    threads: StageThreads,
    /// Heads, examples and the trainer; `None` when the model has no embedding.
    learning: Option<Arc<Learning>>,
}

/// Loads the model, then starts the actor tree, with a fresh [`Monitor`].
pub async fn start(
    config: PipelineConfig,
    instance: &str,
    assets_dir: Option<&Path>,
) -> Result<PipelineHandle, PipelineError> {
    let monitor = Monitor::new(
        instance,
        &config.kafka.group_id,
        config.http.liveness_timeout,
    );
    start_monitored(config, instance, assets_dir, monitor).await
}

/// Loads the model, then starts the actor tree reporting to `monitor` (created beforehand so
/// that health and metrics can be served while the model loads). A failed start leaves the
/// monitor in [`Phase::Failed`].
pub async fn start_monitored(
    config: PipelineConfig,
    instance: &str,
    assets_dir: Option<&Path>,
    monitor: Arc<Monitor>,
) -> Result<PipelineHandle, PipelineError> {
    let started = start_tree(config, instance, assets_dir, monitor.clone()).await;
    match &started {
        Ok(_) => monitor.set_phase(Phase::Running),
        Err(_) => monitor.set_phase(Phase::Failed),
    }
    started
}

/// Loads the model, then starts the actor tree. `assets_dir` is where model files are found
/// when the configuration names none (see [`Model::load`]).
async fn start_tree(
    config: PipelineConfig,
    instance: &str,
    assets_dir: Option<&Path>,
    monitor: Arc<Monitor>,
) -> Result<PipelineHandle, PipelineError> {
    config.validate()?;
    let env = init_runtime(config.model.runtime_library.as_deref())?;
    let model = Arc::new(Model::load(
        &config.model.manifest,
        config.model.onnx.as_deref(),
        assets_dir,
    )?);
    // One probe session tells the batch dimension and the execution provider actually used,
    // and fails the start early (with a clear error) if the model cannot run here.
    let (probe, embedding_dim) = {
        let (env, model, session) = (env.clone(), model.clone(), config.model.session.clone());
        tokio::task::spawn_blocking(move || probe_model(&env, model, &session))
            .await
            .map_err(|e| PipelineError::Escalated {
                stage: StageId::Recognize,
                domain: protocol::ErrorDomain::Internal,
                source: Box::new(e),
            })??
    };
    let batch_dim = probe.batch_dim();
    let execution_provider = probe.execution_provider().to_owned();
    // The probe session stays as the labels stage's backbone when heads apply to the model.
    let probe = embedding_dim.map(|_| probe);
    monitor.set_model(observe::ModelStatus {
        name: model.manifest.name.clone(),
        version: model.manifest.version.clone(),
        head_version: None,
        execution_provider: execution_provider.clone(),
        input: [model.manifest.input.width, model.manifest.input.height],
        batch: match batch_dim {
            BatchDim::Fixed(n) => n.to_string(),
            BatchDim::Dynamic => "dynamic".into(),
        },
    });
    tracing::info!(
        model = %model.manifest.name,
        version = %model.manifest.version,
        provider = %execution_provider,
        batch = ?batch_dim,
        "Model loaded"
    );

    // Learning on the job: heads on the second stage's backbone, else on the model's own
    // embedding when it has one.
    let learning = if config.second_stage.enabled {
        let (backbone, dim, session) = load_backbone(&config, &env, &model, assets_dir).await?;
        Some(start_learning(&config, &backbone, dim, session, &monitor).await?)
    } else {
        match (embedding_dim, probe) {
            (Some(dim), Some(probe)) => {
                Some(start_learning(&config, &model, dim, probe, &monitor).await?)
            }
            _ => None,
        }
    };
    if let Some(learning) = &learning {
        monitor.attach_learning(learning.clone());
    }
    let ledger = Ledger::new();
    {
        let ledger = ledger.clone();
        monitor.attach_progress(Box::new(move || ledger.snapshot()));
    }
    let (draining, draining_rx) = watch::channel(false);
    let loaded = LoadedModel {
        env,
        model: model.clone(),
        batch_dim,
        learning: learning.clone(),
    };
    let children = wire(&config, loaded, &ledger, draining_rx, &monitor);
    let exit = Arc::new(Mutex::new(None));
    let threads = StageThreads::default();
    let args = SupervisorArgs {
        children,
        instance: instance.to_owned(),
        policy: config.supervision.clone(),
        ledger,
        draining,
        exit: exit.clone(),
        monitor: monitor.clone(),
        threads: threads.clone(),
    };
    let (supervisor, join) = Actor::spawn(
        Some(format!("tessera/{instance}/supervisor")),
        PipelineSupervisor,
        args,
    )
    .await?;
    {
        let cell = supervisor.get_cell();
        monitor.attach_tree(Box::new(move || {
            !matches!(
                cell.get_status(),
                ActorStatus::Stopping | ActorStatus::Stopped
            )
        }));
    }
    Ok(PipelineHandle {
        supervisor,
        join,
        exit,
        model,
        execution_provider,
        instance: instance.to_owned(),
        monitor,
        threads,
        learning,
    })
}

/// The model as the stages use it.
struct LoadedModel {
    env: Arc<ort::environment::Environment>,
    model: Arc<Model>,
    /// Probed from a session at start.
    batch_dim: BatchDim,
    /// `None`: the model has no embedding for heads to read.
    learning: Option<Arc<Learning>>,
}

/// The heads of the backbone (from `heads.dir`, then the heads topic read to its end, so the
/// first frame sees the newest head) and the rest of learning on the job.
async fn start_learning(
    config: &PipelineConfig,
    model: &Model,
    embedding_dim: usize,
    probe: ModelSession,
    monitor: &Arc<Monitor>,
) -> Result<Arc<Learning>, PipelineError> {
    let registry = HeadRegistry::new(
        model.backbone_hash.clone(),
        embedding_dim,
        config.heads.dir.clone(),
    );
    let loaded = registry.load_dir();
    if loaded > 0 {
        tracing::info!(
            loaded,
            live = ?registry.live_heads().versions(),
            "Heads loaded from heads.dir"
        );
    }
    report_live_heads(&registry, monitor);
    let read = heads::catch_up(
        &heads_settings(config, &registry, monitor),
        config.heads.load_timeout,
    )
    .await
    .map_err(|failure| PipelineError::Escalated {
        stage: StageId::Heads,
        domain: failure.domain,
        source: Box::new(failure),
    })?;
    tracing::info!(read, live = ?registry.live_heads().versions(), topic = %config.heads.topic, "Heads topic read");
    Ok(Arc::new(Learning {
        heads: registry,
        scopes: config.scopes()?,
        cache: EmbeddingCache::new(config.labels.embedding_cache),
        trainer: TrainerState::default(),
        embedder: Arc::new(Mutex::new(Embedder::new(probe)?)),
        publish: head_publisher(config),
    }))
}

/// The second stage's backbone: its model, embedding size and one session (the second stage
/// and the labels stage share it). Fails the start with a clear error when the model is not a
/// detector or the backbone has no embedding.
async fn load_backbone(
    config: &PipelineConfig,
    env: &Arc<ort::environment::Environment>,
    model: &Model,
    assets_dir: Option<&Path>,
) -> Result<(Arc<Model>, usize, ModelSession), PipelineError> {
    if model.manifest.task != tessera_models::Task::Detect {
        return Err(ConfigError::invalid(
            "second_stage.enabled",
            format!(
                "the second stage classifies detected boxes; model `{}` is not a detector",
                model.manifest.name
            ),
        )
        .into());
    }
    let second = &config.second_stage;
    let backbone = Arc::new(Model::load(
        &second.manifest,
        second.onnx.as_deref(),
        assets_dir,
    )?);
    let (env, loaded, session) = (env.clone(), backbone.clone(), second.session.clone());
    let (probe, dim) = tokio::task::spawn_blocking(move || probe_model(&env, loaded, &session))
        .await
        .map_err(|e| PipelineError::Escalated {
            stage: StageId::SecondStage,
            domain: protocol::ErrorDomain::Internal,
            source: Box::new(e),
        })??;
    let dim = dim.ok_or_else(|| {
        ConfigError::invalid(
            "second_stage.manifest",
            format!(
                "backbone `{}` has no embedding output (set `output.embedding` or `output.embedding_from` in its manifest)",
                backbone.manifest.name
            ),
        )
    })?;
    tracing::info!(
        backbone = %backbone.manifest.name,
        embedding = dim,
        provider = probe.execution_provider(),
        "Second-stage backbone loaded"
    );
    Ok((backbone, dim, probe))
}

/// One session, run once on zeros: fails the start early (with a clear error) if the model
/// cannot run here, and tells the embedding size when the model has one.
fn probe_model(
    env: &ort::environment::Environment,
    model: Arc<Model>,
    session: &tessera_models::SessionConfig,
) -> Result<(ModelSession, Option<usize>), tessera_models::ModelError> {
    let mut probe = ModelSession::load(env, model.clone(), session)?;
    if model.manifest.output.embedding.is_none() {
        return Ok((probe, None));
    }
    let batch = match probe.batch_dim() {
        BatchDim::Fixed(n) => n,
        BatchDim::Dynamic => 1,
    };
    let zeros = vec![0.0; batch * probe.tensor_len()];
    let dim = probe.run(&zeros, batch)?.first().map(|o| o.embedding.len());
    Ok((probe, dim.filter(|d| *d > 0)))
}

fn heads_settings(
    config: &PipelineConfig,
    registry: &Arc<HeadRegistry>,
    monitor: &Arc<Monitor>,
) -> heads::HeadsSettings {
    heads::HeadsSettings {
        kafka: config.kafka.clone(),
        topic: config.heads.topic.clone(),
        registry: registry.clone(),
        monitor: monitor.clone(),
    }
}

/// Keeps the status and the head metrics on the live heads.
fn report_live_heads(heads: &Arc<HeadRegistry>, monitor: &Arc<Monitor>) {
    let mut live = heads.subscribe();
    let monitor = monitor.clone();
    monitor.set_live_heads(&heads.live_heads());
    tokio::spawn(async move {
        while live.changed().await.is_ok() {
            let heads = live.borrow_and_update().clone();
            monitor.set_live_heads(&heads);
        }
    });
}

/// The stages and the edges between them, in start order (downstream first, the source
/// last). A new stage is one module and one line here.
fn wire(
    config: &PipelineConfig,
    loaded: LoadedModel,
    ledger: &Arc<Ledger>,
    draining: watch::Receiver<bool>,
    monitor: &Arc<Monitor>,
) -> Vec<stage::ChildSpec> {
    let LoadedModel {
        env,
        model,
        batch_dim,
        learning,
    } = loaded;
    let (width, height) = (model.manifest.input.width, model.manifest.input.height);
    let tile_len = 3 * width as usize * height as usize;
    let capacity = recognize::batch_capacity(batch_dim, config.recognize.max_batch);
    // Tiles waiting for a model run, plus those in the runs under way: a session that
    // finishes finds the next batch ready instead of waiting for one to be prepared.
    let tile_credits = config.flow.max_queued_tiles + config.recognize.workers * capacity;
    // Tiles prepared per blocking call: a batch, or half the queue if that is more (fewer
    // hops for one-slot models); never more than the credits, or a chunk could never start.
    let chunk = capacity
        .max(config.flow.max_queued_tiles / 2)
        .min(tile_credits);
    // A one-slot batch is its tile's own tensor (no copy): then only tile buffers are needed.
    let (tiles_at_start, batches_at_start) = if capacity == 1 {
        (tile_credits, 0)
    } else {
        (
            config.prepare.workers * chunk,
            config.flow.max_queued_tiles.div_ceil(capacity) + 1 + config.recognize.workers,
        )
    };

    // The edges. Recognize's input is a queue that outlives the stage's restarts.
    let frames = Edge::new(StageId::Prepare);
    let prepared = Edge::new(StageId::Recognize);
    let (prepared_tx, prepared_rx) = crossbeam_channel::unbounded();
    prepared.point_to_channel(prepared_tx);
    let recognized = Edge::new(StageId::Merge);
    let finished = Edge::new(StageId::Sequencer);
    // With a second stage, the frame's decoded pixels travel to it and its head applies to
    // the boxes' crops instead of the model's tiles.
    let second_stage = config.second_stage.enabled && learning.is_some();
    let sequenced = Edge::new(StageId::Publish);
    // Prepare plans each frame through the change gate; merge hands it the tiles that ran.
    let gate = config.gate.enabled.then(|| {
        Arc::new(gate::TileGate::new(
            &config.gate,
            config.flow.max_age,
            monitor.clone(),
        ))
    });

    let publish = publish::PublishSettings {
        kafka: config.kafka.clone(),
        max_payload_bytes: config.limits.max_bytes,
        max_pending: config.flow.max_in_flight_frames,
        monitor: monitor.clone(),
    };
    let merge = merge::MergeSettings {
        model: model.clone(),
        merge: config.merge.clone(),
        ledger: ledger.clone(),
        monitor: monitor.clone(),
        learning: learning.clone(),
        gate: gate.clone(),
    };
    let recognize = recognize::RecognizeSettings {
        env,
        model: model.clone(),
        session: config.model.session.clone(),
        workers: config.recognize.workers,
        batch_dim,
        max_batch: config.recognize.max_batch,
        max_batch_delay: config.recognize.max_batch_delay,
        // Idle buffers for as many full batches as the tile credits allow, one filling and
        // one running per session (allocated at start: memory is at its bound from the first
        // frame instead of creeping up to it).
        tensors: TensorPool::preallocated(batches_at_start, capacity * tile_len),
        fault: config.recognize.panic_every_nth_batch.map(|every_nth| {
            tracing::warn!(every_nth, "Fault injection on: model runs will panic");
            Arc::new(recognize::InjectedFault::every(every_nth))
        }),
        monitor: monitor.clone(),
    };
    // Ingest feeds it, prepare reads it (a stream clock is the newest capture time consumed).
    let clock = protocol::Clock::new(config.flow.clock);
    let prepare = prepare::PrepareSettings {
        plan: Arc::new(prepare::PreparePlan {
            limits: config.limits.clone(),
            grid: model.tiling(&config.tiling).grid(width, height),
            preprocess: model.preprocess_spec(),
            chunk,
            lag_policy: config.flow.lag_policy,
            max_age: config.flow.max_age,
            clock: clock.clone(),
            max_attempts: config.flow.max_attempts,
            tile_credits: Arc::new(Semaphore::new(tile_credits)),
            // A chunk per lane being filled, and the tiles on their way to the batcher (or,
            // for one-slot batches, every tile a credit allows).
            tiles: TensorPool::preallocated_up_to(tiles_at_start, tile_credits, tile_len),
            keep_image: second_stage,
            heads_on_tiles: !second_stage,
            gate,
        }),
        lanes: config.prepare.workers,
        monitor: monitor.clone(),
    };
    let ingest = ingest::IngestSettings {
        kafka: config.kafka.clone(),
        flow: config.flow.clone(),
        clock,
        credits: Arc::new(Semaphore::new(config.flow.max_in_flight_frames)),
        ledger: ledger.clone(),
        draining,
        monitor: monitor.clone(),
        learning: learning.clone(),
    };

    let mut children = vec![
        publish::child(publish, sequenced.clone()),
        sequencer::child(ledger.clone(), monitor.clone(), finished.clone(), sequenced),
    ];
    // The optional stages between merge and the sequencer (second stage, then label
    // requests), downstream first: each one's input is what the stage before it sends to.
    let mut merged = finished.clone();
    if config.label_requests.enabled {
        let settings = label_requests::LabelRequestsSettings {
            kafka: config.kafka.clone(),
            requests: config.label_requests.clone(),
            learning: learning.clone(),
            monitor: monitor.clone(),
        };
        let input = Edge::new(StageId::LabelRequests);
        children.push(label_requests::child(settings, input.clone(), merged));
        merged = input;
    }
    if let (true, Some(learning)) = (config.second_stage.enabled, &learning) {
        let settings = second_stage::SecondStageSettings {
            selection: config.second_stage.selection(),
            reject_labels: config.second_stage.reject_labels.clone().into(),
            learning: learning.clone(),
            embed_without_head: config.label_requests.enabled,
            monitor: monitor.clone(),
        };
        let input = Edge::new(StageId::SecondStage);
        children.push(second_stage::child(settings, input.clone(), merged));
        merged = input;
    }
    children.extend([
        merge::child(merge, recognized.clone(), merged),
        recognize::child(recognize, prepared_rx, recognized),
        prepare::child(prepare, frames.clone(), prepared),
        ingest::child(ingest, frames),
    ]);
    // The learning stages are beside the frame path: they start first, the source last.
    if let Some(learning) = &learning {
        let examples = Edge::new(StageId::FineTune);
        let finetune = finetune::FineTuneSettings {
            kafka: config.kafka.clone(),
            labels: config.labels.clone(),
            finetune: config.finetune.clone(),
            learning: learning.clone(),
            monitor: monitor.clone(),
            restore_timeout: config.heads.load_timeout,
        };
        let labels = labels::LabelsSettings {
            kafka: config.kafka.clone(),
            labels: config.labels.clone(),
            limits: config.limits.clone(),
            learning: learning.clone(),
            monitor: monitor.clone(),
        };
        children.splice(
            0..0,
            [
                heads::child(heads_settings(config, &learning.heads, monitor)),
                finetune::child(finetune, examples.clone()),
                labels::child(labels, examples),
            ],
        );
    }
    children
}

impl PipelineHandle {
    /// The loaded model.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Metrics, health, status and the operator pause of this pipeline.
    pub fn monitor(&self) -> &Arc<Monitor> {
        &self.monitor
    }

    /// The execution provider the sessions run on.
    pub fn execution_provider(&self) -> &str {
        &self.execution_provider
    }

    /// The heads of the model's backbone; `None` when the model has no embedding.
    pub fn heads(&self) -> Option<&Arc<HeadRegistry>> {
        self.learning.as_ref().map(|l| &l.heads)
    }

    /// Heads, examples and the trainer; `None` when the model has no embedding.
    pub fn learning(&self) -> Option<&Arc<Learning>> {
        self.learning.as_ref()
    }

    /// Publishes `head` to the heads topic, keyed by its scope; every replica of the group,
    /// this one included, applies it (it goes live where it is the newest version). Refused
    /// before publishing if it does not fit this model's backbone.
    pub async fn publish_head(&self, head: &Head) -> Result<(), PipelineError> {
        let learning = self.learning.as_ref().ok_or_else(no_embedding)?;
        let heads = &learning.heads;
        head.check_backbone(heads.backbone(), heads.embedding_dim())?;
        (learning.publish)(head.clone()).await.map_err(unpublished)
    }

    /// Makes the weights of an earlier `version` of `scope` live again, on every replica:
    /// they are published as a new version of that scope (newest wins everywhere; the other
    /// scopes are left alone). Returns the new version.
    pub async fn rollback(&self, scope: &str, version: u64) -> Result<u64, PipelineError> {
        let learning = self.learning.as_ref().ok_or_else(no_embedding)?;
        learning.rollback(scope, version).await.map_err(unpublished)
    }

    /// Threads the stages still run outside the runtime (model sessions, batching); none once
    /// [`Self::stopped`] or [`Self::shutdown`] returned.
    pub fn stage_threads(&self) -> usize {
        self.threads.live()
    }

    /// The registered actor name of a stage (for fault-injection tests and debugging).
    pub fn stage_name(&self, id: StageId) -> String {
        stage::actor_name(&self.instance, id)
    }

    /// Graceful shutdown: stop consuming, wait up to `drain` for frames in flight, stop the
    /// stages source first (committing), flush.
    pub async fn shutdown(self, drain: Duration) -> Result<ShutdownReport, PipelineError> {
        let report = self
            .supervisor
            .call(
                |reply| SupervisorMsg::Shutdown { drain, reply },
                Some(drain + Duration::from_secs(90)),
            )
            .await;
        let _ = self.join.await;
        wait_for_threads(&self.threads).await;
        if let Some(error) = take(&self.exit) {
            return Err(error);
        }
        match report {
            Ok(ractor::rpc::CallResult::Success(report)) => Ok(report),
            Ok(other) => Err(PipelineError::ShutdownIncomplete(format!("{other:?}"))),
            Err(error) => Err(PipelineError::ShutdownIncomplete(error.to_string())),
        }
    }

    /// Waits until the pipeline stops on its own (it only does so when it escalates a
    /// failure: a restart storm, or an error restarting cannot fix).
    pub async fn stopped(&mut self) -> Result<(), PipelineError> {
        let _ = (&mut self.join).await;
        wait_for_threads(&self.threads).await;
        match take(&self.exit) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// The stages' threads finish their current model run once the stages stop; a process that
/// exits before they do can crash in ONNX Runtime's teardown.
async fn wait_for_threads(threads: &StageThreads) {
    if !threads.finished(THREADS_TIMEOUT).await {
        tracing::warn!(
            threads = threads.live(),
            "Stage threads still running after the pipeline stopped"
        );
    }
}

/// How long a stopped pipeline waits for its stages' threads (one model run or load).
const THREADS_TIMEOUT: Duration = Duration::from_secs(60);

/// Publishes heads to `heads.topic`, keyed by their scope, waiting for Kafka's ack.
fn head_publisher(config: &PipelineConfig) -> learn::PublishHead {
    let kafka = config.kafka.clone();
    let topic = config.heads.topic.clone();
    Arc::new(move |head: Head| {
        let (kafka, topic) = (kafka.clone(), topic.clone());
        Box::pin(async move {
            let bytes = head.to_bytes()?;
            stage::kafka::produce_one(&kafka, &topic, head.scope(), &bytes).await?;
            tracing::info!(scope = head.scope(), version = head.version(), %topic, "Head published");
            Ok(())
        })
    })
}

/// The scope of heads that serve every camera outside a group.
pub use tessera_operators::scopes::GLOBAL_SCOPE;

fn unpublished(error: Box<dyn std::error::Error + Send + Sync>) -> PipelineError {
    PipelineError::Escalated {
        stage: StageId::Heads,
        domain: protocol::ErrorDomain::External,
        source: error,
    }
}

fn no_embedding() -> PipelineError {
    PipelineError::Model(tessera_models::ModelError::InvalidHead {
        message:
            "the model has no embedding output for heads (set `output.embedding` in its manifest)"
                .into(),
        source: None,
    })
}

fn take(exit: &Mutex<Option<PipelineError>>) -> Option<PipelineError> {
    exit.lock().ok().and_then(|mut e| e.take())
}
