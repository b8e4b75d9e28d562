//! DETR-family set prediction (DETR, Deformable DETR, RT-DETR, RF-DETR, D-FINE): a fixed set of
//! queries, each with a box and class logits, and no NMS (the model's matching loss already
//! removes duplicates). Per image: boxes `[queries, 4]`, by default normalised `cx, cy, w, h`,
//! and logits `[queries, classes]`, by default sigmoid-activated (the focal-loss members of the
//! family). The original DETR uses a softmax with a trailing no-object class: set
//! `activation = "softmax"` and `background_class` to that column.

use crate::adapters::boxes::{Activation, BoxEncoding, BoxFormat, DetectionParams};
use crate::detection::Detection;

/// The box encoding DETR exports use unless the manifest says otherwise.
pub const DEFAULT_ENCODING: BoxEncoding = BoxEncoding {
    format: BoxFormat::Cxcywh,
    normalized: true,
};

/// The activation DETR exports need unless the manifest says otherwise.
pub const DEFAULT_ACTIVATION: Activation = Activation::Sigmoid;

/// Decodes one image's queries: each query is kept with its best non-background class when the
/// activated score passes the threshold. The same per-row rule as separate boxes and scores,
/// with DETR's defaults resolved by the manifest.
pub fn decode(
    boxes: &[f32],
    logits: &[f32],
    num_classes: usize,
    params: &DetectionParams,
    out: &mut Vec<Detection>,
) {
    crate::adapters::boxes_scores::decode(boxes, logits, num_classes, params, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::boxes::tests::{assert_box, params};

    #[test]
    fn sigmoid_queries_with_normalised_centres() {
        let mut p = params();
        p.encoding = DEFAULT_ENCODING;
        p.activation = DEFAULT_ACTIVATION;
        // Two queries, 3 classes: the first finds class 2 (sigmoid(3) = 0.95), the second nothing.
        let boxes = [0.25, 0.5, 0.1, 0.2, 0.5, 0.5, 1.0, 1.0];
        let logits = [-4.0, -1.0, 3.0, -2.0, -3.0, -5.0];
        let mut out = Vec::new();
        decode(&boxes, &logits, 3, &p, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].class_id, 2);
        assert!((out[0].score - 0.952_574_1).abs() < 1e-6);
        assert_box(out[0].bbox, [20.0, 20.0, 30.0, 30.0]);
    }

    #[test]
    fn softmax_with_a_no_object_class() {
        let mut p = params();
        p.encoding = DEFAULT_ENCODING;
        p.activation = Activation::Softmax;
        p.background_class = Some(2);
        // Query 0: logits [2, 0, 1] give [0.665, 0.090, 0.245]: class 0 at 0.665 is reported.
        // Query 1: no-object takes 0.84 of [0, 1, 3], leaving class 1 at 0.11, under 0.5.
        let boxes = [0.5, 0.5, 0.2, 0.2, 0.5, 0.5, 0.2, 0.2];
        let logits = [2.0, 0.0, 1.0, 0.0, 1.0, 3.0];
        let mut out = Vec::new();
        decode(&boxes, &logits, 3, &p, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].class_id, 0);
        assert!(
            (out[0].score - 0.665_240_9).abs() < 1e-5,
            "{}",
            out[0].score
        );
    }
}
