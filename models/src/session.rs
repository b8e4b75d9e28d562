//! One ONNX Runtime session of a model, with its output adapter: tensors in, detections or
//! classifications out.

use std::sync::Arc;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};
use tessera_operators::adapters::{classifier, yolov8, yolox};
use tessera_operators::{
    AdapterKind, Classification, Detection, MatchMetric, MergeConfig, MergeStrategy, merge,
};

use crate::error::ModelError;
use crate::manifest::Model;
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
    /// Per-tile NMS applied to raw detections, from the manifest's `thresholds.nms_iou`.
    tile_nms: Option<MergeConfig>,
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

        let output = session
            .outputs()
            .iter()
            .find(|o| o.name() == m.output.name)
            .ok_or_else(|| {
                load_err(format!(
                    "the graph has no output `{}` (outputs: {})",
                    m.output.name,
                    names(session.outputs().iter().map(|o| o.name()))
                ))
            })?;
        let (ty, out_shape) = tensor_type(output.dtype())
            .ok_or_else(|| load_err(format!("output `{}` is not a tensor", m.output.name)))?;
        if ty != TensorElementType::Float32 {
            return Err(load_err(format!(
                "output `{}` is {ty}, only f32 outputs are supported",
                m.output.name
            )));
        }
        check_output_shape(&model, &out_shape).map_err(&load_err)?;
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

        let tile_nms = m.thresholds.nms_iou.map(|threshold| MergeConfig {
            strategy: MergeStrategy::Nms,
            metric: MatchMetric::Iou,
            threshold,
            class_agnostic: false,
        });
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
            tile_nms,
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
        let value = outputs.get(m.output.name.as_str()).ok_or_else(|| {
            ModelError::inference(format!("output `{}` missing from the run", m.output.name))
        })?;
        let (shape, data) =
            value
                .try_extract_tensor::<f32>()
                .map_err(|e| ModelError::Inference {
                    context: format!("reading output `{}`", m.output.name),
                    source: Some(e),
                })?;
        if shape.first().copied() != i64::try_from(batch).ok() || !data.len().is_multiple_of(batch)
        {
            return Err(ModelError::Shape(format!(
                "output `{}` has shape {shape:?} for a batch of {batch}",
                m.output.name
            )));
        }
        let per_item = data.len() / batch;
        let first = results.len();
        for item in data.chunks_exact(per_item) {
            results.push(decode(&self.model, self.tile_nms.as_ref(), item)?);
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

/// Decodes one batch item with the model's adapter.
fn decode(
    model: &Model,
    tile_nms: Option<&MergeConfig>,
    item: &[f32],
) -> Result<TileOutput, ModelError> {
    let m = &model.manifest;
    let nc = model.num_classes();
    let mut out = TileOutput::default();
    match m.output.adapter {
        AdapterKind::Yolox => {
            if item.len() != yolox::num_rows(m.input.width, m.input.height) * (5 + nc) {
                return Err(ModelError::Shape(format!(
                    "YOLOX output has {} values per image, expected {} rows x {}",
                    item.len(),
                    yolox::num_rows(m.input.width, m.input.height),
                    5 + nc
                )));
            }
            yolox::decode(
                item,
                nc,
                m.input.width,
                m.input.height,
                m.thresholds.score,
                &mut out.detections,
            );
        }
        AdapterKind::Yolov8 => {
            if !item.len().is_multiple_of(4 + nc) {
                return Err(ModelError::Shape(format!(
                    "YOLOv8 output has {} values per image, not a multiple of {}",
                    item.len(),
                    4 + nc
                )));
            }
            let anchors = item.len() / (4 + nc);
            yolov8::decode(item, nc, anchors, m.thresholds.score, &mut out.detections);
        }
        AdapterKind::Classifier => {
            if item.len() != nc {
                return Err(ModelError::Shape(format!(
                    "classifier output has {} values per image, the model has {nc} labels",
                    item.len()
                )));
            }
            out.classifications = classifier::top_k(item, m.thresholds.top_k, m.output.softmax);
        }
    }
    if let Some(config) = tile_nms
        && out.detections.len() > 1
    {
        out.detections = merge(&out.detections, config);
    }
    Ok(out)
}

/// Checks the static dimensions of the decoded output against the manifest and labels.
fn check_output_shape(model: &Model, shape: &[i64]) -> Result<(), String> {
    let m = &model.manifest;
    let nc = i64::try_from(model.num_classes()).map_err(|e| e.to_string())?;
    let known = |i: usize| shape.get(i).copied().filter(|d| *d >= 0);
    let fail = |what: String| {
        Err(format!(
            "output `{}` has shape {shape:?}: {what} (the label file has {nc} classes)",
            m.output.name
        ))
    };
    match m.output.adapter {
        AdapterKind::Yolox => {
            if shape.len() != 3 {
                return fail("expected [N, rows, 5 + classes]".into());
            }
            let rows = i64::try_from(yolox::num_rows(m.input.width, m.input.height))
                .map_err(|e| e.to_string())?;
            if known(1).is_some_and(|d| d != rows) {
                return fail(format!("expected {rows} rows for strides 8, 16, 32"));
            }
            if known(2).is_some_and(|d| d != 5 + nc) {
                return fail(format!("expected {} columns", 5 + nc));
            }
        }
        AdapterKind::Yolov8 => {
            if shape.len() != 3 {
                return fail("expected [N, 4 + classes, anchors]".into());
            }
            if known(1).is_some_and(|d| d != 4 + nc) {
                return fail(format!("expected {} channels", 4 + nc));
            }
        }
        AdapterKind::Classifier => {
            if shape.len() != 2 {
                return fail("expected [N, classes]".into());
            }
            if known(1).is_some_and(|d| d != nc) {
                return fail(format!("expected {nc} classes"));
            }
        }
    }
    Ok(())
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
}
