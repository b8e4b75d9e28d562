//! Mutated real JPEGs through the per-frame CPU path: decode (with limits) -> tile grid ->
//! preprocess every tile into the model tensor. Whatever the bytes, nothing panics and the
//! outcome is typed: an image whose every tile preprocesses into finite values, or a
//! `DecodeError` of one of the documented kinds (the DLQ `tessera-error-kind` values).

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::sample::Index;
use tessera_models::ModelManifest;
use tessera_operators::decode::{DecodeError, DecodeLimits, decode_image};
use tessera_operators::preprocess::{PreprocessSpec, Preprocessor};
use tessera_operators::tiling::TilingConfig;
use tessera_tests::hostile::{jpeg_header_markers, sample_jpeg, with_exif_orientation};
use tessera_tests::manifest;

/// The decode error kinds documented in the README's dead-letter table.
const DECODE_KINDS: [&str; 6] = DecodeError::KINDS;

/// Default limits but a 32 MiB allocation cap: a mutated header may claim up to 8192 x 8192,
/// and decoding and tiling such frames hundreds of times would make this test slow, not
/// stronger. (The default cap is covered by the decode unit tests.)
fn limits() -> DecodeLimits {
    DecodeLimits {
        max_alloc_bytes: 32 * 1024 * 1024,
        ..DecodeLimits::default()
    }
}

/// The real photos from `$TESSERA_ASSETS`, else in-memory JPEGs of similar shape.
fn sources() -> &'static [Vec<u8>] {
    static SOURCES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SOURCES.get_or_init(|| {
        let dir = std::env::var_os("TESSERA_ASSETS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| tessera_tests::workspace_root().join("../shared/assets"))
            .join("images");
        let real: Vec<Vec<u8>> = ["dog.jpg", "small-vehicles1.jpeg"]
            .iter()
            .filter_map(|name| std::fs::read(dir.join(name)).ok())
            .collect();
        if real.is_empty() {
            eprintln!(
                "real images not found in {}: mutating in-memory JPEGs instead",
                dir.display()
            );
            vec![
                sample_jpeg(768, 576),
                with_exif_orientation(&sample_jpeg(1068, 580), 6),
            ]
        } else {
            real
        }
    })
}

/// The shipped YOLOX-Nano preprocessing (416 x 416, letterbox, BGR).
fn yolox_spec() -> PreprocessSpec {
    static SPEC: OnceLock<PreprocessSpec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = manifest("yolox-nano");
        let text = std::fs::read_to_string(&path).expect("yolox-nano manifest is readable");
        let input = ModelManifest::from_toml_str(&text, Path::new(&path))
            .expect("yolox-nano manifest is valid")
            .input;
        PreprocessSpec {
            width: input.width,
            height: input.height,
            resize: input.resize,
            pad_value: input.pad_value,
            channel_order: input.channel_order,
            scale: input.scale,
            mean: input.mean,
            std: input.std,
        }
    })
    .clone()
}

/// One edit of the encoded bytes.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR one byte with a non-zero mask.
    FlipBits { at: Index, mask: u8 },
    /// Cut the payload short.
    Truncate { at: Index },
    /// Insert random bytes.
    Insert { at: Index, bytes: Vec<u8> },
    /// Delete a run of bytes.
    Remove { at: Index, len: usize },
    /// Copy a run of bytes to another place (repeated segments, markers, scan data).
    Duplicate { from: Index, len: usize, to: Index },
    /// Overwrite two bytes inside a header segment (before the first scan): segment lengths,
    /// precision, dimensions, component counts and ids, sampling factors, table contents.
    HeaderField {
        segment: Index,
        offset: usize,
        value: u16,
    },
    /// Overwrite the frame header's height and width.
    Dimensions { width: u16, height: u16 },
}

