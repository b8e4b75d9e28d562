//! One ONNX Runtime session of a model, with its output adapter: tensors in, detections or
//! classifications out.

use std::sync::Arc;

use ort::environment::Environment;
use ort::session::Session;
use std::borrow::Cow;

use ort::value::{Outlet, TensorElementType, TensorRef, ValueType};
use tessera_operators::adapters::fit::{self, Element, OutputInfo};
use tessera_operators::adapters::{
    boxes_scores, classifier, detr, nms_outputs, yolov5, yolov8, yolox,
};
use tessera_operators::{
    Activation, AdapterKind, Classification, Detection, DetectionParams, MatchMetric, MergeConfig,
    MergeStrategy, Role, merge,
};

use crate::error::ModelError;
use crate::manifest::{Aggregate, Model};
use crate::providers::{SessionConfig, build_session};

/// The batch dimension of a model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchDim {
    /// The model takes exactly this many images per run.
    Fixed(usize),
    /// The model takes any number of images per run.
    Dynamic,
}

/// The decoded result of one batch item (one tile).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TileOutput {
    /// Detections in model-input pixels (detectors only).
    pub detections: Vec<Detection>,
    /// Best classes, best first (classifiers only).
    pub classifications: Vec<Classification>,
    /// The embedding a trainable head reads (models whose manifest names `output.embedding`);
    /// empty otherwise.
    pub embedding: Vec<f32>,
}

/// A loaded model ready to run. `run` takes `&mut self` (ONNX Runtime sessions are not shared
/// between concurrent runs here): give each recognize worker its own session.
#[derive(Debug)]
pub struct ModelSession {
    /// The ONNX Runtime session.
    session: Session,
    /// Manifest, labels and file of the model.
    model: Arc<Model>,
    /// Batch dimension read from the graph's input.
    batch_dim: BatchDim,
    /// Name of the execution provider that took the session (`cpu`, `cuda`, ...).
    execution_provider: String,
    /// Elements of one input image: `3 * width * height`.
    tensor_len: usize,
    /// Which outputs to read and how to decode them.
    plan: OutputPlan,
    /// The output read as each item's embedding, checked at load.
    embedding: Option<String>,
}

impl ModelSession {
    /// Creates a session for `model` and checks that the graph matches the manifest (input and
    /// output names, element types, input size, class count).
    pub fn load(
        env: &Environment,
        model: Arc<Model>,
        config: &SessionConfig,
    ) -> Result<Self, ModelError> {
        let path = model.onnx_path.clone();
        let (session, execution_provider) = build_session(env, &model, config)?;
        let load_err = |message: String| ModelError::Load {
            path: path.clone(),
            message,
            source: None,
        };
        let m = &model.manifest;

        let input = session
            .inputs()
            .iter()
            .find(|o| o.name() == m.input.name)
            .ok_or_else(|| {
                load_err(format!(
                    "the graph has no input `{}` (inputs: {})",
                    m.input.name,
                    names(session.inputs().iter().map(|o| o.name()))
                ))
            })?;
        if session.inputs().len() > 1 {
            // Exports with an extra input (an original image size for in-graph rescaling, as
            // some RT-DETR exports have) need it fed on every run; tessera feeds one image.
            return Err(load_err(format!(
                "the graph has {} inputs ({}); tessera feeds a model one image tensor: re-export it without the others",
                session.inputs().len(),
                names(session.inputs().iter().map(|o| o.name()))
            )));
        }
        let (ty, shape) = tensor_type(input.dtype())
            .ok_or_else(|| load_err(format!("input `{}` is not a tensor", m.input.name)))?;
        if ty != TensorElementType::Float32 {
            return Err(load_err(format!(
                "input `{}` is {ty}, only f32 inputs are supported",
                m.input.name
            )));
        }
        let expected = [-1, 3, i64::from(m.input.height), i64::from(m.input.width)];
        let matches = shape.len() == 4
            && shape
                .iter()
                .zip(expected)
                .skip(1)
                .all(|(&dim, want)| dim < 0 || dim == want);
        if !matches {
            return Err(load_err(format!(
                "input `{}` has shape {shape:?}, the manifest says [N, 3, {}, {}]",
                m.input.name, m.input.height, m.input.width
            )));
        }
        let batch_dim = match usize::try_from(shape[0]) {
            Ok(n) if n > 0 => BatchDim::Fixed(n),
            _ => BatchDim::Dynamic,
        };

        let graph_outputs: Vec<OutputInfo> = session.outputs().iter().map(output_info).collect();
        let plan = OutputPlan::new(&model, &graph_outputs).map_err(&load_err)?;
        let embedding = m.output.embedding.clone();
        if let Some(name) = &embedding {
            let output = session
                .outputs()
                .iter()
                .find(|o| o.name() == name.as_str())
                .ok_or_else(|| {
                    load_err(format!(
                        "the graph has no embedding output `{name}` (outputs: {}); derive one with `output.embedding_from`",
                        names(session.outputs().iter().map(|o| o.name()))
                    ))
                })?;
            match tensor_type(output.dtype()) {
                Some((TensorElementType::Float32, shape))
                    if shape.is_empty() || shape.len() == 2 => {}
                other => {
                    return Err(load_err(format!(
                        "embedding output `{name}` must be an f32 [N, D] tensor, it is {other:?}"
                    )));
                }
            }
        }

        let tensor_len = 3 * m.input.width as usize * m.input.height as usize;
        tracing::info!(
            model = %m.name,
            provider = %execution_provider,
            batch = ?batch_dim,
            "Model session ready."
        );
        Ok(Self {
            session,
            model,
            batch_dim,
            execution_provider,
            tensor_len,
            plan,
            embedding,
        })
    }

