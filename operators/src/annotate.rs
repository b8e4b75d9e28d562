//! Drawing detections onto a frame (demo output, debugging): 2 px boxes coloured by class and a
//! filled label with 8x8 bitmap text. All drawing is clipped to the image; nothing here panics.

use font8x8::{BASIC_FONTS, LATIN_FONTS, UnicodeFonts};
use image::{Rgb, RgbImage};

use crate::detection::Detection;

/// Box outline thickness in pixels.
pub const LINE_WIDTH: i64 = 2;
/// Glyph size of the font, in pixels.
const GLYPH: i64 = 8;
/// Padding around label text, in pixels.
const LABEL_PAD: i64 = 2;

/// A fixed, high-contrast palette (Ultralytics' colours); a class keeps its colour everywhere.
const PALETTE: [[u8; 3]; 20] = [
    [255, 56, 56],
    [255, 157, 151],
    [255, 112, 31],
    [255, 178, 29],
    [207, 210, 49],
    [72, 249, 10],
    [146, 204, 23],
    [61, 219, 134],
    [26, 147, 52],
    [0, 212, 187],
    [44, 153, 168],
    [0, 194, 255],
    [52, 69, 147],
    [100, 115, 255],
    [0, 24, 236],
    [132, 56, 255],
    [82, 0, 133],
    [203, 56, 255],
    [255, 149, 200],
    [255, 55, 199],
];

/// The colour of a class.
pub fn class_color(class_id: u32) -> Rgb<u8> {
    Rgb(PALETTE[class_id as usize % PALETTE.len()])
}

/// Draws each detection as a hollow box with a filled label `"<label> <score>"` above it (inside
/// the box when there is no room above). Boxes are in frame pixels; anything outside the image,
/// inverted or non-finite is clipped or skipped.
pub fn draw_detections(
    image: &mut RgbImage,
    detections: &[Detection],
    label: impl Fn(u32) -> String,
) {
    for det in detections {
        let b = det.bbox;
        if !(b.x1.is_finite() && b.y1.is_finite() && b.x2.is_finite() && b.y2.is_finite()) {
            continue;
        }
        let color = class_color(det.class_id);
        let (x1, y1) = (to_px(b.x1.min(b.x2)), to_px(b.y1.min(b.y2)));
        let (x2, y2) = (to_px(b.x1.max(b.x2)), to_px(b.y1.max(b.y2)));
        draw_rect_outline(image, x1, y1, x2, y2, color);

        let text = format!("{} {:.2}", label(det.class_id), det.score);
        let text_w = GLYPH * text.chars().count() as i64;
        let box_h = GLYPH + 2 * LABEL_PAD;
        let top = if y1 - box_h >= 0 { y1 - box_h } else { y1 };
        let left = x1;
        fill_rect(
            image,
            left,
            top,
            left + text_w + 2 * LABEL_PAD,
            top + box_h,
            color,
        );
        draw_text(
            image,
            left + LABEL_PAD,
            top + LABEL_PAD,
            &text,
            text_color(color),
        );
    }
}

/// A float coordinate as an integer pixel, saturating far outside any image.
fn to_px(v: f32) -> i64 {
    v.round().clamp(-1.0e9, 1.0e9) as i64
}

/// Black or white, whichever reads better on `bg`.
fn text_color(bg: Rgb<u8>) -> Rgb<u8> {
    let [r, g, b] = bg.0;
    let luma = 299 * u32::from(r) + 587 * u32::from(g) + 114 * u32::from(b);
    if luma > 150_000 {
        Rgb([0, 0, 0])
    } else {
        Rgb([255, 255, 255])
    }
}

/// Fills `[x1, x2) x [y1, y2)`, clipped to the image.
fn fill_rect(image: &mut RgbImage, x1: i64, y1: i64, x2: i64, y2: i64, color: Rgb<u8>) {
    let (w, h) = (i64::from(image.width()), i64::from(image.height()));
    let (x1, x2) = (x1.clamp(0, w), x2.clamp(0, w));
    let (y1, y2) = (y1.clamp(0, h), y2.clamp(0, h));
    for y in y1..y2 {
        for x in x1..x2 {
            // In range by the clamps above; both fit in u32.
            image.put_pixel(x as u32, y as u32, color);
        }
    }
}

/// A `LINE_WIDTH` outline just inside `[x1, x2) x [y1, y2)` (at least one pixel wide).
fn draw_rect_outline(image: &mut RgbImage, x1: i64, y1: i64, x2: i64, y2: i64, color: Rgb<u8>) {
    let (x2, y2) = (x2.max(x1 + 1), y2.max(y1 + 1));
    let t = LINE_WIDTH;
    fill_rect(image, x1, y1, x2, (y1 + t).min(y2), color);
    fill_rect(image, x1, (y2 - t).max(y1), x2, y2, color);
    fill_rect(image, x1, y1, (x1 + t).min(x2), y2, color);
    fill_rect(image, (x2 - t).max(x1), y1, x2, y2, color);
}

