//! FineTune: keeps a replay buffer of labelled examples per scope (`global` and each camera
//! group; rebuilt from the examples topic at start, so an acknowledged example survives a
//! restart) and, on the trainer replica, runs a round of a scope every `finetune.interval`,
//! after `finetune.min_new_labels` new labels of that scope, or on demand: train a candidate
//! on its own thread (a pool of `finetune.threads` cores, never the async runtime's threads,
//! never a recognize session's), validate it against the head serving the scope on the same
//! held-out examples, and publish it to the heads topic if it is promoted (every replica, this
//! one included, then applies it). One round runs at a time; scopes take turns.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rdkafka::consumer::StreamConsumer;
use tessera_models::TrainSettings;
use tessera_operators::learning::{LabelledExample, PromotionPolicy, ReplayBuffer, ReplayLimits};

use crate::config::{FineTuneConfig, KafkaConfig, LabelsConfig};
use crate::learn::{
    ExampleRecord, Learning, Round, RoundOutcome, RoundResult, RoundSettings, ScopedExample,
    run_round_on,
};
use crate::observe::Monitor;
use crate::protocol::{StageFailure, StageId};
use crate::stage::kafka::{read_to_end, reader_config};
use crate::stage::{ChildSpec, Edge, StageTask, StageThreads};

/// How often the triggers are checked.
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct FineTuneSettings {
    pub kafka: KafkaConfig,
    pub labels: LabelsConfig,
    pub finetune: FineTuneConfig,
    pub learning: Arc<Learning>,
    pub monitor: Arc<Monitor>,
    /// How long reading the examples topic to its end at start may take
    /// (`heads.load_timeout`, the same kind of read).
    pub restore_timeout: Duration,
}

impl FineTuneSettings {
    fn limits(&self) -> ReplayLimits {
        ReplayLimits {
            per_class: self.finetune.per_class,
            classes: self.finetune.max_classes,
        }
    }

    fn round(&self) -> RoundSettings {
        let f = &self.finetune;
        RoundSettings {
            train: TrainSettings {
                steps: f.steps,
                learning_rate: f.learning_rate,
                hidden: f.hidden,
                ..TrainSettings::default()
            },
            validation_percent: f.validation_percent,
            policy: PromotionPolicy {
                tolerance: f.tolerance,
                floor: f.floor,
                max_recall_drop: f.max_recall_drop,
                min_class_recall: f.min_class_recall,
                min_validation_examples: f.min_validation_examples,
            },
            min_examples: f.min_examples,
        }
    }
}

/// The supervisor's entry for fine-tune; `input` is the edge from the labels stage.
pub fn child(settings: FineTuneSettings, input: Edge<ScopedExample>) -> ChildSpec {
    ChildSpec::actor(StageId::FineTune, FineTune, move |ctx| FineTuneArgs {
        settings: settings.clone(),
        input: input.clone(),
        threads: ctx.threads.clone(),
    })
}

#[derive(Debug, Clone, Copy)]
pub struct FineTune;

#[derive(Debug)]
pub struct FineTuneArgs {
    settings: FineTuneSettings,
    /// The edge from the labels stage, pointed at this actor once it runs.
    input: Edge<ScopedExample>,
    threads: StageThreads,
}

#[derive(Debug)]
pub enum FineTuneMsg {
    Example(ScopedExample),
    Tick,
    /// `POST /v1/finetune`: these scopes (`None`: every scope with examples).
    Requested(Vec<Option<String>>),
    Done(Box<RoundResult>),
}

#[derive(Debug)]
pub struct FineTuneState {
    settings: FineTuneSettings,
    threads: StageThreads,
    scopes: BTreeMap<String, ScopeState>,
    /// Scopes asked for on demand, trained first, in turn.
    queued: VecDeque<String>,
    running: bool,
    /// Forwards on-demand requests to the actor; held so it ends with the state.
    _requests: StageTask,
}

