//! Criterion micro-benchmarks of the operators on synthetic 1080p data (no assets needed):
//! JPEG decode, tile + preprocess of a frame, YOLOX output decode, merge of 1,000 boxes.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use image::{ImageEncoder, RgbImage};
use tessera_operators::adapters::yolox;
use tessera_operators::decode::{DecodeLimits, decode_image};
use tessera_operators::detection::Detection;
use tessera_operators::geometry::BBox;
use tessera_operators::merge::{MergeConfig, merge};
use tessera_operators::preprocess::{ChannelOrder, PreprocessSpec, Preprocessor, ResizeMode};
use tessera_operators::tiling::TilingConfig;

/// A deterministic 1920x1080 test pattern with enough texture to make JPEG work realistic.
fn frame_1080p() -> RgbImage {
    RgbImage::from_fn(1920, 1080, |x, y| {
        let v = (x.wrapping_mul(31) ^ y.wrapping_mul(17)) as u8;
        image::Rgb([v, (x / 8) as u8, (y / 5) as u8])
    })
}

fn yolox_spec() -> PreprocessSpec {
    PreprocessSpec {
        width: 416,
        height: 416,
        resize: ResizeMode::Letterbox,
        pad_value: 114,
        channel_order: ChannelOrder::Bgr,
        scale: 1.0,
        mean: [0.0; 3],
        std: [1.0; 3],
    }
}

fn bench_decode(c: &mut Criterion) {
    let frame = frame_1080p();
    let mut jpeg = Vec::new();
    if let Err(e) = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85).write_image(
        frame.as_raw(),
        frame.width(),
        frame.height(),
        image::ExtendedColorType::Rgb8,
    ) {
        panic!("encoding the test frame failed: {e}");
    }
    let limits = DecodeLimits::default();
    c.bench_function("decode_jpeg_1080p", |b| {
        b.iter(|| decode_image(black_box(&jpeg), &limits).map(|img| img.width()))
    });
}

fn bench_tile_preprocess(c: &mut Criterion) {
    let frame = frame_1080p();
    let grid = TilingConfig::default().grid(416, 416);
    let mut preprocessor = Preprocessor::new(yolox_spec());
    let len = preprocessor.tensor_len();
    let tiles = grid.tiles(frame.width(), frame.height());
    let mut tensor = vec![0.0f32; len * tiles.len()];
    c.bench_function("tile_preprocess_1080p_416", |b| {
        b.iter(|| {
            for (slot, tile) in grid.tiles(frame.width(), frame.height()).iter().enumerate() {
                let out = &mut tensor[slot * len..(slot + 1) * len];
                let _ = black_box(preprocessor.prepare_into(&frame, tile.rect, out));
            }
        })
    });
}

fn bench_yolox_decode(c: &mut Criterion) {
    let rows = yolox::num_rows(416, 416);
    // Low scores everywhere except a sparse set of cells, like a real output.
    let output: Vec<f32> = (0..rows * 85)
        .map(|i| {
            if i % 85 == 4 && (i / 85) % 50 == 0 {
                0.9
            } else {
                0.01
            }
        })
        .collect();
    let mut out = Vec::new();
    c.bench_function("yolox_decode_416", |b| {
        b.iter(|| {
            out.clear();
            yolox::decode(black_box(&output), 80, 416, 416, 0.25, &mut out);
            out.len()
        })
    });
}

fn bench_merge(c: &mut Criterion) {
    // 1,000 boxes in clusters, as tiles with overlap produce them.
    let detections: Vec<Detection> = (0..1000u32)
        .map(|i| {
            let cluster = (i / 4) as f32;
            let x = (cluster * 37.0) % 1800.0;
            let y = (cluster * 53.0) % 1000.0;
            let jitter = (i % 4) as f32 * 2.0;
            Detection {
                class_id: i % 3,
                score: 0.3 + (i % 7) as f32 * 0.1,
                bbox: BBox::new(x + jitter, y + jitter, x + 60.0 + jitter, y + 40.0),
            }
        })
        .collect();
    for (name, config) in [
        (
            "merge_1000_nms",
            MergeConfig {
                strategy: tessera_operators::merge::MergeStrategy::Nms,
                ..MergeConfig::default()
            },
        ),
        (
            "merge_1000_greedy_nmm",
            MergeConfig {
                strategy: tessera_operators::merge::MergeStrategy::GreedyNmm,
                ..MergeConfig::default()
            },
        ),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| merge(black_box(&detections), &config).len())
        });
    }
}

criterion_group!(
    benches,
    bench_decode,
    bench_tile_preprocess,
    bench_yolox_decode,
    bench_merge
);
criterion_main!(benches);
