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
pub(crate) fn softmax_stable(logits: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(logits.len());
    softmax_into(logits, &mut out);
    out
}

/// [`softmax_stable`] into `out` (cleared first), so per-row callers reuse one buffer.
pub(crate) fn softmax_into(logits: &[f32], out: &mut Vec<f32>) {
    out.clear();
    let max = logits
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        out.resize(logits.len(), 0.0);
        return;
    }
    out.extend(
        logits
            .iter()
            .map(|&v| if v.is_finite() { (v - max).exp() } else { 0.0 }),
    );
    // Accumulate in f64: thousands of classes sum without visible rounding.
    let sum: f64 = out.iter().map(|&e| f64::from(e)).sum();
    // sum >= 1 because the max term is exp(0) = 1.
    for e in out.iter_mut() {
        *e = (f64::from(*e) / sum) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_probabilities_sum_to_one() {
        let logits = [1.0, 2.0, 3.0, 0.5];
        let all = top_k(&logits, 10, true);
        assert_eq!(all.len(), 4);
        let sum: f32 = all.iter().map(|c| c.score).sum();
        assert!((sum - 1.0).abs() < 1e-6);
        assert_eq!(
            all.iter().map(|c| c.class_id).collect::<Vec<_>>(),
            vec![2, 1, 0, 3]
        );
        let e = [1f64.exp(), 2f64.exp(), 3f64.exp(), 0.5f64.exp()];
        let total: f64 = e.iter().sum();
        assert!((f64::from(all[0].score) - e[2] / total).abs() < 1e-6);
    }

    #[test]
    fn softmax_is_stable_for_large_logits() {
        let top = top_k(&[1000.0, 999.0, -1000.0], 2, true);
        assert_eq!(top[0].class_id, 0);
        let expected = 1.0 / (1.0 + (-1.0f32).exp());
        assert!((top[0].score - expected).abs() < 1e-6);
        assert!(top.iter().all(|c| c.score.is_finite()));
    }

    #[test]
    fn raw_scores_and_ties() {
        let top = top_k(&[0.5, 0.9, 0.9, 0.1], 2, false);
        assert_eq!(
            top,
            vec![
                Classification {
                    class_id: 1,
                    score: 0.9
                },
                Classification {
                    class_id: 2,
                    score: 0.9
                }
            ]
        );
    }

    #[test]
    fn edge_cases() {
        assert!(top_k(&[], 5, true).is_empty());
        assert!(top_k(&[1.0], 0, true).is_empty());
        let nan = top_k(&[f32::NAN, 1.0, f32::INFINITY], 3, true);
        assert_eq!(nan[0].class_id, 1);
        assert_eq!(nan[0].score, 1.0);
        assert_eq!(nan[1].score, 0.0);
        let all_nan = top_k(&[f32::NAN, f32::NAN], 1, true);
        assert_eq!(all_nan[0].score, 0.0);
        let raw = top_k(&[f32::NAN, 1.0], 2, false);
        assert_eq!(raw[0].class_id, 1);
    }
}