    /// The model this session runs.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The batch dimension of the model's input.
    pub fn batch_dim(&self) -> BatchDim {
        self.batch_dim
    }

    /// Short name of the execution provider that took the session (`cpu`, `cuda`, ...).
    pub fn execution_provider(&self) -> &str {
        &self.execution_provider
    }

    /// Elements of one input image (`3 * width * height`).
    pub fn tensor_len(&self) -> usize {
        self.tensor_len
    }

    /// Runs `batch` preprocessed images (`input` holds `batch * tensor_len()` values, NCHW) and
    /// decodes each with the manifest's adapter and thresholds. The input is passed to ONNX
    /// Runtime without a copy. A model with a fixed batch of `n` accepts any multiple of `n`
    /// (it is run in chunks of `n`).
    pub fn run(&mut self, input: &[f32], batch: usize) -> Result<Vec<TileOutput>, ModelError> {
        if batch == 0 {
            return Ok(Vec::new());
        }
        if batch.checked_mul(self.tensor_len) != Some(input.len()) {
            return Err(ModelError::Shape(format!(
                "input has {} values, expected {batch} x {}",
                input.len(),
                self.tensor_len
            )));
        }
        let chunk = match self.batch_dim {
            BatchDim::Dynamic => batch,
            BatchDim::Fixed(n) if batch.is_multiple_of(n) => n,
            BatchDim::Fixed(n) => {
                return Err(ModelError::Shape(format!(
                    "the model takes batches of exactly {n}, got {batch}"
                )));
            }
        };
        let mut results = Vec::with_capacity(batch);
        for part in input.chunks_exact(chunk * self.tensor_len) {
            self.run_chunk(part, chunk, &mut results)?;
        }
        Ok(results)
    }

    fn run_chunk(
        &mut self,
        input: &[f32],
        batch: usize,
        results: &mut Vec<TileOutput>,
    ) -> Result<(), ModelError> {
        let m = &self.model.manifest;
        let (w, h) = (m.input.width as usize, m.input.height as usize);
        let tensor =
            TensorRef::from_array_view(([batch, 3, h, w], input)).map_err(ModelError::Tensor)?;
        let outputs = self
            .session
            .run(ort::inputs![m.input.name.as_str() => tensor])
            .map_err(|e| ModelError::Inference {
                context: "running the model".into(),
                source: Some(e),
            })?;
        let mut tensors = Vec::with_capacity(self.plan.tensors.len());
        for (_, name) in &self.plan.tensors {
            let value = outputs.get(name.as_str()).ok_or_else(|| {
                ModelError::inference(format!("output `{name}` missing from the run"))
            })?;
            let (shape, data) = extract_f32(value, name)?;
            if shape.first().copied() != i64::try_from(batch).ok()
                || !data.len().is_multiple_of(batch)
            {
                return Err(ModelError::Shape(format!(
                    "output `{name}` has shape {shape:?} for a batch of {batch}"
                )));
            }
            tensors.push(data);
        }
        let first = results.len();
        let mut item: Vec<&[f32]> = Vec::with_capacity(tensors.len());
        for i in 0..batch {
            item.clear();
            item.extend(tensors.iter().map(|t| {
                let per_item = t.len() / batch;
                &t[i * per_item..(i + 1) * per_item]
            }));
            results.push(self.plan.decode(&item)?);
        }
        if let Some(name) = &self.embedding {
            let value = outputs.get(name.as_str()).ok_or_else(|| {
                ModelError::inference(format!("embedding output `{name}` missing from the run"))
            })?;
            let (shape, data) =
                value
                    .try_extract_tensor::<f32>()
                    .map_err(|e| ModelError::Inference {
                        context: format!("reading embedding output `{name}`"),
                        source: Some(e),
                    })?;
            if shape.len() != 2 || data.is_empty() || data.len() != batch * (data.len() / batch) {
                return Err(ModelError::Shape(format!(
                    "embedding output `{name}` has shape {shape:?} for a batch of {batch}, expected [{batch}, D]"
                )));
            }
            let dim = data.len() / batch;
            for (result, item) in results[first..].iter_mut().zip(data.chunks_exact(dim)) {
                result.embedding = item.to_vec();
            }
        }
        Ok(())
    }
}

