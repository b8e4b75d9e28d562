//! PipelineSupervisor: spawns the pipeline's actors, restarts a failed one (one-for-one, with
//! backoff), escalates a restart storm into a clean stop with an error, and shuts the tree
//! down source first.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ort::environment::Environment;
use ractor::factory::{
    Factory, FactoryArguments, queues::DefaultQueue, routing::QueuerRouting, worker_builder,
};
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use tessera_models::Model;
use tokio::sync::Semaphore;

use crate::config::PipelineConfig;
use crate::error::PipelineError;
use crate::frame::Frame;
use crate::inflight::InFlight;
use crate::ingest::{Ingest, IngestArgs, IngestMsg};
use crate::merge::{Merge, MergeArgs};
use crate::monitor::{Monitor, Phase};
use crate::names::{ActorNames, lookup};
use crate::prepare::{PreparePlan, PrepareWorker};
use crate::publish::{Publish, PublishArgs};
use crate::recognize::{BatchQueue, InjectedFault, RecognizeArgs, RecognizePool};

/// The children of the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Child {
    Publish,
    Merge,
    Recognize,
    Prepare,
    Ingest,
}

impl Child {
    /// Start order: downstream first, so every stage finds its successor; the source last.
    pub const START_ORDER: [Child; 5] = [
        Child::Publish,
        Child::Merge,
        Child::Recognize,
        Child::Prepare,
        Child::Ingest,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Child::Publish => "publish",
            Child::Merge => "merge",
            Child::Recognize => "recognize",
            Child::Prepare => "prepare",
            Child::Ingest => "ingest",
        }
    }
}

/// The supervisor actor.
#[derive(Debug)]
pub struct PipelineSupervisor;

/// Everything the supervisor needs to (re)build its children.
#[derive(Debug, Clone)]
pub struct SupervisorArgs {
    pub config: Arc<PipelineConfig>,
    pub env: Arc<Environment>,
    pub model: Arc<Model>,
    pub plan: Arc<PreparePlan>,
    /// Batches from preparation to the recognize pool; outlives either's restart.
    pub batches: BatchQueue,
    pub names: ActorNames,
    /// In-flight frame credits; all returned means nothing is in flight.
    pub credits: Arc<Semaphore>,
    /// Frames in flight, shared with ingest; survives the restart of any child.
    pub inflight: Arc<InFlight>,
    /// Where the supervisor leaves the reason it stopped on its own (restart storm).
    pub exit: Arc<Mutex<Option<PipelineError>>>,
    pub monitor: Arc<Monitor>,
}

/// Messages to [`PipelineSupervisor`].
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Restart a child after its backoff delay.
    Restart(Child),
    /// A pool worker failed (its pool restarts it); counted towards the restart-storm limit.
    WorkerFailed { stage: &'static str, reason: String },
    /// Graceful shutdown: stop consuming, drain in-flight frames within `drain`, flush, commit.
    Shutdown {
        drain: Duration,
        reply: RpcReplyPort<ShutdownReport>,
    },
}

/// What a graceful shutdown achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Frames still in flight when the drain deadline passed (they will be re-consumed).
    pub abandoned_frames: usize,
}

/// State of [`PipelineSupervisor`].
#[derive(Debug)]
pub struct SupervisorState {
    args: SupervisorArgs,
    children: HashMap<ActorId, Child>,
    cells: HashMap<Child, ActorCell>,
    /// Recent restart times, for the restart-storm window.
    restarts: VecDeque<Instant>,
    shutting_down: bool,
}

