//! Ultralytics YOLOv8 / YOLO11 output decoding.
//!
//! The output of one image is `(4 + num_classes) x anchors`, channel-major: the first `anchors`
//! values are every anchor's `cx`, then every `cy`, `w`, `h`, then one plane per class score
//! (sigmoid-activated). Boxes are already in model-input pixels; there is no objectness.

use crate::adapters::passes;
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
    let Some(needed) = num_classes
        .checked_add(4)
        .and_then(|channels| channels.checked_mul(anchors))
    else {
        return;
    };
    if output.len() < needed || num_classes == 0 {
        return;
    }
    let plane = |c: usize| &output[c * anchors..(c + 1) * anchors];
    let (cxs, cys, ws, hs) = (plane(0), plane(1), plane(2), plane(3));
    for a in 0..anchors {
        // Best finite class score of this anchor (first on ties), read down the class planes.
        let mut best: Option<(usize, f32)> = None;
        for c in 0..num_classes {
            let v = output[(4 + c) * anchors + a];
            if v.is_finite() && best.is_none_or(|(_, b)| v > b) {
                best = Some((c, v));
            }
        }
        let Some((class, score)) = best else {
            continue;
        };
        let Ok(class_id) = u32::try_from(class) else {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_channel_major_output() {
        // 3 classes, 4 anchors: rows cx, cy, w, h, c0, c1, c2.
        #[rustfmt::skip]
        let output = [
            10.0, 20.0, 30.0, 40.0, // cx
            10.0, 20.0, 30.0, 40.0, // cy
            4.0,  4.0,  8.0,  8.0,  // w
            2.0,  2.0,  2.0,  2.0,  // h
            0.9,  0.1,  0.1,  0.0,  // class 0
            0.0,  0.2,  0.7,  0.0,  // class 1
            0.0,  0.3,  0.1,  0.0,  // class 2
        ];
        let mut out = Vec::new();
        decode(&output, 3, 4, 0.25, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!((out[0].class_id, out[0].score), (0, 0.9));
        assert_eq!(out[0].bbox, BBox::new(8.0, 9.0, 12.0, 11.0));
        assert_eq!((out[1].class_id, out[1].score), (2, 0.3));
        assert_eq!((out[2].class_id, out[2].score), (1, 0.7));
        assert_eq!(out[2].bbox, BBox::new(26.0, 29.0, 34.0, 31.0));
    }

    #[test]
    fn short_or_degenerate_outputs_decode_nothing() {
        let mut out = Vec::new();
        decode(&[1.0; 27], 3, 4, 0.1, &mut out);
        decode(&[1.0; 28], 0, 7, 0.1, &mut out);
        decode(&[1.0; 28], 3, usize::MAX, 0.1, &mut out);
        decode(&[1.0; 28], usize::MAX, 4, 0.1, &mut out);
        decode(&[f32::NAN; 28], 3, 4, 0.1, &mut out);
        assert!(out.is_empty());
    }
}
