//! The shape of a per-frame stage (in the spirit of Arroyo's operators): one required
//! processing method, optional tick and stop hooks. [`StageActor`] runs any of them as a
//! supervised ractor actor, on one lane (inputs in mailbox order) or on several (inputs
//! processed concurrently, for stages whose order does not matter).

use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::Semaphore;

use super::child::{ChildSpec, SpawnContext};
use super::edge::Edge;
use crate::protocol::{StageFailure, StageId};

/// A stage of the frame path.
pub trait FrameStage: Send + 'static {
    /// What arrives on the stage's input edge.
    type In: Send + 'static;
    /// What the stage hands to its successor.
    type Out: Send + 'static;

    /// Handles one input. An error fails the stage: the supervisor restarts it and
    /// dispatches the frames in flight again.
    fn process(
        &mut self,
        input: Self::In,
        out: &Edge<Self::Out>,
    ) -> impl Future<Output = Result<(), StageFailure>> + Send;

    /// How often [`FrameStage::on_tick`] runs (single-lane stages only).
    fn tick_every(&self) -> Option<Duration> {
        None
    }

    /// Periodic work (purging state of revoked streams, timeouts).
    fn on_tick(
        &mut self,
        _out: &Edge<Self::Out>,
    ) -> impl Future<Output = Result<(), StageFailure>> + Send {
        async { Ok(()) }
    }

    /// Runs once when the stage stops (also on a restart).
    fn on_stop(&mut self, _out: &Edge<Self::Out>) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Builds a fresh instance of a stage, at start and on every restart.
pub type Build<S> = Arc<dyn Fn() -> Result<S, StageFailure> + Send + Sync>;

/// Runs a [`FrameStage`] as an actor.
pub struct StageActor<S>(PhantomData<fn() -> S>);

impl<S> std::fmt::Debug for StageActor<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StageActor")
    }
}

/// Messages of a [`StageActor`].
#[derive(Debug)]
pub enum StageMsg<I> {
    Input(I),
    Tick,
    /// A lane of a multi-lane stage failed.
    LaneFailed(StageFailure),
}

/// Start arguments of a [`StageActor`].
pub struct StageArgs<S: FrameStage> {
    pub id: StageId,
    pub build: Build<S>,
    /// Inputs processed at once (1: in order).
    pub lanes: usize,
    pub out: Edge<S::Out>,
}

impl<S: FrameStage> std::fmt::Debug for StageArgs<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageArgs")
            .field("id", &self.id)
            .field("lanes", &self.lanes)
            .finish_non_exhaustive()
    }
}

impl<S: FrameStage> std::fmt::Debug for StageState<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageState")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The running stage: its lanes and its successor.
pub struct StageState<S: FrameStage> {
    id: StageId,
    lanes: Lanes<S>,
    out: Edge<S::Out>,
}

enum Lanes<S> {
    One(S),
    Many {
        count: usize,
        idle: Arc<Mutex<Vec<S>>>,
        /// One per idle lane: an input waits here (in the mailbox) for a free lane.
        free: Arc<Semaphore>,
    },
}

impl<S: FrameStage> Actor for StageActor<S> {
    type Msg = StageMsg<S::In>;
    type State = StageState<S>;
    type Arguments = StageArgs<S>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: StageArgs<S>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let lanes = if args.lanes <= 1 {
            let stage = (args.build)()?;
            if let Some(every) = stage.tick_every() {
                myself.send_interval(every, || StageMsg::Tick);
            }
            Lanes::One(stage)
        } else {
            let stages = (0..args.lanes)
                .map(|_| (args.build)())
                .collect::<Result<Vec<S>, StageFailure>>()?;
            Lanes::Many {
                count: args.lanes,
                idle: Arc::new(Mutex::new(stages)),
                free: Arc::new(Semaphore::new(args.lanes)),
            }
        };
        Ok(StageState {
            id: args.id,
            lanes,
            out: args.out,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match (message, &mut state.lanes) {
            (StageMsg::Input(input), Lanes::One(stage)) => stage.process(input, &state.out).await?,
            (StageMsg::Input(input), Lanes::Many { idle, free, .. }) => {
                let permit = free.clone().acquire_owned().await?;
                let lane = lock(idle).pop();
                let Some(mut lane) = lane else {
                    return Err(StageFailure::internal(state.id, "no idle lane").into());
                };
                let (idle, out, id) = (idle.clone(), state.out.clone(), state.id);
                tokio::spawn(async move {
                    // Its own task, so that a panic is caught here and fails the stage.
                    let run = tokio::spawn(async move {
                        let outcome = lane.process(input, &out).await;
                        (lane, outcome)
                    });
                    let failure = match run.await {
                        Ok((lane, outcome)) => {
                            lock(&idle).push(lane);
                            outcome.err()
                        }
                        Err(panic) => Some(StageFailure::internal(id, panic.to_string())),
                    };
                    drop(permit);
                    if let Some(failure) = failure {
                        let _ = myself.cast(StageMsg::LaneFailed(failure));
                    }
                });
            }
            (StageMsg::Tick, Lanes::One(stage)) => stage.on_tick(&state.out).await?,
            (StageMsg::Tick, Lanes::Many { .. }) => {}
            (StageMsg::LaneFailed(failure), _) => return Err(failure.into()),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match &mut state.lanes {
            Lanes::One(stage) => stage.on_stop(&state.out).await,
            Lanes::Many { count, idle, free } => {
                // Let the lanes at work finish (briefly), then stop every lane.
                let all = u32::try_from(*count).unwrap_or(u32::MAX);
                let _ = tokio::time::timeout(Duration::from_secs(5), free.acquire_many(all)).await;
                let lanes = std::mem::take(&mut *lock(idle));
                for mut lane in lanes {
                    lane.on_stop(&state.out).await;
                }
            }
        }
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The supervisor's entry for a frame stage: `lanes` instances built by `build`, fed by
/// `input`, handing their output to `out`.
pub fn frame_stage<S: FrameStage>(
    id: StageId,
    lanes: usize,
    build: impl Fn() -> Result<S, StageFailure> + Send + Sync + 'static,
    input: Edge<S::In>,
    out: Edge<S::Out>,
) -> ChildSpec {
    let build: Build<S> = Arc::new(build);
    ChildSpec::new(id, move |ctx: SpawnContext| {
        let args = StageArgs {
            id,
            build: build.clone(),
            lanes,
            out: out.clone(),
        };
        let input = input.clone();
        async move {
            let (actor, _) = Actor::spawn_linked(
                Some(ctx.actor_name(id)),
                StageActor::<S>(PhantomData),
                args,
                ctx.supervisor,
            )
            .await?;
            input.point_to_actor(actor.clone(), StageMsg::Input);
            Ok(actor.get_cell())
        }
    })
}
