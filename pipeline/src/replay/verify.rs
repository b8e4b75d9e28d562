//! `tessera replay verify`: runs a recording's frames through the pipeline (on an embedded
//! broker, or on the user's brokers) and holds the results against a golden recording, frame
//! by frame; or, with `--write-golden`, records them as the new golden.
//!
//! The stream is judged by its recorded times (`flow.clock = "stream"`): a lag policy measures
//! a frame's age against the newest frame consumed, not against today's date.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tessera_actors::config::ClockKind;
use tessera_actors::protocol::headers;
use tessera_actors::{FrameResult, Monitor, PipelineConfig};

use super::compare::{Comparison, FrameKey, FrameOutcome, Tolerance, compare};
use super::recording::{
    Damage, KafkaRecord, Recorded, RecordingReader, RecordingWriter, WriteSummary, scan,
};
use crate::embedded::Output;
use crate::feed::{FeedEvent, FeedItem, FeedRecord, feed};
use crate::local::{LocalPipeline, topics_of};
use crate::progress::Progress;

/// Options of `tessera replay verify`.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The recording whose frames are run.
    pub recording: PathBuf,
    /// The golden results recording.
    pub expected: PathBuf,
    pub tolerance: Tolerance,
    /// Record this run's results as the golden instead of comparing.
    pub write_golden: bool,
    /// The user's brokers instead of an embedded one.
    pub brokers: Option<String>,
    /// The recorded topic holding the frames (default: the only one, else the input topic).
    pub channel: Option<String>,
    pub assets: Option<PathBuf>,
    /// Give up when no result arrives for this long.
    pub idle_timeout: Duration,
}

/// What a verification found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// Frames fed to the pipeline.
    pub frames: usize,
    /// This run's outcome per frame.
    pub outcomes: BTreeMap<FrameKey, FrameOutcome>,
    /// The comparison with the golden (`None` when the golden was written).
    pub comparison: Option<Comparison>,
    /// The golden written (`--write-golden`).
    pub written: Option<WriteSummary>,
    /// Where the recording is damaged (its intact frames were run).
    pub damage: Option<Damage>,
    pub seconds: f64,
}

impl VerifyReport {
    /// The recording was whole and matched its golden (or the golden was written).
    pub fn passed(&self) -> bool {
        self.damage.is_none() && self.comparison.as_ref().is_none_or(Comparison::matches)
    }
}

/// An output in the order its frame was published.
struct Answered {
    index: usize,
    output: Output,
}