impl Mutation {
    fn apply(&self, bytes: &mut Vec<u8>) {
        let len = bytes.len();
        match self {
            Self::FlipBits { at, mask } if len > 0 => bytes[at.index(len)] ^= mask,
            Self::Truncate { at } => bytes.truncate(at.index(len + 1)),
            Self::Insert { at, bytes: new } => {
                let at = at.index(len + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            Self::Remove { at, len: run } if len > 0 => {
                let start = at.index(len);
                bytes.drain(start..(start + run).min(len));
            }
            Self::Duplicate { from, len: run, to } if len > 0 => {
                let start = from.index(len);
                let chunk = bytes[start..(start + run).min(len)].to_vec();
                let to = to.index(len + 1);
                bytes.splice(to..to, chunk);
            }
            Self::HeaderField {
                segment,
                offset,
                value,
            } => {
                let markers = jpeg_header_markers(bytes);
                if !markers.is_empty() {
                    let (pos, _) = markers[segment.index(markers.len())];
                    overwrite(bytes, pos + 2 + offset, *value);
                }
            }
            Self::Dimensions { width, height } => {
                let sof = jpeg_header_markers(bytes)
                    .into_iter()
                    .find(|&(_, m)| (0xC0..=0xCF).contains(&m) && ![0xC4, 0xC8, 0xCC].contains(&m));
                if let Some((pos, _)) = sof {
                    // FF Cx, length (2), precision (1), height (2), width (2).
                    overwrite(bytes, pos + 5, *height);
                    overwrite(bytes, pos + 7, *width);
                }
            }
            _ => {}
        }
    }
}

/// Writes `value` big-endian at `at`, where it fits.
fn overwrite(bytes: &mut [u8], at: usize, value: u16) {
    if let Some(slot) = bytes.get_mut(at..at + 2) {
        slot.copy_from_slice(&value.to_be_bytes());
    }
}

/// Header values that hit edge cases more often than uniform random ones.
fn field_value() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(0u16),
        Just(1),
        Just(2),
        Just(0x00FF),
        Just(0xFF00),
        Just(0xFFFF),
        Just(4096),
        Just(6000),
        Just(8193),
        any::<u16>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 1u8..=255).prop_map(|(at, mask)| Mutation::FlipBits { at, mask }),
        2 => any::<Index>().prop_map(|at| Mutation::Truncate { at }),
        2 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (any::<Index>(), 1usize..256).prop_map(|(at, len)| Mutation::Remove { at, len }),
        2 => (any::<Index>(), 1usize..4096, any::<Index>())
            .prop_map(|(from, len, to)| Mutation::Duplicate { from, len, to }),
        3 => (any::<Index>(), 0usize..24, field_value()).prop_map(|(segment, offset, value)| {
            Mutation::HeaderField {
                segment,
                offset,
                value,
            }
        }),
        1 => (field_value(), field_value())
            .prop_map(|(width, height)| Mutation::Dimensions { width, height }),
    ]
}

/// Decode -> tiles -> preprocess; `Ok(true)` when an image came out, `Ok(false)` for a typed
/// decode error, `Err` for a broken invariant.
fn run_frame_path(bytes: &[u8]) -> Result<bool, TestCaseError> {
    let limits = limits();
    let image = match decode_image(bytes, &limits) {
        Ok(image) => image,
        Err(error) => {
            prop_assert!(
                DECODE_KINDS.contains(&error.kind()),
                "undocumented kind {:?}: {error}",
                error.kind()
            );
            prop_assert!(!error.to_string().is_empty());
            return Ok(false);
        }
    };
    let (width, height) = image.dimensions();
    prop_assert!(width > 0 && height > 0);
    prop_assert!(width <= limits.max_width && height <= limits.max_height);

    let spec = yolox_spec();
    let grid = TilingConfig::default().grid(spec.width, spec.height);
    let tiles = grid.tiles(width, height);
    prop_assert!(!tiles.is_empty(), "{width}x{height} has no tiles");
    let mut preprocessor = Preprocessor::new(spec);
    let mut tensor = vec![0.0f32; preprocessor.tensor_len()];
    for tile in &tiles {
        prop_assert!(
            tile.rect.fits_in(width, height),
            "{tile:?} in {width}x{height}"
        );
        let prepared = preprocessor.prepare_into(&image, tile.rect, &mut tensor);
        prop_assert!(prepared.is_ok(), "{tile:?}: {prepared:?}");
        prop_assert!(tensor.iter().all(|v| v.is_finite()), "{tile:?}: non-finite");
    }
    Ok(true)
}

#[test]
fn unmutated_sources_go_through() {
    for (i, source) in sources().iter().enumerate() {
        assert_eq!(run_frame_path(source).ok(), Some(true), "source {i}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mutated_jpegs_give_a_typed_result(
        source in any::<Index>(),
        mutations in prop::collection::vec(mutation(), 1..=4),
    ) {
        let sources = sources();
        let mut bytes = sources[source.index(sources.len())].clone();
        for mutation in &mutations {
            mutation.apply(&mut bytes);
        }
        run_frame_path(&bytes)?;
    }
}
