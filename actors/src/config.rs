//! Configuration of the pipeline's components. Every field's doc comment is its entry in the
//! configuration reference (README); defaults come from the named functions below.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_models::{ExecutionProviderConfig, SessionConfig};
use tessera_operators::decode::DecodeLimits;
use tessera_operators::gate::GateSettings;
use tessera_operators::merge::MergeConfig;
use tessera_operators::scopes::{CameraGroup, Scopes};
use tessera_operators::tiling::TilingConfig;

/// An invalid configuration value.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration `{field}`: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The whole pipeline: Kafka, model, image limits, tiling, merging and the actor pools.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Kafka clients and topics.
    pub kafka: KafkaConfig,
    /// The model and its ONNX Runtime session.
    pub model: ModelConfig,
    /// Limits applied before and while decoding an image.
    pub limits: DecodeLimits,
    /// How frames are cut into tiles (SAHI).
    pub tiling: TilingConfig,
    /// How tile results are merged into frame results.
    pub merge: MergeConfig,
    /// Decode and preprocessing pool.
    pub prepare: PrepareConfig,
    /// Inference pool.
    pub recognize: RecognizeConfig,
    /// Flow control.
    pub flow: FlowConfig,
    /// Restart policy of the supervisor.
    pub supervision: SupervisionConfig,
    /// The HTTP endpoints: metrics, health, status and admin.
    pub http: HttpConfig,
    /// Trainable heads over the model's embedding.
    pub heads: HeadsConfig,
    /// Labelled feedback.
    pub labels: LabelsConfig,
    /// Training new heads from the labelled examples.
    pub finetune: FineTuneConfig,
    /// Camera groups, each with heads of its own (`[[groups]]`, `name` and `cameras`: camera-id
    /// patterns with `*` and `?`); a camera uses the first group it matches, else the global
    /// head. Labels from a camera train its group's head.
    pub groups: Vec<CameraGroup>,
    /// The second stage of a detection pipeline: boxes re-classified by the scope's head.
    pub second_stage: SecondStageConfig,
    /// Label requests: frames and boxes worth labelling, for a labelling tool.
    pub label_requests: LabelRequestsConfig,
    /// Change-gated tiles: static cameras reuse the results of tiles that did not change.
    pub gate: GateConfig,
}

impl PipelineConfig {
    /// The camera groups as scopes of heads.
    pub fn scopes(&self) -> Result<Scopes, ConfigError> {
        Scopes::new(&self.groups).map_err(|e| ConfigError::invalid("groups", e.to_string()))
    }

