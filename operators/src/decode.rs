//! Image decoding with hard limits, for untrusted frames.
//!
//! The format is taken from the payload's magic bytes (never from a header or file name); only
//! JPEG, PNG, WebP and BMP are accepted. The header's dimensions are checked before any pixel is
//! decoded, the decoder runs under [`image::Limits`], the EXIF orientation is applied, and every
//! colour type (gray, gray + alpha, RGBA, 16-bit, CMYK JPEG) comes out as 8-bit RGB.

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use image::metadata::Orientation;
use image::{
    ColorType, DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, RgbImage,
};
use serde::{Deserialize, Serialize};

/// Limits applied to every payload before and while it is decoded (`[decode]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeLimits {
    /// Largest encoded payload accepted, in bytes; larger payloads are rejected unread.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Largest image width accepted, in pixels (checked from the header, before decoding).
    #[serde(default = "default_max_width")]
    pub max_width: u32,
    /// Largest image height accepted, in pixels (checked from the header, before decoding).
    #[serde(default = "default_max_height")]
    pub max_height: u32,
    /// Most memory the decoder may allocate for one image, in bytes, including the decoded
    /// pixels and the RGB copy; guards against decompression bombs.
    #[serde(default = "default_max_alloc_bytes")]
    pub max_alloc_bytes: u64,
}

fn default_max_bytes() -> usize {
    32 * 1024 * 1024
}

fn default_max_width() -> u32 {
    8192
}

fn default_max_height() -> u32 {
    8192
}

fn default_max_alloc_bytes() -> u64 {
    512 * 1024 * 1024
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_bytes: default_max_bytes(),
            max_width: default_max_width(),
            max_height: default_max_height(),
            max_alloc_bytes: default_max_alloc_bytes(),
        }
    }
}

/// An invalid [`DecodeLimits`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("decode.{field} must be greater than zero")]
pub struct DecodeLimitsError {
    /// The offending field.
    pub field: &'static str,
}

impl DecodeLimitsError {
    /// Stable snake_case name, for metrics and error headers.
    pub fn kind(&self) -> &'static str {
        "invalid_decode_limits"
    }
}

impl DecodeLimits {
    /// Checks that every limit is non-zero.
    pub fn validate(&self) -> Result<(), DecodeLimitsError> {
        let zero = [
            ("max_bytes", self.max_bytes == 0),
            ("max_width", self.max_width == 0),
            ("max_height", self.max_height == 0),
            ("max_alloc_bytes", self.max_alloc_bytes == 0),
        ];
        match zero.iter().find(|(_, is_zero)| *is_zero) {
            Some((field, _)) => Err(DecodeLimitsError { field }),
            None => Ok(()),
        }
    }
}

/// Why a payload could not be decoded. All variants are the input's fault (not retryable).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The payload has no bytes.
    #[error("empty payload")]
    EmptyPayload,
    /// The payload is larger than `max_bytes`.
    #[error("payload of {len} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// Payload size in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// Not JPEG, PNG, WebP or BMP (the detected format or "unknown").
    #[error("unsupported image format: {0}")]
    UnsupportedFormat(String),
    /// The header announces an image larger than the limits.
    #[error("image of {width}x{height} exceeds the limit of {max_width}x{max_height}")]
    DimensionsTooLarge {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// The configured width limit.
        max_width: u32,
        /// The configured height limit.
        max_height: u32,
    },
    /// Decoding would allocate more than `max_alloc_bytes`.
    #[error("image decoding limit exceeded: {0}")]
    LimitExceeded(String),
    /// Truncated or malformed data.
    #[error("corrupt image: {0}")]
    Corrupt(String),
}

impl DecodeError {
    /// Every value [`DecodeError::kind`] returns.
    pub const KINDS: [&'static str; 6] = [
        "empty_payload",
        "payload_too_large",
        "unsupported_format",
        "dimensions_too_large",
        "allocation_limit",
        "corrupt_image",
    ];

    /// Stable snake_case name: the DLQ header `tessera-error-kind` and a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::EmptyPayload => "empty_payload",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedFormat(_) => "unsupported_format",
            Self::DimensionsTooLarge { .. } => "dimensions_too_large",
            Self::LimitExceeded(_) => "allocation_limit",
            Self::Corrupt(_) => "corrupt_image",
        }
    }
}

