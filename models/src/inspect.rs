//! Inputs and outputs of an ONNX file, which output adapter reads them, and a draft manifest,
//! for `tessera models inspect`.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::Path;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::{Outlet, Tensor};
use tessera_operators::AdapterKind;
use tessera_operators::adapters::fit::{self, Fit, NoAdapterFits, OutputInfo, ValueStats};

use crate::error::ModelError;
use crate::session::{output_info, tensor_type};

/// One input or output of a graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// Element type (`f32`, `u8`, ...), or the value type for non-tensors.
    pub element_type: String,
    /// Dimensions; -1 marks a dynamic dimension. Empty for non-tensors.
    pub shape: Vec<i64>,
}

/// The inputs and outputs of a graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Graph inputs, in order.
    pub inputs: Vec<TensorInfo>,
    /// Graph outputs, in order.
    pub outputs: Vec<TensorInfo>,
}

/// Loads `path` (CPU provider, no optimisation) and lists its inputs and outputs.
pub fn inspect(env: &Environment, path: &Path) -> Result<ModelInfo, ModelError> {
    Ok(model_info(&open(env, path)?))
}

fn model_info(session: &Session) -> ModelInfo {
    ModelInfo {
        inputs: session.inputs().iter().map(info).collect(),
        outputs: session.outputs().iter().map(info).collect(),
    }
}

/// What `models inspect` makes of a model: its tensors, the adapters that fit (best first) and
/// what the probe run showed.
#[derive(Debug, Clone)]
pub struct Proposal {
    /// Inputs and outputs.
    pub info: ModelInfo,
    /// The image input: `(name, width, height, a side is dynamic)`, with 640 for dynamic
    /// sides; `None` when no input is an `f32 [N, 3, H, W]` image.
    pub image_input: Option<(String, u32, u32, bool)>,
    /// Fitting adapters, best first, or why none fits.
    pub fits: Result<Vec<Fit>, NoAdapterFits>,
    /// Why the probe run did not happen or failed (the proposal then rests on shapes alone).
    pub probe_skipped: Option<String>,
}

/// Side used for a dynamic input dimension (the common export size of detectors).
const DYNAMIC_SIDE: u32 = 640;

/// Inspects `path`, runs it once on a mid-grey image (unless `probe` is false) and matches its
/// outputs against every adapter.
pub fn propose(env: &Environment, path: &Path, probe: bool) -> Result<Proposal, ModelError> {
    let mut session = open(env, path)?;
    let info = model_info(&session);
    let outputs: Vec<OutputInfo> = session.outputs().iter().map(output_info).collect();
    let image_input = info.inputs.iter().find_map(|t| match t.shape.as_slice() {
        [_, 3, h, w] if t.element_type == "f32" => {
            let side = |d: i64| u32::try_from(d).ok().filter(|d| *d > 0);
            let dynamic = side(*h).is_none() || side(*w).is_none();
            Some((
                t.name.clone(),
                side(*w).unwrap_or(DYNAMIC_SIDE),
                side(*h).unwrap_or(DYNAMIC_SIDE),
                dynamic,
            ))
        }
        _ => None,
    });
    let mut stats = BTreeMap::new();
    let probe_skipped = match (&image_input, probe) {
        (_, false) => Some("--no-probe".to_string()),
        (None, true) => Some("no f32 [N, 3, H, W] image input".to_string()),
        (Some(_), true) if info.inputs.len() > 1 => Some(format!(
            "the model has {} inputs; tessera feeds one image tensor",
            info.inputs.len()
        )),
        (Some((name, w, h, _)), true) => match probe_run(&mut session, name, *w, *h) {
            Ok(s) => {
                stats = s;
                None
            }
            Err(e) => Some(format!("the probe run failed: {e}")),
        },
    };
    let (w, h) = image_input
        .as_ref()
        .map_or((DYNAMIC_SIDE, DYNAMIC_SIDE), |(_, w, h, _)| (*w, *h));
    let fits = fit::propose(&outputs, &stats, w, h);
    Ok(Proposal {
        info,
        image_input,
        fits,
        probe_skipped,
    })
}