    /// Checks cross-field rules of every section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.kafka.validate()?;
        self.tiling
            .validate()
            .map_err(|e| ConfigError::invalid("tiling", e.to_string()))?;
        self.merge
            .validate()
            .map_err(|e| ConfigError::invalid("merge", e.to_string()))?;
        self.model
            .session
            .validate()
            .map_err(|e| ConfigError::invalid("model.session", e.to_string()))?;
        if self.prepare.workers == 0 {
            return Err(ConfigError::invalid(
                "prepare.workers",
                "must be at least 1",
            ));
        }
        if self.recognize.workers == 0 {
            return Err(ConfigError::invalid(
                "recognize.workers",
                "must be at least 1",
            ));
        }
        if self.recognize.max_batch == 0 {
            return Err(ConfigError::invalid(
                "recognize.max_batch",
                "must be at least 1",
            ));
        }
        if self.flow.max_in_flight_frames == 0 {
            return Err(ConfigError::invalid(
                "flow.max_in_flight_frames",
                "must be at least 1",
            ));
        }
        if self.flow.max_queued_tiles < self.recognize.max_batch {
            // A filling batch holds a credit per tile: fewer credits than a batch could
            // never fill one.
            return Err(ConfigError::invalid(
                "flow.max_queued_tiles",
                "must be at least recognize.max_batch",
            ));
        }
        if self.flow.max_attempts == 0 {
            return Err(ConfigError::invalid(
                "flow.max_attempts",
                "must be at least 1",
            ));
        }
        self.http.validate()?;
        self.finetune.validate()?;
        self.scopes()?;
        self.second_stage.validate()?;
        self.label_requests
            .sampler()
            .validate()
            .map_err(|e| ConfigError::invalid("label_requests", e.to_string()))?;
        if self.label_requests.max_pending == 0 {
            return Err(ConfigError::invalid(
                "label_requests.max_pending",
                "must be at least 1",
            ));
        }
        self.gate.validate(self.flow.max_age)?;
        if self.supervision.max_restarts == 0 {
            return Err(ConfigError::invalid(
                "supervision.max_restarts",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Trainable heads: where versions are kept. Heads apply to models whose manifest names an
/// embedding (`output.embedding`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadsConfig {
    /// The compacted topic promoted heads are published to, keyed by scope; every replica
    /// applies the newest version on it.
    pub topic: String,
    /// How long the start may take to read the heads topic to its end (a replica serves the
    /// newest head from its first result); also the limit for the fine-tune stage reading the
    /// examples topic at start.
    #[serde(with = "humantime_serde")]
    pub load_timeout: Duration,
    /// Folder where this replica also writes every head version it learns of (one safetensors
    /// file each, read back at start); unset: the heads topic is the only store.
    pub dir: Option<PathBuf>,
}

impl Default for HeadsConfig {
    fn default() -> Self {
        Self {
            topic: "tessera.heads".into(),
            load_timeout: Duration::from_secs(30),
            dir: None,
        }
    }
}

/// Labelled feedback: the labels topic, and where joined examples are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelsConfig {
    /// Topic of label records (JSON, see the README). One partition: the replica that owns it
    /// (in a consumer group of its own, `<kafka.group_id>.labels`) is the group's trainer.
    pub topic: String,
    /// Compacted topic of joined examples (label plus embedding), keyed by the label's
    /// `labels/<partition>/<offset>`; a label's offset is committed only once its example is
    /// written there, and the trainer re-reads it at start, so examples survive restarts.
    pub examples_topic: String,
    /// Recent frames' embeddings kept for joining labels without reading the frame back.
    pub embedding_cache: usize,
    /// Largest inline image a label may carry, in bytes (decoded).
    pub max_image_bytes: usize,
    /// How long reading a labelled frame back from Kafka may take.
    #[serde(with = "humantime_serde")]
    pub fetch_timeout: Duration,
}

impl Default for LabelsConfig {
    fn default() -> Self {
        Self {
            topic: "labels".into(),
            examples_topic: "tessera.examples".into(),
            embedding_cache: 4096,
            max_image_bytes: 8 * 1024 * 1024,
            fetch_timeout: Duration::from_secs(10),
        }
    }
}

/// Fine-tuning: when new heads are trained, on what, and when one is promoted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FineTuneConfig {
    /// Train heads on this replica when it is the trainer (owns the labels topic).
    pub enabled: bool,
    /// Train every this long when new labels arrived since the last round; `0s`: never on a
    /// timer.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Train once this many new labels arrived; `0`: never on a count.
    pub min_new_labels: usize,
    /// Cores one round may use (its own thread pool, never the async runtime's threads).
    pub threads: usize,
    /// Examples kept per class in the replay buffer (a uniform sample of all seen).
    pub per_class: usize,
    /// Classes kept in the replay buffer; labels of further classes are refused.
    pub max_classes: usize,
    /// Share of examples held out for validation, in percent (a stable split by example id).
    pub validation_percent: u8,
    /// Training examples a round needs.
    pub min_examples: usize,
    /// Full-batch AdamW steps per round.
    pub steps: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// Units of a hidden ReLU layer; unset: a linear softmax head.
    pub hidden: Option<usize>,
    /// A candidate may be this much less accurate than the live head on the same held-out
    /// examples and still be promoted.
    pub tolerance: f32,
    /// A candidate's validation accuracy must reach this.
    pub floor: f32,
    /// No class's recall may fall by more than this against the live head's.
    pub max_recall_drop: f32,
    /// No class's recall may be below this.
    pub min_class_recall: f32,
    /// Held-out examples needed to decide.
    pub min_validation_examples: usize,
}

impl Default for FineTuneConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(600),
            min_new_labels: 50,
            threads: 1,
            per_class: 300,
            max_classes: 64,
            validation_percent: 20,
            min_examples: 10,
            steps: 150,
            learning_rate: 0.01,
            hidden: None,
            tolerance: 0.01,
            floor: 0.6,
            max_recall_drop: 0.25,
            min_class_recall: 0.3,
            min_validation_examples: 4,
        }
    }
}

