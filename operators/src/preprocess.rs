//! Preprocessing: crop a tile out of a frame, resize it to the model input and write a
//! normalised NCHW `f32` tensor.
//!
//! The crop is a view of the frame (no copy); resizing is bilinear convolution with
//! `fast_image_resize` into a buffer reused across calls; normalisation goes through a
//! per-channel lookup table, so after the first call nothing of ours is allocated.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::geometry::{BBox, PixelRect};

/// How a tile is fitted into the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Aspect ratio kept, image at the top-left, the rest padded (YOLOX).
    Letterbox,
    /// Aspect ratio kept, image centred, padded on both sides (Ultralytics).
    LetterboxCenter,
    /// Both axes scaled independently to the input size (classifiers).
    Stretch,
}

/// Channel order of the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// Red, green, blue.
    Rgb,
    /// Blue, green, red (OpenCV-trained models such as YOLOX).
    Bgr,
}

/// What the model expects as input. A value is `(pixel * scale - mean[c]) / std[c]`, with `mean`
/// and `std` listed in the model's channel order; the layout is NCHW.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessSpec {
    /// Model input width in pixels.
    pub width: u32,
    /// Model input height in pixels.
    pub height: u32,
    /// How the tile is fitted into `width x height`.
    pub resize: ResizeMode,
    /// Value (0-255, before normalisation) of letterbox padding pixels.
    pub pad_value: u8,
    /// Channel order of the input tensor.
    pub channel_order: ChannelOrder,
    /// Factor applied to the 0-255 pixel value first (e.g. `1/255`).
    pub scale: f32,
    /// Subtracted per channel after scaling, in the model's channel order.
    pub mean: [f32; 3],
    /// Divisor per channel after subtracting the mean, in the model's channel order.
    pub std: [f32; 3],
}

impl PreprocessSpec {
    /// Checks the input size and the normalisation constants.
    pub fn validate(&self) -> Result<(), PreprocessError> {
        if self.width == 0 || self.height == 0 {
            return Err(PreprocessError::InvalidSpec(format!(
                "input size {}x{} has a zero dimension",
                self.width, self.height
            )));
        }
        if !self.scale.is_finite() {
            return Err(PreprocessError::InvalidSpec(format!(
                "scale {} is not finite",
                self.scale
            )));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return Err(PreprocessError::InvalidSpec(format!(
                "mean {:?} is not finite",
                self.mean
            )));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s == 0.0) {
            return Err(PreprocessError::InvalidSpec(format!(
                "std {:?} must be finite and non-zero",
                self.std
            )));
        }
        Ok(())
    }
}

/// Why a tile could not be preprocessed (a bug or a bad manifest, not bad input data).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PreprocessError {
    /// The spec is unusable (zero size, non-finite or zero normalisation constants).
    #[error("invalid preprocessing spec: {0}")]
    InvalidSpec(String),
    /// The tile is empty or not inside the frame.
    #[error("tile {rect:?} is empty or outside the {frame_width}x{frame_height} frame")]
    RectOutOfBounds {
        /// The requested tile.
        rect: PixelRect,
        /// Frame width.
        frame_width: u32,
        /// Frame height.
        frame_height: u32,
    },
    /// The output slice does not have `tensor_len()` elements.
    #[error("output tensor has {len} elements, expected {expected}")]
    OutputLength {
        /// Length of the given slice.
        len: usize,
        /// `3 * width * height`.
        expected: usize,
    },
    /// The resizer failed.
    #[error("resize failed: {0}")]
    Resize(String),
}

impl PreprocessError {
    /// Stable snake_case name, for metrics and error headers.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidSpec(_) => "invalid_preprocess_spec",
            Self::RectOutOfBounds { .. } => "tile_out_of_bounds",
            Self::OutputLength { .. } => "tensor_length",
            Self::Resize(_) => "resize_failed",
        }
    }
}

/// The affine map from frame pixels to model-input pixels for one tile:
/// `model = (frame - origin) * scale + pad`, per axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputTransform {
    /// Tile left edge in the frame.
    pub origin_x: f32,
    /// Tile top edge in the frame.
    pub origin_y: f32,
    /// Model pixels per frame pixel, horizontally.
    pub scale_x: f32,
    /// Model pixels per frame pixel, vertically.
    pub scale_y: f32,
    /// Left padding in model pixels.
    pub pad_x: f32,
    /// Top padding in model pixels.
    pub pad_y: f32,
}

