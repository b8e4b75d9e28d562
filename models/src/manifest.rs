//! Model manifests (`model.toml`): what a model expects as input, how to read its output, its
//! labels and thresholds. A model is an ONNX file plus a manifest; the ONNX files are not in the
//! repository but found beside the manifest or in the assets folder.
//!
//! ```toml
//! name = "yolox-nano"
//! version = "0.1.1rc0"
//! task = "detect"
//! file = "yolox_nano.onnx"
//!
//! [input]
//! name = "images"
//! width = 416
//! height = 416
//! channel_order = "bgr"
//! resize = "letterbox"
//! pad_value = 114
//!
//! [output]
//! name = "output"
//! adapter = "yolox"
//!
//! [thresholds]
//! score = 0.25
//! nms_iou = 0.45
//!
//! [labels]
//! file = "coco.txt"
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tessera_operators::tiling::TilingConfig;
use tessera_operators::{
    Activation, AdapterKind, BoxEncoding, BoxFormat, ChannelOrder, PreprocessSpec, ResizeMode, Role,
};

use crate::embedding::pooled_output_fragment;
use crate::error::ModelError;
use sha2::{Digest, Sha256};

/// What a model computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Object detection: boxes with classes and scores.
    Detect,
    /// Image classification: class scores for the whole input.
    Classify,
    /// Embedding: a feature vector for a trainable head.
    Embed,
}

/// Memory layout of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Batch, channels, height, width (the only layout supported for now).
    #[default]
    Nchw,
}

/// `[input]`: the model's input tensor and the preprocessing it needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Name of the input tensor in the ONNX graph.
    pub name: String,
    /// Input width in pixels.
    pub width: u32,
    /// Input height in pixels.
    pub height: u32,
    /// Tensor layout.
    #[serde(default)]
    pub layout: Layout,
    /// Channel order the model was trained with (`rgb` or `bgr`).
    pub channel_order: ChannelOrder,
    /// How an image or tile is fitted into the input: `letterbox` (top-left), `letterbox_center`
    /// or `stretch`.
    pub resize: ResizeMode,
    /// Padding value (0-255, before normalisation) for letterboxing.
    #[serde(default)]
    pub pad_value: u8,
    /// Factor applied to 0-255 pixel values first (`0.00392156862745098` for 1/255).
    #[serde(default = "default_scale")]
    pub scale: f32,
    /// Per-channel mean subtracted after scaling, in the model's channel order.
    #[serde(default = "default_mean")]
    pub mean: [f32; 3],
    /// Per-channel divisor applied after the mean, in the model's channel order.
    #[serde(default = "default_std")]
    pub std: [f32; 3],
}

fn default_scale() -> f32 {
    1.0
}

fn default_mean() -> [f32; 3] {
    [0.0; 3]
}

fn default_std() -> [f32; 3] {
    [1.0; 3]
}

/// `[output]`: which output tensors to read and how to decode them.
///
/// One-tensor adapters (`yolox`, `yolov8`, `yolov5`, `classifier`) read `name`; the others read
/// a tensor per role: `boxes` and `scores` (`boxes_scores`, `detr`), plus `classes` and an
/// optional `count` (`nms_outputs`). `box_format`, `boxes_normalized`, `activation`,
/// `background_class` and `nms_applied` describe what varies between exports of the
/// configurable adapters (`yolov5`, `boxes_scores`, `detr`, `nms_outputs`); unset, each takes its
/// family's usual value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Output adapter: `yolox`, `yolov8`, `yolov5`, `boxes_scores`, `detr`, `nms_outputs` or
    /// `classifier`.
    pub adapter: AdapterKind,
    /// The output decoded by one-tensor adapters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The boxes output (`boxes_scores`, `detr`, `nms_outputs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boxes: Option<String>,
    /// The class scores (or logits) output (`boxes_scores`, `detr`, `nms_outputs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<String>,
    /// The class ids output (`nms_outputs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<String>,
    /// The number of valid rows (`nms_outputs`, optional: without it every row is read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<String>,
    /// How boxes are written: `xyxy`, `yxyx`, `cxcywh` or `xywh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub box_format: Option<BoxFormat>,
    /// Boxes are fractions of the input size rather than input pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boxes_normalized: Option<bool>,
    /// Activation the class scores still need: `none`, `sigmoid` or `softmax`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<Activation>,
    /// A score column that is never reported (SSD's background, DETR's no-object); its line
    /// is still in the label file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background_class: Option<u32>,
    /// The model's output is already free of duplicates (NMS in the graph, or a DETR): no
    /// per-tile NMS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nms_applied: Option<bool>,
    /// How classifications of a frame's tiles combine (`classify` and `embed` models):
    /// `full_frame` (the default: no tiling, one whole-frame pass), `max` or `mean` over tiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Aggregate>,
    /// Name of the output that is the embedding trainable heads learn on (optional): a
    /// `[N, D]` float tensor.
    #[serde(default)]
    pub embedding: Option<String>,
    /// Derive the `embedding` output when the graph has none: the global average pool of this
    /// inner `[N, C, H, W]` tensor (for example the last feature map of a classifier), added
    /// to the graph when the model loads. The other outputs are unchanged.
    #[serde(default)]
    pub embedding_from: Option<String>,
    /// Apply a softmax to classifier outputs (for models that output logits).
    #[serde(default)]
    pub softmax: bool,
}