impl FineTuneConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.threads == 0 {
            return Err(ConfigError::invalid(
                "finetune.threads",
                "must be at least 1",
            ));
        }
        if !(1..=90).contains(&self.validation_percent) {
            return Err(ConfigError::invalid(
                "finetune.validation_percent",
                "must be within 1..=90",
            ));
        }
        if self.per_class == 0 || self.max_classes < 2 {
            return Err(ConfigError::invalid(
                "finetune.per_class",
                "per_class must be at least 1 and max_classes at least 2",
            ));
        }
        if self.steps == 0 || !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(ConfigError::invalid(
                "finetune.steps",
                "steps must be at least 1 and learning_rate positive",
            ));
        }
        for (field, value) in [
            ("finetune.tolerance", self.tolerance),
            ("finetune.floor", self.floor),
            ("finetune.max_recall_drop", self.max_recall_drop),
            ("finetune.min_class_recall", self.min_class_recall),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(ConfigError::invalid(field, "must be within 0..=1"));
            }
        }
        Ok(())
    }
}

/// The second stage of a detection pipeline: every selected box is cropped from the decoded
/// frame, embedded by a classifier backbone (one session for every scope) and classified by
/// the head serving the camera. Heads then train on this backbone's embeddings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecondStageConfig {
    /// Run the second stage (the model must be a detector).
    pub enabled: bool,
    /// Manifest of the backbone (`model.toml`); it must name an embedding output.
    pub manifest: PathBuf,
    /// Its ONNX file; default: as for `model.onnx`.
    pub onnx: Option<PathBuf>,
    /// Session options and execution providers of the backbone.
    pub session: SessionConfig,
    /// Boxes the detector scored at least this are classified.
    pub min_score: f32,
    /// Detector labels whose boxes are classified; empty: every label.
    pub classes: Vec<String>,
    /// Most boxes classified per frame, the best scored first.
    pub max_crops: usize,
    /// Head classes that reject a box (`head.rejected` in the result): negative labels train
    /// `none`.
    pub reject_labels: Vec<String>,
}

impl Default for SecondStageConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            manifest: PathBuf::from("models/manifests/mobilenetv2/model.toml"),
            onnx: None,
            session: SessionConfig::default(),
            min_score: 0.3,
            classes: Vec::new(),
            max_crops: 10,
            reject_labels: vec![
                tessera_operators::labels::NEGATIVE_CLASS.to_owned(),
                "background".to_owned(),
            ],
        }
    }
}

impl SecondStageConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.min_score) {
            return Err(ConfigError::invalid(
                "second_stage.min_score",
                "must be within 0..=1",
            ));
        }
        if self.max_crops == 0 {
            return Err(ConfigError::invalid(
                "second_stage.max_crops",
                "must be at least 1",
            ));
        }
        self.session
            .validate()
            .map_err(|e| ConfigError::invalid("second_stage.session", e.to_string()))
    }

    /// Which boxes are classified.
    pub fn selection(&self) -> tessera_operators::crops::CropSelection {
        tessera_operators::crops::CropSelection {
            min_score: self.min_score,
            classes: self.classes.clone(),
            max_crops: self.max_crops,
        }
    }
}

/// Change-gated tiles, for static cameras: per camera, each tile's signature (the mean luma of
/// a 16x16 grid over it) is kept with the tile's result; a tile whose signature has not moved
/// beyond `threshold` reuses that result instead of running the model, and the full-frame pass
/// runs only when a tile ran or it changed itself. Every camera runs in full every
/// `refresh_frames` frames or `refresh_interval`, and after a rebalance, a restart, a new head
/// or another frame size. Under sustained lag the settings move towards their `relaxed_`
/// bounds before frames are skipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateConfig {
    /// Reuse the results of unchanged tiles. Off: every tile of every frame runs.
    pub enabled: bool,
    /// A tile runs again when a cell of its signature moved by more than this many luma levels
    /// (0-255) since it last ran; sensor noise and JPEG re-encoding move cells by about 1.
    pub threshold: f32,
    /// Every camera runs in full at least every this many frames (1: every frame).
    pub refresh_frames: u32,
    /// Every camera runs in full at least this often, on its own clock (capture times).
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// Cameras whose tiles are kept (the least recently seen is dropped first; a dropped
    /// camera's next frame runs in full).
    pub max_cameras: usize,
    /// Frames' age (smoothed over about 20 frames, measured like `flow.max_age`) beyond which
    /// the settings relax; they reach the `relaxed_` bounds at `flow.max_age`.
    #[serde(with = "humantime_serde")]
    pub relax_after: Duration,
    /// `threshold` at full relaxation (never below `threshold`).
    pub relaxed_threshold: f32,
    /// `refresh_frames` at full relaxation (never below `refresh_frames`).
    pub relaxed_refresh_frames: u32,
    /// `refresh_interval` at full relaxation (never below `refresh_interval`).
    #[serde(with = "humantime_serde")]
    pub relaxed_refresh_interval: Duration,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            threshold: 6.0,
            refresh_frames: 50,
            refresh_interval: Duration::from_secs(10),
            max_cameras: 1024,
            relax_after: Duration::from_secs(2),
            relaxed_threshold: 12.0,
            relaxed_refresh_frames: 200,
            relaxed_refresh_interval: Duration::from_secs(40),
        }
    }
}