/// Runs one mid-grey image (114 of 255, scaled to `0.447`) and collects each float output's
/// value ranges.
fn probe_run(
    session: &mut Session,
    input: &str,
    width: u32,
    height: u32,
) -> Result<BTreeMap<String, ValueStats>, ort::Error> {
    let (w, h) = (width as usize, height as usize);
    let tensor = Tensor::from_array(([1usize, 3, h, w], vec![114.0f32 / 255.0; 3 * w * h]))?;
    let outputs = session.run(ort::inputs![input => tensor])?;
    let mut stats = BTreeMap::new();
    for (name, value) in outputs.iter() {
        if let Ok((shape, data)) = value.try_extract_tensor::<f32>() {
            let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
            if let Some(s) = ValueStats::of(&shape, data) {
                stats.insert(name.to_string(), s);
            }
        }
    }
    Ok(stats)
}

impl Proposal {
    /// A `model.toml` for the best fit, with what the user must check in comments; `None` when
    /// no adapter fits or there is no image input.
    pub fn draft_manifest(&self, onnx_file: &Path) -> Option<String> {
        let fits = self.fits.as_ref().ok()?;
        let best = fits.first()?;
        let (input, width, height, dynamic) = self.image_input.as_ref()?;
        let stem = onnx_file
            .file_stem()
            .map_or("model".into(), |s| s.to_string_lossy().into_owned());
        let file = onnx_file
            .file_name()
            .map_or("model.onnx".into(), |s| s.to_string_lossy().into_owned());
        let kind = best.adapter;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "# Draft written by `tessera models inspect {file}`: check every value marked CHECK."
        );
        for note in &best.notes {
            let _ = writeln!(t, "# - {note}");
        }
        if let Some(reason) = &self.probe_skipped {
            let _ = writeln!(
                t,
                "# - no probe run ({reason}): settings rest on the output shapes alone"
            );
        }
        let others: Vec<&str> = fits[1..].iter().map(|f| f.adapter.as_str()).collect();
        if !others.is_empty() {
            let _ = writeln!(
                t,
                "# - these adapters fit the shapes too: {}",
                others.join(", ")
            );
        }
        let _ = writeln!(t, "name = {}", toml_str(&stem));
        let _ = writeln!(t, "version = \"1\"");
        let task = if kind.is_detector() {
            "detect"
        } else {
            "classify"
        };
        let _ = writeln!(t, "task = \"{task}\"");
        let _ = writeln!(t, "file = {}", toml_str(&file));
        let _ = writeln!(t, "\n[input]");
        let _ = writeln!(t, "name = {}", toml_str(input));
        let side_note = if *dynamic {
            "  # CHECK: dynamic in the graph; the size the model was trained at"
        } else {
            ""
        };
        let _ = writeln!(t, "width = {width}{side_note}");
        let _ = writeln!(t, "height = {height}{side_note}");
        let _ = writeln!(t, "layout = \"nchw\"");
        let _ = writeln!(
            t,
            "channel_order = \"rgb\"  # CHECK: models trained with OpenCV (YOLOX) take \"bgr\""
        );
        let (resize, pad) = if kind.is_detector() {
            ("letterbox", 114)
        } else {
            ("stretch", 0)
        };
        let _ = writeln!(t, "resize = \"{resize}\"");
        let _ = writeln!(t, "pad_value = {pad}");
        // The usual normalisation of each family's exports.
        let imagenet = matches!(kind, AdapterKind::Detr | AdapterKind::Classifier);
        let scale = if kind == AdapterKind::Yolox {
            "1.0"
        } else {
            "0.00392156862745098"
        };
        let _ = writeln!(
            t,
            "# CHECK: the normalisation {} exports usually take (pixels x scale, then - mean, / std)",
            kind.as_str()
        );
        let _ = writeln!(t, "scale = {scale}");
        if imagenet {
            let _ = writeln!(t, "mean = [0.485, 0.456, 0.406]");
            let _ = writeln!(t, "std = [0.229, 0.224, 0.225]");
        }
        let _ = writeln!(t, "\n[output]");
        let _ = writeln!(t, "adapter = \"{}\"", kind.as_str());
        for (role, name) in &best.tensors {
            let _ = writeln!(t, "{} = {}", role.key(), toml_str(name));
        }
        if kind.is_configurable() {
            let _ = writeln!(t, "box_format = \"{}\"", best.encoding.format.as_str());
            let _ = writeln!(t, "boxes_normalized = {}", best.encoding.normalized);
            let _ = writeln!(t, "activation = \"{}\"", best.activation.as_str());
            match best.background_class {
                Some(class) => {
                    let _ = writeln!(
                        t,
                        "background_class = {class}  # CHECK: the score column meaning background"
                    );
                }
                None if kind != AdapterKind::Yolov5 => {
                    let _ = writeln!(
                        t,
                        "# background_class = 0  # CHECK: the score column (or class id) meaning background, if any"
                    );
                }
                None => {}
            }
        }
        if kind.is_detector() && kind.default_nms_applied() {
            let _ = writeln!(t, "nms_applied = true");
        }
        if kind == AdapterKind::Classifier {
            let _ = writeln!(
                t,
                "softmax = true  # CHECK: false if the outputs are probabilities already"
            );
            let _ = writeln!(
                t,
                "aggregate = \"full_frame\"  # or \"max\" / \"mean\" over tiles"
            );
        }
        let _ = writeln!(t, "\n[thresholds]");
        if kind.is_detector() {
            let _ = writeln!(t, "score = 0.25");
            if !kind.default_nms_applied() {
                let _ = writeln!(t, "nms_iou = 0.45");
            }
        } else {
            let _ = writeln!(t, "top_k = 5");
        }
        let _ = writeln!(t, "\n[labels]");
        let classes = best.num_classes.map_or("one line per class".into(), |n| {
            format!("{n} lines, one class name per line, in class-index order")
        });
        let _ = writeln!(t, "file = \"labels.txt\"  # CHECK: {classes}");
        Some(t)
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn open(env: &Environment, path: &Path) -> Result<Session, ModelError> {
    let load_err = |message: &str, source: ort::Error| ModelError::Load {
        path: path.to_path_buf(),
        message: message.to_owned(),
        source: Some(source),
    };
    if !path.is_file() {
        return Err(ModelError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    Session::builder(env)
        .map_err(|e| load_err("creating a session builder", e))?
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::Disable)
        .map_err(|e| load_err("disabling graph optimisation", e.into()))?
        .commit_from_file(path)
        .map_err(|e| load_err("creating the session", e))
}

fn info(outlet: &Outlet) -> TensorInfo {
    match tensor_type(outlet.dtype()) {
        Some((ty, shape)) => TensorInfo {
            name: outlet.name().to_string(),
            element_type: ty.to_string(),
            shape,
        },
        None => TensorInfo {
            name: outlet.name().to_string(),
            element_type: outlet.dtype().to_string(),
            shape: Vec::new(),
        },
    }
}

impl TensorInfo {
    /// The shape as `[N, 3, 416, 416]`, with `N` for dynamic dimensions.
    pub fn shape_string(&self) -> String {
        let dims: Vec<String> = self
            .shape
            .iter()
            .map(|d| {
                if *d < 0 {
                    "N".to_string()
                } else {
                    d.to_string()
                }
            })
            .collect();
        format!("[{}]", dims.join(", "))
    }
}

impl fmt::Display for ModelInfo {
    /// An aligned table: direction, name, element type, shape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<(&str, &TensorInfo)> = self
            .inputs
            .iter()
            .map(|t| ("input", t))
            .chain(self.outputs.iter().map(|t| ("output", t)))
            .collect();
        let name_w = rows
            .iter()
            .map(|(_, t)| t.name.len())
            .max()
            .unwrap_or(0)
            .max(4);
        let type_w = rows
            .iter()
            .map(|(_, t)| t.element_type.len())
            .max()
            .unwrap_or(0)
            .max(4);
        writeln!(
            f,
            "{:<6}  {:<name_w$}  {:<type_w$}  shape",
            "", "name", "type"
        )?;
        for (dir, t) in rows {
            writeln!(
                f,
                "{dir:<6}  {:<name_w$}  {:<type_w$}  {}",
                t.name,
                t.element_type,
                t.shape_string()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{env, testdata};

    #[test]
    fn lists_inputs_and_outputs() -> Result<(), ModelError> {
        let info = inspect(&env(), &testdata("tiny_classifier.onnx"))?;
        assert_eq!(
            info.inputs,
            vec![TensorInfo {
                name: "input".into(),
                element_type: "f32".into(),
                shape: vec![-1, 3, 8, 8],
            }]
        );
        assert_eq!(info.outputs[0].name, "output");
        assert_eq!(info.outputs[0].shape, vec![-1, 4]);
        let table = info.to_string();
        let lines: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[0], vec!["name", "type", "shape"], "{table}");
        assert_eq!(
            lines[1],
            vec!["input", "input", "f32", "[N,", "3,", "8,", "8]"],
            "{table}"
        );
        assert_eq!(
            lines[2],
            vec!["output", "output", "f32", "[N,", "4]"],
            "{table}"
        );

        let det = inspect(&env(), &testdata("tiny_detector.onnx"))?;
        assert_eq!(det.inputs[0].shape, vec![1, 3, 32, 32]);
        assert_eq!(det.outputs[0].shape, vec![1, 21, 7]);
        Ok(())
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let err = inspect(&env(), Path::new("/nonexistent/model.onnx")).expect_err("missing");
        assert_eq!(err.kind(), "io");
    }

    #[test]
    fn garbage_file_is_a_load_error() {
        let err = inspect(&env(), &testdata("tiny_classifier.txt")).expect_err("not onnx");
        assert_eq!(err.kind(), "model_load");
    }

    #[test]
    fn proposes_the_right_adapter_for_each_tiny_model() -> Result<(), Box<dyn std::error::Error>> {
        let cases = [
            ("tiny_classifier", AdapterKind::Classifier, 4),
            ("tiny_detector", AdapterKind::Yolox, 2),
            ("tiny_yolov5", AdapterKind::Yolov5, 2),
            ("tiny_boxes_scores", AdapterKind::BoxesScores, 3),
            ("tiny_detr", AdapterKind::Detr, 2),
            ("tiny_nms", AdapterKind::NmsOutputs, 0),
        ];
        for (name, adapter, classes) in cases {
            let onnx = testdata(&format!("{name}.onnx"));
            let proposal = propose(&env(), &onnx, true)?;
            assert_eq!(proposal.probe_skipped, None, "{name}");
            let fits = proposal.fits.as_ref().map_err(|e| e.to_string())?;
            assert_eq!(fits[0].adapter, adapter, "{name}: {fits:?}");
            // The draft is a manifest that loads the model, given a label file of the right
            // length (NMS outputs do not show the class count: the shipped labels then).
            let draft = proposal.draft_manifest(&onnx).ok_or("no draft")?;
            let dir = tempfile::tempdir()?;
            std::fs::write(dir.path().join("model.toml"), &draft)?;
            let labels = if classes == 0 {
                std::fs::read_to_string(testdata(&format!("{name}.txt")))?
            } else {
                (0..classes).map(|i| format!("class{i}\n")).collect()
            };
            std::fs::write(dir.path().join("labels.txt"), labels)?;
            let model = crate::Model::load(&dir.path().join("model.toml"), Some(&onnx), None)
                .map_err(|e| format!("{name}: {e}\n{draft}"))?;
            assert_eq!(model.manifest.output.adapter, adapter, "{name}");
            crate::ModelSession::load(&env(), std::sync::Arc::new(model), &Default::default())
                .map_err(|e| format!("{name}: {e}\n{draft}"))?;
        }
        Ok(())
    }

    #[test]
    fn the_draft_carries_what_the_probe_run_showed() -> Result<(), Box<dyn std::error::Error>> {
        let onnx = testdata("tiny_boxes_scores.onnx");
        let draft = propose(&env(), &onnx, true)?
            .draft_manifest(&onnx)
            .ok_or("no draft")?;
        let manifest = crate::ModelManifest::from_toml_str(&draft, &onnx)?;
        assert_eq!(manifest.output.boxes.as_deref(), Some("boxes"));
        assert_eq!(manifest.output.scores.as_deref(), Some("scores"));
        assert_eq!(manifest.output.boxes_normalized, Some(true), "{draft}");
        assert_eq!(
            manifest.output.activation,
            Some(tessera_operators::Activation::None)
        );
        assert!(
            draft.contains("file = \"labels.txt\"  # CHECK: 3 lines"),
            "{draft}"
        );
        // Without the probe the shapes alone decide, and the draft says so.
        let draft = propose(&env(), &onnx, false)?
            .draft_manifest(&onnx)
            .ok_or("no draft")?;
        assert!(draft.contains("no probe run (--no-probe)"), "{draft}");
        assert!(draft.contains("boxes_normalized = false"), "{draft}");
        Ok(())
    }

    #[test]
    fn an_unknown_layout_gets_no_draft_but_every_reason() -> Result<(), ModelError> {
        let onnx = testdata("tiny_unknown.onnx");
        let proposal = propose(&env(), &onnx, true)?;
        assert_eq!(proposal.draft_manifest(&onnx), None);
        let err = proposal.fits.expect_err("no adapter reads a feature map");
        assert_eq!(err.0.len(), AdapterKind::ALL.len());
        assert!(
            err.to_string()
                .contains("`features` [1, 3, 8, 8] is not [N, classes]"),
            "{err}"
        );
        Ok(())
    }
}
