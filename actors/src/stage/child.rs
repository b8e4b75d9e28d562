//! The supervisor's child list is data: each child is a [`ChildSpec`] that knows how to
//! spawn (and re-spawn) its stage and re-point the edge leading to it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorProcessingErr};

use super::threads::StageThreads;
use crate::protocol::{StageFailure, StageId};

type SpawnFuture = Pin<Box<dyn Future<Output = Result<ActorCell, ActorProcessingErr>> + Send>>;
type Spawn = Arc<dyn Fn(SpawnContext) -> SpawnFuture + Send + Sync>;

/// What a child is spawned with.
#[derive(Debug, Clone)]
pub struct SpawnContext {
    /// The supervisor the child is linked to.
    pub supervisor: ActorCell,
    /// Prefix of the pipeline's actor names (several pipelines may share a process).
    pub instance: String,
    /// Where a stage reports a failure it recovered from by itself (a replaced session):
    /// the supervisor counts it like a restart.
    pub failures: FailureReporter,
    /// Where a stage spawns threads outside the runtime, so that the pipeline can wait for
    /// them when it stops.
    pub threads: StageThreads,
}

/// Reports failures a stage recovered from by itself to the supervisor.
#[derive(Clone)]
pub struct FailureReporter(Arc<dyn Fn(StageFailure) + Send + Sync>);

impl FailureReporter {
    pub fn new(report: impl Fn(StageFailure) + Send + Sync + 'static) -> Self {
        Self(Arc::new(report))
    }

    pub fn report(&self, failure: StageFailure) {
        (self.0)(failure);
    }
}

impl std::fmt::Debug for FailureReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FailureReporter")
    }
}

impl SpawnContext {
    /// The registered name of stage `id` of this pipeline (for debugging and tests; no
    /// stage looks another up).
    pub fn actor_name(&self, id: StageId) -> String {
        actor_name(&self.instance, id)
    }
}

/// The registered name of stage `id` of pipeline `instance`.
pub fn actor_name(instance: &str, id: StageId) -> String {
    format!("tessera/{instance}/{id}")
}

/// One child of the supervisor.
#[derive(Clone)]
pub struct ChildSpec {
    pub id: StageId,
    /// The source of frames: restarting it re-reads from Kafka, so the other stages' frames
    /// need not be dispatched again.
    pub source: bool,
    spawn: Spawn,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("source", &self.source)
            .finish()
    }
}

impl ChildSpec {
    pub fn new<F>(id: StageId, spawn: impl Fn(SpawnContext) -> F + Send + Sync + 'static) -> Self
    where
        F: Future<Output = Result<ActorCell, ActorProcessingErr>> + Send + 'static,
    {
        Self {
            id,
            source: false,
            spawn: Arc::new(move |ctx| Box::pin(spawn(ctx))),
        }
    }

    /// A child that is one actor: spawned linked to the supervisor under its stage's name,
    /// with arguments made afresh for each (re)start from the spawn context.
    pub fn actor<A>(
        id: StageId,
        actor: A,
        args: impl Fn(&SpawnContext) -> A::Arguments + Send + Sync + 'static,
    ) -> Self
    where
        A: Actor + Clone + Sync,
    {
        Self::new(id, move |ctx: SpawnContext| {
            let (actor, args) = (actor.clone(), args(&ctx));
            async move {
                let (spawned, _) =
                    Actor::spawn_linked(Some(ctx.actor_name(id)), actor, args, ctx.supervisor)
                        .await?;
                Ok(spawned.get_cell())
            }
        })
    }

    /// Marks the child as the source of frames.
    pub fn into_source(mut self) -> Self {
        self.source = true;
        self
    }

    /// Spawns the child linked to `ctx.supervisor`, its input edge pointed at it.
    pub async fn spawn(&self, ctx: SpawnContext) -> Result<ActorCell, ActorProcessingErr> {
        (self.spawn)(ctx).await
    }
}
