//! A static camera made from real pictures, for tests and benchmarks of the change gate: a fixed
//! background (a real photo) with real objects (crops of a real photo) moving across it, sensor
//! noise that differs every frame and a fresh JPEG encoding per frame, so the tiles nothing
//! moved in are close but not bit-identical, as from a real camera. The ground truth is each
//! moving object's box in each frame.

use image::codecs::jpeg::JpegEncoder;
use image::{Rgb, RgbImage};

use crate::geometry::{BBox, PixelRect};

/// An object that moves across the scene: a crop of a real picture and its class.
#[derive(Debug, Clone)]
pub struct Sprite {
    /// The object's pixels.
    pub image: RgbImage,
    /// The class a detector should give it.
    pub class_id: u32,
}

/// A sprite's path: it starts at `start` (top-left, pixels) and moves `velocity` pixels per
/// frame, wrapping around the scene so it leaves on one side and comes back on the other.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mover {
    /// Index into the sprites.
    pub sprite: usize,
    /// Top-left corner in frame 0.
    pub start: (f32, f32),
    /// Pixels per frame.
    pub velocity: (f32, f32),
}

/// One moving object's box in a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Truth {
    /// The sprite's class.
    pub class_id: u32,
    /// Its visible box in frame pixels.
    pub bbox: BBox,
}

/// A static camera: background, moving sprites, noise and JPEG quality.
#[derive(Debug, Clone)]
pub struct StaticCamera {
    background: RgbImage,
    sprites: Vec<Sprite>,
    movers: Vec<Mover>,
    /// Uniform sensor noise of +-`noise` levels per channel.
    noise: u8,
    jpeg_quality: u8,
    seed: u64,
}

/// Share of a sprite that must be in the frame for it to count as ground truth (an object cut
/// by the frame edge is ambiguous for any detector).
const MIN_VISIBLE: f32 = 0.5;

impl StaticCamera {
    /// A scene over `background`. Every mover must name a sprite no larger than the background.
    pub fn new(
        background: RgbImage,
        sprites: Vec<Sprite>,
        movers: Vec<Mover>,
        noise: u8,
        jpeg_quality: u8,
        seed: u64,
    ) -> Result<Self, String> {
        for (i, m) in movers.iter().enumerate() {
            let sprite = sprites.get(m.sprite).ok_or_else(|| {
                format!("mover {i} names sprite {}, of {}", m.sprite, sprites.len())
            })?;
            let (w, h) = sprite.image.dimensions();
            if w == 0 || h == 0 || w > background.width() || h > background.height() {
                return Err(format!(
                    "sprite {} is {w}x{h}, the background {}x{}",
                    m.sprite,
                    background.width(),
                    background.height()
                ));
            }
        }
        Ok(Self {
            background,
            sprites,
            movers,
            noise,
            jpeg_quality: jpeg_quality.clamp(1, 100),
            seed,
        })
    }

    /// Frame size.
    pub fn dimensions(&self) -> (u32, u32) {
        self.background.dimensions()
    }

    /// Top-left corner of `mover` in frame `n`, wrapped so the sprite re-enters once it has
    /// left entirely.
    fn position(&self, mover: &Mover, n: u64) -> (i64, i64) {
        let sprite = &self.sprites[mover.sprite].image;
        let wrap = |start: f32, v: f32, size: u32, span: u32| -> i64 {
            // Positions run over [-size, span): one period is span + size pixels.
            let period = f64::from(span) + f64::from(size);
            let p =
                (f64::from(start) + f64::from(v) * n as f64 + f64::from(size)).rem_euclid(period);
            (p - f64::from(size)).floor() as i64
        };
        (
            wrap(
                mover.start.0,
                mover.velocity.0,
                sprite.width(),
                self.background.width(),
            ),
            wrap(
                mover.start.1,
                mover.velocity.1,
                sprite.height(),
                self.background.height(),
            ),
        )
    }

    /// Frame `n` as pixels, and the boxes of the objects at least half in view.
    pub fn frame(&self, n: u64) -> (RgbImage, Vec<Truth>) {
        let mut image = self.background.clone();
        let (fw, fh) = image.dimensions();
        let mut truth = Vec::new();
        for mover in &self.movers {
            let sprite = &self.sprites[mover.sprite];
            let (x, y) = self.position(mover, n);
            let (sw, sh) = sprite.image.dimensions();
            let x0 = x.max(0);
            let y0 = y.max(0);
            let x1 = (x + i64::from(sw)).min(i64::from(fw));
            let y1 = (y + i64::from(sh)).min(i64::from(fh));
            if x1 <= x0 || y1 <= y0 {
                continue;
            }
            for py in y0..y1 {
                for px in x0..x1 {
                    let pixel = *sprite.image.get_pixel((px - x) as u32, (py - y) as u32);
                    image.put_pixel(px as u32, py as u32, pixel);
                }
            }
            let visible = ((x1 - x0) * (y1 - y0)) as f32 / (u64::from(sw) * u64::from(sh)) as f32;
            if visible >= MIN_VISIBLE {
                truth.push(Truth {
                    class_id: sprite.class_id,
                    bbox: BBox::new(x0 as f32, y0 as f32, x1 as f32, y1 as f32),
                });
            }
        }
        self.add_noise(&mut image, n);
        (image, truth)
    }

    /// Frame `n` as a JPEG, and its ground truth.
    pub fn jpeg(&self, n: u64) -> Result<(Vec<u8>, Vec<Truth>), image::ImageError> {
        let (image, truth) = self.frame(n);
        let mut bytes = Vec::new();
        JpegEncoder::new_with_quality(&mut bytes, self.jpeg_quality).encode_image(&image)?;
        Ok((bytes, truth))
    }