/// The format of a payload from its magic bytes: `Ok` for the accepted formats, otherwise the
/// name of what it looks like.
pub fn sniff_format(bytes: &[u8]) -> Result<ImageFormat, DecodeError> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(ImageFormat::Jpeg);
    }
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(ImageFormat::Png);
    }
    if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
        return Ok(ImageFormat::WebP);
    }
    if bytes.starts_with(b"BM") {
        return Ok(ImageFormat::Bmp);
    }
    let name = match image::guess_format(bytes) {
        Ok(format) => format!("{format:?}").to_ascii_lowercase(),
        Err(_) => "unknown".to_owned(),
    };
    Err(DecodeError::UnsupportedFormat(name))
}

/// Decodes an encoded image into 8-bit RGB under `limits`, with the EXIF orientation applied.
/// Never panics: a panic inside a third-party decoder is reported as [`DecodeError::Corrupt`].
pub fn decode_image(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, DecodeError> {
    decode_image_reusing(bytes, limits, Vec::new())
}

/// [`decode_image`] into `buffer`'s memory where the decoder's output is already 8-bit RGB in
/// its stored orientation (the common camera JPEG): a caller decoding frame after frame hands
/// back the previous frame's pixels (`RgbImage::into_raw`) and allocates nothing. Other images
/// are converted as [`decode_image`] does.
pub fn decode_image_reusing(
    bytes: &[u8],
    limits: &DecodeLimits,
    buffer: Vec<u8>,
) -> Result<RgbImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::EmptyPayload);
    }
    if bytes.len() > limits.max_bytes {
        return Err(DecodeError::PayloadTooLarge {
            len: bytes.len(),
            max: limits.max_bytes,
        });
    }
    let format = sniff_format(bytes)?;
    if format == ImageFormat::Jpeg {
        check_jpeg_complete(bytes)?;
    }
    match catch_unwind(AssertUnwindSafe(|| {
        decode_checked(bytes, format, limits, buffer)
    })) {
        Ok(result) => result,
        Err(_) => Err(DecodeError::Corrupt(format!(
            "the {format:?} decoder panicked"
        ))),
    }
}

/// A JPEG cut short still "decodes" (the decoder fills the missing rows with grey), which would
/// publish results for half a frame. A complete stream has an end-of-image marker after its
/// last start-of-scan; entropy-coded data escapes 0xFF bytes, so neither marker can appear by
/// accident inside a scan. Trailing bytes after the end marker are tolerated.
fn check_jpeg_complete(bytes: &[u8]) -> Result<(), DecodeError> {
    const START_OF_SCAN: [u8; 2] = [0xFF, 0xDA];
    const END_OF_IMAGE: [u8; 2] = [0xFF, 0xD9];
    let last_end = memchr::memmem::rfind(bytes, &END_OF_IMAGE);
    let last_scan = memchr::memmem::rfind(bytes, &START_OF_SCAN);
    match (last_scan, last_end) {
        (Some(scan), Some(end)) if scan < end => Ok(()),
        (None, _) => Err(DecodeError::Corrupt(
            "JPEG has no image data (no start-of-scan marker)".into(),
        )),
        _ => Err(DecodeError::Corrupt(
            "truncated JPEG: no end-of-image marker after the last scan".into(),
        )),
    }
}