impl GateConfig {
    pub fn validate(&self, max_age: Duration) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: &str| {
            Err(ConfigError::invalid(format!("gate.{field}"), message))
        };
        if !(self.threshold.is_finite() && self.threshold >= 0.0) {
            return invalid("threshold", "must be a number of luma levels, 0 or more");
        }
        if !(self.relaxed_threshold.is_finite() && self.relaxed_threshold >= 0.0) {
            return invalid(
                "relaxed_threshold",
                "must be a number of luma levels, 0 or more",
            );
        }
        if self.refresh_frames == 0 {
            return invalid("refresh_frames", "must be at least 1");
        }
        if self.relaxed_refresh_frames < self.refresh_frames {
            return invalid(
                "relaxed_refresh_frames",
                "must be at least gate.refresh_frames",
            );
        }
        if self.refresh_interval.is_zero() {
            return invalid("refresh_interval", "must be more than 0s");
        }
        if self.max_cameras == 0 {
            return invalid("max_cameras", "must be at least 1");
        }
        if self.relax_after >= max_age {
            return invalid("relax_after", "must be below flow.max_age");
        }
        Ok(())
    }

    /// The gate's settings, and their bounds at full relaxation (a relaxed bound below its
    /// setting is the setting: relaxing never makes the gate stricter).
    pub fn settings(&self) -> (GateSettings, GateSettings) {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        (
            GateSettings {
                threshold: self.threshold,
                refresh_frames: self.refresh_frames,
                refresh_ms: millis(self.refresh_interval),
            },
            GateSettings {
                threshold: self.relaxed_threshold.max(self.threshold),
                refresh_frames: self.relaxed_refresh_frames.max(self.refresh_frames),
                refresh_ms: millis(self.relaxed_refresh_interval.max(self.refresh_interval)),
            },
        )
    }
}

/// Label requests (active learning): a sampler picks predicted boxes and classifications
/// worth labelling and publishes them, with the current prediction, for a labelling tool to
/// answer on the labels topic. Strategies are tried in order (uncertain, classes, rare,
/// random); each has its own rate limit per minute and per hour, on each replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelRequestsConfig {
    /// Publish label requests.
    pub enabled: bool,
    /// Topic of the requests (JSON, keyed by camera).
    pub topic: String,
    /// Requests handed to the producer and not yet acknowledged, at most; more are dropped
    /// (and counted): requests are hints, never a reason to slow frames down.
    pub max_pending: usize,
    /// Predictions whose score is within `epsilon` of `threshold`.
    pub uncertain: tessera_operators::sampling::UncertainConfig,
    /// Predictions of chosen classes.
    pub classes: tessera_operators::sampling::ClassesConfig,
    /// Predictions of classes rare in the camera's scope.
    pub rare: tessera_operators::sampling::RareConfig,
    /// A random share of predictions.
    pub random: tessera_operators::sampling::RandomConfig,
}

impl Default for LabelRequestsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            topic: "label-requests".into(),
            max_pending: 64,
            uncertain: Default::default(),
            classes: Default::default(),
            rare: Default::default(),
            random: Default::default(),
        }
    }
}

impl LabelRequestsConfig {
    /// The sampler's settings.
    pub fn sampler(&self) -> tessera_operators::sampling::SamplerConfig {
        tessera_operators::sampling::SamplerConfig {
            uncertain: self.uncertain.clone(),
            classes: self.classes.clone(),
            rare: self.rare.clone(),
            random: self.random.clone(),
        }
    }
}