impl Actor for PipelineSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState {
            args,
            children: HashMap::new(),
            cells: HashMap::new(),
            restarts: VecDeque::new(),
            shutting_down: false,
        };
        for child in Child::START_ORDER {
            if let Err(error) = spawn_child(&myself, &mut state, child).await {
                // Stop what already started before failing the start.
                for cell in state.cells.values() {
                    cell.stop(Some("pipeline start failed".into()));
                }
                return Err(error);
            }
        }
        tracing::info!("Pipeline started");
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Restart(child) => {
                if state.shutting_down {
                    return Ok(());
                }
                match spawn_child(&myself, state, child).await {
                    Ok(()) => {
                        tracing::info!(child = child.name(), "Restarted");
                        // Frames the failed stage held are gone with it: dispatch every frame
                        // in flight again (a restarted ingest re-reads from Kafka instead).
                        if child != Child::Ingest
                            && let Some(ingest) = lookup::<IngestMsg>(&state.args.names.ingest())
                        {
                            let _ = ingest.cast(IngestMsg::RedispatchAll);
                        }
                    }
                    Err(error) => {
                        tracing::error!(child = child.name(), %error, "Restart failed");
                        schedule_restart(&myself, state, child, error.to_string());
                    }
                }
            }
            SupervisorMsg::WorkerFailed { stage, reason } => {
                if !state.shutting_down {
                    note_failure(&myself, state, stage, &reason);
                }
            }
            SupervisorMsg::Shutdown { drain, reply } => {
                let report = shutdown(state, drain).await;
                let _ = reply.send(report);
                myself.stop(Some("shutdown".into()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, format!("failed: {error}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, format!("terminated: {}", reason.unwrap_or_default()))
            }
            _ => return Ok(()),
        };
        let Some(child) = state.children.remove(&cell.get_id()) else {
            return Ok(());
        };
        state.cells.remove(&child);
        if state.shutting_down {
            return Ok(());
        }
        tracing::warn!(child = child.name(), %reason, "Actor stopped unexpectedly; restarting");
        schedule_restart(&myself, state, child, reason);
        Ok(())
    }
}

/// Schedules a restart with exponential backoff, or escalates a restart storm.
fn schedule_restart(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    child: Child,
    reason: String,
) {
    let Some(recent) = note_failure(myself, state, child.name(), &reason) else {
        return;
    };
    let policy = &state.args.config.supervision;
    let exponent = (recent - 1).min(16) as u32;
    let delay = policy
        .backoff_initial
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(policy.backoff_max);
    ractor::time::send_after(delay, myself.get_cell(), move || {
        SupervisorMsg::Restart(child)
    });
}

/// Counts a failure in the restart window. Returns the number of recent failures, or None
/// after escalating a restart storm (the pipeline is then stopping with an error).
fn note_failure(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    what: &str,
    reason: &str,
) -> Option<usize> {
    let policy = &state.args.config.supervision;
    let now = Instant::now();
    while state
        .restarts
        .front()
        .is_some_and(|t| now.duration_since(*t) > policy.restart_window)
    {
        state.restarts.pop_front();
    }
    state.restarts.push_back(now);
    state.args.monitor.metrics.actor_restarted(what);
    if state.restarts.len() > policy.max_restarts {
        tracing::error!(
            restarts = state.restarts.len(),
            window = ?policy.restart_window,
            "Restart storm; shutting the pipeline down"
        );
        if let Ok(mut exit) = state.args.exit.lock() {
            *exit = Some(PipelineError::RestartStorm {
                restarts: state.restarts.len(),
                window: policy.restart_window,
                last: format!("{what}: {reason}"),
            });
        }
        state.shutting_down = true;
        state.args.monitor.set_phase(Phase::Failed);
        state.args.inflight.close();
        for cell in state.cells.values() {
            cell.stop(Some("restart storm".into()));
        }
        myself.stop(Some("restart storm".into()));
        return None;
    }
    Some(state.restarts.len())
}

