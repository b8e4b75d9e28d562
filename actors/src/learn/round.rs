//! One fine-tune round, as plain code: split the replay buffer's examples (a stable split by
//! example id), train a candidate head on the training part, validate it and the live head on
//! the same held-out part, and decide. Runs on the fine-tune thread; no actors, no Kafka.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;
use tessera_models::{Example, Head, ModelError, TrainSettings};
use tessera_operators::learning::{
    Decision, LabelledExample, PromotionPolicy, Validation, decide, is_held_out, validate,
};

/// What a round needs besides the examples.
#[derive(Debug, Clone)]
pub struct RoundSettings {
    pub train: TrainSettings,
    /// Share of examples (by id) held out for validation, in percent.
    pub validation_percent: u8,
    pub policy: PromotionPolicy,
    /// Training examples needed for a round to train at all.
    pub min_examples: usize,
}

/// How a round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundOutcome {
    Promoted,
    Rejected,
    Skipped,
    Failed,
}

impl RoundOutcome {
    pub const ALL: [RoundOutcome; 4] = [
        RoundOutcome::Promoted,
        RoundOutcome::Rejected,
        RoundOutcome::Skipped,
        RoundOutcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RoundOutcome::Promoted => "promoted",
            RoundOutcome::Rejected => "rejected",
            RoundOutcome::Skipped => "skipped",
            RoundOutcome::Failed => "failed",
        }
    }
}

/// The report of a round: logs, metrics and `/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundReport {
    /// The scope trained: `global`, or a camera group.
    pub scope: String,
    pub outcome: RoundOutcome,
    /// Why it was rejected, skipped or failed.
    pub reason: Option<String>,
    /// The candidate's version (promoted or rejected).
    pub version: Option<u64>,
    /// The scope's live head when the round started.
    pub parent: Option<u64>,
    /// The head the candidate was validated against (`scope/version`): the scope's live
    /// head, else the global one that serves its cameras until then.
    pub baseline: Option<String>,
    pub classes: Vec<String>,
    pub training_examples: usize,
    pub held_out_examples: usize,
    pub candidate: Option<Validation>,
    /// The live head on the same held-out examples.
    pub live: Option<Validation>,
    pub duration_ms: u64,
    /// When the round finished, ms since the Unix epoch.
    pub finished_ms: i64,
}

/// A round's report, and the head to publish when it was promoted.
#[derive(Debug)]
pub struct RoundResult {
    pub report: RoundReport,
    pub promoted: Option<Head>,
}

/// [`run_round`] on a thread pool of `cores` threads of its own: candle's CPU kernels use
/// rayon, and a pool of the round's own bounds the cores it takes. Its threads run at the
/// lowest priority (nice 19): where recognition needs a core, it gets it, and a round takes
/// what is left. Call it from a dedicated thread, never from the async runtime.
pub fn run_round_on(cores: usize, round: &Round<'_>, settings: &RoundSettings) -> RoundResult {
    let run = || run_round(round, settings);
    match rayon::ThreadPoolBuilder::new()
        .num_threads(cores.max(1))
        .thread_name(|i| format!("tessera-finetune-{i}"))
        .start_handler(|_| lower_priority())
        .build()
    {
        Ok(pool) => pool.install(run),
        Err(error) => {
            tracing::warn!(%error, "No thread pool for the round; running on this thread");
            run()
        }
    }
}

/// Lowers the calling thread to the lowest scheduling priority of its policy (niceness 19 on
/// Linux; allowed without privileges). A failure only leaves it as it was.
fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let lowest = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
    );
    if let Err(error) = lowest {
        tracing::debug!(?error, "Fine-tune thread priority not lowered");
    }
}

/// What one round works on.
#[derive(Debug, Clone, Copy)]
pub struct Round<'a> {
    /// The scope trained, whose replay buffer `examples` is.
    pub scope: &'a str,
    /// The replay buffer's examples.
    pub examples: &'a [LabelledExample],
    /// The head serving the scope now, which the candidate has to beat: the scope's live head,
    /// else the global one.
    pub live: Option<&'a Arc<Head>>,
    /// `sha256:<hex>` of the backbone the embeddings come from.
    pub backbone: &'a str,
    pub embedding_dim: usize,
    /// The version the candidate gets (in its scope).
    pub version: u64,
}