/// Kafka clients (rdkafka, bundled librdkafka) and topics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// Consumer group; replicas sharing it split the input partitions.
    pub group_id: String,
    /// Topics to consume frames from.
    pub input_topics: Vec<String>,
    /// Topic receiving one JSON result per frame.
    pub results_topic: String,
    /// Topic receiving frames that could not be processed, with error headers.
    pub dlq_topic: String,
    /// Where a group without committed offsets starts: `earliest` or `latest`.
    pub auto_offset_reset: String,
    /// Consumer session timeout.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// How long the producer retries a message before reporting it failed; tessera then sends
    /// it (and everything queued behind it) again, in order.
    #[serde(with = "humantime_serde")]
    pub message_timeout: Duration,
    /// On a partition revoke (rebalance), how long frames in flight of the revoked partitions
    /// may take to finish before their offsets are committed and the partitions released.
    /// Must be shorter than `session_timeout`.
    #[serde(with = "humantime_serde")]
    pub revoke_drain_timeout: Duration,
    /// Most pre-fetched data librdkafka buffers per consumer, in KiB (its
    /// `queued.max.messages.kbytes`); paused partitions are not fetched at all.
    pub fetch_buffer_kbytes: usize,
    /// How often the consumer lag is measured (a watermark query per assigned partition)
    /// and librdkafka reports statistics (committed offsets; a sign of life for `/healthz`);
    /// `0s` turns both off.
    #[serde(with = "humantime_serde")]
    pub statistics_interval: Duration,
    /// Compression of what tessera produces (results, dead letters, heads, examples, label
    /// requests). Every consumer of those topics needs the codec: `none` and `gzip` are
    /// readable by any Kafka client; `lz4` (the default: fast, light on the CPU) and
    /// `snappy` need the codec's library in the consumer (kafka-python raises
    /// `UnsupportedCodecError` without the `lz4` package). (tessera's librdkafka is built
    /// without zstd.)
    pub compression: Compression,
    /// Extra librdkafka properties for both clients, e.g. `security.protocol`,
    /// `sasl.mechanisms`, `ssl.ca.location`.
    pub properties: BTreeMap<String, String>,
    /// Extra librdkafka properties for the consumer only.
    pub consumer_properties: BTreeMap<String, String>,
    /// Extra librdkafka properties for the producer only.
    pub producer_properties: BTreeMap<String, String>,
}

/// A Kafka compression codec (librdkafka's `compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
}

impl Compression {
    /// librdkafka's name of the codec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: default_brokers(),
            group_id: "tessera".into(),
            input_topics: vec!["frames".into()],
            results_topic: "detections".into(),
            dlq_topic: "frames.dlq".into(),
            auto_offset_reset: "earliest".into(),
            session_timeout: Duration::from_secs(30),
            message_timeout: Duration::from_secs(60),
            revoke_drain_timeout: Duration::from_secs(10),
            fetch_buffer_kbytes: 16 * 1024,
            statistics_interval: Duration::from_secs(5),
            compression: Compression::Lz4,
            properties: BTreeMap::new(),
            consumer_properties: BTreeMap::new(),
            producer_properties: BTreeMap::new(),
        }
    }
}

fn default_brokers() -> String {
    "localhost:9092".into()
}

impl KafkaConfig {
    /// Checks topics and settings that Kafka would otherwise reject late.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(ConfigError::invalid("kafka.brokers", "must not be empty"));
        }
        if self.input_topics.is_empty() {
            return Err(ConfigError::invalid(
                "kafka.input_topics",
                "name at least one topic",
            ));
        }
        for output in [&self.results_topic, &self.dlq_topic] {
            if self.input_topics.contains(output) {
                return Err(ConfigError::invalid(
                    "kafka",
                    format!("topic {output:?} is both an input and an output"),
                ));
            }
        }
        if self.revoke_drain_timeout >= self.session_timeout {
            return Err(ConfigError::invalid(
                "kafka.revoke_drain_timeout",
                "must be shorter than kafka.session_timeout",
            ));
        }
        if self.fetch_buffer_kbytes == 0 {
            return Err(ConfigError::invalid(
                "kafka.fetch_buffer_kbytes",
                "must be at least 1",
            ));
        }
        if !matches!(self.auto_offset_reset.as_str(), "earliest" | "latest") {
            return Err(ConfigError::invalid(
                "kafka.auto_offset_reset",
                "must be `earliest` or `latest`",
            ));
        }
        Ok(())
    }
}

