//! Axis-aligned boxes and pixel rectangles shared by every operator.

use serde::{Deserialize, Serialize};

/// An axis-aligned box in frame or model-input pixels, corners `(x1, y1)` and `(x2, y2)`, with
/// `x2 >= x1` and `y2 >= y1` for a well-formed box. Coordinates are continuous: a box covering
/// pixel column 0 only is `x1 = 0, x2 = 1`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    /// Left edge.
    pub x1: f32,
    /// Top edge.
    pub y1: f32,
    /// Right edge.
    pub x2: f32,
    /// Bottom edge.
    pub y2: f32,
}

impl BBox {
    /// A box from its corners (not reordered; see [`BBox::is_empty`]).
    pub const fn new(x1: f32, y1: f32, x2: f32, y2: f32) -> Self {
        Self { x1, y1, x2, y2 }
    }

    /// Width, never negative (0 for an inverted or NaN box).
    pub fn width(&self) -> f32 {
        non_negative(self.x2 - self.x1)
    }

    /// Height, never negative (0 for an inverted or NaN box).
    pub fn height(&self) -> f32 {
        non_negative(self.y2 - self.y1)
    }

    /// Area, never negative.
    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }

    /// True when the box has no area (zero, inverted or non-finite extent).
    pub fn is_empty(&self) -> bool {
        let area = self.area();
        area.is_nan() || area <= 0.0
    }

    /// Area of the intersection with `other` (0 when they do not overlap).
    pub fn intersection(&self, other: &BBox) -> f32 {
        let w = non_negative(self.x2.min(other.x2) - self.x1.max(other.x1));
        let h = non_negative(self.y2.min(other.y2) - self.y1.max(other.y1));
        w * h
    }

    /// Intersection over union, in `[0, 1]`; 0 when the union is empty.
    pub fn iou(&self, other: &BBox) -> f32 {
        let inter = self.intersection(other);
        let union = self.area() + other.area() - inter;
        ratio(inter, union)
    }

    /// Intersection over the smaller of the two areas (SAHI's IOS), in `[0, 1]`; 0 when either box
    /// is empty.
    pub fn ios(&self, other: &BBox) -> f32 {
        let inter = self.intersection(other);
        ratio(inter, self.area().min(other.area()))
    }

    /// The smallest box containing both boxes.
    pub fn union_box(&self, other: &BBox) -> BBox {
        BBox {
            x1: self.x1.min(other.x1),
            y1: self.y1.min(other.y1),
            x2: self.x2.max(other.x2),
            y2: self.y2.max(other.y2),
        }
    }

    /// The box clamped to the frame `[0, width] x [0, height]`. NaN coordinates become 0.
    pub fn clamp_to(&self, width: u32, height: u32) -> BBox {
        let w = width as f32;
        let h = height as f32;
        let c = |v: f32, max: f32| if v.is_nan() { 0.0 } else { v.clamp(0.0, max) };
        BBox {
            x1: c(self.x1, w),
            y1: c(self.y1, h),
            x2: c(self.x2, w),
            y2: c(self.y2, h),
        }
    }
}

/// `v` if positive, else 0 (also for NaN).
fn non_negative(v: f32) -> f32 {
    if v > 0.0 { v } else { 0.0 }
}