/// The outputs a session reads and how it decodes them, resolved from the manifest and checked
/// against the graph when the model loads.
#[derive(Debug)]
struct OutputPlan {
    adapter: AdapterKind,
    /// The tensor of each of the adapter's roles, in role order.
    tensors: Vec<(Role, String)>,
    /// Box encoding, activation, background class and threshold of the box adapters.
    params: DetectionParams,
    /// Classes of the label file.
    num_classes: usize,
    /// Classifications kept per tile: `top_k`, or every class when tiles are averaged (a mean
    /// needs every class's score from every tile).
    classes_kept: usize,
    /// Softmax on classifier outputs.
    softmax: bool,
    /// Per-tile NMS from `thresholds.nms_iou`, unless the model applies NMS itself.
    tile_nms: Option<MergeConfig>,
}

impl OutputPlan {
    /// Resolves the manifest's outputs and checks them against `graph_outputs`. A mismatch
    /// says why, and which adapters would fit the model instead.
    fn new(model: &Model, graph_outputs: &[OutputInfo]) -> Result<Self, String> {
        let m = &model.manifest;
        let adapter = m.output.adapter;
        let mut assigned = Vec::new();
        for (role, name) in m.output.tensors() {
            let info = graph_outputs
                .iter()
                .find(|o| o.name == name)
                .ok_or_else(|| {
                    format!(
                        "the graph has no output `{name}` (outputs: {})",
                        names(graph_outputs.iter().map(|o| o.name.as_str()))
                    )
                })?;
            assigned.push((role, info));
        }
        let (w, h) = (m.input.width, m.input.height);
        if let Err((_, reason)) = fit::check(adapter, &assigned, Some(model.num_classes()), w, h) {
            let alternatives = match fit::propose(graph_outputs, &Default::default(), w, h) {
                Ok(fits) => format!(
                    "adapters whose layout fits the graph: {} (`tessera models inspect {}` drafts a manifest)",
                    fits.iter()
                        .map(|f| format!("`{}`", f.adapter.as_str()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    model.onnx_path.display()
                ),
                Err(none) => none.to_string(),
            };
            return Err(format!(
                "adapter `{}` needs {}, but {reason}; {alternatives}",
                adapter.as_str(),
                fit::layout(adapter)
            ));
        }
        let tile_nms = m
            .thresholds
            .nms_iou
            .filter(|_| !m.output.nms_applied())
            .map(|threshold| MergeConfig {
                strategy: MergeStrategy::Nms,
                metric: MatchMetric::Iou,
                threshold,
                class_agnostic: false,
            });
        let num_classes = model.num_classes();
        Ok(Self {
            adapter,
            tensors: assigned
                .iter()
                .map(|(role, o)| (*role, o.name.clone()))
                .collect(),
            params: DetectionParams {
                encoding: m.output.encoding(),
                activation: m.output.activation(),
                background_class: m.output.background_class,
                input_width: w,
                input_height: h,
                score_threshold: m.thresholds.score,
            },
            num_classes,
            classes_kept: match m.output.aggregate() {
                Some(Aggregate::Mean) => num_classes,
                _ => m.thresholds.top_k,
            },
            softmax: m.output.activation() == Activation::Softmax,
            tile_nms,
        })
    }

    /// The values of `role` for one item, in the order of `self.tensors`.
    fn role<'a>(&self, item: &[&'a [f32]], role: Role) -> Option<&'a [f32]> {
        self.tensors
            .iter()
            .position(|(r, _)| *r == role)
            .and_then(|i| item.get(i).copied())
    }

    /// Decodes one batch item: `item` holds each tensor's values for it.
    fn decode(&self, item: &[&[f32]]) -> Result<TileOutput, ModelError> {
        let nc = self.num_classes;
        let p = &self.params;
        let (w, h) = (p.input_width, p.input_height);
        let shape_err = |what: String| Err(ModelError::Shape(what));
        let tensor = |role: Role| {
            self.role(item, role).ok_or_else(|| {
                ModelError::inference(format!("no `{}` tensor was read", role.key()))
            })
        };
        let mut out = TileOutput::default();
        match self.adapter {
            AdapterKind::Yolox => {
                let output = tensor(Role::Output)?;
                let rows = yolox::num_rows(w, h);
                if output.len() != rows * (5 + nc) {
                    return shape_err(format!(
                        "YOLOX output has {} values per image, expected {rows} rows x {}",
                        output.len(),
                        5 + nc
                    ));
                }
                yolox::decode(output, nc, w, h, p.score_threshold, &mut out.detections);
            }
            AdapterKind::Yolov8 => {
                let output = tensor(Role::Output)?;
                if !output.len().is_multiple_of(4 + nc) {
                    return shape_err(format!(
                        "YOLOv8 output has {} values per image, not a multiple of {}",
                        output.len(),
                        4 + nc
                    ));
                }
                let anchors = output.len() / (4 + nc);
                yolov8::decode(output, nc, anchors, p.score_threshold, &mut out.detections);
            }
            AdapterKind::Yolov5 => {
                let output = tensor(Role::Output)?;
                if !output.len().is_multiple_of(5 + nc) {
                    return shape_err(format!(
                        "YOLOv5 output has {} values per image, not a multiple of {}",
                        output.len(),
                        5 + nc
                    ));
                }
                yolov5::decode(output, nc, p, &mut out.detections);
            }
            AdapterKind::BoxesScores | AdapterKind::Detr => {
                let (boxes, scores) = (tensor(Role::Boxes)?, tensor(Role::Scores)?);
                let rows = boxes.len() / 4;
                if !boxes.len().is_multiple_of(4) || scores.len() != rows * nc {
                    return shape_err(format!(
                        "{} boxes and {} scores per image do not make rows of 4 and {nc}",
                        boxes.len(),
                        scores.len()
                    ));
                }
                if self.adapter == AdapterKind::Detr {
                    detr::decode(boxes, scores, nc, p, &mut out.detections);
                } else {
                    boxes_scores::decode(boxes, scores, nc, p, &mut out.detections);
                }
            }
            AdapterKind::NmsOutputs => {
                let (boxes, scores, classes) = (
                    tensor(Role::Boxes)?,
                    tensor(Role::Scores)?,
                    tensor(Role::Classes)?,
                );
                let rows = boxes.len() / 4;
                if !boxes.len().is_multiple_of(4) || scores.len() != rows || classes.len() != rows {
                    return shape_err(format!(
                        "{} boxes, {} scores and {} classes per image are not K x 4, K and K",
                        boxes.len(),
                        scores.len(),
                        classes.len()
                    ));
                }
                let count = self
                    .role(item, Role::Count)
                    .and_then(|c| c.first().copied())
                    .and_then(nms_outputs::count_from);
                nms_outputs::decode(boxes, scores, classes, count, p, &mut out.detections);
            }
            AdapterKind::Classifier => {
                let output = tensor(Role::Output)?;
                if output.len() != nc {
                    return shape_err(format!(
                        "classifier output has {} values per image, the model has {nc} labels",
                        output.len()
                    ));
                }
                out.classifications = classifier::top_k(output, self.classes_kept, self.softmax);
            }
        }
        if let Some(config) = &self.tile_nms
            && out.detections.len() > 1
        {
            out.detections = merge(&out.detections, config);
        }
        Ok(out)
    }
}