/// How the classifications of a frame's tiles combine into the frame's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// No tiling: the model sees the whole frame once, as it was trained to.
    FullFrame,
    /// The best score of each class over all tiles (finds a small object's class anywhere).
    Max,
    /// The mean score of each class over all tiles (a smoothed whole-scene reading).
    Mean,
}

impl OutputSpec {
    /// The tensor named for `role`, if any.
    pub fn tensor(&self, role: Role) -> Option<&str> {
        match role {
            Role::Output => self.name.as_deref(),
            Role::Boxes => self.boxes.as_deref(),
            Role::Scores => self.scores.as_deref(),
            Role::Classes => self.classes.as_deref(),
            Role::Count => self.count.as_deref(),
        }
    }

    /// The adapter's roles that name a tensor, in role order.
    pub fn tensors(&self) -> Vec<(Role, &str)> {
        self.adapter
            .roles()
            .iter()
            .filter_map(|&r| self.tensor(r).map(|name| (r, name)))
            .collect()
    }

    /// How boxes are written, the adapter's defaults filled in.
    pub fn encoding(&self) -> BoxEncoding {
        let default = self.adapter.default_encoding();
        BoxEncoding {
            format: self.box_format.unwrap_or(default.format),
            normalized: self.boxes_normalized.unwrap_or(default.normalized),
        }
    }

    /// The activation of class scores, the adapter's default filled in (`softmax = true` is
    /// the classifier's spelling of `activation = "softmax"`).
    pub fn activation(&self) -> Activation {
        match (self.activation, self.softmax) {
            (Some(a), _) => a,
            (None, true) => Activation::Softmax,
            (None, false) => self.adapter.default_activation(),
        }
    }

    /// Whether the output is already free of duplicates.
    pub fn nms_applied(&self) -> bool {
        self.nms_applied
            .unwrap_or_else(|| self.adapter.default_nms_applied())
    }

    /// How tile classifications combine; `None` for detectors.
    pub fn aggregate(&self) -> Option<Aggregate> {
        (!self.adapter.is_detector()).then(|| self.aggregate.unwrap_or(Aggregate::FullFrame))
    }