impl InputTransform {
    /// The identity map.
    pub const IDENTITY: Self = Self {
        origin_x: 0.0,
        origin_y: 0.0,
        scale_x: 1.0,
        scale_y: 1.0,
        pad_x: 0.0,
        pad_y: 0.0,
    };

    /// Maps a box from model-input pixels back to frame pixels (not clamped).
    pub fn to_frame(&self, b: &BBox) -> BBox {
        let fx = |v: f32| (v - self.pad_x) / self.scale_x + self.origin_x;
        let fy = |v: f32| (v - self.pad_y) / self.scale_y + self.origin_y;
        BBox::new(fx(b.x1), fy(b.y1), fx(b.x2), fy(b.y2))
    }

    /// Maps a box from frame pixels to model-input pixels (not clamped).
    pub fn to_model(&self, b: &BBox) -> BBox {
        let mx = |v: f32| (v - self.origin_x) * self.scale_x + self.pad_x;
        let my = |v: f32| (v - self.origin_y) * self.scale_y + self.pad_y;
        BBox::new(mx(b.x1), my(b.y1), mx(b.x2), my(b.y2))
    }
}

/// Where a tile lands in the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Placement {
    /// Resized tile width.
    width: u32,
    /// Resized tile height.
    height: u32,
    /// Left padding.
    pad_x: u32,
    /// Top padding.
    pad_y: u32,
}

/// The placement of a `src_w x src_h` tile in a `dst_w x dst_h` input (all sizes >= 1).
fn placement(mode: ResizeMode, src_w: u32, src_h: u32, dst_w: u32, dst_h: u32) -> Placement {
    match mode {
        ResizeMode::Stretch => Placement {
            width: dst_w,
            height: dst_h,
            pad_x: 0,
            pad_y: 0,
        },
        ResizeMode::Letterbox | ResizeMode::LetterboxCenter => {
            let r = (f64::from(dst_w) / f64::from(src_w)).min(f64::from(dst_h) / f64::from(src_h));
            let fit = |src: u32, dst: u32| ((f64::from(src) * r).round() as u32).clamp(1, dst);
            let (width, height) = (fit(src_w, dst_w), fit(src_h, dst_h));
            let (pad_x, pad_y) = if mode == ResizeMode::LetterboxCenter {
                ((dst_w - width) / 2, (dst_h - height) / 2)
            } else {
                (0, 0)
            };
            Placement {
                width,
                height,
                pad_x,
                pad_y,
            }
        }
    }
}

/// Turns frame tiles into model input tensors; one per worker (it owns reusable buffers).
pub struct Preprocessor {
    /// The model input description.
    spec: PreprocessSpec,
    /// fast_image_resize state (its convolution buffers are reused across calls).
    resizer: Resizer,
    /// Bilinear convolution, cropping set per call.
    options: ResizeOptions,
    /// Resized tile, RGB8, reused; capacity `3 * width * height`.
    resized: Vec<u8>,
    /// Normalised value of each 0-255 level, per output channel.
    lut: [[f32; 256]; 3],
    /// Normalised pad value, per output channel.
    pad: [f32; 3],
}

impl std::fmt::Debug for Preprocessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preprocessor")
            .field("spec", &self.spec)
            .field("resized_capacity", &self.resized.capacity())
            .finish_non_exhaustive()
    }
}

impl Preprocessor {
    /// A preprocessor for `spec`. An invalid spec is reported by [`Preprocessor::prepare_into`].
    pub fn new(spec: PreprocessSpec) -> Self {
        let mut lut = [[0.0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, slot) in table.iter_mut().enumerate() {
                *slot = (v as f32 * spec.scale - spec.mean[c]) / spec.std[c];
            }
        }
        let pad = [
            lut[0][usize::from(spec.pad_value)],
            lut[1][usize::from(spec.pad_value)],
            lut[2][usize::from(spec.pad_value)],
        ];
        Self {
            spec,
            resizer: Resizer::new(),
            options: ResizeOptions::new()
                .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
            resized: Vec::new(),
            lut,
            pad,
        }
    }

    /// The model input description.
    pub fn spec(&self) -> &PreprocessSpec {
        &self.spec
    }