/// Which model runs, and how its ONNX Runtime sessions are built.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "ModelConfigInput")]
pub struct ModelConfig {
    /// Path of the model manifest (`model.toml`).
    pub manifest: PathBuf,
    /// ONNX file; default: the manifest's `file` next to the manifest, else in `$TESSERA_ASSETS/models`.
    pub onnx: Option<PathBuf>,
    /// ONNX Runtime library (`libonnxruntime.so`); default: `$ORT_DYLIB_PATH`.
    pub runtime_library: Option<PathBuf>,
    /// Session options and execution providers.
    pub session: SessionConfig,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            manifest: PathBuf::from("models/manifests/yolox-nano/model.toml"),
            onnx: None,
            runtime_library: None,
            session: SessionConfig::default(),
        }
    }
}

/// `[model]` as written: [`ModelConfig`] plus `execution_providers`, the short spelling of
/// `session.execution_providers` (`model.execution_providers = ["cuda", "cpu"]`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelConfigInput {
    #[serde(default = "default_manifest")]
    manifest: PathBuf,
    #[serde(default)]
    onnx: Option<PathBuf>,
    #[serde(default)]
    runtime_library: Option<PathBuf>,
    #[serde(default)]
    session: SessionConfig,
    #[serde(default)]
    execution_providers: Option<Vec<ExecutionProviderConfig>>,
}

fn default_manifest() -> PathBuf {
    ModelConfig::default().manifest
}

impl TryFrom<ModelConfigInput> for ModelConfig {
    type Error = String;

    fn try_from(input: ModelConfigInput) -> Result<Self, String> {
        let mut session = input.session;
        if let Some(providers) = input.execution_providers {
            // The defaults layer always carries the default list, so only another list clashes.
            let default = SessionConfig::default().execution_providers;
            if session.execution_providers != default && session.execution_providers != providers {
                return Err(
                    "model.execution_providers and model.session.execution_providers \
                     are both set: keep one"
                        .into(),
                );
            }
            session.execution_providers = providers;
        }
        Ok(Self {
            manifest: input.manifest,
            onnx: input.onnx,
            runtime_library: input.runtime_library,
            session,
        })
    }
}

/// The decode and preprocessing pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrepareConfig {
    /// Frames decoded and tiled in parallel (each on a blocking thread).
    pub workers: usize,
}

impl Default for PrepareConfig {
    fn default() -> Self {
        Self { workers: 1 }
    }
}

/// The inference pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecognizeConfig {
    /// Inference workers, each owning one ONNX Runtime session. With single-threaded
    /// sessions, one worker per core fills the machine.
    pub workers: usize,
    /// Most tiles per model run, for models with a dynamic batch dimension. Batches fill
    /// with tiles of consecutive frames.
    pub max_batch: usize,
    /// Longest a batch that is not full waits for more tiles (from any frame) before it runs.
    #[serde(with = "humantime_serde")]
    pub max_batch_delay: Duration,
    /// Test hook for fault-injection tests: a worker panics on every Nth model run of the
    /// pool. Never set it in production.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub panic_every_nth_batch: Option<u64>,
}

impl Default for RecognizeConfig {
    fn default() -> Self {
        Self {
            workers: default_recognize_workers(),
            max_batch: 8,
            max_batch_delay: Duration::from_millis(10),
            panic_every_nth_batch: None,
        }
    }
}