    /// Checks the adapter's tensors and options (the task and thresholds are checked by the
    /// manifest).
    fn validate(&self) -> Result<(), String> {
        let adapter = self.adapter.as_str();
        for role in [
            Role::Output,
            Role::Boxes,
            Role::Scores,
            Role::Classes,
            Role::Count,
        ] {
            let reads = self.adapter.roles().contains(&role);
            match self.tensor(role) {
                Some(name) if !reads => {
                    return Err(format!(
                        "`output.{}` = \"{name}\" is not read by adapter `{adapter}`, which reads {}",
                        role.key(),
                        keys(self.adapter)
                    ));
                }
                Some("") => return Err(format!("`output.{}` is empty", role.key())),
                None if reads && !self.adapter.role_is_optional(role) => {
                    return Err(format!("adapter `{adapter}` needs {}", keys(self.adapter)));
                }
                _ => {}
            }
        }
        let names = self.tensors();
        for (i, (role, name)) in names.iter().enumerate() {
            if let Some((other, _)) = names[..i].iter().find(|(_, n)| n == name) {
                return Err(format!(
                    "`output.{}` and `output.{}` both name `{name}`",
                    other.key(),
                    role.key()
                ));
            }
        }
        if !self.adapter.is_configurable() {
            let set = [
                ("box_format", self.box_format.is_some()),
                ("boxes_normalized", self.boxes_normalized.is_some()),
                ("activation", self.activation.is_some()),
                ("background_class", self.background_class.is_some()),
            ];
            if let Some((key, _)) = set.iter().find(|(_, on)| *on) {
                return Err(format!(
                    "`output.{key}` does not apply to adapter `{adapter}` (its format is fixed); it is for yolov5, boxes_scores, detr and nms_outputs"
                ));
            }
        }
        if self.adapter.is_detector() {
            if self.softmax {
                return Err(format!(
                    "`output.softmax` is for classifiers; adapter `{adapter}` takes `activation = \"softmax\"`"
                ));
            }
            if self.aggregate.is_some() {
                return Err(
                    "`output.aggregate` is for classifiers: detections of all tiles are merged"
                        .into(),
                );
            }
        } else if self.nms_applied.is_some() {
            return Err("`output.nms_applied` is for detectors".into());
        }
        if self.softmax && self.activation.is_some_and(|a| a != Activation::Softmax) {
            return Err("`output.softmax = true` contradicts `output.activation`".into());
        }
        if self.adapter == AdapterKind::Yolov5 && self.background_class.is_some() {
            return Err("`output.background_class` does not apply to yolov5 (objectness says what is background)".into());
        }
        Ok(())
    }
}

/// The manifest keys naming an adapter's tensors, for messages.
fn keys(adapter: AdapterKind) -> String {
    let keys: Vec<String> = adapter
        .roles()
        .iter()
        .map(|r| {
            if adapter.role_is_optional(*r) {
                format!("`{}` (optional)", r.key())
            } else {
                format!("`{}`", r.key())
            }
        })
        .collect();
    keys.join(", ")
}

/// `[thresholds]`: filtering of raw model outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Minimum detection score (`objectness * class score` for YOLOX) kept by the adapter.
    #[serde(default = "default_score")]
    pub score: f32,
    /// IoU threshold of the class-aware NMS applied to each tile's raw detections before they are
    /// merged across tiles; unset: no per-tile NMS (the cross-tile merge then does all of it).
    #[serde(default)]
    pub nms_iou: Option<f32>,
    /// Number of classes kept per image by classifiers.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
}

fn default_score() -> f32 {
    0.25
}

fn default_top_k() -> usize {
    5
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            score: default_score(),
            nms_iou: None,
            top_k: default_top_k(),
        }
    }
}

/// `[labels]`: the class names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsSpec {
    /// Text file with one class name per line, in class-index order, relative to the manifest.
    pub file: String,
}

/// A parsed `model.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    /// Model name, used in results and metric labels.
    pub name: String,
    /// Model version, reported in results.
    pub version: String,
    /// What the model computes.
    pub task: Task,
    /// ONNX file name, looked up beside the manifest, then in `<assets>/models/`.
    pub file: String,
    /// Input tensor and preprocessing.
    pub input: InputSpec,
    /// Output tensor and decoding.
    pub output: OutputSpec,
    /// Score thresholds and top-k.
    #[serde(default)]
    pub thresholds: Thresholds,
    /// Class names.
    pub labels: LabelsSpec,
}

/// Largest input side accepted; bigger is a typo, not a model.
const MAX_INPUT_SIDE: u32 = 8192;