    fn add_noise(&self, image: &mut RgbImage, n: u64) {
        if self.noise == 0 {
            return;
        }
        let span = 2 * u64::from(self.noise) + 1;
        let mut state = self
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(n.wrapping_mul(0xD1B5_4A32_D192_ED03))
            | 1;
        for Rgb(channels) in image.pixels_mut() {
            for c in channels.iter_mut() {
                // xorshift64*: fast, deterministic per (seed, frame).
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32;
                let delta = (r % span) as i16 - i16::from(self.noise);
                *c = (i16::from(*c) + delta).clamp(0, 255) as u8;
            }
        }
    }
}

/// The pixels of `rect` of `image` (clipped to the image), for making sprites.
pub fn crop(image: &RgbImage, rect: PixelRect) -> RgbImage {
    let x1 = rect.x.saturating_add(rect.width).min(image.width());
    let y1 = rect.y.saturating_add(rect.height).min(image.height());
    let (x0, y0) = (rect.x.min(x1), rect.y.min(y1));
    image::imageops::crop_imm(image, x0, y0, x1 - x0, y1 - y0).to_image()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn background() -> RgbImage {
        RgbImage::from_fn(200, 100, |x, y| Rgb([(x % 250) as u8, (y * 2) as u8, 90]))
    }

    fn sprite(class_id: u32) -> Sprite {
        Sprite {
            image: RgbImage::from_pixel(20, 10, Rgb([255, 0, 0])),
            class_id,
        }
    }

    fn camera(noise: u8, movers: Vec<Mover>) -> StaticCamera {
        StaticCamera::new(
            background(),
            vec![sprite(2), sprite(7)],
            movers,
            noise,
            90,
            42,
        )
        .expect("valid scene")
    }

    #[test]
    fn objects_move_by_their_velocity_and_are_the_ground_truth() {
        let cam = camera(
            0,
            vec![
                Mover {
                    sprite: 0,
                    start: (10.0, 20.0),
                    velocity: (5.0, 0.0),
                },
                Mover {
                    sprite: 1,
                    start: (100.0, 50.0),
                    velocity: (0.0, -2.5),
                },
            ],
        );
        let (frame, truth) = cam.frame(4);
        assert_eq!(truth.len(), 2);
        assert_eq!(
            truth[0],
            Truth {
                class_id: 2,
                bbox: BBox::new(30.0, 20.0, 50.0, 30.0)
            }
        );
        assert_eq!(
            truth[1],
            Truth {
                class_id: 7,
                bbox: BBox::new(100.0, 40.0, 120.0, 50.0)
            }
        );
        assert_eq!(*frame.get_pixel(35, 25), Rgb([255, 0, 0]));
        // Outside the objects the background is untouched without noise.
        assert_eq!(frame.get_pixel(5, 5), background().get_pixel(5, 5));
    }

    #[test]
    fn objects_leave_and_come_back_and_half_hidden_ones_are_not_truth() {
        let cam = camera(
            0,
            vec![Mover {
                sprite: 0,
                start: (170.0, 0.0),
                velocity: (10.0, 0.0),
            }],
        );
        // Frame 1: x = 180, 20 of 20 columns in view (180..200).
        assert_eq!(cam.frame(1).1.len(), 1);
        // Frame 2: x = 190, half in view: still truth; frame 3: x = 200, gone.
        assert_eq!(cam.frame(2).1[0].bbox, BBox::new(190.0, 0.0, 200.0, 10.0));
        assert!(cam.frame(3).1.is_empty());
        // A period is 200 + 20 px, 22 frames: back where it started.
        assert_eq!(cam.frame(22).1, cam.frame(0).1);
        // Frame 4: 170 + 40 = 210 wraps to -10: half in view on the left; frame 5 at x = 0.
        assert_eq!(cam.frame(4).1[0].bbox, BBox::new(0.0, 0.0, 10.0, 10.0));
        assert_eq!(cam.frame(5).1[0].bbox, BBox::new(0.0, 0.0, 20.0, 10.0));
    }

    #[test]
    fn noise_differs_per_frame_and_stays_within_bounds() {
        let cam = camera(4, Vec::new());
        let (a, _) = cam.frame(1);
        let (b, _) = cam.frame(2);
        assert_ne!(a, b, "no two frames are bit-identical");
        assert_eq!(cam.frame(1).0, a, "deterministic per frame");
        let clean = background();
        let worst = a
            .pixels()
            .zip(clean.pixels())
            .flat_map(|(p, q)| p.0.into_iter().zip(q.0).map(|(x, y)| x.abs_diff(y)))
            .max();
        assert_eq!(worst, Some(4));
        let (jpeg, _) = cam.jpeg(1).expect("encodes");
        let decoded = image::load_from_memory(&jpeg).expect("decodes").to_rgb8();
        assert_eq!(decoded.dimensions(), (200, 100));
    }

    #[test]
    fn invalid_scenes_are_refused_and_crops_are_clipped() {
        let bad = Mover {
            sprite: 5,
            start: (0.0, 0.0),
            velocity: (1.0, 0.0),
        };
        assert!(StaticCamera::new(background(), vec![sprite(0)], vec![bad], 0, 90, 1).is_err());
        let huge = Sprite {
            image: RgbImage::new(300, 10),
            class_id: 0,
        };
        let mover = Mover { sprite: 0, ..bad };
        assert!(StaticCamera::new(background(), vec![huge], vec![mover], 0, 90, 1).is_err());
        let piece = crop(&background(), PixelRect::new(190, 90, 50, 50));
        assert_eq!(piece.dimensions(), (10, 10));
        assert_eq!(piece.get_pixel(0, 0), background().get_pixel(190, 90));
    }
}
