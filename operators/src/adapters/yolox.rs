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
/// grid or a truncated last row are ignored; non-finite values are skipped. Scores are expected
/// in `[0, 1]` (sigmoid outputs), so a row whose objectness is below the threshold is skipped
/// without looking at its class scores.
pub fn decode(
    output: &[f32],
    num_classes: usize,
    input_width: u32,
    input_height: u32,
    score_threshold: f32,
    out: &mut Vec<Detection>,
) {
    let Some(row_len) = num_classes.checked_add(5) else {
        return;
    };
    let mut rows = output.chunks_exact(row_len);
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

#[cfg(test)]
mod tests {
    use super::*;

    const NC: usize = 2;

    /// A 64x64 output (8x8 + 4x4 + 2x2 = 84 rows) with every score zero.
    fn empty_output() -> Vec<f32> {
        vec![0.0; num_rows(64, 64) * (5 + NC)]
    }

    fn set_row(output: &mut [f32], row: usize, values: [f32; 5 + NC]) {
        output[row * (5 + NC)..(row + 1) * (5 + NC)].copy_from_slice(&values);
    }

    #[test]
    fn rows_for_common_sizes() {
        assert_eq!(num_rows(64, 64), 84);
        assert_eq!(num_rows(416, 416), 3549);
        assert_eq!(num_rows(640, 640), 8400);
    }

    #[test]
    fn decodes_a_known_cell() {
        let mut output = empty_output();
        // Stride 16 grid starts after the 64 rows of stride 8; cell (gx = 1, gy = 2).
        let row = 64 + 2 * 4 + 1;
        set_row(&mut output, row, [0.5, 0.5, 2f32.ln(), 0.0, 0.9, 0.2, 0.8]);
        let mut out = Vec::new();
        decode(&output, NC, 64, 64, 0.5, &mut out);
        assert_eq!(out.len(), 1);
        let d = out[0];
        assert_eq!(d.class_id, 1);
        assert!((d.score - 0.72).abs() < 1e-6);
        // centre (1.5 * 16, 2.5 * 16) = (24, 40), size (32, 16).
        let b = d.bbox;
        for (got, want) in [(b.x1, 8.0), (b.y1, 32.0), (b.x2, 40.0), (b.y2, 48.0)] {
            assert!((got - want).abs() < 1e-4, "{b:?}");
        }
    }

    #[test]
    fn first_and_last_cells_use_their_strides() {
        let mut output = empty_output();
        set_row(&mut output, 0, [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
        set_row(&mut output, 83, [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0]);
        let mut out = Vec::new();
        decode(&output, NC, 64, 64, 0.5, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].bbox, BBox::new(-4.0, -4.0, 4.0, 4.0));
        assert_eq!(out[0].class_id, 0);
        // Last stride-32 cell (1, 1): centre (32, 32), size 32.
        assert_eq!(out[1].bbox, BBox::new(16.0, 16.0, 48.0, 48.0));
        assert_eq!(out[1].class_id, 1);
    }

    #[test]
    fn truncated_output_decodes_its_complete_rows() {
        let mut output = empty_output();
        set_row(&mut output, 1, [0.0, 0.0, 0.0, 0.0, 0.9, 0.9, 0.0]);
        let mut out = Vec::new();
        decode(&output[..2 * (5 + NC) + 3], NC, 64, 64, 0.5, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bbox, BBox::new(4.0, -4.0, 12.0, 4.0));
    }

    #[test]
    fn threshold_applies_to_the_product() {
        let mut output = empty_output();
        set_row(&mut output, 5, [0.0, 0.0, 0.0, 0.0, 0.6, 0.6, 0.0]); // 0.36
        let mut out = Vec::new();
        decode(&output, NC, 64, 64, 0.4, &mut out);
        assert!(out.is_empty());
        decode(&output, NC, 64, 64, 0.3, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn malformed_outputs_do_not_panic() {
        let mut out = Vec::new();
        decode(&[], NC, 64, 64, 0.1, &mut out);
        decode(&[1.0; 6], NC, 64, 64, 0.1, &mut out); // less than one row
        decode(&[1.0; 1000], 0, 64, 64, 0.1, &mut out);
        decode(&[f32::NAN; 600], NC, 64, 64, 0.1, &mut out);
        decode(&[1.0e30; 600], NC, 64, 64, 0.1, &mut out); // exp overflows: skipped
        decode(&[1.0; 600], NC, 0, 0, 0.1, &mut out);
        decode(&[1.0; 600], usize::MAX, 64, 64, 0.1, &mut out);
        decode(&[1.0; 600], NC, 64, 64, f32::NAN, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn best_class_ignores_non_finite() {
        assert_eq!(best_class(&[]), None);
        assert_eq!(best_class(&[f32::NAN, f32::INFINITY]), None);
        assert_eq!(best_class(&[0.1, f32::NAN, 0.3, 0.3]), Some((2, 0.3)));
    }
}
