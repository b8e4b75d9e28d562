//! Image classification: top-k over logits, with an optional numerically stable softmax.

use std::cmp::Ordering;

use crate::detection::Classification;

/// The `k` best classes, best first (ties: lower class id first). With `softmax`, scores are
/// probabilities computed as `exp(x - max) / sum` (stable for large logits); otherwise the raw
/// values. Non-finite logits are treated as impossible classes (probability 0, never ranked
/// above a finite one).
pub fn top_k(logits: &[f32], k: usize, softmax: bool) -> Vec<Classification> {
    let k = k.min(logits.len());
    if k == 0 {
        return Vec::new();
    }
    let scores: Vec<f32> = if softmax {
        softmax_stable(logits)
    } else {
        logits
            .iter()
            .map(|&v| if v.is_nan() { f32::NEG_INFINITY } else { v })
            .collect()
    };
    let mut ranked: Vec<Classification> = scores
        .iter()
        .enumerate()
        .filter_map(|(i, &score)| {
            Some(Classification {
                class_id: u32::try_from(i).ok()?,
                score,
            })
        })
        .collect();
    let order = |a: &Classification, b: &Classification| -> Ordering {
        b.score
            .total_cmp(&a.score)
            .then(a.class_id.cmp(&b.class_id))
    };
    if k < ranked.len() {
        ranked.select_nth_unstable_by(k - 1, order);
        ranked.truncate(k);
    }
    ranked.sort_by(order);
    ranked
}

/// Softmax over the finite logits; non-finite logits get 0.
fn softmax_stable(logits: &[f32]) -> Vec<f32> {
    let max = logits
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return vec![0.0; logits.len()];
    }
    let exps: Vec<f32> = logits
        .iter()
        .map(|&v| if v.is_finite() { (v - max).exp() } else { 0.0 })
        .collect();
    // Accumulate in f64: thousands of classes sum without visible rounding.
    let sum: f64 = exps.iter().map(|&e| f64::from(e)).sum();
    // sum >= 1 because the max term is exp(0) = 1.
    exps.iter().map(|&e| (f64::from(e) / sum) as f32).collect()
}