impl ModelManifest {
    /// Parses and validates a manifest; `path` is only used in error messages.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Self, ModelError> {
        let manifest: ModelManifest = toml::from_str(text).map_err(|e| ModelError::Manifest {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        manifest
            .validate()
            .map_err(|message| ModelError::Manifest {
                path: path.to_path_buf(),
                message,
            })?;
        Ok(manifest)
    }

    /// Checks values and cross-field rules (task vs adapter, threshold ranges, normalisation).
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("`name` is empty".into());
        }
        if self.file.trim().is_empty() {
            return Err("`file` is empty".into());
        }
        let i = &self.input;
        if i.name.is_empty() {
            return Err("`input.name` is empty".into());
        }
        if i.width == 0 || i.height == 0 || i.width > MAX_INPUT_SIDE || i.height > MAX_INPUT_SIDE {
            return Err(format!(
                "input size {}x{} must be within 1..={MAX_INPUT_SIDE}",
                i.width, i.height
            ));
        }
        if !(i.scale.is_finite() && i.scale > 0.0) {
            return Err(format!("`input.scale` {} must be finite and > 0", i.scale));
        }
        if i.mean.iter().any(|m| !m.is_finite()) {
            return Err(format!("`input.mean` {:?} must be finite", i.mean));
        }
        if i.std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(format!("`input.std` {:?} must be finite and > 0", i.std));
        }
        self.output.validate()?;
        let adapter_ok = match self.task {
            Task::Detect => self.output.adapter.is_detector(),
            Task::Classify | Task::Embed => self.output.adapter == AdapterKind::Classifier,
        };
        if !adapter_ok {
            return Err(format!(
                "adapter `{}` does not fit task `{:?}`",
                self.output.adapter.as_str(),
                self.task
            ));
        }
        if self.task == Task::Embed && self.output.embedding.is_none() {
            return Err("task `embed` needs `output.embedding`".into());
        }
        if self.output.embedding_from.is_some() && self.output.embedding.is_none() {
            return Err(
                "`output.embedding_from` needs `output.embedding`, the name of the derived output"
                    .into(),
            );
        }
        if self.output.embedding_from.is_some()
            && let Some(embedding) = &self.output.embedding
            && self.output.tensors().iter().any(|(_, n)| n == embedding)
        {
            return Err(
                "a derived `output.embedding` must differ from the outputs the adapter reads"
                    .into(),
            );
        }
        let t = &self.thresholds;
        if !(0.0..=1.0).contains(&t.score) {
            return Err(format!("`thresholds.score` {} must be in [0, 1]", t.score));
        }
        if let Some(iou) = t.nms_iou
            && !(0.0..=1.0).contains(&iou)
        {
            return Err(format!("`thresholds.nms_iou` {iou} must be in [0, 1]"));
        }
        if self.output.nms_applied.unwrap_or(false) && t.nms_iou.is_some() {
            return Err(
                "`thresholds.nms_iou` asks for per-tile NMS but `output.nms_applied` says the model already applied it; remove one"
                    .into(),
            );
        }
        if t.top_k == 0 {
            return Err("`thresholds.top_k` must be at least 1".into());
        }
        if self.labels.file.trim().is_empty() {
            return Err("`labels.file` is empty".into());
        }
        Ok(())
    }
}

/// A manifest with its labels and the resolved ONNX file: everything needed to create sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// The parsed manifest.
    pub manifest: ModelManifest,
    /// Class names, indexed by class id.
    pub labels: Vec<String>,
    /// The ONNX file sessions load.
    pub onnx_path: PathBuf,
    /// `sha256:<hex>` of the ONNX file: the backbone a head was trained on must be this one.
    pub backbone_hash: String,
    /// The graph sessions load when it differs from the file (an embedding output derived by
    /// `output.embedding_from`); `None`: the file as it is.
    pub graph: Option<Arc<[u8]>>,
}