fn decode_checked(
    bytes: &[u8],
    format: ImageFormat,
    limits: &DecodeLimits,
    mut buffer: Vec<u8>,
) -> Result<RgbImage, DecodeError> {
    // First only the allocation limit, so that an oversized header reaches our own dimension
    // check (with a typed error) instead of failing inside the decoder's constructor.
    let mut alloc_only = image::Limits::no_limits();
    alloc_only.max_alloc = Some(limits.max_alloc_bytes);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(alloc_only);
    let mut decoder = reader.into_decoder().map_err(map_image_error)?;

    let (width, height) = decoder.dimensions();
    if width > limits.max_width || height > limits.max_height {
        return Err(DecodeError::DimensionsTooLarge {
            width,
            height,
            max_width: limits.max_width,
            max_height: limits.max_height,
        });
    }
    if width == 0 || height == 0 {
        return Err(DecodeError::Corrupt(format!(
            "image has an empty dimension ({width}x{height})"
        )));
    }

    // Peak memory, conservatively: the decoded pixels next to their RGB copy (when converting)
    // or two RGB buffers (when rotating). The decoder's own working memory is checked by the
    // decoder under the limits set below.
    let rgb_bytes = u64::from(width) * u64::from(height) * 3;
    let peak = decoder
        .total_bytes()
        .max(rgb_bytes)
        .saturating_add(rgb_bytes);
    if peak > limits.max_alloc_bytes {
        return Err(DecodeError::LimitExceeded(format!(
            "decoding {width}x{height} needs about {peak} bytes, the limit is {} bytes",
            limits.max_alloc_bytes
        )));
    }

    let mut full = image::Limits::no_limits();
    full.max_image_width = Some(limits.max_width);
    full.max_image_height = Some(limits.max_height);
    full.max_alloc = Some(limits.max_alloc_bytes);
    decoder.set_limits(full).map_err(map_image_error)?;

    // Broken metadata must not lose the frame: fall back to the stored orientation.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);

    if decoder.color_type() == ColorType::Rgb8 && orientation == Orientation::NoTransforms {
        // Straight into the caller's buffer: resizing it to the same length as last time
        // neither allocates nor clears.
        let len = usize::try_from(decoder.total_bytes())
            .map_err(|_| DecodeError::LimitExceeded("image too large for memory".into()))?;
        buffer.resize(len, 0);
        decoder.read_image(&mut buffer).map_err(map_image_error)?;
        return RgbImage::from_raw(width, height, buffer)
            .ok_or_else(|| DecodeError::Corrupt("decoded size does not match the header".into()));
    }
    let image = DynamicImage::from_decoder(decoder).map_err(map_image_error)?;
    let mut rgb = DynamicImage::ImageRgb8(image.into_rgb8());
    rgb.apply_orientation(orientation);
    Ok(rgb.into_rgb8())
}

