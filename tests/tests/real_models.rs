//! Correctness of tessera's model path against real third-party models and independent goldens.
//!
//! - YOLOX-Nano on `dog.jpg` (full frame, no tiling) matches the reference detections computed
//!   with onnxruntime + OpenCV by `scripts/reference/yolox_reference.py`
//!   (`tests/golden/yolox_nano_dog_full_frame.json`): boxes and scores, both ways
//!   (`tessera_tests::golden`). `golden_pipeline.rs` checks the same through the actor pipeline.
//! - MobileNetV2 on `dog.jpg` ranks malamute first and gives the top five classes of
//!   `scripts/reference/mobilenet_reference.py` (`tests/golden/mobilenetv2_dog.json`).
//! - The pooled embedding tessera derives from MobileNetV2's last feature map matches
//!   onnxruntime's output for the same graph edit made with the `onnx` package
//!   (`scripts/reference/embedding_reference.py`), and the logits stay unchanged.
//! - Tiling pays: on the SAHI demo image, 320 px tiles plus the full frame find at least four
//!   times as many vehicles as the full frame alone.
//!
//! The models and images are test assets outside the repository: `$TESSERA_ASSETS`, default
//! `../shared/assets` beside the workspace. Without them these tests print why and pass, except
//! where `TESSERA_REQUIRE_ASSETS` is set (CI sets it): there they fail. The ONNX Runtime
//! library is a build prerequisite, not an asset: `$ORT_DYLIB_PATH`, else
//! `.tessera/onnxruntime` from `make setup`; without it the tests fail with the fix.

use std::path::Path;
use std::sync::Arc;

use tessera_models::{FrameRecognition, Model, ModelSession, Recognizer, SessionConfig};
use tessera_operators::{
    DecodeLimits, MatchMetric, MergeConfig, MergeStrategy, TilingConfig, decode_image,
};

use tessera_tests::golden::{self, ClassificationGolden, DetectionGolden, Found};
use tessera_tests::{assets_dir, workspace_root};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// COCO class ids (YOLOX order).
const BICYCLE: u32 = 1;
const CAR: u32 = 2;
const MOTORCYCLE: u32 = 3;
const BUS: u32 = 5;
const TRUCK: u32 = 7;
const DOG: u32 = 16;
/// ImageNet class 249.
const MALAMUTE: u32 = 249;

fn env() -> Result<Arc<tessera_models::Environment>, tessera_models::ModelError> {
    tessera_tests::ort_env()
}

/// Errors are turned into their messages, so a failing test prints the fix (`make setup`, ...)
/// rather than a debug dump.
fn recognizer(
    assets: &Path,
    manifest: &str,
    tiling: &TilingConfig,
    merge: MergeConfig,
) -> Result<Recognizer, String> {
    let path = workspace_root().join("models/manifests").join(manifest);
    let model = Model::load(&path, None, Some(assets)).map_err(|e| e.detail())?;
    let env = env().map_err(|e| e.detail())?;
    let session = ModelSession::load(&env, Arc::new(model), &SessionConfig::default())
        .map_err(|e| e.detail())?;
    Ok(Recognizer::new(session, tiling, merge))
}

fn image(assets: &Path, name: &str) -> Result<image::RgbImage, Box<dyn std::error::Error>> {
    let bytes = std::fs::read(assets.join("images").join(name))?;
    Ok(decode_image(&bytes, &DecodeLimits::default())?)
}

/// tessera's default merge: class-aware NMS at IoU 0.5.
fn nms() -> MergeConfig {
    MergeConfig {
        strategy: MergeStrategy::Nms,
        metric: MatchMetric::Iou,
        threshold: 0.5,
        class_agnostic: false,
    }
}

fn full_frame_only() -> TilingConfig {
    TilingConfig {
        enabled: false,
        full_frame: true,
        ..TilingConfig::default()
    }
}

fn print_detections(title: &str, r: &FrameRecognition, model: &Model, min_score: f32) {
    println!("{title}: {} tiles", r.tiles);
    for d in r.detections.iter().filter(|d| d.score >= min_score) {
        let b = d.bbox;
        println!(
            "  {:>12} ({:2}) {:.4} [{:.2}, {:.2}, {:.2}, {:.2}]",
            model.label(d.class_id),
            d.class_id,
            d.score,
            b.x1,
            b.y1,
            b.x2,
            b.y2
        );
    }
}

