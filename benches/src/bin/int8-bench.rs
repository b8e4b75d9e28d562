//! `int8-bench`: the int8 YOLOX-Nano (`make quantize`) against the float model it was made
//! from (BENCHMARKS.md, "compressed detector"):
//!
//! 1. speed: tiles/s of ONNX Runtime alone (best session layout on these cores) over the same
//!    real tiles, for each model;
//! 2. agreement: both models through full tiling on the same frames (the static-camera stream
//!    and the shared images); a detection agrees when the other model has one of the same
//!    class with IoU >= 0.5 (greedy, best scores first). Agreement = 2 x matched / (float's +
//!    int8's detections): misses and extra boxes both count against it.
//!
//! Build with `cargo build --release -p tessera-benches`; run after `make quantize`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use serde::Serialize;
use tessera_benches::ceiling::{self, Ceiling};
use tessera_models::{Model, ModelSession, Recognizer, SessionConfig};
use tessera_operators::decode::{DecodeLimits, decode_image};
use tessera_operators::detection::Detection;
use tessera_operators::merge::MergeConfig;
use tessera_operators::tiling::TilingConfig;

#[derive(Debug, Parser)]
#[command(about = "The int8 YOLOX-Nano against the float one: tiles/s and detection agreement")]
struct Args {
    /// Manifest of the float model.
    #[arg(long, default_value = "models/manifests/yolox-nano/model.toml")]
    float: PathBuf,
    /// Manifest of the int8 model.
    #[arg(long, default_value = "scripts/quantize/yolox-nano-int8/model.toml")]
    int8: PathBuf,
    /// Static-camera frames compared (over 4 cameras), besides the shared images.
    #[arg(long, default_value_t = 32)]
    frames: usize,
    /// Tiles run per layout for the speed measurement.
    #[arg(long, default_value_t = 400)]
    images: usize,
    /// Assets folder (models, images); default `$TESSERA_ASSETS`.
    #[arg(long, env = "TESSERA_ASSETS")]
    assets: PathBuf,
    /// Where the JSON report goes.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

#[derive(Debug, Serialize)]
struct Report {
    float_tiles_per_s: f64,
    int8_tiles_per_s: f64,
    speedup: f64,
    float_ceiling: Ceiling,
    int8_ceiling: Ceiling,
    frames: usize,
    float_detections: usize,
    int8_detections: usize,
    matched: usize,
    /// 2 x matched / (float + int8 detections).
    agreement: f64,
    /// Float detections the int8 model found.
    recall: f64,
    /// int8 detections the float model has too.
    precision: f64,
    /// Largest score difference of a matched pair.
    max_score_difference: f32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let env = tessera_models::init_runtime(None)?;
    let float = ceiling::load_model(&args.float, &args.assets)?;
    let int8 = ceiling::load_model(&args.int8, &args.assets)
        .map_err(|e| anyhow::anyhow!("{e}\nmake the int8 model first: make quantize"))?;

    let mut jpegs: Vec<Vec<u8>> = tessera_benches::static_camera::frames(
        &args.assets,
        &tessera_benches::static_camera::Scene::default(),
        4,
        args.frames.div_ceil(4),
    )?
    .into_iter()
    .map(|f| f.payload)
    .collect();
    for path in tessera::assets::images(&args.assets)? {
        jpegs.push(std::fs::read(path)?);
    }

    // 1. Speed, on the same tiles.
    let tiles = ceiling::real_tiles(&float, &jpegs[..4])?;
    eprintln!("float:");
    let float_ceiling = ceiling::measure(&env, &float, &tiles, args.images, 1, cores)?;
    eprintln!("int8:");
    let int8_ceiling = ceiling::measure(&env, &int8, &tiles, args.images, 1, cores)?;
    drop(tiles);

    // 2. Agreement, frame by frame.
    let recognizer = |model: &Arc<Model>| -> anyhow::Result<Recognizer> {
        let session = ModelSession::load(&env, model.clone(), &SessionConfig::default())?;
        Ok(Recognizer::new(
            session,
            &TilingConfig::default(),
            MergeConfig::default(),
        ))
    };
    let (mut with_float, mut with_int8) = (recognizer(&float)?, recognizer(&int8)?);
    let (mut float_total, mut int8_total, mut matched) = (0, 0, 0);
    let mut max_score_difference = 0.0f32;
    for jpeg in &jpegs {
        let image = decode_image(jpeg, &DecodeLimits::default())?;
        let a = with_float.recognize(&image)?.detections;
        let b = with_int8.recognize(&image)?.detections;
        float_total += a.len();
        int8_total += b.len();
        for (x, y) in matches(&a, &b) {
            matched += 1;
            max_score_difference = max_score_difference.max((x.score - y.score).abs());
        }
    }
    let report = Report {
        float_tiles_per_s: float_ceiling.best.images_per_s,
        int8_tiles_per_s: int8_ceiling.best.images_per_s,
        speedup: int8_ceiling.best.images_per_s / float_ceiling.best.images_per_s,
        float_ceiling,
        int8_ceiling,
        frames: jpegs.len(),
        float_detections: float_total,
        int8_detections: int8_total,
        matched,
        agreement: 2.0 * matched as f64 / (float_total + int8_total).max(1) as f64,
        recall: matched as f64 / float_total.max(1) as f64,
        precision: matched as f64 / int8_total.max(1) as f64,
        max_score_difference,
    };
    let path = args.out.join("report-int8.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    eprintln!("Report written to {}", path.display());
    println!("| model | tiles/s (ONNX Runtime alone) | detections | agreement with float |");
    println!("|---|---|---|---|");
    println!(
        "| float | {:.1} | {} | 1 |",
        report.float_tiles_per_s, report.float_detections
    );
    println!(
        "| int8 | {:.1} ({:.2}x) | {} | {:.3} (recall {:.3}, precision {:.3}; {} frames) |",
        report.int8_tiles_per_s,
        report.speedup,
        report.int8_detections,
        report.agreement,
        report.recall,
        report.precision,
        report.frames
    );
    Ok(())
}

/// Greedy one-to-one matches of `a` and `b` (best scores of `a` first): same class, IoU >= 0.5.
fn matches<'a>(a: &'a [Detection], b: &'a [Detection]) -> Vec<(&'a Detection, &'a Detection)> {
    let mut order: Vec<&Detection> = a.iter().collect();
    order.sort_by(|x, y| y.score.total_cmp(&x.score));
    let mut taken = vec![false; b.len()];
    let mut pairs = Vec::new();
    for x in order {
        let best = b
            .iter()
            .enumerate()
            .filter(|(j, y)| !taken[*j] && y.class_id == x.class_id)
            .map(|(j, y)| (j, x.bbox.iou(&y.bbox)))
            .filter(|(_, iou)| *iou >= 0.5)
            .max_by(|p, q| p.1.total_cmp(&q.1));
        if let Some((j, _)) = best {
            taken[j] = true;
            pairs.push((x, &b[j]));
        }
    }
    pairs
}