/// An output's values as `f32`: borrowed for `f32` tensors, converted for integer ones (class
/// ids and counts of NMS outputs).
fn extract_f32<'a>(
    value: &'a ort::value::DynValue,
    name: &str,
) -> Result<(Vec<i64>, Cow<'a, [f32]>), ModelError> {
    let read_err = |e: ort::Error| ModelError::Inference {
        context: format!("reading output `{name}`"),
        source: Some(e),
    };
    macro_rules! convert {
        ($t:ty) => {{
            let (shape, data) = value.try_extract_tensor::<$t>().map_err(read_err)?;
            let shape: Vec<i64> = shape.iter().copied().collect();
            (shape, Cow::Owned(data.iter().map(|&v| v as f32).collect()))
        }};
    }
    Ok(match tensor_type(value.dtype()).map(|(ty, _)| ty) {
        Some(TensorElementType::Int64) => convert!(i64),
        Some(TensorElementType::Int32) => convert!(i32),
        Some(TensorElementType::Int16) => convert!(i16),
        Some(TensorElementType::Int8) => convert!(i8),
        Some(TensorElementType::Uint8) => convert!(u8),
        Some(TensorElementType::Uint16) => convert!(u16),
        Some(TensorElementType::Uint32) => convert!(u32),
        Some(TensorElementType::Uint64) => convert!(u64),
        _ => {
            let (shape, data) = value.try_extract_tensor::<f32>().map_err(read_err)?;
            (shape.iter().copied().collect(), Cow::Borrowed(data))
        }
    })
}

/// An output as the adapter fitting sees it.
pub(crate) fn output_info(outlet: &Outlet) -> OutputInfo {
    match tensor_type(outlet.dtype()) {
        Some((ty, shape)) => OutputInfo {
            name: outlet.name().to_string(),
            element: element_of(ty),
            shape,
        },
        None => OutputInfo {
            name: outlet.name().to_string(),
            element: Element::Other,
            shape: Vec::new(),
        },
    }
}

/// How adapters see an element type: only `f32` is read as float.
fn element_of(ty: TensorElementType) -> Element {
    use TensorElementType as T;
    match ty {
        T::Float32 => Element::Float,
        T::Int8 | T::Int16 | T::Int32 | T::Int64 | T::Uint8 | T::Uint16 | T::Uint32 | T::Uint64 => {
            Element::Integer
        }
        _ => Element::Other,
    }
}

