//! YOLOv5 / YOLOv7 output decoding (exports with the Detect layer's decoding in the graph, and
//! YOLOX exported with `decode_in_inference`).
//!
//! The output of one image is `rows x (5 + num_classes)`, row-major: a box (by default
//! `cx, cy, w, h` in model-input pixels), objectness, then one score per class, all
//! sigmoid-activated by the export. A detection's score is `objectness * best class score`.

use crate::adapters::boxes::{Activation, BoxEncoding, BoxFormat, DetectionParams, sigmoid};
use crate::adapters::passes;
use crate::detection::Detection;

/// The box encoding YOLOv5 exports use unless the manifest says otherwise.
pub const DEFAULT_ENCODING: BoxEncoding = BoxEncoding {
    format: BoxFormat::Cxcywh,
    normalized: false,
};

/// Decodes one image's rows, appending every row whose `objectness * best class score` passes
/// the threshold. With `activation = sigmoid` (raw-logit exports) objectness and class scores
/// are activated first; a softmax applies to the class scores only. Only complete rows are read.
pub fn decode(
    output: &[f32],
    num_classes: usize,
    params: &DetectionParams,
    out: &mut Vec<Detection>,
) {
    if num_classes == 0 {
        return;
    }
    let Some(row_len) = num_classes.checked_add(5) else {
        return;
    };
    let mut scratch = Vec::new();
    for row in output.chunks_exact(row_len) {
        let objectness = match params.activation {
            Activation::Sigmoid => sigmoid(row[4]),
            Activation::None | Activation::Softmax => row[4],
        };
        // Scores are at most 1 after the activation: a row whose objectness is below the
        // threshold cannot pass (the common case, so the class scores are not read).
        if !objectness.is_finite() || !passes(objectness, params.score_threshold) {
            continue;
        }
        if let Some((class_id, class_score)) = params.best_class(&row[5..], &mut scratch) {
            params.push(class_id, objectness * class_score, &row[..4], out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::boxes::tests::params;
    use crate::geometry::BBox;

    fn yolov5_params() -> DetectionParams {
        DetectionParams {
            encoding: DEFAULT_ENCODING,
            ..params()
        }
    }

    #[test]
    fn decodes_rows_with_objectness() {
        #[rustfmt::skip]
        let output = [
            20.0, 15.0, 20.0, 10.0, 0.9, 0.1, 0.8, // 0.72, class 1
            50.0, 25.0, 10.0, 10.0, 0.4, 1.0, 0.0, // objectness under the threshold
            50.0, 25.0, 10.0, 10.0, 0.9, 0.5, 0.2, // 0.45 < 0.5
        ];
        let mut out = Vec::new();
        decode(&output, 2, &yolov5_params(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].class_id, 1);
        assert!((out[0].score - 0.72).abs() < 1e-6);
        assert_eq!(out[0].bbox, BBox::new(10.0, 10.0, 30.0, 20.0));
    }

    #[test]
    fn raw_logit_exports_are_activated() {
        let mut p = yolov5_params();
        p.activation = Activation::Sigmoid;
        let output = [20.0, 15.0, 20.0, 10.0, 3.0, -2.0, 2.0];
        let mut out = Vec::new();
        decode(&output, 2, &p, &mut out);
        assert_eq!(out.len(), 1);
        assert!((out[0].score - sigmoid(3.0) * sigmoid(2.0)).abs() < 1e-6);
    }

    #[test]
    fn truncated_or_non_finite_rows_decode_nothing() {
        let p = yolov5_params();
        let mut out = Vec::new();
        decode(&[1.0; 6], 2, &p, &mut out);
        decode(&[1.0; 7], 0, &p, &mut out);
        decode(&[1.0; 7], usize::MAX, &p, &mut out);
        decode(&[f32::NAN, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], 2, &p, &mut out);
        decode(&[1.0, 1.0, 1.0, 1.0, f32::NAN, 1.0, 1.0], 2, &p, &mut out);
        assert!(out.is_empty());
    }
}
