//! FineTune: keeps the replay buffer of labelled examples (rebuilt from the examples topic at
//! start, so an acknowledged example survives a restart) and, on the trainer replica, runs a
//! round every `finetune.interval`, after `finetune.min_new_labels` new labels, or on demand:
//! train a candidate on its own thread (a pool of `finetune.threads` cores, never the async
//! runtime's threads, never a recognize session's), validate it against the live head on the
//! same held-out examples, and publish it to the heads topic if it is promoted (every replica,
//! this one included, then applies it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rdkafka::consumer::StreamConsumer;
use tessera_models::TrainSettings;
use tessera_operators::learning::{LabelledExample, PromotionPolicy, ReplayBuffer, ReplayLimits};

use crate::config::{FineTuneConfig, KafkaConfig, LabelsConfig};
use crate::learn::{
    ExampleRecord, Learning, Round, RoundOutcome, RoundResult, RoundSettings, run_round_on,
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
pub fn child(settings: FineTuneSettings, input: Edge<LabelledExample>) -> ChildSpec {
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
    input: Edge<LabelledExample>,
    threads: StageThreads,
}

#[derive(Debug)]
pub enum FineTuneMsg {
    Example(LabelledExample),
    Tick,
    /// `POST /v1/finetune`.
    Requested,
    Done(Box<RoundResult>),
}

#[derive(Debug)]
pub struct FineTuneState {
    settings: FineTuneSettings,
    threads: StageThreads,
    buffer: ReplayBuffer,
    /// Labels since the last round started.
    new_labels: usize,
    last_round: Instant,
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
        let mut buffer = ReplayBuffer::new(ReplayLimits {
            per_class: settings.finetune.per_class,
            classes: settings.finetune.max_classes,
        });
        let restored = restore(&settings, &mut buffer).await?;
        tracing::info!(
            restored,
            examples = buffer.len(),
            classes = buffer.counts().len(),
            "Replay buffer rebuilt from the examples topic"
        );
        report_buffer(&settings.monitor, &buffer);
        let learning = settings.learning.clone();
        let forward = myself.clone();
        let requests = StageTask::spawn(async move {
            loop {
                learning.trainer.requested().await;
                if forward.cast(FineTuneMsg::Requested).is_err() {
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
            buffer,
            new_labels: 0,
            last_round: Instant::now(),
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
            FineTuneMsg::Example(example) => {
                let id = example.id.clone();
                match state.buffer.add(example) {
                    Ok(_) => state.new_labels += 1,
                    Err(error) => tracing::warn!(%error, %id, "Example not kept"),
                }
                report_buffer(&state.settings.monitor, &state.buffer);
            }
            FineTuneMsg::Tick => {
                if due(state) {
                    start_round(&myself, state)?;
                }
            }
            FineTuneMsg::Requested => {
                if state.running {
                    tracing::info!("Fine-tune requested while a round runs; ignored");
                } else {
                    start_round(&myself, state)?;
                }
            }
            FineTuneMsg::Done(result) => {
                state.running = false;
                finish_round(&state.settings, *result).await;
            }
        }
        Ok(())
    }
}

/// Whether the timer or the label count asks for a round now.
fn due(state: &FineTuneState) -> bool {
    let f = &state.settings.finetune;
    if !f.enabled || state.running || !state.settings.learning.trainer.is_owner() {
        return false;
    }
    let by_count = f.min_new_labels > 0 && state.new_labels >= f.min_new_labels;
    let by_time =
        !f.interval.is_zero() && state.new_labels > 0 && state.last_round.elapsed() >= f.interval;
    by_count || by_time
}

/// Starts a round on its own thread with the buffer as it is now.
fn start_round(
    myself: &ActorRef<FineTuneMsg>,
    state: &mut FineTuneState,
) -> Result<(), StageFailure> {
    state.running = true;
    state.new_labels = 0;
    state.last_round = Instant::now();
    let examples: Vec<LabelledExample> = state.buffer.examples().cloned().collect();
    let heads = state.settings.learning.heads.clone();
    let live = heads.live();
    let version = heads.next_version();
    let round = state.settings.round();
    let cores = state.settings.finetune.threads;
    let reply = myself.clone();
    tracing::info!(
        examples = examples.len(),
        version,
        "Fine-tune round started"
    );
    state
        .threads
        .spawn("tessera-finetune".into(), move || {
            let input = Round {
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
            version = report.version,
            parent = report.parent,
            accuracy,
            live_accuracy = report.live.as_ref().map(|v| v.accuracy),
            classes = report.classes.len(),
            duration_ms = report.duration_ms,
            "Head promoted"
        ),
        RoundOutcome::Rejected => tracing::warn!(
            version = report.version,
            accuracy,
            reason = report.reason.as_deref().unwrap_or_default(),
            "Head rejected; the live head stays"
        ),
        RoundOutcome::Skipped => tracing::info!(
            reason = report.reason.as_deref().unwrap_or_default(),
            "Fine-tune round skipped"
        ),
        RoundOutcome::Failed => tracing::error!(
            reason = report.reason.as_deref().unwrap_or_default(),
            "Fine-tune round failed"
        ),
    }
    settings.learning.trainer.record(report);
}

/// Rebuilds the replay buffer from the examples topic (its start to its end).
async fn restore(
    settings: &FineTuneSettings,
    buffer: &mut ReplayBuffer,
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
                    let _ = buffer.add(LabelledExample {
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

fn report_buffer(monitor: &Monitor, buffer: &ReplayBuffer) {
    monitor.metrics.replay_examples.set(buffer.len() as i64);
    monitor
        .metrics
        .replay_bytes
        .set(buffer.memory_bytes() as i64);
}
