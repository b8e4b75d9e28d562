//! Models that end in NMS (TensorFlow Object Detection API exports, ONNX exports with an NMS
//! step): per image, the kept boxes `[K, 4]`, their scores `[K]` and classes `[K]`, padded to a
//! fixed `K`, and optionally how many rows are real (`count`). Nothing is left to decode but the
//! box encoding and the score threshold.

use crate::adapters::boxes::DetectionParams;
use crate::detection::Detection;

/// Decodes one image: the first `count` rows (all complete rows when `count` is `None` or larger)
/// are kept when their score passes the threshold and their class is a non-negative integer that
/// is not the background class. Classes are read as `f32` (integer outputs are converted by the
/// caller) and rounded.
pub fn decode(
    boxes: &[f32],
    scores: &[f32],
    classes: &[f32],
    count: Option<usize>,
    params: &DetectionParams,
    out: &mut Vec<Detection>,
) {
    let rows = boxes.chunks_exact(4).zip(scores).zip(classes);
    for ((raw_box, &score), &class) in rows.take(count.unwrap_or(usize::MAX)) {
        let rounded = class.round();
        // Padding rows carry class -1 (or NaN) in many exports.
        if !(rounded >= 0.0 && rounded <= u32::MAX as f32) {
            continue;
        }
        let class_id = rounded as u32;
        if params.background_class == Some(class_id) {
            continue;
        }
        params.push(class_id, score, raw_box, out);
    }
}

/// The number of real rows from a count tensor's value: `None` (use every row) for a value that
/// is not a finite non-negative number.
pub fn count_from(value: f32) -> Option<usize> {
    (value.is_finite() && value >= 0.0).then_some(value as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::boxes::BoxFormat;
    use crate::adapters::boxes::tests::params;
    use crate::geometry::BBox;

    #[test]
    fn keeps_the_counted_rows_above_the_threshold() {
        let p = params();
        let boxes = [
            0.0, 0.0, 10.0, 10.0, // kept
            5.0, 5.0, 20.0, 20.0, // score under the threshold
            1.0, 1.0, 2.0, 2.0, // beyond the count: padding
        ];
        let scores = [0.9, 0.3, 0.99];
        let classes = [3.0, 1.0, 0.0];
        let mut out = Vec::new();
        decode(&boxes, &scores, &classes, Some(2), &p, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].class_id, out[0].score), (3, 0.9));
        assert_eq!(out[0].bbox, BBox::new(0.0, 0.0, 10.0, 10.0));
        // Without a count every row is read.
        out.clear();
        decode(&boxes, &scores, &classes, None, &p, &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn tensorflow_style_normalised_yxyx_with_background() {
        let mut p = params();
        p.encoding.format = BoxFormat::Yxyx;
        p.encoding.normalized = true;
        p.background_class = Some(0);
        let boxes = [0.1, 0.2, 0.5, 0.4, 0.0, 0.0, 1.0, 1.0];
        let mut out = Vec::new();
        decode(&boxes, &[0.8, 0.8], &[1.0, 0.0], Some(2), &p, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].class_id, 1);
        assert_eq!(out[0].bbox, BBox::new(20.0, 5.0, 40.0, 25.0));
    }

    #[test]
    fn padding_and_garbage_rows_are_skipped() {
        let p = params();
        let mut out = Vec::new();
        let boxes = [0.0, 0.0, 1.0, 1.0].repeat(4);
        let classes = [-1.0, f32::NAN, 1e12, 0.4];
        decode(&boxes, &[0.9; 4], &classes, Some(100), &p, &mut out);
        assert_eq!(out.len(), 1, "only class 0.4 (rounded to 0) is real");
        assert_eq!(out[0].class_id, 0);
        assert_eq!(count_from(3.0), Some(3));
        assert_eq!(count_from(-1.0), None);
        assert_eq!(count_from(f32::NAN), None);
    }
}
