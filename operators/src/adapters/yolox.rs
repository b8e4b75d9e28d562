//! YOLOX output decoding (Ge et al., 2021), for exports without the decode step in the graph
//! (the official ONNX exports, `decode_in_inference=False`).
//!
//! The output of one image is `rows x (5 + num_classes)`: `x, y, w, h, objectness, class scores`,
//! where the rows walk the grids of strides 8, 16 and 32 in order, each row-major. Objectness and
//! class scores are already sigmoid-activated in the official export.

use crate::adapters::passes;
use crate::detection::Detection;
use crate::geometry::BBox;

/// Strides of the three YOLOX heads, in output order.
pub const STRIDES: [u32; 3] = [8, 16, 32];

/// Number of output rows for a model input of `input_width x input_height`.
pub fn num_rows(input_width: u32, input_height: u32) -> usize {
    STRIDES
        .iter()
        .map(|&s| (input_width / s) as usize * (input_height / s) as usize)
        .sum()
}

/// Decodes one image's output, appending every box whose `objectness * best class score` is at
/// least `score_threshold` to `out`, in model-input pixels (`x1, y1, x2, y2`). Rows beyond the
/// grid or a truncated last row are ignored; non-finite values are skipped.
pub fn decode(
    output: &[f32],
    num_classes: usize,
    input_width: u32,
    input_height: u32,
    score_threshold: f32,
    out: &mut Vec<Detection>,
) {
    let stride_len = 5 + num_classes;
    let mut rows = output.chunks_exact(stride_len);
    for &stride in &STRIDES {
        let grid_w = input_width / stride;
        let grid_h = input_height / stride;
        let s = stride as f32;
        for gy in 0..grid_h {
            for gx in 0..grid_w {
                let Some(row) = rows.next() else {
                    return;
                };
                let objectness = row[4];
                if !passes(objectness, score_threshold) || num_classes == 0 {
                    // score = obj * cls <= obj, so it cannot pass either.
                    continue;
                }
                let Some((class_id, class_score)) = best_class(&row[5..]) else {
                    continue;
                };
                let score = objectness * class_score;
                if !passes(score, score_threshold) || !score.is_finite() {
                    continue;
                }
                let cx = (row[0] + gx as f32) * s;
                let cy = (row[1] + gy as f32) * s;
                let w = row[2].exp() * s;
                let h = row[3].exp() * s;
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
    }
}

/// Index and value of the largest finite score (first on ties), `None` if none is finite.
pub(crate) fn best_class(scores: &[f32]) -> Option<(u32, f32)> {
    let mut best: Option<(u32, f32)> = None;
    for (i, &v) in scores.iter().enumerate() {
        if !v.is_finite() {
            continue;
        }
        match best {
            Some((_, b)) if v <= b => {}
            _ => best = Some((u32::try_from(i).ok()?, v)),
        }
    }
    best
}
