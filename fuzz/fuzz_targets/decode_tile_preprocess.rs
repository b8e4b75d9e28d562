//! The per-frame CPU path on arbitrary bytes: decode (with limits) -> tile grid -> preprocess
//! every tile into the YOLOX-Nano input tensor. A crash is any panic, an undocumented decode
//! error kind, a tile outside the frame, a preprocessing error on a decoded frame, or a
//! non-finite tensor value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_operators::decode::{DecodeError, DecodeLimits, decode_image};
use tessera_operators::preprocess::{ChannelOrder, PreprocessSpec, Preprocessor, ResizeMode};
use tessera_operators::tiling::TilingConfig;

/// The decode error kinds documented in the README's dead-letter table.
const DECODE_KINDS: [&str; 6] = DecodeError::KINDS;

/// `models/manifests/yolox-nano/model.toml`'s input (this crate depends on operators only).
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

fuzz_target!(|data: &[u8]| {
    // Default limits but a 32 MiB allocation cap, so that one input cannot take seconds
    // (libFuzzer's -rss_limit_mb stays far above it).
    let limits = DecodeLimits {
        max_alloc_bytes: 32 * 1024 * 1024,
        ..DecodeLimits::default()
    };
    let image = match decode_image(data, &limits) {
        Ok(image) => image,
        Err(error) => {
            assert!(
                DECODE_KINDS.contains(&error.kind()),
                "undocumented kind {:?}: {error}",
                error.kind()
            );
            return;
        }
    };
    let (width, height) = image.dimensions();
    assert!(width > 0 && height > 0);
    assert!(width <= limits.max_width && height <= limits.max_height);

    let spec = yolox_spec();
    let tiles = TilingConfig::default()
        .grid(spec.width, spec.height)
        .tiles(width, height);
    assert!(!tiles.is_empty());
    let mut preprocessor = Preprocessor::new(spec);
    let mut tensor = vec![0.0f32; preprocessor.tensor_len()];
    for tile in &tiles {
        assert!(
            tile.rect.fits_in(width, height),
            "{tile:?} in {width}x{height}"
        );
        if let Err(error) = preprocessor.prepare_into(&image, tile.rect, &mut tensor) {
            panic!("{tile:?} of a decoded {width}x{height} frame: {error}");
        }
        assert!(tensor.iter().all(|v| v.is_finite()));
    }
});