impl Actor for FineTune {
    type Msg = FineTuneMsg;
    type State = FineTuneState;
    type Arguments = FineTuneArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<FineTuneMsg>,
        args: FineTuneArgs,
    ) -> Result<FineTuneState, ActorProcessingErr> {
        let settings = args.settings;
        let mut scopes = BTreeMap::new();
        let restored = restore(&settings, &mut scopes).await?;
        for (scope, state) in &scopes {
            tracing::info!(
                %scope,
                examples = state.buffer.len(),
                classes = state.buffer.counts().len(),
                "Replay buffer rebuilt from the examples topic"
            );
        }
        tracing::info!(restored, scopes = scopes.len(), "Examples topic read");
        report_buffers(&settings.monitor, &scopes);
        let learning = settings.learning.clone();
        let forward = myself.clone();
        let requests = StageTask::spawn(async move {
            loop {
                let scopes = learning.trainer.requested().await;
                if forward.cast(FineTuneMsg::Requested(scopes)).is_err() {
                    break;
                }
            }
        });
        myself.send_interval(TICK, || FineTuneMsg::Tick);
        args.input
            .point_to_actor(myself.clone(), FineTuneMsg::Example);
        Ok(FineTuneState {
            settings,
            threads: args.threads,
            scopes,
            queued: VecDeque::new(),
            running: false,
            _requests: requests,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<FineTuneMsg>,
        message: FineTuneMsg,
        state: &mut FineTuneState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            FineTuneMsg::Example(ScopedExample { scope, example }) => {
                let id = example.id.clone();
                let limits = state.settings.limits();
                let scoped = state
                    .scopes
                    .entry(scope.clone())
                    .or_insert_with(|| ScopeState::new(limits));
                match scoped.buffer.add(example) {
                    Ok(_) => scoped.new_labels += 1,
                    Err(error) => tracing::warn!(%error, %id, %scope, "Example not kept"),
                }
                report_buffers(&state.settings.monitor, &state.scopes);
            }
            FineTuneMsg::Tick => {
                if let Some(scope) = next_scope(state) {
                    start_round(&myself, state, scope)?;
                }
            }
            FineTuneMsg::Requested(scopes) => {
                for scope in scopes {
                    match scope {
                        Some(scope) => state.queued.push_back(scope),
                        None => state.queued.extend(state.scopes.keys().cloned()),
                    }
                }
                if !state.running
                    && let Some(scope) = next_scope(state)
                {
                    start_round(&myself, state, scope)?;
                }
            }
            FineTuneMsg::Done(result) => {
                state.running = false;
                finish_round(&state.settings, *result).await;
                // Scopes asked for on demand do not wait for the next tick.
                if let Some(scope) = next_scope(state) {
                    start_round(&myself, state, scope)?;
                }
            }
        }
        Ok(())
    }
}

/// A scope's replay buffer and its triggers.
#[derive(Debug)]
struct ScopeState {
    buffer: ReplayBuffer,
    /// Labels since the scope's last round started.
    new_labels: usize,
    last_round: Instant,
}

impl ScopeState {
    fn new(limits: ReplayLimits) -> Self {
        Self {
            buffer: ReplayBuffer::new(limits),
            new_labels: 0,
            last_round: Instant::now(),
        }
    }

    /// Whether the timer or the label count asks for a round of this scope now.
    fn due(&self, finetune: &FineTuneConfig) -> bool {
        let by_count = finetune.min_new_labels > 0 && self.new_labels >= finetune.min_new_labels;
        let by_time = !finetune.interval.is_zero()
            && self.new_labels > 0
            && self.last_round.elapsed() >= finetune.interval;
        by_count || by_time
    }
}

/// The scope to train next, if a round may start now: one asked for on demand, else the due
/// scope waiting longest.
fn next_scope(state: &mut FineTuneState) -> Option<String> {
    let f = &state.settings.finetune;
    if state.running || !state.settings.learning.trainer.is_owner() {
        return None;
    }
    if let Some(scope) = state.queued.pop_front() {
        return Some(scope);
    }
    if !f.enabled {
        return None;
    }
    state
        .scopes
        .iter()
        .filter(|(_, s)| s.due(f))
        .min_by_key(|(_, s)| s.last_round)
        .map(|(scope, _)| scope.clone())
}

/// Starts a round of `scope` on its own thread with its buffer as it is now.
fn start_round(
    myself: &ActorRef<FineTuneMsg>,
    state: &mut FineTuneState,
    scope: String,
) -> Result<(), StageFailure> {
    let examples: Vec<LabelledExample> = match state.scopes.get_mut(&scope) {
        Some(scoped) => {
            scoped.new_labels = 0;
            scoped.last_round = Instant::now();
            scoped.buffer.examples().cloned().collect()
        }
        None => Vec::new(),
    };
    state.running = true;
    let heads = state.settings.learning.heads.clone();
    let live = heads.serving(&scope);
    let version = heads.next_version(&scope);
    let round = state.settings.round();
    let cores = state.settings.finetune.threads;
    let reply = myself.clone();
    tracing::info!(
        %scope,
        examples = examples.len(),
        version,
        "Fine-tune round started"
    );
    state
        .threads
        .spawn("tessera-finetune".into(), move || {
            let input = Round {
                scope: &scope,
                examples: &examples,
                live: live.as_ref(),
                backbone: heads.backbone(),
                embedding_dim: heads.embedding_dim(),
                version,
            };
            let result = run_round_on(cores, &input, &round);
            let _ = reply.cast(FineTuneMsg::Done(Box::new(result)));
        })
        .map_err(|e| StageFailure::internal(StageId::FineTune, e.to_string()))?;
    Ok(())
}