/// Runs the recording through `config`'s pipeline and compares (or writes) the golden.
pub async fn run(
    mut config: PipelineConfig,
    options: &VerifyOptions,
) -> anyhow::Result<VerifyReport> {
    let recording = scan(&options.recording)?;
    let preferred = config
        .kafka
        .input_topics
        .first()
        .cloned()
        .unwrap_or_default();
    let channel = super::choose_channel(&recording, options.channel.as_deref(), &preferred)?;
    let total = recording.channels.get(&channel).map_or(0, |c| c.messages);
    let golden = if options.write_golden {
        None
    } else {
        Some(load_golden(&options.expected)?)
    };
    config.flow.clock = ClockKind::Stream;
    config.http.enabled = false;

    let runner = Runner::start(config, options).await?;
    let damage = std::sync::Arc::new(std::sync::Mutex::new(None));
    let frames = frames_of(&options.recording, channel, damage.clone())?;
    let progress = Progress::new("verify", "frames", Some(total));
    let started = Instant::now();
    let mut published: HashMap<String, usize> = HashMap::new();
    let mut answered = Vec::new();
    let fed = feed(
        &runner.brokers(),
        &topics_of(runner.config()),
        frames,
        runner.budget(),
        options.idle_timeout,
        |event| match event {
            FeedEvent::Published { source, .. } => {
                let index = published.len();
                published.insert(source, index);
            }
            FeedEvent::Unreadable(reason) => progress.println(&format!("skipped: {reason}")),
            FeedEvent::Output(output) => {
                progress.inc(1);
                answered.push(output);
            }
        },
    )
    .await;
    progress.finish();
    let effective = runner.config().clone();
    let model = runner.model();
    runner.shutdown().await?;
    let report = fed?;

    // Only this run's frames, in the order they were published.
    let mut ours: Vec<Answered> = answered
        .into_iter()
        .filter_map(|output| {
            let index = *published.get(&output.source()?)?;
            Some(Answered { index, output })
        })
        .collect();
    ours.sort_by_key(|a| a.index);
    let mut outcomes = BTreeMap::new();
    for answered in &ours {
        if let Some((key, outcome)) = outcome_of(&answered.output) {
            outcomes.entry(key).or_insert(outcome);
        }
    }
    let damage = damage.lock().map_or(None, |mut d| d.take());
    let mut verify = VerifyReport {
        frames: report.published,
        outcomes,
        comparison: None,
        written: None,
        damage,
        seconds: started.elapsed().as_secs_f64(),
    };
    match golden {
        Some(golden) => {
            verify.comparison = Some(compare(&golden, &verify.outcomes, options.tolerance));
        }
        None => {
            let metadata = golden_metadata(
                &options.recording,
                &recording.metadata,
                &effective,
                &model,
                &verify.outcomes,
            );
            verify.written = Some(write_golden(
                &options.expected,
                &metadata,
                &effective,
                &ours,
            )?);
        }
    }
    Ok(verify)
}

/// The recording's frames on `channel`, as they were recorded; the damage that ends the
/// file early is left in `damage`.
fn frames_of(
    file: &Path,
    channel: String,
    damage: std::sync::Arc<std::sync::Mutex<Option<Damage>>>,
) -> anyhow::Result<impl Iterator<Item = FeedItem> + Send + 'static> {
    let reader = RecordingReader::open(file)?;
    Ok(reader
        .map_while(move |item| match item {
            Ok(recorded) => Some(Some(recorded)),
            Err(found) => {
                if let Ok(mut slot) = damage.lock() {
                    *slot = Some(found);
                }
                None
            }
        })
        .flatten()
        .filter(move |recorded: &Recorded| recorded.record.topic == channel)
        .map(|recorded| {
            let record = recorded.record;
            let frame_id = record
                .header(headers::FRAME_ID)
                .map(|id| String::from_utf8_lossy(id).into_owned())
                .unwrap_or_else(|| format!("record {}", recorded.index));
            Ok(FeedRecord {
                frame_id,
                key: record.key,
                headers: record.headers,
                payload: record.payload.unwrap_or_default(),
                timestamp_ms: record.timestamp_ms,
            })
        }))
}

/// A frame's key and outcome, from a result or a dead letter.
fn outcome_of(output: &Output) -> Option<(FrameKey, FrameOutcome)> {
    match output {
        Output::Result { result, .. } => Some((
            (result.camera.clone(), result.frame_id.clone()),
            FrameOutcome::Result(result.clone()),
        )),
        Output::DeadLetter {
            key,
            frame_id,
            source,
            kind,
            ..
        } => Some((
            (
                String::from_utf8_lossy(key.as_deref().unwrap_or_default()).into_owned(),
                frame_id.clone().or_else(|| source.clone())?,
            ),
            FrameOutcome::DeadLetter { kind: kind.clone() },
        )),
    }
}

/// A golden: every result document and dead letter in a recording, whatever its channels
/// (one written by `--write-golden`, or `replay record` of a results and a dead-letter topic).
pub fn load_golden(path: &Path) -> anyhow::Result<BTreeMap<FrameKey, FrameOutcome>> {
    let mut outcomes = BTreeMap::new();
    for item in RecordingReader::open(path)? {
        let record = item
            .map_err(|damage| anyhow::anyhow!("golden {}: {damage}", path.display()))?
            .record;
        if let Some((key, outcome)) = golden_outcome(&record) {
            outcomes.entry(key).or_insert(outcome);
        }
    }
    anyhow::ensure!(
        !outcomes.is_empty(),
        "golden {} holds no result documents or dead letters",
        path.display()
    );
    Ok(outcomes)
}