/// Runs a round over the replay buffer's examples, against the live head.
pub fn run_round(round: &Round<'_>, settings: &RoundSettings) -> RoundResult {
    let Round {
        scope,
        examples,
        live,
        backbone,
        embedding_dim,
        version,
    } = *round;
    let started = std::time::Instant::now();
    // The parent is the scope's own previous head; a group's first head has none (the global
    // head it is validated against is its baseline).
    let parent = live.filter(|h| h.scope() == scope).map(|h| h.version());
    let baseline = live.map(|h| format!("{}/{}", h.scope(), h.version()));
    let (held_out, training): (Vec<&LabelledExample>, Vec<&LabelledExample>) = examples
        .iter()
        .partition(|e| is_held_out(&e.id, settings.validation_percent));
    // Class ids stay stable across versions: the live head's classes first, new ones after.
    let present: BTreeSet<&str> = training.iter().map(|e| e.label.as_str()).collect();
    let mut classes: Vec<String> = live
        .map(|h| {
            h.classes()
                .iter()
                .filter(|c| present.contains(c.as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    for class in &present {
        if !classes.iter().any(|c| c == class) {
            classes.push((*class).to_owned());
        }
    }
    let mut report = RoundReport {
        scope: scope.to_owned(),
        outcome: RoundOutcome::Skipped,
        reason: None,
        version: None,
        parent,
        baseline,
        classes: classes.clone(),
        training_examples: training.len(),
        held_out_examples: held_out.len(),
        candidate: None,
        live: None,
        duration_ms: 0,
        finished_ms: 0,
    };
    let finish = |mut report: RoundReport, promoted: Option<Head>| {
        report.duration_ms = started.elapsed().as_millis() as u64;
        report.finished_ms = crate::protocol::now_ms();
        RoundResult { report, promoted }
    };
    if classes.len() < 2 || training.len() < settings.min_examples {
        report.reason = Some(format!(
            "{} training examples of {} classes; a round needs {} examples of at least 2 classes",
            training.len(),
            classes.len(),
            settings.min_examples
        ));
        return finish(report, None);
    }
    let trained = train(&training, &classes, settings, backbone, embedding_dim);
    let mut candidate = match trained {
        Ok(head) => head,
        Err(error) => {
            report.outcome = RoundOutcome::Failed;
            report.reason = Some(error.detail());
            return finish(report, None);
        }
    };
    report.version = Some(version);
    let truth: Vec<&str> = held_out.iter().map(|e| e.label.as_str()).collect();
    let candidate_validation = match predicted_names(&candidate, &held_out) {
        Ok(names) => validate(names.iter().map(String::as_str), truth.iter().copied()),
        Err(error) => {
            report.outcome = RoundOutcome::Failed;
            report.reason = Some(error.detail());
            return finish(report, None);
        }
    };
    let live_validation = live.and_then(|head| {
        predicted_names(head, &held_out)
            .ok()
            .map(|names| validate(names.iter().map(String::as_str), truth.iter().copied()))
    });
    report.candidate = Some(candidate_validation.clone());
    report.live = live_validation.clone();
    match decide(
        &candidate_validation,
        live_validation.as_ref(),
        &settings.policy,
    ) {
        Decision::Promote => {
            let meta = candidate.meta_mut();
            meta.version = version;
            meta.parent = parent;
            meta.scope = scope.to_owned();
            meta.validation = candidate_validation;
            report.outcome = RoundOutcome::Promoted;
            finish(report, Some(candidate))
        }
        Decision::Reject(reason) => {
            report.outcome = RoundOutcome::Rejected;
            report.reason = Some(reason);
            finish(report, None)
        }
    }
}

fn train(
    training: &[&LabelledExample],
    classes: &[String],
    settings: &RoundSettings,
    backbone: &str,
    embedding_dim: usize,
) -> Result<Head, ModelError> {
    let examples: Vec<Example<'_>> = training
        .iter()
        .filter_map(|e| {
            let class = classes.iter().position(|c| *c == e.label)?;
            Some(Example {
                embedding: &e.embedding,
                class,
            })
        })
        .collect();
    Head::train(
        classes.to_vec(),
        &examples,
        embedding_dim,
        backbone.to_owned(),
        &settings.train,
    )
}

/// The class name `head` predicts for each example.
fn predicted_names(head: &Head, examples: &[&LabelledExample]) -> Result<Vec<String>, ModelError> {
    if examples.is_empty() {
        return Ok(Vec::new());
    }
    let flat: Vec<f32> = examples
        .iter()
        .flat_map(|e| e.embedding.iter().copied())
        .collect();
    Ok(head
        .predict(&flat)?
        .into_iter()
        .map(|class| head.classes().get(class).cloned().unwrap_or_default())
        .collect())
}