fn default_recognize_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Flow control: how much work may be in flight.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowConfig {
    /// Frames consumed but not yet acknowledged by Kafka; consumption pauses at this bound.
    pub max_in_flight_frames: usize,
    /// Tiles preprocessed and waiting for a model run (tiles in the runs under way come on
    /// top); preparation waits at this bound. Each tile holds its input tensor (about 2 MB
    /// for a 416 px model).
    pub max_queued_tiles: usize,
    /// At shutdown, how long frames in flight may take to finish before the process exits
    /// anyway (unfinished frames are re-consumed after a restart). Keep it below the
    /// orchestrator's grace period.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// What to do with frames that are already old when they are consumed.
    pub lag_policy: LagPolicy,
    /// With `lag_policy = "drop_stale"`: frames whose capture time is older than this are not
    /// processed but published as `status: skipped`.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Which clock `max_age` is measured against: `wall` (live cameras), or `stream` (the
    /// newest capture time consumed; for replays of recordings, whatever their date).
    pub clock: ClockKind,
    /// A frame without an acknowledged output this long after its dispatch is re-dispatched
    /// (a stage holding it may have died).
    #[serde(with = "humantime_serde")]
    pub frame_timeout: Duration,
    /// Attempts per frame before it is dead-lettered as `processing_failed`.
    pub max_attempts: u32,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            max_in_flight_frames: 16,
            max_queued_tiles: 16,
            drain_timeout: Duration::from_secs(20),
            lag_policy: LagPolicy::ProcessAll,
            max_age: Duration::from_secs(10),
            clock: ClockKind::Wall,
            frame_timeout: Duration::from_secs(60),
            max_attempts: 3,
        }
    }
}

/// Which time `flow.max_age` is measured against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockKind {
    /// The machine's clock: a frame is as old as the time since its capture (live cameras).
    #[default]
    Wall,
    /// The stream's time: the newest capture time consumed so far. A frame is as old as it is
    /// behind the newest frame tessera has seen, whatever the date of the recording.
    Stream,
}

/// How frames that are already old when consumed are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LagPolicy {
    /// Process every frame, however late (default).
    ProcessAll,
    /// Publish frames older than `flow.max_age` as `status: skipped` without processing them.
    DropStale,
}

/// How the supervisor restarts failed actors.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisionConfig {
    /// Restarts allowed within `restart_window` before the pipeline shuts down with an error.
    pub max_restarts: usize,
    /// The window over which restarts are counted.
    #[serde(with = "humantime_serde")]
    pub restart_window: Duration,
    /// Delay before the first restart; doubles per recent restart.
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// Longest delay before a restart.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        Self {
            max_restarts: 10,
            restart_window: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// The HTTP server (axum): `/metrics`, `/healthz`, `/readyz`, `/v1/status`, and the admin
/// endpoints `POST /v1/pause` and `POST /v1/resume`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Whether to serve HTTP at all.
    pub enabled: bool,
    /// Address to listen on, `host:port` (port 0 picks a free one).
    pub address: String,
    /// Bearer token the admin endpoints require (`Authorization: Bearer <token>`); also read
    /// from `TESSERA_ADMIN_TOKEN`. Without one the admin endpoints are disabled.
    pub admin_token: Option<String>,
    /// Longest time a request may take before it is answered with 408.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Most requests served at once; more wait.
    pub max_concurrent_requests: usize,
    /// `/healthz` fails when the Kafka consumer has not polled for this long (a hung
    /// consumer); needs `kafka.statistics_interval` well below it. `0s` turns the check off.
    #[serde(with = "humantime_serde")]
    pub liveness_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            address: "0.0.0.0:9464".into(),
            admin_token: None,
            request_timeout: Duration::from_secs(10),
            max_concurrent_requests: 64,
            liveness_timeout: Duration::from_secs(60),
        }
    }
}

/// The environment variable holding the admin token (kept out of configuration files).
pub const ADMIN_TOKEN_VARIABLE: &str = "TESSERA_ADMIN_TOKEN";

impl HttpConfig {
    /// The admin token: the configuration's, else `TESSERA_ADMIN_TOKEN`; empty means none.
    pub fn resolved_admin_token(&self) -> Option<String> {
        self.admin_token
            .clone()
            .or_else(|| std::env::var(ADMIN_TOKEN_VARIABLE).ok())
            .filter(|token| !token.trim().is_empty())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.enabled && self.address.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::invalid(
                "http.address",
                format!("{:?} is not a host:port socket address", self.address),
            ));
        }
        if self.max_concurrent_requests == 0 {
            return Err(ConfigError::invalid(
                "http.max_concurrent_requests",
                "must be at least 1",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "http.request_timeout",
                "must be longer than zero",
            ));
        }
        Ok(())
    }
}

// The token must never reach logs or `tessera config` output in clear.
impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("enabled", &self.enabled)
            .field("address", &self.address)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("request_timeout", &self.request_timeout)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("liveness_timeout", &self.liveness_timeout)
            .finish()
    }
}
