//! What detection exports disagree on: how a box is written (corners or centre, pixels or
//! fractions of the input), whether class scores still need an activation, and which class, if
//! any, means "background". The box adapters share these settings ([`DetectionParams`]).

use serde::{Deserialize, Serialize};

use crate::adapters::classifier::softmax_into;
use crate::adapters::passes;
use crate::detection::Detection;
use crate::geometry::BBox;

/// The order of a box's four numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoxFormat {
    /// Corners: `x1, y1, x2, y2` (torchvision, most ONNX exports with NMS).
    Xyxy,
    /// Corners, y first: `y1, x1, y2, x2` (TensorFlow Object Detection API).
    Yxyx,
    /// Centre and size: `cx, cy, w, h` (YOLO rows, DETR).
    Cxcywh,
    /// Top-left corner and size: `x, y, w, h` (COCO style).
    Xywh,
}

impl BoxFormat {
    /// Every format, in manifest order.
    pub const ALL: [BoxFormat; 4] = [Self::Xyxy, Self::Yxyx, Self::Cxcywh, Self::Xywh];

    /// The snake_case name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Xyxy => "xyxy",
            Self::Yxyx => "yxyx",
            Self::Cxcywh => "cxcywh",
            Self::Xywh => "xywh",
        }
    }
}

/// How a model writes boxes: the order of the numbers and their unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BoxEncoding {
    /// Order of the four numbers.
    pub format: BoxFormat,
    /// Fractions of the input size (`0..1`) instead of model-input pixels.
    pub normalized: bool,
}

impl BoxEncoding {
    /// The box in model-input pixels (`x1 <= x2`, `y1 <= y2`), or `None` when a value is not
    /// finite. Inverted corners are reordered rather than dropped: some exports write them so.
    pub fn to_bbox(&self, v: &[f32], input_width: u32, input_height: u32) -> Option<BBox> {
        let [a, b, c, d] = *v else {
            return None;
        };
        if !(a.is_finite() && b.is_finite() && c.is_finite() && d.is_finite()) {
            return None;
        }
        let (x1, y1, x2, y2) = match self.format {
            BoxFormat::Xyxy => (a, b, c, d),
            BoxFormat::Yxyx => (b, a, d, c),
            BoxFormat::Cxcywh => (a - c / 2.0, b - d / 2.0, a + c / 2.0, b + d / 2.0),
            BoxFormat::Xywh => (a, b, a + c, b + d),
        };
        let (sx, sy) = if self.normalized {
            (input_width as f32, input_height as f32)
        } else {
            (1.0, 1.0)
        };
        Some(BBox::new(
            x1.min(x2) * sx,
            y1.min(y2) * sy,
            x1.max(x2) * sx,
            y1.max(y2) * sy,
        ))
    }
}

/// The activation class scores still need (models that output logits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Scores are already probabilities.
    #[default]
    None,
    /// Independent per-class sigmoid (focal-loss detectors: RetinaNet, Deformable DETR,
    /// RT-DETR, RF-DETR, D-FINE).
    Sigmoid,
    /// Softmax over each row's classes (SSD, the original DETR with its no-object class).
    Softmax,
}

impl Activation {
    /// The snake_case name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Sigmoid => "sigmoid",
            Self::Softmax => "softmax",
        }
    }
}

/// Logistic sigmoid, saturating cleanly for large magnitudes.
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Settings shared by the box adapters, resolved from the manifest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectionParams {
    /// How boxes are written.
    pub encoding: BoxEncoding,
    /// Activation applied to class scores (and YOLOv5 objectness) before thresholding.
    pub activation: Activation,
    /// A class index that is never reported (SSD's background, DETR's no-object).
    pub background_class: Option<u32>,
    /// Model input width, for normalised boxes.
    pub input_width: u32,
    /// Model input height, for normalised boxes.
    pub input_height: u32,
    /// Minimum score kept.
    pub score_threshold: f32,
}

impl DetectionParams {
    /// The best reportable class of one row of raw class scores, after the activation:
    /// `(class, score)`, skipping the background class and non-finite scores (first on ties).
    /// `scratch` holds the softmax of the row, to avoid an allocation per row.
    pub fn best_class(&self, row: &[f32], scratch: &mut Vec<f32>) -> Option<(u32, f32)> {
        let scores: &[f32] = match self.activation {
            Activation::Softmax => {
                softmax_into(row, scratch);
                scratch
            }
            // The sigmoid is monotonic: pick on the raw values, activate only the winner.
            Activation::None | Activation::Sigmoid => row,
        };
        let mut best: Option<(u32, f32)> = None;
        for (i, &v) in scores.iter().enumerate() {
            let Ok(class) = u32::try_from(i) else {
                break;
            };
            if !v.is_finite() || self.background_class == Some(class) {
                continue;
            }
            if best.is_none_or(|(_, b)| v > b) {
                best = Some((class, v));
            }
        }
        best.map(|(class, v)| match self.activation {
            Activation::Sigmoid => (class, sigmoid(v)),
            Activation::None | Activation::Softmax => (class, v),
        })
    }