/// `num / den` clamped to `[0, 1]`, 0 when the denominator is not positive.
fn ratio(num: f32, den: f32) -> f32 {
    if den > 0.0 {
        (num / den).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// A rectangle of whole pixels: columns `x..x + width`, rows `y..y + height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PixelRect {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl PixelRect {
    /// A rectangle from its top-left corner and size.
    pub const fn new(x: u32, y: u32, width: u32, height: u32) -> Self {
        Self {
            x,
            y,
            width,
            height,
        }
    }

    /// True when the rectangle is non-empty and lies inside a `frame_width x frame_height` frame.
    pub fn fits_in(&self, frame_width: u32, frame_height: u32) -> bool {
        self.width > 0
            && self.height > 0
            && u64::from(self.x) + u64::from(self.width) <= u64::from(frame_width)
            && u64::from(self.y) + u64::from(self.height) <= u64::from(frame_height)
    }

    /// The rectangle as a continuous box.
    pub fn to_bbox(&self) -> BBox {
        BBox::new(
            self.x as f32,
            self.y as f32,
            (u64::from(self.x) + u64::from(self.width)) as f32,
            (u64::from(self.y) + u64::from(self.height)) as f32,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn sizes_and_area() {
        let b = BBox::new(1.0, 2.0, 4.0, 6.0);
        assert_eq!((b.width(), b.height(), b.area()), (3.0, 4.0, 12.0));
        assert!(!b.is_empty());
        let inverted = BBox::new(4.0, 6.0, 1.0, 2.0);
        assert_eq!(inverted.area(), 0.0);
        assert!(inverted.is_empty());
        assert!(BBox::new(0.0, 0.0, 0.0, 5.0).is_empty());
        assert!(BBox::new(f32::NAN, 0.0, 1.0, 1.0).is_empty());
        assert!(BBox::new(0.0, 0.0, f32::INFINITY, 0.0).is_empty());
    }

    #[test]
    fn intersection_iou_ios() {
        let a = BBox::new(0.0, 0.0, 10.0, 10.0);
        let b = BBox::new(5.0, 5.0, 15.0, 15.0);
        assert_eq!(a.intersection(&b), 25.0);
        assert!(close(a.iou(&b), 25.0 / 175.0));
        assert!(close(a.ios(&b), 0.25));
        assert_eq!(a.iou(&a), 1.0);

        let inner = BBox::new(2.0, 2.0, 4.0, 4.0);
        assert!(close(a.iou(&inner), 4.0 / 100.0));
        assert_eq!(a.ios(&inner), 1.0);
        assert_eq!(inner.ios(&a), 1.0);

        let apart = BBox::new(20.0, 20.0, 30.0, 30.0);
        assert_eq!(a.intersection(&apart), 0.0);
        assert_eq!(a.iou(&apart), 0.0);
        assert_eq!(a.ios(&apart), 0.0);
        // Touching edges do not overlap.
        let touching = BBox::new(10.0, 0.0, 20.0, 10.0);
        assert_eq!(a.iou(&touching), 0.0);

        let empty = BBox::new(3.0, 3.0, 3.0, 3.0);
        assert_eq!(a.iou(&empty), 0.0);
        assert_eq!(a.ios(&empty), 0.0);
        assert_eq!(empty.iou(&empty), 0.0);
    }

    #[test]
    fn union_and_clamp() {
        let a = BBox::new(0.0, 5.0, 10.0, 10.0);
        let b = BBox::new(5.0, 0.0, 20.0, 8.0);
        assert_eq!(a.union_box(&b), BBox::new(0.0, 0.0, 20.0, 10.0));
        let c = BBox::new(-5.0, -1.0, 700.0, f32::NAN).clamp_to(640, 480);
        assert_eq!(c, BBox::new(0.0, 0.0, 640.0, 0.0));
        let d = BBox::new(f32::NEG_INFINITY, 10.0, f32::INFINITY, 20.0).clamp_to(100, 100);
        assert_eq!(d, BBox::new(0.0, 10.0, 100.0, 20.0));
    }

    #[test]
    fn pixel_rect() {
        let r = PixelRect::new(10, 20, 30, 40);
        assert!(r.fits_in(40, 60));
        assert!(!r.fits_in(39, 60));
        assert!(!r.fits_in(40, 59));
        assert!(!PixelRect::new(0, 0, 0, 1).fits_in(10, 10));
        assert!(!PixelRect::new(u32::MAX, 0, 2, 1).fits_in(u32::MAX, 10));
        assert_eq!(r.to_bbox(), BBox::new(10.0, 20.0, 40.0, 60.0));
    }
}