#[test]
fn yolox_nano_dog_full_frame_matches_reference() -> TestResult {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let mut r = recognizer(&assets, "yolox-nano/model.toml", &full_frame_only(), nms())?;
    let frame = image(&assets, "dog.jpg")?;
    let result = r.recognize(&frame)?;
    let model = Arc::clone(r.session().model());
    print_detections("tessera, dog.jpg, full frame", &result, &model, 0.25);
    assert_eq!(result.tiles, 1, "tiling disabled: the full frame only");

    let best = |classes: &[u32]| {
        result
            .detections
            .iter()
            .filter(|d| classes.contains(&d.class_id))
            .map(|d| d.score)
            .fold(0.0f32, f32::max)
    };
    assert!(best(&[DOG]) >= 0.5, "dog not found with score >= 0.5");
    assert!(
        best(&[BICYCLE]) >= 0.5,
        "bicycle not found with score >= 0.5"
    );
    assert!(
        best(&[CAR, TRUCK]) >= 0.5,
        "car or truck not found with score >= 0.5"
    );

    // Both ways, boxes and scores: every confident golden detection is found, and nothing
    // confident is found that the golden does not have.
    let golden: DetectionGolden = golden::load("yolox_nano_dog_full_frame.json")?;
    let found: Vec<Found> = result.detections.iter().map(Found::from).collect();
    let problems = golden::detection_mismatches(&golden, &found);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

#[test]
fn mobilenetv2_dog_is_a_malamute() -> TestResult {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let mut r = recognizer(&assets, "mobilenetv2/model.toml", &full_frame_only(), nms())?;
    let frame = image(&assets, "dog.jpg")?;
    let result = r.recognize(&frame)?;
    let model = Arc::clone(r.session().model());
    println!("tessera, mobilenetv2, dog.jpg:");
    for c in &result.classifications {
        println!(
            "  {:4} {:>20} {:.4}",
            c.class_id,
            model.label(c.class_id),
            c.score
        );
    }
    let top1 = result.classifications.first().ok_or("no classification")?;
    assert_eq!(
        top1.class_id,
        MALAMUTE,
        "top-1 is {}",
        model.label(top1.class_id)
    );
    assert_eq!(model.label(top1.class_id), "malamute");
    // The reference's top five classes (see `tessera_tests::golden` for why as a set).
    let golden: ClassificationGolden = golden::load("mobilenetv2_dog.json")?;
    let found: Vec<u32> = result.classifications.iter().map(|c| c.class_id).collect();
    let problems = golden::top5_mismatches(&golden, &found);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// The reference of the derived embedding (`scripts/reference/embedding_reference.py`).
#[derive(serde::Deserialize)]
struct EmbeddingGolden {
    model_sha256: String,
    embedding: Vec<Vec<f32>>,
    logits_top5: Vec<Vec<u32>>,
}

/// The reference script's input: item `b`, flat index `i`, computed in f32 like numpy does.
fn embedding_input(batch: usize, len: usize) -> Vec<f32> {
    (0..batch)
        .flat_map(|b| (0..len).map(move |i| ((i * 7919 + b * 104_729) % 1000) as f32 / 500.0 - 1.0))
        .collect()
}

#[test]
fn mobilenetv2_derived_embedding_matches_onnxruntime() -> TestResult {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let golden: EmbeddingGolden = golden::load("mobilenetv2_embedding.json")?;
    let path = workspace_root().join("models/manifests/mobilenetv2/model.toml");
    let model = Model::load(&path, None, Some(&assets)).map_err(|e| e.detail())?;
    assert_eq!(
        model.backbone_hash,
        format!("sha256:{}", golden.model_sha256)
    );
    let env = env().map_err(|e| e.detail())?;
    let mut derived = ModelSession::load(&env, Arc::new(model.clone()), &SessionConfig::default())
        .map_err(|e| e.detail())?;
    let input = embedding_input(2, derived.tensor_len());
    let outputs = derived.run(&input, 2)?;

    // The pooled feature map, as onnxruntime computes it for the same edit made with `onnx`.
    for (item, (found, want)) in outputs.iter().zip(&golden.embedding).enumerate() {
        assert_eq!(found.embedding.len(), 1280, "item {item}");
        let worst = found
            .embedding
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-4, "item {item}: off by up to {worst}");
    }
    // Different inputs, different embeddings: the test would notice a constant output.
    assert_ne!(outputs[0].embedding, outputs[1].embedding);

    // The logits are unchanged: the same classes and scores as the unedited file.
    let mut plain = model.clone();
    plain.manifest.output.embedding = None;
    plain.manifest.output.embedding_from = None;
    plain.graph = None;
    let mut plain = ModelSession::load(&env, Arc::new(plain), &SessionConfig::default())
        .map_err(|e| e.detail())?;
    let unedited = plain.run(&input, 2)?;
    for (item, (a, b)) in outputs.iter().zip(&unedited).enumerate() {
        assert_eq!(a.classifications, b.classifications, "item {item}");
        assert!(b.embedding.is_empty());
        let top5: Vec<u32> = a.classifications.iter().map(|c| c.class_id).collect();
        assert_eq!(top5, golden.logits_top5[item], "item {item}");
    }
    Ok(())
}

#[test]
fn a_missing_embedding_tensor_is_a_clear_load_error() -> TestResult {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let path = workspace_root().join("models/manifests/mobilenetv2/model.toml");
    let mut model = Model::load(&path, None, Some(&assets)).map_err(|e| e.detail())?;
    model.manifest.output.embedding_from = Some("no-such-tensor".into());
    let bytes = std::fs::read(&model.onnx_path)?;
    let mut graph = bytes.clone();
    graph.extend(tessera_models::embedding::pooled_output_fragment(
        "no-such-tensor",
        "embedding",
    ));
    model.graph = Some(graph.into());
    let env = env().map_err(|e| e.detail())?;
    let error = ModelSession::load(&env, Arc::new(model), &SessionConfig::default())
        .err()
        .ok_or("a graph that pools a missing tensor loaded")?;
    let detail = error.detail();
    assert!(detail.contains("no-such-tensor"), "{detail}");
    Ok(())
}

#[test]
fn tiling_finds_four_times_more_vehicles() -> TestResult {
    let Some(assets) = assets_dir() else {
        return Ok(());
    };
    let frame = image(&assets, "small-vehicles1.jpeg")?;
    let is_vehicle = |r: &FrameRecognition| -> usize {
        r.detections
            .iter()
            .filter(|d| [CAR, TRUCK, BUS, MOTORCYCLE].contains(&d.class_id) && d.score >= 0.3)
            .count()
    };

    let mut full = recognizer(&assets, "yolox-nano/model.toml", &full_frame_only(), nms())?;
    let full_result = full.recognize(&frame)?;

    let tiling = TilingConfig {
        enabled: true,
        tile_width: Some(320),
        tile_height: Some(320),
        overlap_ratio: 0.2,
        full_frame: true,
    };
    assert!(
        is_vehicle(&full_result) > 0,
        "the full frame alone should find a few vehicles"
    );
    // Both merge strategies: NMS at IoU 0.5, and the shipped default (SAHI's greedy NMM, IoS 0.5).
    for (name, merge) in [
        ("NMS IoU 0.5", nms()),
        ("default greedy NMM IoS 0.5", MergeConfig::default()),
    ] {
        let mut tiled = recognizer(&assets, "yolox-nano/model.toml", &tiling, merge)?;
        let tiled_result = tiled.recognize(&frame)?;
        let (n_full, n_tiled) = (is_vehicle(&full_result), is_vehicle(&tiled_result));
        println!(
            "small-vehicles1.jpeg, vehicles (car/truck/bus/motorcycle, score >= 0.3, {name}): full frame {n_full} (1 tile), tiled {n_tiled} ({} tiles of 320 px, overlap 0.2, plus the full frame)",
            tiled_result.tiles
        );
        assert!(
            n_tiled >= 4 * n_full,
            "{name}: tiling found {n_tiled} vehicles, less than 4 x {n_full}"
        );
    }
    Ok(())
}