fn golden_outcome(record: &KafkaRecord) -> Option<(FrameKey, FrameOutcome)> {
    let text = |name: &str| {
        record
            .header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    if let Some(kind) = text(headers::ERROR_KIND) {
        let camera =
            String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).into_owned();
        let frame_id = text(headers::FRAME_ID).or_else(|| text(headers::SOURCE))?;
        return Some(((camera, frame_id), FrameOutcome::DeadLetter { kind }));
    }
    let result: FrameResult = serde_json::from_slice(record.payload.as_deref()?).ok()?;
    Some((
        (result.camera.clone(), result.frame_id.clone()),
        FrameOutcome::Result(Box::new(result)),
    ))
}

/// What a golden says of how it was made: the recording, the model, the heads and the
/// effective configuration.
fn golden_metadata(
    recording: &Path,
    recording_metadata: &BTreeMap<String, String>,
    config: &PipelineConfig,
    model: &str,
    outcomes: &BTreeMap<FrameKey, FrameOutcome>,
) -> BTreeMap<String, String> {
    let mut metadata =
        super::base_metadata(&format!("replay verify {}", recording.display()), "results");
    if let Some(created) = recording_metadata.get("created") {
        metadata.insert("recording_created".into(), created.clone());
    }
    metadata.insert("model".into(), model.to_owned());
    let mut heads: Vec<String> = outcomes
        .values()
        .filter_map(|o| match o {
            FrameOutcome::Result(r) => Some(match (&r.head_scope, r.head_version) {
                (Some(scope), Some(v)) => format!("{scope}=v{v}"),
                (None, Some(v)) => format!("v{v}"),
                _ => "none".to_owned(),
            }),
            FrameOutcome::DeadLetter { .. } => None,
        })
        .collect();
    heads.sort();
    heads.dedup();
    metadata.insert("head_versions".into(), heads.join(","));
    let mut shown = config.clone();
    if shown.http.admin_token.is_some() {
        shown.http.admin_token = Some("<redacted>".into());
    }
    metadata.insert(
        "config".into(),
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("<not shown: {e}>")),
    );
    metadata
}

/// Writes the outcomes, in the order their frames were published: result documents on the
/// results topic's channel, dead letters (headers only) on the dead-letter topic's.
fn write_golden(
    path: &Path,
    metadata: &BTreeMap<String, String>,
    config: &PipelineConfig,
    answered: &[Answered],
) -> anyhow::Result<WriteSummary> {
    let mut writer = RecordingWriter::create(path, metadata)?;
    let mut seen = std::collections::HashSet::new();
    for Answered { output, .. } in answered {
        let Some((key, _)) = outcome_of(output) else {
            continue;
        };
        if !seen.insert(key) {
            continue;
        }
        let (record, log_time_ms) = match output {
            Output::Result {
                key,
                partition,
                result,
            } => (
                KafkaRecord {
                    topic: config.kafka.results_topic.clone(),
                    partition: *partition,
                    offset: -1,
                    timestamp_ms: None,
                    key: key.clone(),
                    headers: Vec::new(),
                    payload: Some(serde_json::to_vec(result)?),
                },
                result.timestamps.capture_ms.unwrap_or(0),
            ),
            Output::DeadLetter {
                key,
                frame_id,
                source,
                kind,
                error,
                ..
            } => {
                let mut record_headers = vec![
                    (
                        headers::ERROR_KIND.to_owned(),
                        Some(kind.clone().into_bytes()),
                    ),
                    (headers::ERROR.to_owned(), Some(error.clone().into_bytes())),
                ];
                if let Some(id) = frame_id {
                    record_headers
                        .push((headers::FRAME_ID.to_owned(), Some(id.clone().into_bytes())));
                }
                if let Some(source) = source {
                    record_headers.push((
                        headers::SOURCE.to_owned(),
                        Some(source.clone().into_bytes()),
                    ));
                }
                (
                    KafkaRecord {
                        topic: config.kafka.dlq_topic.clone(),
                        partition: 0,
                        offset: -1,
                        timestamp_ms: None,
                        key: key.clone(),
                        headers: record_headers,
                        payload: None,
                    },
                    0,
                )
            }
        };
        writer.write(&record, log_time_ms.max(0))?;
    }
    Ok(writer.finish()?)
}

