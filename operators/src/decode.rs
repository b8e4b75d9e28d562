//! Image decoding with hard limits, for untrusted frames.
//!
//! The format is taken from the payload's magic bytes (never from a header or file name); only
//! JPEG, PNG, WebP and BMP are accepted. The header's dimensions are checked before any pixel is
//! decoded, the decoder runs under [`image::Limits`], the EXIF orientation is applied, and every
//! colour type (gray, gray + alpha, RGBA, 16-bit, CMYK JPEG) comes out as 8-bit RGB.

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, RgbImage};
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
    match catch_unwind(AssertUnwindSafe(|| decode_checked(bytes, format, limits))) {
        Ok(result) => result,
        Err(_) => Err(DecodeError::Corrupt(format!(
            "the {format:?} decoder panicked"
        ))),
    }
}

fn decode_checked(
    bytes: &[u8],
    format: ImageFormat,
    limits: &DecodeLimits,
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

    // Peak memory: the decoded pixels plus the RGB copy (when converting), or two RGB buffers
    // (when rotating); the decoder's own working memory is checked by the decoder.
    let rgb_bytes = u64::from(width) * u64::from(height) * 3;
    let decoded_bytes = decoder.total_bytes();
    let peak = decoded_bytes.saturating_add(rgb_bytes);
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
    let orientation = decoder
        .orientation()
        .unwrap_or(Orientation::NoTransforms);

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
