//! Labelled images for the learning tests, made by the tests themselves from the shared
//! images (nothing copied into the repository): augmented crops of distinct objects and
//! scenes, encoded as JPEG frames, and their embeddings from the backbone.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use image::{ImageFormat, RgbImage, imageops};
use tessera_models::{Embedder, Model, ModelSession, SessionConfig};
use tessera_operators::PixelRect;

use crate::{manifest, workspace_root};

/// A class of test images: a region of a shared image, cropped and varied.
#[derive(Debug, Clone, Copy)]
pub struct Scene {
    pub label: &'static str,
    /// File under `images/` of the assets.
    pub image: &'static str,
    /// The region the crops are taken from (pixels).
    pub region: PixelRect,
}

/// The dog, the car and the bicycle of `dog.jpg` (boxes of the YOLOX golden), and the aerial
/// parking lot of `small-vehicles1.jpeg`: four classes MobileNetV2's embedding tells apart.
pub const DOG: Scene = Scene {
    label: "dog",
    image: "dog.jpg",
    region: PixelRect {
        x: 132,
        y: 206,
        width: 194,
        height: 337,
    },
};
pub const CAR: Scene = Scene {
    label: "car",
    image: "dog.jpg",
    region: PixelRect {
        x: 466,
        y: 78,
        width: 226,
        height: 93,
    },
};
pub const BICYCLE: Scene = Scene {
    label: "bicycle",
    image: "dog.jpg",
    region: PixelRect {
        x: 330,
        y: 140,
        width: 242,
        height: 283,
    },
};
pub const PARKING: Scene = Scene {
    label: "parking",
    image: "small-vehicles1.jpeg",
    region: PixelRect {
        x: 0,
        y: 0,
        width: 1068,
        height: 580,
    },
};

/// `count` variations of `scene`: a random crop of 60-100% of the region's sides, a random
/// horizontal flip and a brightness shift of up to +-25, from a seeded generator
/// (deterministic).
pub fn augmented(
    assets: &Path,
    scene: Scene,
    count: usize,
    seed: u64,
) -> anyhow::Result<Vec<RgbImage>> {
    let source = image::open(assets.join("images").join(scene.image))?.to_rgb8();
    let mut rng = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let r = scene.region;
    let mut images = Vec::with_capacity(count);
    for _ in 0..count {
        let width = ((0.6 + 0.4 * next()) * f64::from(r.width)).max(16.0) as u32;
        let height = ((0.6 + 0.4 * next()) * f64::from(r.height)).max(16.0) as u32;
        let x = r.x + (next() * f64::from(r.width - width.min(r.width))) as u32;
        let y = r.y + (next() * f64::from(r.height - height.min(r.height))) as u32;
        let mut crop = imageops::crop_imm(&source, x, y, width, height).to_image();
        if next() < 0.5 {
            imageops::flip_horizontal_in_place(&mut crop);
        }
        let shift = ((next() - 0.5) * 50.0) as i32;
        imageops::colorops::brighten_in_place(&mut crop, shift);
        images.push(crop);
    }
    Ok(images)
}

/// The image as a JPEG frame payload.
pub fn jpeg(image: &RgbImage) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, ImageFormat::Jpeg)?;
    Ok(bytes.into_inner())
}

/// The shipped MobileNetV2 (its derived 1280-d embedding) as an embedder.
pub fn mobilenet_embedder(assets: &Path) -> anyhow::Result<Embedder> {
    let model = Model::load(&manifest("mobilenetv2"), None, Some(assets))?;
    let fallback = workspace_root().join(".tessera/onnxruntime/lib/libonnxruntime.so.1.31.1");
    let dylib = match std::env::var_os(tessera_models::ORT_DYLIB_PATH_ENV) {
        Some(v) if !v.is_empty() => None,
        _ => Some(fallback.as_path()),
    };
    let env = tessera_models::init_runtime(dylib)?;
    let session = ModelSession::load(&env, Arc::new(model), &SessionConfig::default())?;
    Ok(Embedder::new(session)?)
}
