//! PipelineSupervisor: spawns its children from a list of [`ChildSpec`]s (data, not an enum),
//! restarts a failed one (one-for-one, with backoff) and dispatches the frames in flight
//! again, escalates what restarting cannot fix (a configuration error, a restart storm) into
//! a stop with an error, and shuts the tree down source first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use tessera_models::error_chain;
use tokio::sync::watch;

use crate::config::SupervisionConfig;
use crate::delivery::Ledger;
use crate::error::PipelineError;
use crate::observe::{Monitor, Phase};
use crate::protocol::{ErrorDomain, RetryHint, StageFailure, StageId};
use crate::stage::{ChildSpec, FailureReporter, SpawnContext, StageThreads};

/// How long each child may take to stop at shutdown.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The supervisor actor.
#[derive(Debug)]
pub struct PipelineSupervisor;

/// Everything the supervisor needs to (re)build its children.
#[derive(Debug)]
pub struct SupervisorArgs {
    /// The children in start order: downstream first, so every stage's successor runs before
    /// it; the source last.
    pub children: Vec<ChildSpec>,
    /// Prefix of the actor names.
    pub instance: String,
    pub policy: SupervisionConfig,
    /// Frames in flight; outlives every child.
    pub ledger: Arc<Ledger>,
    /// Tells the source to stop consuming (shutdown).
    pub draining: watch::Sender<bool>,
    /// Where the supervisor leaves the reason it stopped on its own.
    pub exit: Arc<Mutex<Option<PipelineError>>>,
    pub monitor: Arc<Monitor>,
    /// The threads the stages run outside the runtime.
    pub threads: StageThreads,
}

/// Messages to [`PipelineSupervisor`].
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Restart a child after its backoff delay.
    Restart(StageId),
    /// A stage recovered from a failure by itself (a replaced session); counted towards the
    /// restart-storm limit.
    Recovered(StageFailure),
    /// Graceful shutdown: stop consuming, drain in-flight frames within `drain`, stop the
    /// stages source first (committing), flush.
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
    context: SpawnContext,
    running: HashMap<ActorId, StageId>,
    cells: HashMap<StageId, ActorCell>,
    /// Recent failure times, for the restart-storm window.
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
        let reporter = myself.clone();
        let context = SpawnContext {
            supervisor: myself.get_cell(),
            instance: args.instance.clone(),
            failures: FailureReporter::new(move |failure| {
                let _ = reporter.cast(SupervisorMsg::Recovered(failure));
            }),
            threads: args.threads.clone(),
        };
        let mut state = SupervisorState {
            args,
            context,
            running: HashMap::new(),
            cells: HashMap::new(),
            restarts: VecDeque::new(),
            shutting_down: false,
        };
        let ids: Vec<StageId> = state.args.children.iter().map(|c| c.id).collect();
        for id in ids {
            if let Err(error) = spawn_child(&mut state, id).await {
                // Stop what already started before failing the start.
                stop_children(&mut state, "pipeline start failed").await;
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
            SupervisorMsg::Restart(id) => {
                if state.shutting_down {
                    return Ok(());
                }
                match spawn_child(state, id).await {
                    Ok(()) => {
                        tracing::info!(stage = %id, "Restarted");
                        // The frames the failed stage held are gone with it: dispatch every
                        // frame in flight again (a restarted source re-reads from Kafka).
                        if !is_source(state, id) {
                            state.args.ledger.redispatch_all();
                        }
                    }
                    Err(error) => {
                        tracing::error!(stage = %id, error = %error_chain(error.as_ref()), "Restart failed");
                        on_failure(&myself, state, id, error).await;
                    }
                }
            }
            SupervisorMsg::Recovered(failure) => {
                if !state.shutting_down {
                    let reason = error_chain(&failure);
                    note_failure(&myself, state, failure.stage, failure.domain, &reason).await;
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
        let (cell, error): (ActorCell, ActorProcessingErr) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, error),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let reason = format!("stopped: {}", reason.unwrap_or_default());
                (cell, reason.into())
            }
            _ => return Ok(()),
        };
        let Some(id) = state.running.remove(&cell.get_id()) else {
            return Ok(());
        };
        state.cells.remove(&id);
        if state.shutting_down {
            return Ok(());
        }
        tracing::warn!(stage = %id, error = %error_chain(error.as_ref()), "Stage stopped unexpectedly");
        on_failure(&myself, state, id, error).await;
        Ok(())
    }
}