    /// Appends a detection when `score` passes the threshold and the box is finite.
    pub fn push(&self, class_id: u32, score: f32, raw_box: &[f32], out: &mut Vec<Detection>) {
        if !score.is_finite() || !passes(score, self.score_threshold) {
            return;
        }
        if let Some(bbox) = self
            .encoding
            .to_bbox(raw_box, self.input_width, self.input_height)
        {
            out.push(Detection {
                class_id,
                score,
                bbox,
            });
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Pixel corners, no activation, no background, 100x50 input, threshold 0.5.
    pub(crate) fn params() -> DetectionParams {
        DetectionParams {
            encoding: BoxEncoding {
                format: BoxFormat::Xyxy,
                normalized: false,
            },
            activation: Activation::None,
            background_class: None,
            input_width: 100,
            input_height: 50,
            score_threshold: 0.5,
        }
    }

    /// Asserts `b` is `want` (`x1, y1, x2, y2`) up to float rounding.
    pub(crate) fn assert_box(b: BBox, want: [f32; 4]) {
        let got = [b.x1, b.y1, b.x2, b.y2];
        assert!(
            got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-3),
            "{got:?} vs {want:?}"
        );
    }

    #[test]
    fn every_format_decodes_the_same_box() {
        // The box (10, 5)-(30, 25) of a 100x50 input, written every way.
        let cases = [
            (BoxFormat::Xyxy, false, [10.0, 5.0, 30.0, 25.0]),
            (BoxFormat::Yxyx, false, [5.0, 10.0, 25.0, 30.0]),
            (BoxFormat::Cxcywh, false, [20.0, 15.0, 20.0, 20.0]),
            (BoxFormat::Xywh, false, [10.0, 5.0, 20.0, 20.0]),
            (BoxFormat::Xyxy, true, [0.1, 0.1, 0.3, 0.5]),
            (BoxFormat::Yxyx, true, [0.1, 0.1, 0.5, 0.3]),
            (BoxFormat::Cxcywh, true, [0.2, 0.3, 0.2, 0.4]),
            (BoxFormat::Xywh, true, [0.1, 0.1, 0.2, 0.4]),
        ];
        for (format, normalized, v) in cases {
            let b = BoxEncoding { format, normalized }
                .to_bbox(&v, 100, 50)
                .expect("finite");
            for (got, want) in [(b.x1, 10.0), (b.y1, 5.0), (b.x2, 30.0), (b.y2, 25.0)] {
                assert!((got - want).abs() < 1e-4, "{format:?} {normalized}: {b:?}");
            }
        }
    }

    #[test]
    fn inverted_corners_are_reordered_and_non_finite_boxes_dropped() {
        let enc = params().encoding;
        assert_eq!(
            enc.to_bbox(&[30.0, 25.0, 10.0, 5.0], 100, 50),
            Some(BBox::new(10.0, 5.0, 30.0, 25.0))
        );
        assert_eq!(enc.to_bbox(&[f32::NAN, 0.0, 1.0, 1.0], 100, 50), None);
        assert_eq!(enc.to_bbox(&[0.0, 0.0, f32::INFINITY, 1.0], 100, 50), None);
        assert_eq!(enc.to_bbox(&[0.0, 0.0, 1.0], 100, 50), None);
    }

    #[test]
    fn best_class_skips_background_and_applies_the_activation() {
        let mut scratch = Vec::new();
        let mut p = params();
        let row = [0.9, 0.2, 0.7];
        assert_eq!(p.best_class(&row, &mut scratch), Some((0, 0.9)));
        p.background_class = Some(0);
        assert_eq!(p.best_class(&row, &mut scratch), Some((2, 0.7)));

        p.activation = Activation::Sigmoid;
        let (class, score) = p.best_class(&[0.0, 2.0, -1.0], &mut scratch).expect("one");
        assert_eq!(class, 1);
        assert!((score - sigmoid(2.0)).abs() < 1e-7);

        // Softmax over all columns, the background included, then the best other class.
        p.activation = Activation::Softmax;
        p.background_class = Some(2);
        let (class, score) = p.best_class(&[1.0, 0.0, 3.0], &mut scratch).expect("one");
        let total = 1f32.exp() + 1.0 + 3f32.exp();
        assert_eq!(class, 0);
        assert!((score - 1f32.exp() / total).abs() < 1e-6);

        p.activation = Activation::None;
        p.background_class = None;
        assert_eq!(p.best_class(&[f32::NAN, f32::NAN], &mut scratch), None);
        assert_eq!(p.best_class(&[], &mut scratch), None);
    }

    #[test]
    fn sigmoid_is_stable() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!((sigmoid(100.0) - 1.0).abs() < 1e-7);
        assert!(sigmoid(-100.0) >= 0.0 && sigmoid(-100.0) < 1e-30);
        assert!((sigmoid(1.0) + sigmoid(-1.0) - 1.0).abs() < 1e-7);
    }

    #[test]
    fn push_thresholds_and_drops_non_finite() {
        let p = params();
        let mut out = Vec::new();
        p.push(1, 0.4, &[0.0, 0.0, 1.0, 1.0], &mut out);
        p.push(1, f32::NAN, &[0.0, 0.0, 1.0, 1.0], &mut out);
        p.push(1, 0.9, &[0.0, f32::NAN, 1.0, 1.0], &mut out);
        assert!(out.is_empty());
        p.push(1, 0.5, &[0.0, 0.0, 1.0, 1.0], &mut out);
        assert_eq!(out.len(), 1);
    }
}