/// The pipeline a verification runs on: on an embedded broker, or on the user's.
enum Runner {
    Local(LocalPipeline),
    External {
        config: PipelineConfig,
        pipeline: tessera_actors::PipelineHandle,
    },
}

impl Runner {
    async fn start(mut config: PipelineConfig, options: &VerifyOptions) -> anyhow::Result<Self> {
        let stamp = tessera_actors::protocol::now_ms();
        let Some(brokers) = &options.brokers else {
            config.kafka.group_id = "tessera-verify".into();
            let monitor = Monitor::new(
                "verify",
                &config.kafka.group_id,
                config.http.liveness_timeout,
            );
            let local =
                LocalPipeline::start(config, "verify", options.assets.as_deref(), 1, monitor)
                    .await?;
            return Ok(Runner::Local(local));
        };
        // A group of its own, starting at the end of the input topic: only the frames fed now
        // are processed, whatever the topic held before.
        config.kafka.brokers = brokers.clone();
        config.kafka.group_id = format!("tessera-verify-{}-{stamp}", std::process::id());
        start_group_at_end(&config)?;
        let monitor = Monitor::new(
            "verify",
            &config.kafka.group_id,
            config.http.liveness_timeout,
        );
        let pipeline = tessera_actors::start_monitored(
            config.clone(),
            &crate::local::unique_instance("verify"),
            options.assets.as_deref(),
            monitor.clone(),
        )
        .await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(not_ready) = monitor.readiness() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the pipeline did not get ready: {not_ready}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Runner::External { config, pipeline })
    }

    fn config(&self) -> &PipelineConfig {
        match self {
            Runner::Local(local) => local.config(),
            Runner::External { config, .. } => config,
        }
    }

    fn brokers(&self) -> String {
        self.config().kafka.brokers.clone()
    }

    fn model(&self) -> String {
        let model = match self {
            Runner::Local(local) => local.pipeline().model(),
            Runner::External { pipeline, .. } => pipeline.model(),
        };
        format!("{} {}", model.manifest.name, model.manifest.version)
    }

    /// Bytes in flight: what the embedded broker keeps; a real broker keeps everything, so
    /// the bound is only memory.
    fn budget(&self) -> usize {
        match self {
            Runner::Local(_) => crate::feed::EMBEDDED_BUDGET_BYTES,
            Runner::External { .. } => 256 << 20,
        }
    }

    async fn shutdown(self) -> anyhow::Result<()> {
        match self {
            Runner::Local(local) => local.shutdown(Duration::from_secs(10)).await,
            Runner::External { pipeline, .. } => {
                pipeline.shutdown(Duration::from_secs(10)).await?;
                Ok(())
            }
        }
    }
}

/// Commits the input topics' current ends as the group's offsets, so the pipeline starts
/// there (no race with `auto.offset.reset = latest`, which resolves only once it fetches).
fn start_group_at_end(config: &PipelineConfig) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(15);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", &config.kafka.group_id)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut ends = TopicPartitionList::new();
    for topic in &config.kafka.input_topics {
        let partitions = super::partitions_of(&consumer, topic, &config.kafka.brokers)?;
        for partition in partitions {
            let (_, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
            ends.add_partition_offset(topic, partition, Offset::Offset(high))?;
        }
    }
    consumer.commit(&ends, CommitMode::Sync)?;
    Ok(())
}
