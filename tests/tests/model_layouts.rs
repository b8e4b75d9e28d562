//! Step 11's real-model check of the output adapters: a real YOLOX-Nano, exported in three more
//! layouts by `scripts/reference/layout_models.py` (the endings other exporters write, appended
//! with the `onnx` package: decoding in the graph as YOLOv5 and YOLOX's `decode_in_inference`,
//! separate normalised boxes and scores as SSD, ONNX NonMaxSuppression with padded outputs and
//! an integer count), each run by onnxruntime's own Python package and decoded there with
//! numpy. tessera's `yolov5`, `boxes_scores` and `nms_outputs` adapters must find the same
//! detections from the same input tensor, `models inspect` must propose each adapter for its
//! model, and the decoded layout must agree with the `yolox` adapter on the original model.
//!
//! Needs the assets (`$TESSERA_ASSETS`) and the test suite's Python tools (`make pytools`: onnx,
//! onnxruntime, numpy); without them it prints why and passes, except where
//! `TESSERA_REQUIRE_ASSETS` is set (CI), where it fails. The derived models are written to a
//! temporary folder, never to the repository.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use tessera_models::{Model, ModelSession, OutputSpec, SessionConfig, Task};
use tessera_operators::{
    AdapterKind, DecodeLimits, Detection, PixelRect, Preprocessor, decode_image,
};
use tessera_tests::{assets_dir, manifest, pytools, workspace_root};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// `[class, score, x1, y1, x2, y2]` per detection, in input pixels.
type Reference = BTreeMap<String, Vec<(u32, f32, f32, f32, f32, f32)>>;

fn env() -> Result<Arc<tessera_models::Environment>, tessera_models::ModelError> {
    tessera_tests::ort_env()
}

/// The `[output]` table of each derived layout.
fn output(adapter: AdapterKind) -> OutputSpec {
    let mut spec = OutputSpec {
        adapter,
        name: None,
        boxes: None,
        scores: None,
        classes: None,
        count: None,
        box_format: None,
        boxes_normalized: None,
        activation: None,
        background_class: None,
        nms_applied: None,
        aggregate: None,
        embedding: None,
        embedding_from: None,
        softmax: false,
    };
    match adapter {
        AdapterKind::Yolov5 => spec.name = Some("decoded".into()),
        AdapterKind::BoxesScores => {
            spec.boxes = Some("boxes".into());
            spec.scores = Some("scores".into());
            spec.boxes_normalized = Some(true);
        }
        _ => {
            spec.boxes = Some("det_boxes".into());
            spec.scores = Some("det_scores".into());
            spec.classes = Some("det_classes".into());
            spec.count = Some("num_dets".into());
        }
    }
    spec
}

/// Detections of `model` on `tensor` (one item), per-tile NMS off (raw adapter output).
fn run(
    env: &tessera_models::Environment,
    model: Model,
    tensor: &[f32],
) -> Result<Vec<Detection>, tessera_models::ModelError> {
    let mut session = ModelSession::load(env, Arc::new(model), &SessionConfig::default())?;
    Ok(session.run(tensor, 1)?.remove(0).detections)
}

fn assert_same(
    layout: &str,
    got: &[Detection],
    want: &[(u32, f32, f32, f32, f32, f32)],
    box_tol: f32,
) {
    assert!(
        !want.is_empty(),
        "{layout}: the reference found nothing on dog.jpg"
    );
    assert_eq!(got.len(), want.len(), "{layout}: {got:?}\nvs {want:?}");
    for (i, (d, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(d.class_id, w.0, "{layout} #{i}");
        assert!(
            (d.score - w.1).abs() < 1e-5,
            "{layout} #{i}: score {} vs {}",
            d.score,
            w.1
        );
        let b = d.bbox;
        for (g, e) in [(b.x1, w.2), (b.y1, w.3), (b.x2, w.4), (b.y2, w.5)] {
            assert!((g - e).abs() < box_tol, "{layout} #{i}: {b:?} vs {w:?}");
        }
    }
}

#[test]
fn real_yolox_in_three_more_layouts_matches_onnxruntime() -> TestResult {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let Some(site) = pytools("onnxruntime/__init__.py") else {
        return Ok(());
    };
    let env = env()?;
    let yolox = Model::load(&manifest("yolox-nano"), None, Some(&assets))?;
    let image = decode_image(
        &std::fs::read(assets.join("images/dog.jpg"))?,
        &DecodeLimits::default(),
    )?;
    let mut preprocessor = Preprocessor::new(yolox.preprocess_spec());
    let mut tensor = vec![0.0f32; preprocessor.tensor_len()];
    preprocessor.prepare_into(
        &image,
        PixelRect::new(0, 0, image.width(), image.height()),
        &mut tensor,
    )?;

    let dir = tempfile::tempdir()?;
    let bytes: Vec<u8> = tensor.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.path().join("input.f32"), bytes)?;
    let (w, h) = (yolox.manifest.input.width, yolox.manifest.input.height);
    let script = workspace_root().join("scripts/reference/layout_models.py");
    let made = Command::new("python3")
        .arg(&script)
        .arg("--model")
        .arg(&yolox.onnx_path)
        .arg("--input")
        .arg(dir.path().join("input.f32"))
        .args(["--shape", &format!("1,3,{h},{w}")])
        .arg("--out")
        .arg(dir.path())
        .env("PYTHONPATH", &site)
        .output()?;
    assert!(
        made.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&made.stderr)
    );
    let reference: Reference =
        serde_json::from_slice(&std::fs::read(dir.path().join("reference.json"))?)?;

    // The labels beside the derived manifests.
    std::fs::write(dir.path().join("coco.txt"), yolox.labels.join("\n"))?;
    let mut raw = yolox.clone();
    raw.manifest.thresholds.nms_iou = None;
    let from_raw = run(&env, raw, &tensor)?;

    for adapter in [
        AdapterKind::Yolov5,
        AdapterKind::BoxesScores,
        AdapterKind::NmsOutputs,
    ] {
        let layout = adapter.as_str();
        let onnx = dir.path().join(format!("{layout}.onnx"));
        let mut m = yolox.manifest.clone();
        assert_eq!(m.task, Task::Detect);
        m.name = format!("yolox-nano-{layout}");
        m.file = format!("{layout}.onnx");
        m.output = output(adapter);
        m.thresholds.nms_iou = None;
        m.labels.file = "coco.txt".into();
        let path = dir.path().join(format!("{layout}.toml"));
        std::fs::write(&path, toml::to_string(&m)?)?;
        let model = Model::load(&path, None, None)?;
        let found = run(&env, model, &tensor)?;
        assert_same(layout, &found, &reference[layout], 1e-2);

        let proposal = tessera_models::propose(&env, &onnx, true)?;
        let fits = proposal.fits.map_err(|e| e.to_string())?;
        assert_eq!(fits[0].adapter, adapter, "{layout}: {fits:?}");
        if adapter == AdapterKind::BoxesScores {
            assert!(fits[0].encoding.normalized, "{layout}: {fits:?}");
        }
        if adapter == AdapterKind::Yolov5 {
            // The same detections as YOLOX's own adapter decoding the raw rows.
            let expected: Vec<_> = from_raw
                .iter()
                .map(|d| {
                    (
                        d.class_id, d.score, d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2,
                    )
                })
                .collect();
            assert_same("yolov5 vs yolox", &found, &expected, 1e-2);
        }
    }
    Ok(())
}