fn map_image_error(err: ImageError) -> DecodeError {
    match err {
        ImageError::Limits(limit) => DecodeError::LimitExceeded(limit.to_string()),
        ImageError::Unsupported(e) => DecodeError::UnsupportedFormat(e.to_string()),
        ImageError::Decoding(e) => DecodeError::Corrupt(e.to_string()),
        ImageError::IoError(e) => DecodeError::Corrupt(e.to_string()),
        ImageError::Parameter(e) => DecodeError::Corrupt(e.to_string()),
        ImageError::Encoding(e) => DecodeError::Corrupt(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_images::{encode, flat_jpeg, png_claiming, with_exif_orientation};
    use image::{GrayAlphaImage, GrayImage, ImageBuffer, Luma, LumaA, Rgb, Rgba, RgbaImage};
    use proptest::prelude::*;

    #[test]
    fn reusing_a_buffer_decodes_the_same_pixels_into_the_same_memory() {
        let image = DynamicImage::ImageRgb8(RgbImage::from_fn(64, 48, |x, y| {
            Rgb([x as u8 * 3, y as u8 * 5, 90])
        }));
        let jpeg = encode(&image, ImageFormat::Jpeg);
        let limits = DecodeLimits::default();
        let fresh = decode_image(&jpeg, &limits).expect("decodes");
        let first = decode_image_reusing(&jpeg, &limits, Vec::new()).expect("decodes");
        let memory = first.as_raw().as_ptr();
        let second = decode_image_reusing(&jpeg, &limits, first.into_raw()).expect("decodes");
        assert_eq!(second, fresh);
        assert_eq!(
            second.as_raw().as_ptr(),
            memory,
            "the buffer was reallocated"
        );
        // A grayscale image still comes out as RGB, whatever buffer is handed in.
        let gray = encode(
            &DynamicImage::ImageLuma8(GrayImage::new(8, 8)),
            ImageFormat::Png,
        );
        let rgb = decode_image_reusing(&gray, &limits, second.into_raw()).expect("decodes");
        assert_eq!(rgb.dimensions(), (8, 8));
    }

    fn decode_default(bytes: &[u8]) -> Result<RgbImage, DecodeError> {
        decode_image(bytes, &DecodeLimits::default())
    }

    fn assert_close(a: Rgb<u8>, b: [u8; 3], tol: u8) {
        for c in 0..3 {
            assert!(a.0[c].abs_diff(b[c]) <= tol, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn png_colour_types_become_rgb8() {
        let cases: Vec<(DynamicImage, [u8; 3])> = vec![
            (GrayImage::from_pixel(3, 2, Luma([77])).into(), [77, 77, 77]),
            (
                GrayAlphaImage::from_pixel(3, 2, LumaA([90, 128])).into(),
                [90, 90, 90],
            ),
            (RgbImage::from_pixel(3, 2, Rgb([1, 2, 3])).into(), [1, 2, 3]),
            (
                RgbaImage::from_pixel(3, 2, Rgba([10, 20, 30, 0])).into(),
                [10, 20, 30],
            ),
            (
                ImageBuffer::<Luma<u16>, _>::from_pixel(3, 2, Luma([0xFFFF])).into(),
                [255, 255, 255],
            ),
            (
                ImageBuffer::<Rgb<u16>, _>::from_pixel(3, 2, Rgb([0x8080, 0x0000, 0xFFFF])).into(),
                [128, 0, 255],
            ),
            (
                ImageBuffer::<Rgba<u16>, _>::from_pixel(3, 2, Rgba([0x4040, 0x8080, 0xC0C0, 1]))
                    .into(),
                [64, 128, 192],
            ),
        ];
        for (image, want) in cases {
            let bytes = encode(&image, ImageFormat::Png);
            let rgb = decode_default(&bytes).expect("decodes");
            assert_eq!(rgb.dimensions(), (3, 2), "{:?}", image.color());
            assert!(rgb.pixels().all(|p| p.0 == want), "{:?}", image.color());
        }
    }

    #[test]
    fn jpeg_bmp_webp_decode() {
        let rgb: DynamicImage = RgbImage::from_pixel(16, 8, Rgb([200, 100, 50])).into();
        let gray: DynamicImage = GrayImage::from_pixel(16, 8, Luma([60])).into();
        for (image, format, want, tol) in [
            (&rgb, ImageFormat::Jpeg, [200, 100, 50], 4),
            (&gray, ImageFormat::Jpeg, [60, 60, 60], 2),
            (&rgb, ImageFormat::Bmp, [200, 100, 50], 0),
            (&rgb, ImageFormat::WebP, [200, 100, 50], 0),
        ] {
            let bytes = encode(image, format);
            let out = decode_default(&bytes).expect("decodes");
            assert_eq!(out.dimensions(), (16, 8), "{format:?}");
            assert_close(*out.get_pixel(5, 5), want, tol);
        }
    }

    #[test]
    fn cmyk_jpeg_becomes_rgb8() {
        let bytes = flat_jpeg(16, 8, 4);
        let out = decode_default(&bytes).expect("decodes");
        assert_eq!(out.dimensions(), (16, 8));
        let first = *out.get_pixel(0, 0);
        // C = M = Y = K = 128 through the (inverted, Adobe) CMYK conversion: about 128 * 128 / 255,
        // unlike the 128 grey of the same data read as YCbCr below.
        assert_close(first, [64, 64, 64], 2);
        assert!(out.pixels().all(|p| *p == first));
        // The same structure with 3 components is a YCbCr mid-grey image.
        let out = decode_default(&flat_jpeg(16, 8, 3)).expect("decodes");
        assert_close(*out.get_pixel(3, 3), [128, 128, 128], 1);
    }

    #[test]
    fn exif_orientation_is_applied() {
        // Left half red, right half blue; 8x8-aligned halves keep JPEG blocks flat.
        let image = RgbImage::from_fn(16, 8, |x, _| {
            if x < 8 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        });
        let jpeg = encode(&image.into(), ImageFormat::Jpeg);
        let plain = decode_default(&jpeg).expect("decodes");
        assert_eq!(plain.dimensions(), (16, 8));

        // Orientation 6: rotate 90 degrees clockwise to display; the left column becomes the top row.
        let rotated = decode_default(&with_exif_orientation(&jpeg, 6)).expect("decodes");
        assert_eq!(rotated.dimensions(), (8, 16));
        assert_close(*rotated.get_pixel(4, 3), [255, 0, 0], 24);
        assert_close(*rotated.get_pixel(4, 12), [0, 0, 255], 24);

        // Orientation 3: rotate 180 degrees; red ends up on the right.
        let flipped = decode_default(&with_exif_orientation(&jpeg, 3)).expect("decodes");
        assert_eq!(flipped.dimensions(), (16, 8));
        assert_close(*flipped.get_pixel(12, 4), [255, 0, 0], 24);

        // An invalid orientation value is ignored.
        let bogus = decode_default(&with_exif_orientation(&jpeg, 42)).expect("decodes");
        assert_eq!(bogus.dimensions(), (16, 8));
    }

    #[test]
    fn one_pixel_images() {
        let image: DynamicImage = RgbImage::from_pixel(1, 1, Rgb([9, 8, 7])).into();
        for format in [
            ImageFormat::Png,
            ImageFormat::Jpeg,
            ImageFormat::Bmp,
            ImageFormat::WebP,
        ] {
            let out = decode_default(&encode(&image, format)).expect("decodes");
            assert_eq!(out.dimensions(), (1, 1), "{format:?}");
        }
    }

    #[test]
    fn empty_and_oversized_payloads() {
        assert!(matches!(
            decode_default(&[]),
            Err(DecodeError::EmptyPayload)
        ));
        let limits = DecodeLimits {
            max_bytes: 100,
            ..DecodeLimits::default()
        };
        let err = decode_image(&[0xFF; 101], &limits).err();
        assert!(matches!(
            err,
            Some(DecodeError::PayloadTooLarge { len: 101, max: 100 })
        ));
        assert_eq!(err.map(|e| e.kind()), Some("payload_too_large"));
    }

    #[test]
    fn unsupported_formats_are_named() {
        for (bytes, name) in [
            (&b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"[..], "gif"),
            (&b"II*\x00\x08\x00\x00\x00"[..], "tiff"),
            (&b"MM\x00*\x00\x00\x00\x08"[..], "tiff"),
            (&b"hello world"[..], "unknown"),
            (&b"\x00"[..], "unknown"),
        ] {
            match decode_default(bytes) {
                Err(DecodeError::UnsupportedFormat(got)) => assert_eq!(got, name),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(
            DecodeError::UnsupportedFormat(String::new()).kind(),
            "unsupported_format"
        );
    }

    #[test]
    fn huge_headers_are_rejected_before_decoding() {
        let err = decode_default(&png_claiming(60_000, 60_000)).err();
        assert!(
            matches!(
                err,
                Some(DecodeError::DimensionsTooLarge {
                    width: 60_000,
                    height: 60_000,
                    max_width: 8192,
                    max_height: 8192
                })
            ),
            "{err:?}"
        );
        assert_eq!(err.map(|e| e.kind()), Some("dimensions_too_large"));

        let err = decode_default(&flat_jpeg(60_000, 60_000, 3)).err();
        assert!(
            matches!(
                err,
                Some(DecodeError::DimensionsTooLarge {
                    width: 60_000,
                    height: 60_000,
                    ..
                })
            ),
            "{err:?}"
        );
        // One axis over the limit is enough.
        let err = decode_default(&png_claiming(8193, 1)).err();
        assert!(matches!(err, Some(DecodeError::DimensionsTooLarge { .. })));
    }

    #[test]
    fn decompression_bomb_hits_the_allocation_limit() {
        // 2048x2048 zero pixels compress to a few KiB but need 4 MiB + 12 MiB (RGB) to decode.
        let bomb: DynamicImage = GrayImage::new(2048, 2048).into();
        let bytes = encode(&bomb, ImageFormat::Png);
        assert!(bytes.len() < 64 * 1024, "{} bytes", bytes.len());
        let limits = DecodeLimits {
            max_alloc_bytes: 8 * 1024 * 1024,
            ..DecodeLimits::default()
        };
        let err = decode_image(&bytes, &limits).err();
        assert!(
            matches!(err, Some(DecodeError::LimitExceeded(_))),
            "{err:?}"
        );
        assert_eq!(err.map(|e| e.kind()), Some("allocation_limit"));
        // Within the default limits it decodes.
        assert_eq!(
            decode_default(&bytes).map(|i| i.dimensions()).ok(),
            Some((2048, 2048))
        );
    }

    #[test]
    fn truncated_and_corrupt_payloads() {
        let image: DynamicImage = RgbImage::from_fn(64, 64, |x, y| {
            Rgb([x as u8 * 4, y as u8 * 4, (x ^ y) as u8])
        })
        .into();
        let png = encode(&image, ImageFormat::Png);
        let err = decode_default(&png[..png.len() / 2]).err();
        assert!(matches!(err, Some(DecodeError::Corrupt(_))), "{err:?}");
        assert_eq!(err.map(|e| e.kind()), Some("corrupt_image"));

        let jpeg = encode(&image, ImageFormat::Jpeg);
        for cut in [3, 20, jpeg.len() / 2, jpeg.len() - 1] {
            // A JPEG cut anywhere, even inside the scan, is corrupt, not a partial image.
            let err = decode_default(&jpeg[..cut]).err();
            assert_eq!(err.map(|e| e.kind()), Some("corrupt_image"), "cut at {cut}");
        }
        // Bytes after the end-of-image marker are tolerated.
        let mut padded = jpeg.clone();
        padded.extend_from_slice(&[0u8; 16]);
        assert!(decode_default(&padded).is_ok());
        assert!(matches!(
            decode_default(&png[..8]),
            Err(DecodeError::Corrupt(_))
        ));
        assert!(decode_default(b"BM").is_err());
        assert!(decode_default(b"RIFF\x00\x00\x00\x00WEBPVP8 ").is_err());
    }

    #[test]
    fn limits_validate_and_deserialize() {
        assert_eq!(DecodeLimits::default().validate(), Ok(()));
        let bad = DecodeLimits {
            max_width: 0,
            ..DecodeLimits::default()
        };
        assert_eq!(
            bad.validate(),
            Err(DecodeLimitsError { field: "max_width" })
        );
        let parsed: DecodeLimits = serde_json::from_str(r#"{"max_width": 640}"#).expect("valid");
        assert_eq!(parsed.max_width, 640);
        assert_eq!(parsed.max_bytes, 32 * 1024 * 1024);
        assert!(serde_json::from_str::<DecodeLimits>(r#"{"max_pixels": 1}"#).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn arbitrary_bytes_never_panic(
            prefix in prop_oneof![
                Just(Vec::new()),
                Just(vec![0xFF, 0xD8, 0xFF]),
                Just(b"\x89PNG\r\n\x1a\n".to_vec()),
                Just(b"RIFF\x20\x00\x00\x00WEBP".to_vec()),
                Just(b"BM".to_vec()),
            ],
            body in prop::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut bytes = prefix;
            bytes.extend(body);
            let limits = DecodeLimits {
                max_alloc_bytes: 16 * 1024 * 1024,
                ..DecodeLimits::default()
            };
            if let Ok(image) = decode_image(&bytes, &limits) {
                prop_assert!(image.width() <= limits.max_width);
                prop_assert!(image.height() <= limits.max_height);
            }
        }

        #[test]
        fn mutated_images_never_panic(
            index in any::<prop::sample::Index>(),
            value: u8,
            format in prop_oneof![
                Just(ImageFormat::Png),
                Just(ImageFormat::Jpeg),
                Just(ImageFormat::Bmp),
                Just(ImageFormat::WebP),
            ],
        ) {
            let image: DynamicImage = RgbImage::from_fn(24, 16, |x, y| {
                Rgb([x as u8 * 10, y as u8 * 10, 99])
            })
            .into();
            let mut bytes = encode(&image, format);
            let i = index.index(bytes.len());
            bytes[i] = value;
            let _ = decode_default(&bytes);
        }
    }
}
