//! The static-camera stream of the change-gate tests and benchmarks, made from the shared
//! images: one of them scaled to the frame size is the background (`small-vehicles1.jpeg` by
//! default), and the objects moving across it are crops of the vehicles YOLOX-Nano finds in
//! the shared images, so every object is a real one a detector can find. Sensor noise and a fresh JPEG
//! encoding per frame keep unchanged tiles close but never bit-identical.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use image::imageops::FilterType;
use tessera_models::{Model, ModelSession, Recognizer, SessionConfig};
use tessera_operators::decode::{DecodeLimits, decode_image};
use tessera_operators::geometry::PixelRect;
use tessera_operators::merge::MergeConfig;
use tessera_operators::scene::{Mover, Sprite, StaticCamera, crop};
use tessera_operators::tiling::TilingConfig;

use crate::manifest;

/// COCO classes the moving objects may have: the vehicles (bicycle, car, motorcycle, bus,
/// truck).
const OBJECT_CLASSES: [u32; 5] = [1, 2, 3, 5, 7];
/// Only clear detections become objects.
const MIN_SCORE: f32 = 0.6;
/// Smallest object side, in source pixels.
const MIN_SIDE: f32 = 24.0;
/// JPEG quality of every frame.
const JPEG_QUALITY: u8 = 90;

/// What the stream looks like.
#[derive(Debug, Clone)]
pub struct SceneSpec {
    /// The shared image used as background.
    pub background: String,
    pub width: u32,
    pub height: u32,
    /// Objects moving at once (each a different crop, best detections first).
    pub movers: usize,
    /// Sensor noise: +- this many levels per channel and pixel, fresh every frame.
    pub noise: u8,
    /// Seed of the noise.
    pub seed: u64,
}

impl Default for SceneSpec {
    /// A 1080p camera with three moving objects.
    fn default() -> Self {
        Self {
            background: "small-vehicles1.jpeg".into(),
            width: 1920,
            height: 1080,
            movers: 3,
            noise: 3,
            seed: 7,
        }
    }
}

/// The static camera of `spec`, from the images in `assets` (see the module comment). The
/// moving objects are the best-scored vehicles, in that order.
pub fn static_camera(assets: &Path, spec: SceneSpec) -> anyhow::Result<StaticCamera> {
    let images = assets.join("images");
    let read = |name: &str| -> anyhow::Result<image::RgbImage> {
        let bytes = std::fs::read(images.join(name)).with_context(|| format!("reading {name}"))?;
        Ok(decode_image(&bytes, &DecodeLimits::default())?)
    };
    let background = read(&spec.background)?;
    let background =
        image::imageops::resize(&background, spec.width, spec.height, FilterType::Triangle);

    let model = Arc::new(Model::load(&manifest("yolox-nano"), None, Some(assets))?);
    let env = crate::ort_env()?;
    let session = ModelSession::load(&env, model, &SessionConfig::default())?;
    let mut recognizer = Recognizer::new(session, &TilingConfig::default(), MergeConfig::default());
    let mut candidates = Vec::new();
    for name in ["dog.jpg", "small-vehicles1.jpeg"] {
        let source = read(name)?;
        for d in recognizer.recognize(&source)?.detections {
            let (w, h) = (d.bbox.x2 - d.bbox.x1, d.bbox.y2 - d.bbox.y1);
            let fits = w < spec.width as f32 / 2.0 && h < spec.height as f32 / 2.0;
            if OBJECT_CLASSES.contains(&d.class_id)
                && d.score >= MIN_SCORE
                && w.min(h) >= MIN_SIDE
                && fits
            {
                let rect = PixelRect::new(d.bbox.x1 as u32, d.bbox.y1 as u32, w as u32, h as u32);
                candidates.push((d.score, d.class_id, crop(&source, rect)));
            }
        }
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
    let objects = candidates.len();
    anyhow::ensure!(
        objects >= spec.movers,
        "the shared images hold {objects} clear vehicles, {} wanted",
        spec.movers
    );
    let sprites: Vec<Sprite> = candidates
        .into_iter()
        .take(spec.movers)
        .map(|(_, class_id, image)| Sprite { image, class_id })
        .collect();
    // Objects cross the scene on their own lanes, alternately left and right, at 6-18 px a
    // frame (a vehicle at walking to city speed at 10 frames/s, for a camera this wide).
    let lanes = sprites.len() as f32;
    let movers = sprites
        .iter()
        .enumerate()
        .map(|(i, sprite)| {
            let lane = (i as f32 + 0.5) / lanes;
            let y = lane * spec.height as f32 - sprite.image.height() as f32 / 2.0;
            let x = (i as f32 * 0.37).fract() * spec.width as f32;
            let speed = 6.0 + 6.0 * (i % 3) as f32;
            let direction = if i % 2 == 0 { 1.0 } else { -1.0 };
            Mover {
                sprite: i,
                start: (x, y.max(0.0)),
                velocity: (speed * direction, 0.0),
            }
        })
        .collect();
    StaticCamera::new(
        background,
        sprites,
        movers,
        spec.noise,
        JPEG_QUALITY,
        spec.seed,
    )
    .map_err(anyhow::Error::msg)
}