/// Publishes a promoted head, and reports the round everywhere an operator looks.
async fn finish_round(settings: &FineTuneSettings, result: RoundResult) {
    let RoundResult {
        mut report,
        promoted,
    } = result;
    if let Some(head) = promoted
        && let Err(error) = (settings.learning.publish)(head).await
    {
        report.outcome = RoundOutcome::Failed;
        report.reason = Some(format!(
            "the promoted head could not be published: {}",
            tessera_models::error_chain(error.as_ref())
        ));
    }
    let metrics = &settings.monitor.metrics;
    metrics.finetune_run(report.outcome.as_str());
    metrics
        .finetune_duration
        .observe(report.duration_ms as f64 / 1000.0);
    if let Some(live) = &report.live {
        metrics.finetune_live_accuracy.set(f64::from(live.accuracy));
    }
    let accuracy = report.candidate.as_ref().map(|v| v.accuracy);
    match report.outcome {
        RoundOutcome::Promoted => tracing::info!(
            scope = %report.scope,
            version = report.version,
            parent = report.parent,
            accuracy,
            live_accuracy = report.live.as_ref().map(|v| v.accuracy),
            classes = report.classes.len(),
            duration_ms = report.duration_ms,
            "Head promoted"
        ),
        RoundOutcome::Rejected => tracing::warn!(
            scope = %report.scope,
            version = report.version,
            accuracy,
            reason = report.reason.as_deref().unwrap_or_default(),
            "Head rejected; the live head stays"
        ),
        RoundOutcome::Skipped => tracing::info!(
            scope = %report.scope,
            reason = report.reason.as_deref().unwrap_or_default(),
            "Fine-tune round skipped"
        ),
        RoundOutcome::Failed => tracing::error!(
            scope = %report.scope,
            reason = report.reason.as_deref().unwrap_or_default(),
            "Fine-tune round failed"
        ),
    }
    settings.learning.trainer.record(report);
}

/// Rebuilds the replay buffers from the examples topic (its start to its end).
async fn restore(
    settings: &FineTuneSettings,
    scopes: &mut BTreeMap<String, ScopeState>,
) -> Result<usize, StageFailure> {
    let consumer: StreamConsumer = reader_config(&settings.kafka, "examples")
        .create()
        .map_err(|e| StageFailure::external(StageId::FineTune, e.to_string()))?;
    let backbone = settings.learning.heads.backbone().to_owned();
    let mut skipped = 0usize;
    let read = read_to_end(
        &consumer,
        &settings.labels.examples_topic,
        settings.restore_timeout,
        |_, value| {
            let record = value.and_then(|v| serde_json::from_slice::<ExampleRecord>(v).ok());
            match record {
                Some(record) if record.backbone == backbone => {
                    let scoped = scopes
                        .entry(record.scope)
                        .or_insert_with(|| ScopeState::new(settings.limits()));
                    let _ = scoped.buffer.add(LabelledExample {
                        id: record.id,
                        label: record.label,
                        embedding: record.embedding,
                    });
                }
                _ => skipped += 1,
            }
        },
    )
    .await
    .map_err(|e| StageFailure::external(StageId::FineTune, e))?;
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "Examples of another backbone, or unreadable, skipped"
        );
    }
    Ok(read)
}

/// Examples and bytes of every scope's buffer together.
fn report_buffers(monitor: &Monitor, scopes: &BTreeMap<String, ScopeState>) {
    let buffers = || scopes.values().map(|s| &s.buffer);
    let examples: usize = buffers().map(ReplayBuffer::len).sum();
    let bytes: usize = buffers().map(ReplayBuffer::memory_bytes).sum();
    monitor.metrics.replay_examples.set(examples as i64);
    monitor.metrics.replay_bytes.set(bytes as i64);
}
