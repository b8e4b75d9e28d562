//! Ultralytics YOLOv8 / YOLO11 output decoding.
//!
//! The output of one image is `(4 + num_classes) x anchors`, channel-major: the first `anchors`
//! values are every anchor's `cx`, then every `cy`, `w`, `h`, then one plane per class score
//! (sigmoid-activated). Boxes are already in model-input pixels; there is no objectness.

use crate::adapters::passes;
use crate::adapters::yolox::best_class;
use crate::detection::Detection;
use crate::geometry::BBox;

/// Decodes one image's output, appending every anchor whose best class score is at least
/// `score_threshold` to `out`, in model-input pixels (`x1, y1, x2, y2`). A tensor shorter than
/// `(4 + num_classes) * anchors` decodes nothing.
pub fn decode(
    output: &[f32],
    num_classes: usize,
    anchors: usize,
    score_threshold: f32,
    out: &mut Vec<Detection>,
) {
    let Some(needed) = (4 + num_classes).checked_mul(anchors) else {
        return;
    };
    if output.len() < needed || num_classes == 0 {
        return;
    }
    let plane = |c: usize| &output[c * anchors..(c + 1) * anchors];
    let (cxs, cys, ws, hs) = (plane(0), plane(1), plane(2), plane(3));
    let mut scores = vec![0.0f32; num_classes];
    for a in 0..anchors {
        for (c, s) in scores.iter_mut().enumerate() {
            *s = output[(4 + c) * anchors + a];
        }
        let Some((class_id, score)) = best_class(&scores) else {
            continue;
        };
        if !passes(score, score_threshold) {
            continue;
        }
        let (cx, cy, w, h) = (cxs[a], cys[a], ws[a], hs[a]);
        if !(cx.is_finite() && cy.is_finite() && w.is_finite() && h.is_finite()) {
            continue;
        }
        out.push(Detection {
            class_id,
            score,
            bbox: BBox::new(cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0),
        });
    }
}
