//! Separate box and score outputs, decoding done in the graph: boxes `[N, 4]` and class scores
//! `[N, classes]` per image (SSD, RetinaNet, SSD-style face detectors such as UltraFace). How the
//! boxes are written, whether scores are logits and which class is background vary by export and
//! come from the manifest ([`DetectionParams`]).

use crate::adapters::boxes::DetectionParams;
use crate::detection::Detection;

/// Decodes one image: row `i` of `boxes` (4 values) and of `scores` (`num_classes` values) is one
/// candidate, kept with its best non-background class when that class's score passes the
/// threshold. Only the rows complete in both tensors are read.
pub fn decode(
    boxes: &[f32],
    scores: &[f32],
    num_classes: usize,
    params: &DetectionParams,
    out: &mut Vec<Detection>,
) {
    if num_classes == 0 {
        return;
    }
    let mut scratch = Vec::new();
    for (raw_box, row) in boxes.chunks_exact(4).zip(scores.chunks_exact(num_classes)) {
        if let Some((class_id, score)) = params.best_class(row, &mut scratch) {
            params.push(class_id, score, raw_box, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::boxes::tests::{assert_box, params};
    use crate::adapters::boxes::{Activation, BoxFormat};
    use crate::geometry::BBox;

    #[test]
    fn decodes_rows_with_background_and_threshold() {
        let mut p = params();
        p.background_class = Some(0);
        // Three candidates, classes: background, face.
        let boxes = [
            10.0, 5.0, 30.0, 25.0, // background wins: skipped class, face 0.3 < 0.5
            0.0, 0.0, 50.0, 40.0, // face 0.8
            1.0, 1.0, 2.0, 2.0, // face 0.55
        ];
        let scores = [0.7, 0.3, 0.2, 0.8, 0.45, 0.55];
        let mut out = Vec::new();
        decode(&boxes, &scores, 2, &p, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].class_id, out[0].score), (1, 0.8));
        assert_eq!(out[0].bbox, BBox::new(0.0, 0.0, 50.0, 40.0));
        assert_eq!((out[1].class_id, out[1].score), (1, 0.55));
    }

    #[test]
    fn normalised_centre_boxes_with_logits() {
        let mut p = params();
        p.encoding.format = BoxFormat::Cxcywh;
        p.encoding.normalized = true;
        p.activation = Activation::Sigmoid;
        let mut out = Vec::new();
        decode(&[0.5, 0.5, 0.2, 0.4], &[-3.0, 2.0], 2, &p, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].class_id, 1);
        assert_box(out[0].bbox, [40.0, 15.0, 60.0, 35.0]);
    }

    #[test]
    fn mismatched_or_degenerate_tensors_decode_what_is_complete() {
        let p = params();
        let mut out = Vec::new();
        // Two boxes but scores for one row only.
        decode(
            &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 2.0, 2.0],
            &[0.9, 0.1],
            2,
            &p,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        decode(&[0.0; 8], &[0.9; 4], 0, &p, &mut out);
        decode(&[0.0; 3], &[0.9; 4], 2, &p, &mut out);
        decode(&[f32::NAN; 4], &[0.9, 0.9], 2, &p, &mut out);
        assert_eq!(out.len(), 1);
    }
}