async fn spawn_child(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    child: Child,
) -> Result<(), ActorProcessingErr> {
    let args = &state.args;
    let config = &args.config;
    let supervisor = myself.get_cell();
    let cell = match child {
        Child::Publish => {
            let publish_args = PublishArgs {
                kafka: config.kafka.clone(),
                names: args.names.clone(),
                max_payload_bytes: config.limits.max_bytes,
                monitor: args.monitor.clone(),
            };
            Actor::spawn_linked(
                Some(args.names.publish()),
                Publish,
                publish_args,
                supervisor,
            )
            .await?
            .0
            .get_cell()
        }
        Child::Merge => {
            let merge_args = MergeArgs {
                model: args.model.clone(),
                merge: config.merge.clone(),
                names: args.names.clone(),
                monitor: args.monitor.clone(),
            };
            Actor::spawn_linked(Some(args.names.merge()), Merge, merge_args, supervisor)
                .await?
                .0
                .get_cell()
        }
        Child::Recognize => {
            let fault = config.recognize.panic_every_nth_batch.map(|every_nth| {
                tracing::warn!(
                    every_nth,
                    "Fault injection on: recognize workers will panic"
                );
                Arc::new(InjectedFault {
                    every_nth,
                    runs: AtomicU64::new(0),
                })
            });
            let recognize_args = RecognizeArgs {
                env: args.env.clone(),
                model: args.model.clone(),
                session: config.model.session.clone(),
                workers: config.recognize.workers,
                max_batch: config.recognize.max_batch,
                batches: args.batches.clone(),
                names: args.names.clone(),
                fault,
                monitor: args.monitor.clone(),
            };
            Actor::spawn_linked(
                Some(args.names.recognize()),
                RecognizePool,
                recognize_args,
                supervisor,
            )
            .await?
            .0
            .get_cell()
        }
        Child::Prepare => {
            let (plan, batches, names, monitor) = (
                args.plan.clone(),
                args.batches.clone(),
                args.names.clone(),
                args.monitor.clone(),
            );
            let builder = worker_builder(move |_wid| {
                (
                    PrepareWorker {
                        plan: plan.clone(),
                        batches: batches.clone(),
                        names: names.clone(),
                        monitor: monitor.clone(),
                    },
                    (),
                )
            });
            let factory = Factory::<
                (),
                Frame,
                (),
                PrepareWorker,
                QueuerRouting<(), Frame>,
                DefaultQueue<(), Frame>,
            >::default();
            let factory_args = FactoryArguments::builder()
                .worker_builder(Box::new(builder))
                .num_initial_workers(config.prepare.workers)
                .router(QueuerRouting::default())
                .queue(DefaultQueue::default())
                .build();
            Actor::spawn_linked(
                Some(args.names.prepare()),
                factory,
                factory_args,
                supervisor,
            )
            .await?
            .0
            .get_cell()
        }
        Child::Ingest => {
            let ingest_args = IngestArgs {
                kafka: config.kafka.clone(),
                flow: config.flow.clone(),
                names: args.names.clone(),
                credits: args.credits.clone(),
                inflight: args.inflight.clone(),
                monitor: args.monitor.clone(),
            };
            Actor::spawn_linked(Some(args.names.ingest()), Ingest, ingest_args, supervisor)
                .await?
                .0
                .get_cell()
        }
    };
    state.children.insert(cell.get_id(), child);
    state.cells.insert(child, cell);
    Ok(())
}

/// Shuts the tree down source first: stop consuming, drain, commit, then stop the stages.
async fn shutdown(state: &mut SupervisorState, drain: Duration) -> ShutdownReport {
    state.shutting_down = true;
    state.args.monitor.set_phase(Phase::Draining);
    let names = &state.args.names;
    let ingest = lookup::<IngestMsg>(&names.ingest());
    if let Some(ingest) = &ingest {
        let _ = ingest
            .call(IngestMsg::StopConsuming, Some(Duration::from_secs(5)))
            .await;
    }
    let capacity = state.args.config.flow.max_in_flight_frames;
    let deadline = Instant::now() + drain;
    // Credits come back as Kafka acknowledges each frame's output.
    while state.args.credits.available_permits() < capacity && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let abandoned_frames = capacity - state.args.credits.available_permits().min(capacity);
    // What is still in flight cannot finish once the stages stop; the consumer's close must
    // not wait for it on the final revoke.
    state.args.inflight.close();
    if let Some(ingest) = &ingest {
        // Let the last acknowledgements reach ingest's watermarks before committing.
        let _ = ingest
            .call(IngestMsg::InFlight, Some(Duration::from_secs(5)))
            .await;
        let _ = ingest
            .call(IngestMsg::Commit, Some(Duration::from_secs(10)))
            .await;
    }
    for child in Child::START_ORDER.iter().rev() {
        if let Some(cell) = state.cells.remove(child) {
            cell.stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(15)))
                .await
                .ok();
        }
    }
    if abandoned_frames > 0 {
        tracing::warn!(
            abandoned_frames,
            "Drain deadline passed; unfinished frames will be re-consumed"
        );
    }
    state.args.monitor.set_phase(Phase::Stopped);
    tracing::info!("Pipeline stopped");
    ShutdownReport { abandoned_frames }
}