    /// Elements in one input tensor: `3 * width * height`.
    pub fn tensor_len(&self) -> usize {
        3 * self.spec.width as usize * self.spec.height as usize
    }

    /// The transform [`Preprocessor::prepare_into`] would return for a tile of `rect`, without
    /// touching any pixel.
    pub fn transform_for(&self, rect: PixelRect) -> InputTransform {
        let (w, h) = (self.spec.width.max(1), self.spec.height.max(1));
        let p = placement(self.spec.resize, rect.width.max(1), rect.height.max(1), w, h);
        InputTransform {
            origin_x: rect.x as f32,
            origin_y: rect.y as f32,
            scale_x: p.width as f32 / rect.width.max(1) as f32,
            scale_y: p.height as f32 / rect.height.max(1) as f32,
            pad_x: p.pad_x as f32,
            pad_y: p.pad_y as f32,
        }
    }

    /// Crops `rect` out of `frame` (a view, no copy), resizes it bilinearly into the model input
    /// per the spec and writes the normalised NCHW tensor into `out` (`tensor_len()` elements).
    /// Returns the transform that maps model-input boxes of this tile back to the frame.
    pub fn prepare_into(
        &mut self,
        frame: &RgbImage,
        rect: PixelRect,
        out: &mut [f32],
    ) -> Result<InputTransform, PreprocessError> {
        self.spec.validate()?;
        let expected = self.tensor_len();
        if out.len() != expected {
            return Err(PreprocessError::OutputLength {
                len: out.len(),
                expected,
            });
        }
        let (frame_width, frame_height) = frame.dimensions();
        if !rect.fits_in(frame_width, frame_height) {
            return Err(PreprocessError::RectOutOfBounds {
                rect,
                frame_width,
                frame_height,
            });
        }
        let (dst_w, dst_h) = (self.spec.width, self.spec.height);
        let p = placement(self.spec.resize, rect.width, rect.height, dst_w, dst_h);

        let resized_len = 3 * p.width as usize * p.height as usize;
        if self.resized.len() < resized_len {
            // Grows once to the largest placement (at most the full input), then is reused.
            self.resized.resize(expected.max(resized_len), 0);
        }
        let src = ImageRef::new(frame_width, frame_height, frame.as_raw(), PixelType::U8x3)
            .map_err(|e| PreprocessError::Resize(e.to_string()))?;
        let mut dst = Image::from_slice_u8(
            p.width,
            p.height,
            &mut self.resized[..resized_len],
            PixelType::U8x3,
        )
        .map_err(|e| PreprocessError::Resize(e.to_string()))?;
        let options = self.options.crop(
            f64::from(rect.x),
            f64::from(rect.y),
            f64::from(rect.width),
            f64::from(rect.height),
        );
        self.resizer
            .resize(&src, &mut dst, &options)
            .map_err(|e| PreprocessError::Resize(e.to_string()))?;

        self.normalise(p, out);
        Ok(self.transform_for(rect))
    }

    /// Writes the resized tile (at its placement) and the padding into `out`, NCHW.
    fn normalise(&self, p: Placement, out: &mut [f32]) {
        let (dst_w, dst_h) = (self.spec.width as usize, self.spec.height as usize);
        let plane_len = dst_w * dst_h;
        let (pw, ph) = (p.width as usize, p.height as usize);
        let (px, py) = (p.pad_x as usize, p.pad_y as usize);
        let resized = &self.resized[..3 * pw * ph];
        for (c, plane) in out.chunks_exact_mut(plane_len).enumerate().take(3) {
            let src_c = match self.spec.channel_order {
                ChannelOrder::Rgb => c,
                ChannelOrder::Bgr => 2 - c,
            };
            let lut = &self.lut[c];
            let pad = self.pad[c];
            for (y, row) in plane.chunks_exact_mut(dst_w).enumerate() {
                if y < py || y >= py + ph {
                    row.fill(pad);
                    continue;
                }
                row[..px].fill(pad);
                row[px + pw..].fill(pad);
                let src_row = &resized[(y - py) * pw * 3..(y - py + 1) * pw * 3];
                for (dst, px_rgb) in row[px..px + pw].iter_mut().zip(src_row.chunks_exact(3)) {
                    *dst = lut[usize::from(px_rgb[src_c])];
                }
            }
        }
    }
}
