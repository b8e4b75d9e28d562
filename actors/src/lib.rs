//! The actor tree of tessera (ractor on tokio).
//!
//! ```text
//! PipelineSupervisor
//!  ├─ Ingest      Kafka consumer; in-flight credits; per-partition offset watermarks
//!  ├─ Prepare     factory: decode -> tiles -> model tensors (blocking threads)
//!  ├─ Recognize   pool: one ONNX Runtime session per dedicated thread, one shared queue
//!  ├─ Merge       tile results -> frame results, per-partition input order restored
//!  └─ Publish     Kafka producer (results, dead letters); acks release offsets
//! ```
//!
//! A [`Monitor`] beside the tree holds the metrics, health, status and operator pause that
//! the `tessera` binary serves over HTTP.

pub mod config;
pub mod error;
pub mod frame;
pub mod inflight;
pub mod ingest;
pub mod kafka;
pub mod merge;
pub mod metrics;
pub mod monitor;
pub mod names;
pub mod ordering;
pub mod prepare;
pub mod publish;
pub mod recognize;
pub mod recovery;
pub mod result;
pub mod supervisor;
pub mod tensor_pool;
pub mod throttle;
pub mod watermark;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorRef};
use tessera_models::{Model, ModelSession, init_runtime};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

pub use config::PipelineConfig;
pub use error::{ConfigError, PipelineError};
pub use monitor::{Monitor, Phase, StatusReport};
pub use result::FrameResult;
pub use supervisor::ShutdownReport;

use inflight::InFlight;
use names::ActorNames;
use prepare::PreparePlan;
use supervisor::{PipelineSupervisor, SupervisorArgs, SupervisorMsg};

/// A running pipeline.
#[derive(Debug)]
pub struct PipelineHandle {
    supervisor: ActorRef<SupervisorMsg>,
    join: JoinHandle<()>,
    exit: Arc<Mutex<Option<PipelineError>>>,
    model: Arc<Model>,
    execution_provider: String,
    monitor: Arc<Monitor>,
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
    let config = Arc::new(config);
    let env = init_runtime(config.model.runtime_library.as_deref())?;
    let model = Arc::new(Model::load(
        &config.model.manifest,
        config.model.onnx.as_deref(),
        assets_dir,
    )?);
    // One probe session tells the batch dimension and the execution provider actually used,
    // and fails the start early (with a clear error) if the model cannot run here.
    let probe = {
        let (env, model, session) = (env.clone(), model.clone(), config.model.session.clone());
        tokio::task::spawn_blocking(move || ModelSession::load(&env, model, &session))
            .await
            .map_err(|e| PipelineError::Actor(e.to_string()))??
    };
    let batch_dim = probe.batch_dim();
    let execution_provider = probe.execution_provider().to_owned();
    drop(probe);
    monitor.set_model(monitor::ModelStatus {
        name: model.manifest.name.clone(),
        version: model.manifest.version.clone(),
        head_version: None,
        execution_provider: execution_provider.clone(),
        input: [model.manifest.input.width, model.manifest.input.height],
        batch: match batch_dim {
            tessera_models::BatchDim::Fixed(n) => n.to_string(),
            tessera_models::BatchDim::Dynamic => "dynamic".into(),
        },
    });
    tracing::info!(
        model = %model.manifest.name,
        version = %model.manifest.version,
        provider = %execution_provider,
        batch = ?batch_dim,
        "Model loaded"
    );

    let (width, height) = (model.manifest.input.width, model.manifest.input.height);
    let batch_capacity = prepare::batch_capacity(batch_dim, config.recognize.max_batch);
    let plan = Arc::new(PreparePlan {
        limits: config.limits.clone(),
        grid: config.tiling.grid(width, height),
        preprocess: model.preprocess_spec(),
        batch_dim,
        max_batch: config.recognize.max_batch,
        max_batch_delay: config.recognize.max_batch_delay,
        lag_policy: config.flow.lag_policy,
        max_age: config.flow.max_age,
        // Tiles waiting for a model run, plus those in the runs under way: a session that
        // finishes finds the next batch ready instead of waiting for one to be prepared.
        tile_credits: Arc::new(Semaphore::new(
            config.flow.max_queued_tiles + config.recognize.workers * batch_capacity,
        )),
        // Idle buffers for as many full batches as the tile credits allow, one filling per
        // prepare worker and one running per recognize worker.
        tensors: tensor_pool::TensorPool::preallocated(
            config.flow.max_queued_tiles.div_ceil(batch_capacity)
                + config.prepare.workers
                + config.recognize.workers,
            batch_capacity * 3 * width as usize * height as usize,
        ),
    });
    let names = ActorNames::new(instance);
    let exit = Arc::new(Mutex::new(None));
    let inflight = Arc::new(InFlight::default());
    monitor.attach_inflight(inflight.clone());
    let args = SupervisorArgs {
        credits: Arc::new(Semaphore::new(config.flow.max_in_flight_frames)),
        inflight,
        monitor: monitor.clone(),
        config,
        env,
        model: model.clone(),
        plan,
        batches: recognize::BatchQueue::default(),
        names: names.clone(),
        exit: exit.clone(),
    };
    let (supervisor, join) = Actor::spawn(Some(names.supervisor()), PipelineSupervisor, args)
        .await
        .map_err(|e| PipelineError::Actor(e.to_string()))?;
    monitor.attach_supervisor(supervisor.get_cell());
    Ok(PipelineHandle {
        supervisor,
        join,
        exit,
        model,
        execution_provider,
        monitor,
    })
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

    /// Graceful shutdown: stop consuming, wait up to `drain` for frames in flight, flush,
    /// commit, stop every actor.
    pub async fn shutdown(self, drain: Duration) -> Result<ShutdownReport, PipelineError> {
        let report = self
            .supervisor
            .call(
                |reply| SupervisorMsg::Shutdown { drain, reply },
                Some(drain + Duration::from_secs(60)),
            )
            .await;
        let _ = self.join.await;
        if let Some(error) = take(&self.exit) {
            return Err(error);
        }
        match report {
            Ok(ractor::rpc::CallResult::Success(report)) => Ok(report),
            Ok(other) => Err(PipelineError::Actor(format!("shutdown: {other:?}"))),
            Err(error) => Err(PipelineError::Actor(format!("shutdown: {error}"))),
        }
    }

    /// Waits until the pipeline stops on its own (it only does so on a restart storm).
    pub async fn stopped(&mut self) -> Result<(), PipelineError> {
        (&mut self.join)
            .await
            .map_err(|e| PipelineError::Actor(e.to_string()))?;
        match take(&self.exit) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

fn take(exit: &Mutex<Option<PipelineError>>) -> Option<PipelineError> {
    exit.lock().ok().and_then(|mut e| e.take())
}