impl Model {
    /// Loads `manifest_path` and its label file, and resolves the ONNX file: `onnx_override` if
    /// given, else `file` beside the manifest, else `<assets_dir>/models/<file>`.
    pub fn load(
        manifest_path: &Path,
        onnx_override: Option<&Path>,
        assets_dir: Option<&Path>,
    ) -> Result<Model, ModelError> {
        let text = read_to_string(manifest_path)?;
        let manifest = ModelManifest::from_toml_str(&text, manifest_path)?;
        let dir = manifest_path.parent().unwrap_or(Path::new("."));
        let labels_path = dir.join(&manifest.labels.file);
        let labels = parse_labels(&read_to_string(&labels_path)?, &labels_path)?;
        if let Some(class) = manifest.output.background_class
            && usize::try_from(class).map_or(true, |c| c >= labels.len())
        {
            return Err(ModelError::Manifest {
                path: manifest_path.to_path_buf(),
                message: format!(
                    "`output.background_class` {class} is not a class of the label file ({} lines): the background keeps its line",
                    labels.len()
                ),
            });
        }

        let mut tried = Vec::new();
        let onnx_path = match onnx_override {
            Some(p) => {
                tried.push(p.to_path_buf());
                p.is_file().then(|| p.to_path_buf())
            }
            None => {
                let mut candidates = vec![dir.join(&manifest.file)];
                if let Some(a) = assets_dir {
                    candidates.push(a.join("models").join(&manifest.file));
                }
                let found = candidates.iter().find(|p| p.is_file()).cloned();
                tried = candidates;
                found
            }
        };
        let onnx_path = onnx_path.ok_or_else(|| ModelError::Load {
            path: tried.first().cloned().unwrap_or_else(|| manifest.file.clone().into()),
            message: format!(
                "ONNX file `{}` not found (looked at {}); set TESSERA_ASSETS to the assets folder or give the file explicitly",
                manifest.file,
                tried
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            source: None,
        })?;
        let (backbone_hash, graph) = read_graph(&manifest, &onnx_path)?;
        Ok(Model {
            manifest,
            labels,
            onnx_path,
            backbone_hash,
            graph,
        })
    }

    /// The preprocessing the model's input needs.
    pub fn preprocess_spec(&self) -> PreprocessSpec {
        let i = &self.manifest.input;
        PreprocessSpec {
            width: i.width,
            height: i.height,
            resize: i.resize,
            pad_value: i.pad_value,
            channel_order: i.channel_order,
            scale: i.scale,
            mean: i.mean,
            std: i.std,
        }
    }

    /// The tiling this model runs with under the pipeline's `tiling`: a classifier whose tiles
    /// are not aggregated (`aggregate = "full_frame"`) sees each frame whole, once.
    pub fn tiling(&self, tiling: &TilingConfig) -> TilingConfig {
        match self.manifest.output.aggregate() {
            Some(Aggregate::FullFrame) => TilingConfig {
                enabled: false,
                full_frame: true,
                ..tiling.clone()
            },
            _ => tiling.clone(),
        }
    }

    /// The name of class `class_id`, or `"unknown"` if the model has no such class.
    pub fn label(&self, class_id: u32) -> &str {
        usize::try_from(class_id)
            .ok()
            .and_then(|i| self.labels.get(i))
            .map_or("unknown", String::as_str)
    }

    /// Number of classes (labels).
    pub fn num_classes(&self) -> usize {
        self.labels.len()
    }
}

/// The ONNX file's hash, and the edited graph when the manifest derives an embedding.
type GraphRead = (String, Option<Arc<[u8]>>);

/// Hashes the ONNX file and, when the manifest derives an embedding, returns the edited graph.
fn read_graph(manifest: &ModelManifest, path: &Path) -> Result<GraphRead, ModelError> {
    let io_err = |e: std::io::Error| ModelError::Load {
        path: path.to_path_buf(),
        message: format!("reading the ONNX file: {e}"),
        source: None,
    };
    let hash_of = |bytes: &[u8]| format!("sha256:{:x}", Sha256::digest(bytes));
    match (&manifest.output.embedding_from, &manifest.output.embedding) {
        (Some(from), Some(output)) => {
            let mut bytes = std::fs::read(path).map_err(io_err)?;
            let hash = hash_of(&bytes);
            bytes.extend_from_slice(&pooled_output_fragment(from, output));
            Ok((hash, Some(bytes.into())))
        }
        _ => {
            let mut file = std::fs::File::open(path).map_err(io_err)?;
            let mut hasher = Sha256::new();
            std::io::copy(&mut file, &mut hasher).map_err(io_err)?;
            Ok((format!("sha256:{:x}", hasher.finalize()), None))
        }
    }
}

fn read_to_string(path: &Path) -> Result<String, ModelError> {
    std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// One label per line; trailing blank lines are ignored, but a blank line inside the list is an
/// error because it would shift every following class id.
fn parse_labels(text: &str, path: &Path) -> Result<Vec<String>, ModelError> {
    let mut labels: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect();
    while labels.last().is_some_and(|l| l.trim().is_empty()) {
        labels.pop();
    }
    let err = |message: String| ModelError::Manifest {
        path: path.to_path_buf(),
        message,
    };
    if labels.is_empty() {
        return Err(err("label file is empty".into()));
    }
    if let Some(i) = labels.iter().position(|l| l.trim().is_empty()) {
        return Err(err(format!("line {} is blank", i + 1)));
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn manifests_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
    }

    /// Stands in for the real ONNX file, which is an asset (manifest tests do not open it).
    fn any_onnx() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/tiny_detector.onnx")
    }

    fn tmp_model(manifest: &str, labels: &str) -> Result<tempfile::TempDir, std::io::Error> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("model.toml"), manifest)?;
        std::fs::write(dir.path().join("labels.txt"), labels)?;
        std::fs::write(dir.path().join("m.onnx"), b"not really onnx")?;
        Ok(dir)
    }

    const MINIMAL: &str = r#"
        name = "tiny"
        version = "1"
        task = "classify"
        file = "m.onnx"
        [input]
        name = "input"
        width = 8
        height = 8
        channel_order = "rgb"
        resize = "stretch"
        [output]
        name = "output"
        adapter = "classifier"
        [labels]
        file = "labels.txt"
    "#;

    #[test]
    fn shipped_yolox_manifest_loads() -> TestResult {
        let path = manifests_dir().join("yolox-nano/model.toml");
        let m = Model::load(&path, Some(&any_onnx()), None)?;
        assert_eq!(m.manifest.task, Task::Detect);
        assert_eq!(m.manifest.output.adapter, AdapterKind::Yolox);
        assert_eq!(m.num_classes(), 80);
        assert_eq!(m.label(0), "person");
        assert_eq!(m.label(16), "dog");
        assert_eq!(m.label(79), "toothbrush");
        assert_eq!(m.label(80), "unknown");
        let spec = m.preprocess_spec();
        assert_eq!((spec.width, spec.height), (416, 416));
        assert_eq!(spec.channel_order, ChannelOrder::Bgr);
        assert_eq!(spec.resize, ResizeMode::Letterbox);
        assert_eq!(spec.pad_value, 114);
        assert_eq!((spec.scale, spec.mean, spec.std), (1.0, [0.0; 3], [1.0; 3]));
        Ok(())
    }

    #[test]
    fn shipped_mobilenet_manifest_loads() -> TestResult {
        let path = manifests_dir().join("mobilenetv2/model.toml");
        let m = Model::load(&path, Some(&any_onnx()), None)?;
        assert_eq!(m.manifest.task, Task::Classify);
        assert!(m.manifest.output.softmax);
        assert_eq!(m.num_classes(), 1000);
        assert_eq!(m.label(0), "tench");
        assert_eq!(m.label(248), "Eskimo dog");
        assert_eq!(m.label(249), "malamute");
        assert_eq!(m.label(250), "Siberian husky");
        assert_eq!(m.label(999), "toilet tissue");
        let spec = m.preprocess_spec();
        assert_eq!(spec.channel_order, ChannelOrder::Rgb);
        assert_eq!(spec.resize, ResizeMode::Stretch);
        assert!((spec.scale - 1.0 / 255.0).abs() < 1e-9);
        assert_eq!(spec.mean, [0.485, 0.456, 0.406]);
        assert_eq!(spec.std, [0.229, 0.224, 0.225]);
        Ok(())
    }

    #[test]
    fn onnx_file_resolution_order() -> TestResult {
        let dir = tmp_model(MINIMAL, "a\nb\n")?;
        let manifest = dir.path().join("model.toml");
        // Beside the manifest.
        let m = Model::load(&manifest, None, None)?;
        assert_eq!(m.onnx_path, dir.path().join("m.onnx"));
        assert_eq!(m.labels, vec!["a", "b"]);
        // From the assets folder when not beside the manifest.
        std::fs::remove_file(dir.path().join("m.onnx"))?;
        let assets = tempfile::tempdir()?;
        std::fs::create_dir(assets.path().join("models"))?;
        std::fs::write(assets.path().join("models/m.onnx"), b"x")?;
        let m = Model::load(&manifest, None, Some(assets.path()))?;
        assert_eq!(m.onnx_path, assets.path().join("models/m.onnx"));
        // Missing everywhere: a clear error naming the fix.
        let err = Model::load(&manifest, None, None).expect_err("no onnx file");
        assert!(err.to_string().contains("TESSERA_ASSETS"), "{err}");
        // An explicit override wins and must exist.
        let err = Model::load(&manifest, Some(Path::new("/nonexistent.onnx")), None)
            .expect_err("missing override");
        assert_eq!(err.kind(), "model_load");
        Ok(())
    }

    #[test]
    fn rejects_unknown_fields() -> TestResult {
        let text = MINIMAL.replace("[labels]", "typo = 1\n[labels]");
        let err = ModelManifest::from_toml_str(&text, Path::new("m.toml")).expect_err("typo");
        assert_eq!(err.kind(), "invalid_manifest");
        let text = format!("extra = true\n{MINIMAL}");
        assert!(ModelManifest::from_toml_str(&text, Path::new("m.toml")).is_err());
        Ok(())
    }

    /// MINIMAL turned into a detector with the given `[output]` body.
    fn detector(output: &str) -> String {
        MINIMAL
            .replace("task = \"classify\"", "task = \"detect\"")
            .replace(
                "name = \"output\"\n        adapter = \"classifier\"",
                output,
            )
    }

    #[test]
    fn output_tables_of_every_adapter() -> TestResult {
        let parse = |text: &str| ModelManifest::from_toml_str(text, Path::new("m.toml"));
        let m = parse(&detector(
            "adapter = \"boxes_scores\"\nboxes = \"b\"\nscores = \"s\"\nbox_format = \"yxyx\"\nboxes_normalized = true\nactivation = \"softmax\"\nbackground_class = 0",
        ))?;
        assert_eq!(
            m.output.tensors(),
            vec![(Role::Boxes, "b"), (Role::Scores, "s")]
        );
        assert_eq!(
            m.output.encoding(),
            BoxEncoding {
                format: BoxFormat::Yxyx,
                normalized: true
            }
        );
        assert_eq!(m.output.activation(), Activation::Softmax);
        assert!(!m.output.nms_applied());
        assert_eq!(m.output.aggregate(), None);
        // Unset options take the family's usual values.
        let m = parse(&detector(
            "adapter = \"detr\"\nboxes = \"b\"\nscores = \"l\"",
        ))?;
        assert_eq!(m.output.encoding(), AdapterKind::Detr.default_encoding());
        assert_eq!(m.output.activation(), Activation::Sigmoid);
        assert!(m.output.nms_applied());
        let m = parse(&detector(
            "adapter = \"nms_outputs\"\nboxes = \"b\"\nscores = \"s\"\nclasses = \"c\"",
        ))?;
        assert_eq!(m.output.tensor(Role::Count), None);
        // Classifiers see the full frame unless told otherwise.
        let m = parse(MINIMAL)?;
        assert_eq!(m.output.aggregate(), Some(Aggregate::FullFrame));
        let tiling = TilingConfig::default();
        let dir = tmp_model(MINIMAL, "a\nb\n")?;
        let model = Model::load(&dir.path().join("model.toml"), None, None)?;
        assert!(!model.tiling(&tiling).enabled && model.tiling(&tiling).full_frame);
        let dir = tmp_model(
            &MINIMAL.replace("[labels]", "aggregate = \"mean\"\n[labels]"),
            "a\nb\n",
        )?;
        let model = Model::load(&dir.path().join("model.toml"), None, None)?;
        assert_eq!(
            model.tiling(&tiling),
            tiling,
            "tiles are averaged: the pipeline's tiling"
        );
        Ok(())
    }

    #[test]
    fn output_tables_that_cannot_work_are_refused_with_the_reason() {
        let cases = [
            (
                detector("adapter = \"boxes_scores\"\nboxes = \"b\""),
                "adapter `boxes_scores` needs `boxes`, `scores`",
            ),
            (
                detector("adapter = \"yolox\"\nname = \"o\"\nboxes = \"b\""),
                "`output.boxes` = \"b\" is not read by adapter `yolox`, which reads `name`",
            ),
            (
                detector("adapter = \"yolox\"\nname = \"o\"\nbox_format = \"xyxy\""),
                "`output.box_format` does not apply to adapter `yolox`",
            ),
            (
                detector("adapter = \"detr\"\nboxes = \"b\"\nscores = \"b\""),
                "`output.boxes` and `output.scores` both name `b`",
            ),
            (
                detector("adapter = \"detr\"\nboxes = \"b\"\nscores = \"s\"\nnms_applied = true")
                    .replace("[labels]", "[thresholds]\nnms_iou = 0.5\n[labels]"),
                "remove one",
            ),
            (
                detector("adapter = \"yolov5\"\nname = \"o\"\nsoftmax = true"),
                "takes `activation = \"softmax\"`",
            ),
            (
                detector("adapter = \"yolov5\"\nname = \"o\"\naggregate = \"max\""),
                "`output.aggregate` is for classifiers",
            ),
            (
                detector("adapter = \"yolov5\"\nname = \"o\"\nbackground_class = 0"),
                "does not apply to yolov5",
            ),
            (
                MINIMAL.replace("[labels]", "nms_applied = true\n[labels]"),
                "`output.nms_applied` is for detectors",
            ),
            (
                detector(
                    "adapter = \"nms_outputs\"\nboxes = \"b\"\nscores = \"s\"\nclasses = \"\"",
                ),
                "`output.classes` is empty",
            ),
        ];
        for (text, reason) in cases {
            let err = ModelManifest::from_toml_str(&text, Path::new("m.toml"))
                .expect_err("invalid")
                .to_string();
            assert!(err.contains(reason), "{err}\n---\n{text}");
        }
    }

    #[test]
    fn the_readme_example_manifest_is_valid() -> TestResult {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))?;
        let start = readme
            .find("An example, an SSD-style face detector")
            .ok_or("the README example is gone")?;
        let block = readme[start..]
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .ok_or("no toml block after the example's title")?;
        let m = ModelManifest::from_toml_str(block, Path::new("README.md"))?;
        assert_eq!(m.output.adapter, AdapterKind::BoxesScores);
        assert_eq!(m.output.background_class, Some(0));
        Ok(())
    }

    #[test]
    fn a_background_class_needs_its_label_line() -> TestResult {
        let text =
            detector("adapter = \"detr\"\nboxes = \"b\"\nscores = \"s\"\nbackground_class = 2");
        let dir = tmp_model(&text, "a\nb\n")?;
        let err = Model::load(&dir.path().join("model.toml"), None, None).expect_err("2 labels");
        assert!(
            err.to_string()
                .contains("`output.background_class` 2 is not a class"),
            "{err}"
        );
        let dir = tmp_model(&text, "a\nb\nno-object\n")?;
        Model::load(&dir.path().join("model.toml"), None, None)?;
        Ok(())
    }

    #[test]
    fn rejects_inconsistent_values() {
        let cases = [
            MINIMAL.replace("adapter = \"classifier\"", "adapter = \"yolox\""),
            MINIMAL.replace("width = 8", "width = 0"),
            MINIMAL.replace("[labels]", "[thresholds]\nscore = 1.5\n[labels]"),
            MINIMAL.replace("[labels]", "[thresholds]\ntop_k = 0\n[labels]"),
            MINIMAL.replace("[labels]", "[thresholds]\nnms_iou = -0.1\n[labels]"),
            MINIMAL.replace(
                "resize = \"stretch\"",
                "resize = \"stretch\"\nstd = [1.0, 0.0, 1.0]",
            ),
            MINIMAL.replace("task = \"classify\"", "task = \"embed\""),
        ];
        for text in cases {
            assert!(
                ModelManifest::from_toml_str(&text, Path::new("m.toml")).is_err(),
                "accepted:\n{text}"
            );
        }
    }

    #[test]
    fn labels_with_a_hole_are_rejected() -> TestResult {
        assert_eq!(
            parse_labels("a\r\nb\r\n\n\n", Path::new("l"))?,
            vec!["a", "b"]
        );
        assert!(parse_labels("a\n\nb\n", Path::new("l")).is_err());
        assert!(parse_labels("\n\n", Path::new("l")).is_err());
        Ok(())
    }
}