/// Draws `text` with its top-left corner at `(x, y)`; characters without a glyph become `?`.
fn draw_text(image: &mut RgbImage, x: i64, y: i64, text: &str, color: Rgb<u8>) {
    let (w, h) = (i64::from(image.width()), i64::from(image.height()));
    for (i, ch) in text.chars().enumerate() {
        let gx = x + GLYPH * i as i64;
        if gx >= w {
            break;
        }
        let glyph = BASIC_FONTS
            .get(ch)
            .or_else(|| LATIN_FONTS.get(ch))
            .or_else(|| BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            let py = y + row as i64;
            if py < 0 || py >= h {
                continue;
            }
            for col in 0..GLYPH {
                let px = gx + col;
                if px >= 0 && px < w && bits & (1 << col) != 0 {
                    image.put_pixel(px as u32, py as u32, color);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::BBox;

    fn det(class_id: u32, x1: f32, y1: f32, x2: f32, y2: f32) -> Detection {
        Detection {
            class_id,
            score: 0.87,
            bbox: BBox::new(x1, y1, x2, y2),
        }
    }

    const BG: Rgb<u8> = Rgb([1, 2, 3]);

    #[test]
    fn draws_outline_and_label() {
        let mut image = RgbImage::from_pixel(100, 80, BG);
        draw_detections(&mut image, &[det(0, 20.0, 30.0, 60.0, 70.0)], |_| {
            "dog".into()
        });
        let color = class_color(0);
        // Outline, 2 px thick, on all four sides.
        for (x, y) in [
            (20, 50),
            (21, 50),
            (59, 50),
            (58, 50),
            (40, 30),
            (40, 31),
            (40, 69),
        ] {
            assert_eq!(*image.get_pixel(x, y), color, "({x}, {y})");
        }
        assert_eq!(*image.get_pixel(22, 50), BG);
        assert_eq!(*image.get_pixel(40, 50), BG);
        // Label above the box: 12 px high, background in the class colour with text pixels.
        let label_text = "dog 0.87";
        let label_w = 8 * label_text.len() as u32 + 4;
        let mut text_pixels = 0;
        for y in 18..30 {
            for x in 20..20 + label_w {
                let p = *image.get_pixel(x, y);
                if p == text_color(color) {
                    text_pixels += 1;
                } else {
                    assert_eq!(p, color, "({x}, {y})");
                }
            }
        }
        assert!(text_pixels > 20, "{text_pixels}");
        assert_eq!(*image.get_pixel(20, 17), BG);
    }

    #[test]
    fn label_goes_inside_when_no_room_above() {
        let mut image = RgbImage::from_pixel(100, 80, BG);
        draw_detections(&mut image, &[det(3, 10.0, 2.0, 90.0, 70.0)], |_| {
            String::new()
        });
        assert_eq!(*image.get_pixel(14, 10), class_color(3));
        assert_eq!(*image.get_pixel(14, 1), BG);
    }

    #[test]
    fn never_panics_on_odd_boxes() {
        let mut image = RgbImage::from_pixel(32, 16, BG);
        let odd = [
            det(0, -100.0, -100.0, 500.0, 500.0),
            det(1, 31.0, 15.0, 40.0, 40.0),
            det(2, 50.0, 50.0, 60.0, 60.0),
            det(3, 10.0, 10.0, 5.0, 5.0),
            det(4, f32::NAN, 0.0, 1.0, 1.0),
            det(5, f32::NEG_INFINITY, 0.0, f32::INFINITY, 1.0),
            det(6, -1.0e30, -1.0e30, 1.0e30, 1.0e30),
            det(u32::MAX, 0.0, 0.0, 0.0, 0.0),
        ];
        draw_detections(&mut image, &odd, |c| format!("class {c} é 日本"));
        let mut empty = RgbImage::new(0, 0);
        draw_detections(&mut empty, &odd, |_| "x".into());
        let mut single = RgbImage::new(1, 1);
        draw_detections(&mut single, &odd, |_| "x".into());
        // The last box, empty at the origin, still gets a 1 px outline.
        assert_eq!(*single.get_pixel(0, 0), class_color(u32::MAX));
    }

    #[test]
    fn colours_are_stable_per_class() {
        assert_eq!(class_color(0), class_color(20));
        assert_ne!(class_color(0), class_color(1));
        assert_eq!(text_color(Rgb([255, 255, 255])), Rgb([0, 0, 0]));
        assert_eq!(text_color(Rgb([0, 0, 0])), Rgb([255, 255, 255]));
    }
}
