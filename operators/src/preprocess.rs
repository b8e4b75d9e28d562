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

/// Largest model input side accepted by [`PreprocessSpec::validate`], in pixels.
pub const MAX_INPUT_SIDE: u32 = 16_384;

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
        if self.width > MAX_INPUT_SIDE || self.height > MAX_INPUT_SIDE {
            return Err(PreprocessError::InvalidSpec(format!(
                "input size {}x{} exceeds {MAX_INPUT_SIDE} pixels per side",
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
            options: ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
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
        (self.spec.width as usize)
            .saturating_mul(self.spec.height as usize)
            .saturating_mul(3)
    }

    /// The transform [`Preprocessor::prepare_into`] would return for a tile of `rect`, without
    /// touching any pixel.
    pub fn transform_for(&self, rect: PixelRect) -> InputTransform {
        let (w, h) = (self.spec.width.max(1), self.spec.height.max(1));
        let p = placement(
            self.spec.resize,
            rect.width.max(1),
            rect.height.max(1),
            w,
            h,
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use proptest::prelude::*;

    fn spec(width: u32, height: u32, resize: ResizeMode) -> PreprocessSpec {
        PreprocessSpec {
            width,
            height,
            resize,
            pad_value: 114,
            channel_order: ChannelOrder::Rgb,
            scale: 1.0,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }

    /// A frame whose pixel (x, y) is (x, y, 7).
    fn gradient(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| Rgb([x as u8, y as u8, 7]))
    }

    fn at(out: &[f32], w: usize, h: usize, c: usize, x: usize, y: usize) -> f32 {
        out[c * w * h + y * w + x]
    }

    #[test]
    fn same_size_stretch_is_an_exact_copy() {
        let frame = gradient(4, 3);
        let mut p = Preprocessor::new(spec(4, 3, ResizeMode::Stretch));
        let mut out = vec![f32::NAN; p.tensor_len()];
        let t = p
            .prepare_into(&frame, PixelRect::new(0, 0, 4, 3), &mut out)
            .expect("prepared");
        assert_eq!(t, InputTransform::IDENTITY);
        for y in 0..3 {
            for x in 0..4 {
                assert_eq!(at(&out, 4, 3, 0, x, y), x as f32);
                assert_eq!(at(&out, 4, 3, 1, x, y), y as f32);
                assert_eq!(at(&out, 4, 3, 2, x, y), 7.0);
            }
        }
    }

    #[test]
    fn crop_is_taken_from_the_rect() {
        let frame = gradient(20, 10);
        let mut p = Preprocessor::new(spec(4, 3, ResizeMode::Letterbox));
        let mut out = vec![0.0; p.tensor_len()];
        let t = p
            .prepare_into(&frame, PixelRect::new(5, 6, 4, 3), &mut out)
            .expect("prepared");
        assert_eq!(
            (t.origin_x, t.origin_y, t.scale_x, t.scale_y),
            (5.0, 6.0, 1.0, 1.0)
        );
        assert_eq!(at(&out, 4, 3, 0, 0, 0), 5.0);
        assert_eq!(at(&out, 4, 3, 1, 0, 0), 6.0);
        assert_eq!(at(&out, 4, 3, 0, 3, 2), 8.0);
        assert_eq!(at(&out, 4, 3, 1, 3, 2), 8.0);
    }

    #[test]
    fn bgr_and_normalisation() {
        let frame = RgbImage::from_pixel(2, 2, Rgb([10, 20, 30]));
        let mut s = spec(2, 2, ResizeMode::Stretch);
        s.channel_order = ChannelOrder::Bgr;
        s.scale = 0.5;
        s.mean = [1.0, 2.0, 3.0];
        s.std = [2.0, 4.0, 0.5];
        let mut p = Preprocessor::new(s);
        let mut out = vec![0.0; p.tensor_len()];
        p.prepare_into(&frame, PixelRect::new(0, 0, 2, 2), &mut out)
            .expect("prepared");
        // Channel 0 is blue: (30 * 0.5 - 1) / 2 = 7.
        assert_eq!(&out[0..4], &[7.0; 4]);
        // Channel 1 is green: (20 * 0.5 - 2) / 4 = 2.
        assert_eq!(&out[4..8], &[2.0; 4]);
        // Channel 2 is red: (10 * 0.5 - 3) / 0.5 = 4.
        assert_eq!(&out[8..12], &[4.0; 4]);
    }

    #[test]
    fn letterbox_pads_bottom_right() {
        let frame = RgbImage::from_pixel(8, 4, Rgb([200, 200, 200]));
        let mut p = Preprocessor::new(spec(4, 4, ResizeMode::Letterbox));
        let mut out = vec![0.0; p.tensor_len()];
        let t = p
            .prepare_into(&frame, PixelRect::new(0, 0, 8, 4), &mut out)
            .expect("prepared");
        assert_eq!(
            (t.scale_x, t.scale_y, t.pad_x, t.pad_y),
            (0.5, 0.5, 0.0, 0.0)
        );
        for c in 0..3 {
            for y in 0..4 {
                for x in 0..4 {
                    let want = if y < 2 { 200.0 } else { 114.0 };
                    assert_eq!(at(&out, 4, 4, c, x, y), want, "c{c} x{x} y{y}");
                }
            }
        }
    }

    #[test]
    fn letterbox_center_pads_both_sides() {
        let frame = RgbImage::from_pixel(2, 8, Rgb([50, 60, 70]));
        let mut p = Preprocessor::new(spec(5, 4, ResizeMode::LetterboxCenter));
        let mut out = vec![0.0; p.tensor_len()];
        let t = p
            .prepare_into(&frame, PixelRect::new(0, 0, 2, 8), &mut out)
            .expect("prepared");
        // Scaled by 0.5 to 1x4, centred: (5 - 1) / 2 = 2 columns of padding on the left.
        assert_eq!(
            (t.scale_x, t.scale_y, t.pad_x, t.pad_y),
            (0.5, 0.5, 2.0, 0.0)
        );
        for y in 0..4 {
            for x in 0..5 {
                let want = if x == 2 { 50.0 } else { 114.0 };
                assert_eq!(at(&out, 5, 4, 0, x, y), want, "x{x} y{y}");
            }
        }
        let model = BBox::new(2.0, 0.0, 3.0, 4.0);
        assert_eq!(t.to_frame(&model), BBox::new(0.0, 0.0, 2.0, 8.0));
    }

    #[test]
    fn upscaling_stretch_keeps_a_uniform_colour() {
        let frame = RgbImage::from_pixel(3, 2, Rgb([9, 99, 199]));
        let mut p = Preprocessor::new(spec(16, 16, ResizeMode::Stretch));
        let mut out = vec![0.0; p.tensor_len()];
        let t = p
            .prepare_into(&frame, PixelRect::new(0, 0, 3, 2), &mut out)
            .expect("prepared");
        assert_eq!((t.scale_x, t.scale_y), (16.0 / 3.0, 8.0));
        assert!(out[..256].iter().all(|&v| v == 9.0));
        assert!(out[256..512].iter().all(|&v| v == 99.0));
        assert!(out[512..].iter().all(|&v| v == 199.0));
    }

    #[test]
    fn errors_are_typed() {
        let frame = gradient(10, 10);
        let mut p = Preprocessor::new(spec(4, 4, ResizeMode::Stretch));
        let mut short = vec![0.0; 47];
        let err = p.prepare_into(&frame, PixelRect::new(0, 0, 4, 4), &mut short);
        assert_eq!(
            err,
            Err(PreprocessError::OutputLength {
                len: 47,
                expected: 48
            })
        );
        let mut out = vec![0.0; 48];
        for rect in [
            PixelRect::new(8, 0, 4, 4),
            PixelRect::new(0, 0, 0, 4),
            PixelRect::new(u32::MAX, u32::MAX, 2, 2),
        ] {
            let err = p.prepare_into(&frame, rect, &mut out).err();
            assert_eq!(err.map(|e| e.kind()), Some("tile_out_of_bounds"));
        }
        let empty = RgbImage::new(0, 0);
        assert!(
            p.prepare_into(&empty, PixelRect::new(0, 0, 1, 1), &mut out)
                .is_err()
        );

        let mut bad = spec(4, 4, ResizeMode::Stretch);
        bad.std = [1.0, 0.0, 1.0];
        let mut p = Preprocessor::new(bad);
        let err = p
            .prepare_into(&frame, PixelRect::new(0, 0, 4, 4), &mut out)
            .err();
        assert_eq!(err.map(|e| e.kind()), Some("invalid_preprocess_spec"));
        let mut p = Preprocessor::new(spec(u32::MAX, u32::MAX, ResizeMode::Stretch));
        let err = p
            .prepare_into(&frame, PixelRect::new(0, 0, 4, 4), &mut out)
            .err();
        assert_eq!(err.map(|e| e.kind()), Some("invalid_preprocess_spec"));
        let mut p = Preprocessor::new(spec(0, 4, ResizeMode::Stretch));
        assert_eq!(p.tensor_len(), 0);
        let err = p
            .prepare_into(&frame, PixelRect::new(0, 0, 4, 4), &mut [])
            .err();
        assert_eq!(err.map(|e| e.kind()), Some("invalid_preprocess_spec"));
    }

    #[test]
    fn buffers_are_reused_after_warm_up() {
        let frame = gradient(200, 100);
        let mut p = Preprocessor::new(spec(64, 64, ResizeMode::Letterbox));
        let mut out = vec![0.0; p.tensor_len()];
        p.prepare_into(&frame, PixelRect::new(0, 0, 200, 100), &mut out)
            .expect("prepared");
        let (ptr, cap) = (p.resized.as_ptr(), p.resized.capacity());
        for rect in [
            PixelRect::new(0, 0, 64, 64),
            PixelRect::new(10, 10, 30, 90),
            PixelRect::new(0, 0, 200, 100),
        ] {
            p.prepare_into(&frame, rect, &mut out).expect("prepared");
            assert_eq!((p.resized.as_ptr(), p.resized.capacity()), (ptr, cap));
        }
    }

    fn rect_strategy() -> impl Strategy<Value = (u32, u32, PixelRect)> {
        (1u32..2000, 1u32..2000)
            .prop_flat_map(|(fw, fh)| (Just(fw), Just(fh), 0..fw, 0..fh))
            .prop_flat_map(|(fw, fh, x, y)| {
                (Just(fw), Just(fh), Just(x), Just(y), 1..=fw - x, 1..=fh - y)
            })
            .prop_map(|(fw, fh, x, y, w, h)| (fw, fh, PixelRect::new(x, y, w, h)))
    }

    fn mode_strategy() -> impl Strategy<Value = ResizeMode> {
        prop_oneof![
            Just(ResizeMode::Letterbox),
            Just(ResizeMode::LetterboxCenter),
            Just(ResizeMode::Stretch)
        ]
    }

    proptest! {
        #[test]
        fn transform_round_trips(
            (_fw, _fh, rect) in rect_strategy(),
            mode in mode_strategy(),
            mw in 1u32..1024,
            mh in 1u32..1024,
            fx in 0.0f32..1.0,
            fy in 0.0f32..1.0,
        ) {
            let p = Preprocessor::new(spec(mw, mh, mode));
            let t = p.transform_for(rect);
            // The tile maps inside the model input.
            let m = t.to_model(&rect.to_bbox());
            let eps = 1e-3 * (mw.max(mh) as f32);
            prop_assert!(m.x1 >= -eps && m.y1 >= -eps, "{:?}", m);
            prop_assert!(m.x2 <= mw as f32 + eps && m.y2 <= mh as f32 + eps, "{:?}", m);
            // frame -> model -> frame is the identity (up to f32 rounding).
            let b = BBox::new(
                rect.x as f32 + fx * rect.width as f32,
                rect.y as f32 + fy * rect.height as f32,
                (rect.x + rect.width) as f32,
                (rect.y + rect.height) as f32,
            );
            let back = t.to_frame(&t.to_model(&b));
            let tol = 1e-3 * (1.0 + (rect.x + rect.width).max(rect.y + rect.height) as f32);
            for (a, c) in [(b.x1, back.x1), (b.y1, back.y1), (b.x2, back.x2), (b.y2, back.y2)] {
                prop_assert!((a - c).abs() <= tol, "{:?} -> {:?}", b, back);
            }
        }

        #[test]
        fn prepare_into_never_fails_on_a_valid_rect(
            (fw, fh, rect) in (1u32..80, 1u32..80)
                .prop_flat_map(|(fw, fh)| (Just(fw), Just(fh), 0..fw, 0..fh))
                .prop_flat_map(|(fw, fh, x, y)| {
                    (Just(fw), Just(fh), Just(x), Just(y), 1..=fw - x, 1..=fh - y)
                })
                .prop_map(|(fw, fh, x, y, w, h)| (fw, fh, PixelRect::new(x, y, w, h))),
            mode in mode_strategy(),
            mw in 1u32..48,
            mh in 1u32..48,
        ) {
            let frame = gradient(fw, fh);
            let mut p = Preprocessor::new(spec(mw, mh, mode));
            let mut out = vec![f32::NAN; p.tensor_len()];
            let t = p.prepare_into(&frame, rect, &mut out);
            prop_assert_eq!(t, Ok(p.transform_for(rect)));
            prop_assert!(out.iter().all(|v| (0.0..=255.0).contains(v)));
        }
    }
}