/// Element type and shape of a tensor type, `None` for maps and sequences.
pub(crate) fn tensor_type(dtype: &ValueType) -> Option<(TensorElementType, Vec<i64>)> {
    match dtype {
        ValueType::Tensor { ty, shape, .. } => Some((*ty, shape.iter().copied().collect())),
        _ => None,
    }
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{ExecutionProviderConfig, PluginDevice};
    use crate::test_support::{env, tiny};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn sessions_can_move_to_worker_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<ModelSession>();
        assert_send::<crate::Recognizer>();
        assert_send::<Arc<Model>>();
    }

    #[test]
    fn classifier_with_dynamic_batch() -> TestResult {
        let env = env();
        let mut s = ModelSession::load(&env, tiny("tiny_classifier"), &SessionConfig::default())?;
        assert_eq!(s.batch_dim(), BatchDim::Dynamic);
        assert_eq!(s.execution_provider(), "cpu");
        assert_eq!(s.tensor_len(), 3 * 8 * 8);
        // Item 0: green channel bright -> class 1; item 1: all zero -> class 3 (bias 0.5).
        let mut input = vec![0.0f32; 2 * 192];
        input[64..128].fill(1.0);
        let out = s.run(&input, 2)?;
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0].classifications.len(),
            2,
            "top_k = 2 from the manifest"
        );
        assert_eq!(out[0].classifications[0].class_id, 1);
        assert_eq!(out[1].classifications[0].class_id, 3);
        assert!(out[0].detections.is_empty());
        // Softmax is on: probabilities of logits [0, 1, 0, -0.5].
        let p = out[0].classifications[0].score;
        let expected = 1f32.exp() / (1.0 + 1f32.exp() + 1.0 + (-0.5f32).exp());
        assert!((p - expected).abs() < 1e-5, "{p} vs {expected}");
        // Any batch size works with a dynamic batch.
        assert_eq!(s.run(&input[..192], 1)?.len(), 1);
        assert!(s.run(&[], 0)?.is_empty());
        Ok(())
    }

    #[test]
    fn detector_with_fixed_batch_runs_in_chunks() -> TestResult {
        let env = env();
        let mut s = ModelSession::load(&env, tiny("tiny_detector"), &SessionConfig::default())?;
        assert_eq!(s.batch_dim(), BatchDim::Fixed(1));
        let len = s.tensor_len();
        let mut input = vec![0.9f32; 2 * len];
        input[len..].fill(0.0);
        let out = s.run(&input, 2)?;
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].detections.len(), 1);
        let d = out[0].detections[0];
        assert_eq!(d.class_id, 1);
        assert!((d.score - 0.72).abs() < 1e-5, "{}", d.score);
        let b = d.bbox;
        assert_eq!((b.x1, b.y1, b.x2, b.y2), (8.0, 8.0, 16.0, 16.0));
        assert!(
            out[1].detections.is_empty(),
            "objectness 0 for a black input"
        );
        Ok(())
    }

    #[test]
    fn wrong_input_length_is_a_shape_error() -> TestResult {
        let env = env();
        let mut s = ModelSession::load(&env, tiny("tiny_classifier"), &SessionConfig::default())?;
        let err = s.run(&[0.0; 10], 1).expect_err("too short");
        assert_eq!(err.kind(), "shape_mismatch");
        Ok(())
    }

    #[test]
    fn unavailable_providers_fall_back_to_cpu() -> TestResult {
        let env = env();
        let config = SessionConfig {
            execution_providers: vec![
                ExecutionProviderConfig::TensorRt {
                    device_id: 0,
                    fp16: true,
                    int8: false,
                    engine_cache_path: None,
                },
                ExecutionProviderConfig::Cuda { device_id: 0 },
                ExecutionProviderConfig::OpenVino { device_type: None },
                ExecutionProviderConfig::CoreMl,
                ExecutionProviderConfig::Cpu,
            ],
            ..SessionConfig::default()
        };
        let mut s = ModelSession::load(&env, tiny("tiny_classifier"), &config)?;
        // The CPU build of ONNX Runtime has none of the accelerators.
        assert_eq!(s.execution_provider(), "cpu");
        assert_eq!(s.run(&[0.0; 192], 1)?.len(), 1);
        Ok(())
    }

    /// Log lines written while `f` runs, at WARN and above, without colours.
    fn warnings_during<R>(f: impl FnOnce() -> R) -> (R, Vec<String>) {
        #[derive(Clone, Default)]
        struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                if let Ok(mut all) = self.0.lock() {
                    all.extend_from_slice(bytes);
                }
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .finish();
        let result = tracing::subscriber::with_default(subscriber, f);
        let text = captured
            .0
            .lock()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        (result, text.lines().map(str::to_owned).collect())
    }

    #[test]
    fn an_unavailable_gpu_provider_falls_back_to_cpu_with_one_clear_warning() -> TestResult {
        let env = env();
        // A device id no other test uses: the warning is given once per process and provider.
        let config = SessionConfig {
            execution_providers: vec![
                ExecutionProviderConfig::Cuda { device_id: 7 },
                ExecutionProviderConfig::Cpu,
            ],
            ..SessionConfig::default()
        };
        let (session, warnings) =
            warnings_during(|| ModelSession::load(&env, tiny("tiny_classifier"), &config));
        let mut session = session?;
        assert_eq!(session.execution_provider(), "cpu");
        assert_eq!(session.run(&[0.0; 192], 1)?.len(), 1);
        // One warning, naming the provider, what happened and what comes next.
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        let warning = &warnings[0];
        assert!(warning.contains("WARN"), "{warning}");
        assert!(warning.contains("provider=\"cuda\""), "{warning}");
        assert!(
            warning.contains("unavailable; trying the next one"),
            "{warning}"
        );
        assert!(warning.contains("error="), "the reason is given: {warning}");
        // The next session (another worker, another model) falls back quietly.
        let (again, warnings) =
            warnings_during(|| ModelSession::load(&env, tiny("tiny_classifier"), &config));
        assert_eq!(again?.execution_provider(), "cpu");
        assert!(warnings.is_empty(), "{warnings:#?}");
        Ok(())
    }

    /// The OpenVINO execution provider plugin (PyPI `onnxruntime-ep-openvino`, installed by
    /// `make test` into `.tessera/ep/openvino`, or `$TESSERA_OPENVINO_PLUGIN`). `None` (and a
    /// printed reason) when absent, so the caller can skip; a panic where
    /// `TESSERA_REQUIRE_ASSETS` is set (CI installs it).
    fn openvino_plugin() -> Option<String> {
        let path = std::env::var_os("TESSERA_OPENVINO_PLUGIN")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../.tessera/ep/openvino/libonnxruntime_providers_openvino_plugin.so")
            });
        if path.is_file() {
            return Some(path.to_string_lossy().into_owned());
        }
        let reason = format!(
            "{} not found: run `make ep-plugins` (the OpenVINO execution provider plugin)",
            path.display()
        );
        if std::env::var_os("TESSERA_REQUIRE_ASSETS").is_some() {
            panic!("{reason}");
        }
        eprintln!("SKIPPED: {reason}");
        None
    }

    fn plugin(library: &str, device: Option<PluginDevice>) -> SessionConfig {
        SessionConfig {
            execution_providers: vec![
                ExecutionProviderConfig::Plugin {
                    library: library.to_owned(),
                    device,
                    options: Default::default(),
                },
                ExecutionProviderConfig::Cpu,
            ],
            ..SessionConfig::default()
        }
    }

    /// The warning when the OpenVINO plugin cannot take a session of `device`, with the
    /// session's provider (`plugin:...` where this machine has such an Intel device).
    fn openvino_plugin_session(
        library: &str,
        device: PluginDevice,
    ) -> Result<(ModelSession, Vec<String>), ModelError> {
        let env = env();
        let (session, warnings) = warnings_during(|| {
            ModelSession::load(
                &env,
                tiny("tiny_classifier"),
                &plugin(library, Some(device)),
            )
        });
        Ok((session?, warnings))
    }

    #[test]
    fn the_openvino_plugin_runs_models_like_the_cpu_provider() -> TestResult {
        let Some(library) = openvino_plugin() else {
            return Ok(());
        };
        let (probe, warnings) = openvino_plugin_session(&library, PluginDevice::Cpu)?;
        if probe.execution_provider() == "cpu" {
            // OpenVINO supports Intel hardware only; elsewhere the fallback is what is tested.
            assert_eq!(warnings.len(), 1, "{warnings:#?}");
            assert!(
                warnings[0].contains("supports none of this machine's devices"),
                "{}",
                warnings[0]
            );
            eprintln!(
                "SKIPPED: the OpenVINO plugin supports no device of this machine: {}",
                warnings[0]
            );
            return Ok(());
        }
        let env = env();
        let config = plugin(&library, Some(PluginDevice::Cpu));
        for model in ["tiny_classifier", "tiny_detector"] {
            let mut cpu = ModelSession::load(&env, tiny(model), &SessionConfig::default())?;
            let mut openvino = ModelSession::load(&env, tiny(model), &config)?;
            assert_eq!(
                openvino.execution_provider(),
                "plugin:OpenVINOExecutionProvider"
            );
            // Two different inputs, so a provider that ignored its input would be caught.
            let len = cpu.tensor_len();
            let input: Vec<f32> = (0..len).map(|i| (i % 17) as f32 / 16.0).collect();
            for input in [input, vec![0.9; len]] {
                let (a, b) = (cpu.run(&input, 1)?, openvino.run(&input, 1)?);
                assert_eq!(a.len(), b.len());
                for (a, b) in a.iter().zip(&b) {
                    assert_eq!(a.classifications.len(), b.classifications.len(), "{model}");
                    for (x, y) in a.classifications.iter().zip(&b.classifications) {
                        assert_eq!(x.class_id, y.class_id, "{model}");
                        assert!((x.score - y.score).abs() < 1e-4, "{model}: {x:?} vs {y:?}");
                    }
                    assert_eq!(a.detections.len(), b.detections.len(), "{model}");
                    for (x, y) in a.detections.iter().zip(&b.detections) {
                        assert_eq!(x.class_id, y.class_id, "{model}");
                        assert!((x.score - y.score).abs() < 1e-4, "{model}: {x:?} vs {y:?}");
                        assert!(x.bbox.iou(&y.bbox) > 0.999, "{model}: {x:?} vs {y:?}");
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn a_plugin_without_the_wanted_device_falls_back_to_cpu_saying_why() -> TestResult {
        let Some(library) = openvino_plugin() else {
            return Ok(());
        };
        let (session, warnings) = openvino_plugin_session(&library, PluginDevice::Npu)?;
        if session.execution_provider() != "cpu" {
            eprintln!(
                "this machine has an Intel NPU: {}",
                session.execution_provider()
            );
            return Ok(());
        }
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        let warning = &warnings[0];
        assert!(
            warning.contains("unavailable; trying the next one"),
            "{warning}"
        );
        assert!(
            warning.contains("openvino_plugin.so (npu)"),
            "the plugin is named: {warning}"
        );
        // On Intel hardware without an NPU: what the plugin offers instead; elsewhere: the
        // machine's devices, none of which OpenVINO supports.
        assert!(
            warning.contains(
                "OpenVINOExecutionProvider offers no npu device on this machine (it offers: cpu"
            ) || warning.contains("supports none of this machine's devices (")
                && !warning.contains("intel"),
            "{warning}"
        );
        Ok(())
    }

    #[test]
    fn a_missing_plugin_library_falls_back_to_cpu_naming_the_file() -> TestResult {
        let env = env();
        let (session, warnings) = warnings_during(|| {
            ModelSession::load(
                &env,
                tiny("tiny_classifier"),
                &plugin("/nonexistent/libep.so", None),
            )
        });
        assert_eq!(session?.execution_provider(), "cpu");
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        assert!(
            warnings[0].contains("plugin library /nonexistent/libep.so not found"),
            "{}",
            warnings[0]
        );
        Ok(())
    }

    #[test]
    fn graph_must_match_the_manifest() -> TestResult {
        let env = env();
        let mut model = (*tiny("tiny_classifier")).clone();
        model.manifest.input.name = "images".into();
        let err = ModelSession::load(&env, Arc::new(model), &SessionConfig::default())
            .expect_err("wrong input name");
        assert!(err.to_string().contains("`input`"), "{err}");

        let mut model = (*tiny("tiny_classifier")).clone();
        model.labels.push("extra".into());
        let err = ModelSession::load(&env, Arc::new(model), &SessionConfig::default())
            .expect_err("5 labels for 4 outputs");
        assert!(err.to_string().contains("5 classes"), "{err}");

        let mut model = (*tiny("tiny_detector")).clone();
        model.manifest.input.width = 64;
        let err = ModelSession::load(&env, Arc::new(model), &SessionConfig::default())
            .expect_err("wrong input size");
        assert_eq!(err.kind(), "model_load");
        Ok(())
    }

    /// Detections of a tiny layout model on a flat input of `value`.
    fn detect_flat(name: &str, value: f32) -> Result<Vec<Detection>, Box<dyn std::error::Error>> {
        let mut s = ModelSession::load(&env(), tiny(name), &SessionConfig::default())?;
        let input = vec![value; s.tensor_len()];
        let mut out = s.run(&input, 1)?;
        Ok(out.remove(0).detections)
    }

    #[test]
    fn every_layout_adapter_finds_its_tiny_models_box() -> TestResult {
        let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
        let cases: [(&str, u32, f32); 4] = [
            ("tiny_yolov5", 1, 0.8 * 0.9),
            ("tiny_boxes_scores", 2, 0.9),
            ("tiny_detr", 1, sigmoid(10.0 * 0.9 - 5.0)),
            ("tiny_nms", 1, 0.9),
        ];
        for (name, class, score) in cases {
            let found = detect_flat(name, 0.9)?;
            assert_eq!(found.len(), 1, "{name}: {found:?}");
            let d = found[0];
            assert_eq!(d.class_id, class, "{name}");
            assert!(
                (d.score - score).abs() < 1e-4,
                "{name}: {} vs {score}",
                d.score
            );
            let b = d.bbox;
            for (got, want) in [(b.x1, 8.0), (b.y1, 8.0), (b.x2, 16.0), (b.y2, 16.0)] {
                assert!((got - want).abs() < 1e-3, "{name}: {b:?}");
            }
            // A dark input scores under the threshold everywhere; the background rows of
            // tiny_boxes_scores and the padding row of tiny_nms (score 0.99) stay unreported.
            assert_eq!(detect_flat(name, 0.0)?, Vec::new(), "{name}");
        }
        Ok(())
    }

    /// Loads `onnx` (a tiny model) under a manifest whose `[output]` table is `output`.
    fn load_as(onnx: &str, output: &str, labels: &str) -> Result<ModelSession, ModelError> {
        let dir = tempfile::tempdir().map_err(|source| ModelError::Io {
            path: "tempdir".into(),
            source,
        })?;
        let manifest = format!(
            "name = \"m\"\nversion = \"1\"\ntask = \"detect\"\nfile = \"{onnx}.onnx\"\n\
             [input]\nname = \"images\"\nwidth = 32\nheight = 32\nchannel_order = \"rgb\"\n\
             resize = \"stretch\"\n[output]\n{output}\n[labels]\nfile = \"l.txt\"\n"
        );
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).map_err(|source| ModelError::Io {
                path: name.into(),
                source,
            })
        };
        write("m.toml", &manifest)?;
        write("l.txt", labels)?;
        let onnx_path = crate::test_support::testdata(&format!("{onnx}.onnx"));
        let model = Model::load(&dir.path().join("m.toml"), Some(&onnx_path), None)?;
        ModelSession::load(&env(), Arc::new(model), &SessionConfig::default())
    }

    #[test]
    fn a_mismatched_adapter_says_why_and_what_fits_instead() {
        let err = load_as(
            "tiny_yolov5",
            "adapter = \"yolox\"\nname = \"output\"",
            "a\nb\n",
        )
        .expect_err("12 rows are not YOLOX's 21");
        let text = err.to_string();
        assert!(
            text.contains("adapter `yolox` needs one output [N, rows, 5 + classes]"),
            "{text}"
        );
        assert!(text.contains("YOLOX needs 21 for a 32x32 input"), "{text}");
        assert!(
            text.contains("adapters whose layout fits the graph: `yolov5`"),
            "{text}"
        );

        // The label file disagrees with the score columns.
        let err = load_as(
            "tiny_boxes_scores",
            "adapter = \"boxes_scores\"\nboxes = \"boxes\"\nscores = \"scores\"",
            "a\nb\n",
        )
        .expect_err("3 score columns, 2 labels");
        assert!(
            err.to_string()
                .contains("expected 2 for 2 classes (the label file)"),
            "{err}"
        );

        // A role naming an output the graph lacks.
        let err = load_as(
            "tiny_detr",
            "adapter = \"detr\"\nboxes = \"boxes\"\nscores = \"logits\"",
            "a\nb\n",
        )
        .expect_err("no output `boxes`");
        assert!(
            err.to_string().contains("the graph has no output `boxes`"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_layout_lists_every_adapter_tried() {
        let err = load_as(
            "tiny_unknown",
            "adapter = \"yolov8\"\nname = \"features\"",
            "a\nb\n",
        )
        .expect_err("a feature map is no detector output");
        let text = err.to_string();
        assert!(
            text.contains("no output adapter fits this model's outputs; tried:"),
            "{text}"
        );
        for kind in AdapterKind::ALL {
            assert!(
                text.contains(&format!("- {}: needs", kind.as_str())),
                "{text}"
            );
        }
    }

    #[test]
    fn integer_count_limits_the_rows_read() -> TestResult {
        // Without the count, tiny_nms's padding row (class 0, score 0.99) is read as a detection.
        let mut s = load_as(
            "tiny_nms",
            "adapter = \"nms_outputs\"\nboxes = \"det_boxes\"\nscores = \"det_scores\"\nclasses = \"det_classes\"",
            "a\nb\n",
        )?;
        let input = vec![0.9; s.tensor_len()];
        let found = s.run(&input, 1)?.remove(0).detections;
        let classes: Vec<u32> = found.iter().map(|d| d.class_id).collect();
        assert_eq!(classes, vec![1, 0]);
        Ok(())
    }

    #[test]
    fn a_model_with_a_second_input_is_refused_with_the_reason() -> TestResult {
        let dir = tempfile::tempdir()?;
        let manifest = "name = \"m\"\nversion = \"1\"\ntask = \"classify\"\nfile = \"m.onnx\"\n\
             [input]\nname = \"images\"\nwidth = 32\nheight = 32\nchannel_order = \"rgb\"\n\
             resize = \"stretch\"\n[output]\nadapter = \"classifier\"\nname = \"output\"\n\
             [labels]\nfile = \"l.txt\"\n";
        std::fs::write(dir.path().join("m.toml"), manifest)?;
        std::fs::write(dir.path().join("l.txt"), "r\ng\nb\n")?;
        let onnx = crate::test_support::testdata("tiny_two_inputs.onnx");
        let model = Model::load(&dir.path().join("m.toml"), Some(&onnx), None)?;
        let err = ModelSession::load(&env(), Arc::new(model), &SessionConfig::default())
            .expect_err("two inputs");
        assert!(
            err.to_string()
                .contains("the graph has 2 inputs (`images`, `orig_target_sizes`)"),
            "{err}"
        );
        Ok(())
    }
}