fn is_source(state: &SupervisorState, id: StageId) -> bool {
    state
        .args
        .children
        .iter()
        .any(|child| child.id == id && child.source)
}

/// Decides from the failure's classification: restart with backoff, or escalate.
async fn on_failure(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    id: StageId,
    error: ActorProcessingErr,
) {
    let (domain, retry) = StageFailure::classify(error.as_ref());
    if retry == RetryHint::NoRetry {
        state.args.monitor.metrics.actor_restarted(id, domain);
        escalate(
            myself,
            state,
            PipelineError::Escalated {
                stage: id,
                domain,
                source: error,
            },
        )
        .await;
        return;
    }
    let Some(recent) = note_failure(myself, state, id, domain, &error_chain(error.as_ref())).await
    else {
        return;
    };
    let policy = &state.args.policy;
    let exponent = (recent - 1).min(16) as u32;
    let delay = policy
        .backoff_initial
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(policy.backoff_max);
    tracing::info!(stage = %id, %domain, delay = ?delay, "Restarting after backoff");
    ractor::time::send_after(delay, myself.get_cell(), move || SupervisorMsg::Restart(id));
}

/// Counts a failure in the restart window. Returns the number of recent failures, or None
/// after escalating a restart storm.
async fn note_failure(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    id: StageId,
    domain: ErrorDomain,
    reason: &str,
) -> Option<usize> {
    let policy = &state.args.policy;
    let now = Instant::now();
    while state
        .restarts
        .front()
        .is_some_and(|t| now.duration_since(*t) > policy.restart_window)
    {
        state.restarts.pop_front();
    }
    state.restarts.push_back(now);
    state.args.monitor.metrics.actor_restarted(id, domain);
    if state.restarts.len() > policy.max_restarts {
        let error = PipelineError::RestartStorm {
            restarts: state.restarts.len(),
            window: policy.restart_window,
            last: format!("{id}: {reason}"),
        };
        escalate(myself, state, error).await;
        return None;
    }
    Some(state.restarts.len())
}

/// Stops the pipeline with an error: the binary exits non-zero and the orchestrator
/// restarts the pod. The stages are stopped (and waited for) source first, like at
/// shutdown, so that the consumer commits what was acknowledged and nothing still runs when
/// the pipeline reports itself stopped.
async fn escalate(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    error: PipelineError,
) {
    tracing::error!(error = %error_chain(&error), "Escalating: stopping the pipeline");
    if let Ok(mut exit) = state.args.exit.lock() {
        exit.get_or_insert(error);
    }
    state.shutting_down = true;
    state.args.monitor.set_phase(Phase::Failed);
    state.args.ledger.close();
    stop_children(state, "escalated").await;
    myself.stop(Some("escalated".into()));
}

/// Stops every child, source first, each waited for up to [`STOP_TIMEOUT`].
async fn stop_children(state: &mut SupervisorState, reason: &str) {
    let order: Vec<StageId> = state.args.children.iter().rev().map(|c| c.id).collect();
    for id in order {
        if let Some(cell) = state.cells.remove(&id) {
            cell.stop_and_wait(Some(reason.into()), Some(STOP_TIMEOUT))
                .await
                .ok();
        }
    }
}

async fn spawn_child(state: &mut SupervisorState, id: StageId) -> Result<(), ActorProcessingErr> {
    let spec = state
        .args
        .children
        .iter()
        .find(|child| child.id == id)
        .cloned()
        .ok_or_else(|| StageFailure::internal(id, "no such child"))?;
    let cell = spec.spawn(state.context.clone()).await?;
    state.running.insert(cell.get_id(), id);
    state.cells.insert(id, cell);
    Ok(())
}

/// Shuts the tree down source first: stop consuming, wait for the frames in flight until the
/// drain deadline, then stop the stages (the source commits what was acknowledged; publish
/// hands in what it still holds).
async fn shutdown(state: &mut SupervisorState, drain: Duration) -> ShutdownReport {
    state.shutting_down = true;
    state.args.monitor.set_phase(Phase::Draining);
    let _ = state.args.draining.send(true);
    let deadline = tokio::time::Instant::now() + drain;
    let ledger = state.args.ledger.clone();
    ledger.drained(deadline).await;
    // Exact: the frames whose output Kafka has not acknowledged (they will be re-consumed).
    let abandoned_frames = ledger.len();
    // What is still in flight cannot finish once the stages stop; the consumer's close must
    // not wait for it on the final revoke.
    ledger.close();
    stop_children(state, "shutdown").await;
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
