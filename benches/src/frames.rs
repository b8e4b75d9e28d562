//! The benchmark's input: a fixed set of 1080p JPEG frames made from the real asset images
//! (each scaled to 1920x1080 and encoded at quality 90, as a camera would send them).

use std::path::Path;

use anyhow::Context;
use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use tessera::embedded::CameraFrame;

/// Frame size of every benchmark workload.
pub const WIDTH: u32 = 1920;
pub const HEIGHT: u32 = 1080;

/// One 1080p JPEG per asset image, in file-name order.
pub fn jpegs_1080p(assets: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let images = tessera::assets::images(assets)?;
    anyhow::ensure!(!images.is_empty(), "no images in {}", assets.display());
    images
        .iter()
        .map(|path| {
            let image = image::open(path)
                .with_context(|| format!("reading {}", path.display()))?
                .resize_exact(WIDTH, HEIGHT, FilterType::Triangle)
                .to_rgb8();
            let mut jpeg = Vec::new();
            JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&image)?;
            Ok(jpeg)
        })
        .collect()
}

/// `count` frames cycling through `jpegs`, spread over `cameras` cameras (record keys).
/// `capture_ms` is filled in by whoever publishes them.
pub fn camera_frames(jpegs: &[Vec<u8>], count: usize, cameras: usize) -> Vec<CameraFrame> {
    (0..count)
        .map(|i| CameraFrame {
            camera: format!("cam-{}", i % cameras.max(1)).into_bytes(),
            frame_id: format!("frame-{i}"),
            payload: jpegs[i % jpegs.len()].clone(),
            content_type: Some("image/jpeg".into()),
            capture_ms: 0,
        })
        .collect()
}
