//! Merging overlapping detections from tiles: NMS and SAHI's greedy NMM.
//!
//! Deterministic and independent of input order: candidates are first sorted by a total order
//! (score descending, then class, then coordinates, compared with `f32::total_cmp`), and the
//! output is sorted the same way.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::detection::Detection;
use crate::geometry::BBox;

/// How overlapping detections are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeStrategy {
    /// Non-maximum suppression: keep the best box, drop the boxes matching it.
    Nms,
    /// Greedy non-maximum merging (SAHI): the best box absorbs the boxes matching it (union box,
    /// best score), so an object cut by tile borders becomes one whole box.
    GreedyNmm,
}

/// How the overlap of two boxes is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchMetric {
    /// Intersection over union.
    Iou,
    /// Intersection over the smaller area (SAHI's IOS): matches a fragment to the whole.
    Ios,
}

impl MatchMetric {
    /// The overlap of `a` and `b` under this metric.
    pub fn overlap(self, a: &BBox, b: &BBox) -> f32 {
        match self {
            Self::Iou => a.iou(b),
            Self::Ios => a.ios(b),
        }
    }
}

/// Merging configuration (`[merge]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MergeConfig {
    /// `nms` (suppress) or `greedy_nmm` (merge into a union box, SAHI's default for sliced inference).
    #[serde(default = "default_strategy")]
    pub strategy: MergeStrategy,
    /// Overlap measure: `iou` or `ios` (intersection over the smaller box).
    #[serde(default = "default_metric")]
    pub metric: MatchMetric,
    /// Two boxes match when their overlap is strictly greater than this, in `[0, 1]`.
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    /// Match boxes across classes too; by default only boxes of the same class are merged.
    #[serde(default)]
    pub class_agnostic: bool,
}

fn default_strategy() -> MergeStrategy {
    MergeStrategy::GreedyNmm
}

fn default_metric() -> MatchMetric {
    MatchMetric::Ios
}

fn default_threshold() -> f32 {
    0.5
}

impl Default for MergeConfig {
    fn default() -> Self {
        Self {
            strategy: default_strategy(),
            metric: default_metric(),
            threshold: default_threshold(),
            class_agnostic: false,
        }
    }
}

/// An invalid [`MergeConfig`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MergeConfigError {
    /// `threshold` outside `[0, 1]` or not a number.
    #[error("merge.threshold must be in [0, 1], got {0}")]
    Threshold(f32),
}

impl MergeConfigError {
    /// Stable snake_case name, for metrics and error headers.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Threshold(_) => "invalid_merge_threshold",
        }
    }
}

impl MergeConfig {
    /// Checks the value ranges.
    pub fn validate(&self) -> Result<(), MergeConfigError> {
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(MergeConfigError::Threshold(self.threshold));
        }
        Ok(())
    }
}

/// The total order used for candidates and output: score descending, then class ascending, then
/// `x1, y1, x2, y2` ascending, all with `f32::total_cmp` (NaN scores sort last).
pub fn detection_order(a: &Detection, b: &Detection) -> Ordering {
    score_key(b.score)
        .total_cmp(&score_key(a.score))
        .then(a.class_id.cmp(&b.class_id))
        .then(a.bbox.x1.total_cmp(&b.bbox.x1))
        .then(a.bbox.y1.total_cmp(&b.bbox.y1))
        .then(a.bbox.x2.total_cmp(&b.bbox.x2))
        .then(a.bbox.y2.total_cmp(&b.bbox.y2))
}

/// NaN scores rank below every number.
fn score_key(score: f32) -> f32 {
    if score.is_nan() {
        f32::NEG_INFINITY
    } else {
        score
    }
}

/// Merges overlapping detections per `config`. The result is sorted by [`detection_order`] and
/// does not depend on the order of `detections`.
///
/// Greedy NMM follows SAHI: candidates are visited best first; each one not yet consumed becomes a
/// keeper and absorbs every later unconsumed candidate whose overlap with the keeper's original box
/// exceeds the threshold (union box, the keeper's, i.e. the highest, score).
pub fn merge(detections: &[Detection], config: &MergeConfig) -> Vec<Detection> {
    let mut sorted: Vec<Detection> = detections.to_vec();
    sorted.sort_by(detection_order);
    let mut consumed = vec![false; sorted.len()];
    let mut out = Vec::new();
    for i in 0..sorted.len() {
        if consumed[i] {
            continue;
        }
        consumed[i] = true;
        let keeper = sorted[i];
        let mut merged = keeper;
        for j in (i + 1)..sorted.len() {
            if consumed[j] {
                continue;
            }
            let other = &sorted[j];
            if !config.class_agnostic && other.class_id != keeper.class_id {
                continue;
            }
            if config.metric.overlap(&keeper.bbox, &other.bbox) > config.threshold {
                consumed[j] = true;
                if config.strategy == MergeStrategy::GreedyNmm {
                    merged.bbox = merged.bbox.union_box(&other.bbox);
                    // Sorted best first, so the keeper's score is already the maximum.
                    merged.score = merged.score.max(other.score);
                }
            }
        }
        out.push(merged);
    }
    out.sort_by(detection_order);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn det(class_id: u32, score: f32, x1: f32, y1: f32, x2: f32, y2: f32) -> Detection {
        Detection {
            class_id,
            score,
            bbox: BBox::new(x1, y1, x2, y2),
        }
    }

    fn config(strategy: MergeStrategy, metric: MatchMetric) -> MergeConfig {
        MergeConfig {
            strategy,
            metric,
            ..MergeConfig::default()
        }
    }

    #[test]
    fn defaults_follow_sahi() {
        let c = MergeConfig::default();
        assert_eq!(c.strategy, MergeStrategy::GreedyNmm);
        assert_eq!(c.metric, MatchMetric::Ios);
        assert_eq!(c.threshold, 0.5);
        assert!(!c.class_agnostic);
        assert_eq!(c.validate(), Ok(()));
        let parsed: MergeConfig =
            serde_json::from_str(r#"{"strategy": "nms", "metric": "iou"}"#).expect("valid");
        assert_eq!(parsed, config(MergeStrategy::Nms, MatchMetric::Iou));
        assert!(serde_json::from_str::<MergeConfig>(r#"{"iou": 0.3}"#).is_err());
    }

    #[test]
    fn validate_threshold() {
        for t in [-0.01, 1.01, f32::NAN] {
            let c = MergeConfig {
                threshold: t,
                ..MergeConfig::default()
            };
            let err = c.validate().err();
            assert!(matches!(err, Some(MergeConfigError::Threshold(_))));
            assert_eq!(err.map(|e| e.kind()), Some("invalid_merge_threshold"));
        }
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let a = det(0, 0.9, 0.0, 0.0, 10.0, 10.0);
        let b = det(0, 0.8, 1.0, 1.0, 11.0, 11.0); // IoU 81/119 = 0.68
        let c = det(0, 0.7, 50.0, 50.0, 60.0, 60.0);
        let out = merge(&[b, c, a], &config(MergeStrategy::Nms, MatchMetric::Iou));
        assert_eq!(out, vec![a, c]);
    }

    #[test]
    fn class_aware_unless_agnostic() {
        let a = det(0, 0.9, 0.0, 0.0, 10.0, 10.0);
        let b = det(1, 0.8, 0.0, 0.0, 10.0, 10.0);
        let mut c = config(MergeStrategy::Nms, MatchMetric::Iou);
        assert_eq!(merge(&[a, b], &c), vec![a, b]);
        c.class_agnostic = true;
        assert_eq!(merge(&[b, a], &c), vec![a]);
    }

    #[test]
    fn greedy_nmm_absorbs_matches_into_a_union_box() {
        // An object cut by a tile border: left and right halves overlapping a little, plus the
        // full-frame detection of the whole object.
        let whole = det(2, 0.6, 0.0, 0.0, 100.0, 50.0);
        let left = det(2, 0.9, 0.0, 0.0, 55.0, 50.0);
        let right = det(2, 0.8, 45.0, 0.0, 100.0, 52.0);
        let out = merge(
            &[right, whole, left],
            &config(MergeStrategy::GreedyNmm, MatchMetric::Ios),
        );
        // `left` is the keeper (best score); IoS(left, whole) = 1, IoS(left, right) = 10/55.
        // Only matches to the keeper's original box are absorbed (SAHI), so `right` survives
        // alone and is not re-matched against the grown box.
        assert_eq!(out, vec![det(2, 0.9, 0.0, 0.0, 100.0, 50.0), right]);
    }

    #[test]
    fn ios_matches_fragments_that_iou_misses() {
        let big = det(0, 0.9, 0.0, 0.0, 100.0, 100.0);
        let fragment = det(0, 0.5, 10.0, 10.0, 30.0, 30.0);
        let iou = merge(
            &[big, fragment],
            &config(MergeStrategy::Nms, MatchMetric::Iou),
        );
        assert_eq!(iou.len(), 2);
        let ios = merge(
            &[big, fragment],
            &config(MergeStrategy::Nms, MatchMetric::Ios),
        );
        assert_eq!(ios, vec![big]);
    }

    #[test]
    fn threshold_is_strict() {
        // IoU exactly 0.5: not merged at threshold 0.5.
        let a = det(0, 0.9, 0.0, 0.0, 10.0, 10.0);
        let b = det(0, 0.8, 0.0, 0.0, 10.0, 5.0);
        let mut c = config(MergeStrategy::Nms, MatchMetric::Iou);
        assert_eq!(merge(&[a, b], &c).len(), 2);
        c.threshold = 0.49;
        assert_eq!(merge(&[a, b], &c).len(), 1);
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        let c = MergeConfig::default();
        assert!(merge(&[], &c).is_empty());
        let weird = [
            det(0, f32::NAN, 0.0, 0.0, 1.0, 1.0),
            det(0, 0.5, f32::NAN, 0.0, 1.0, 1.0),
            det(0, f32::INFINITY, 0.0, 0.0, 0.0, 0.0),
            det(0, 0.5, 5.0, 5.0, 1.0, 1.0),
        ];
        let out = merge(&weird, &c);
        assert_eq!(out.len(), 4);
        // NaN scores sort last.
        assert!(out[3].score.is_nan());
    }

    #[test]
    fn output_order_is_total() {
        let a = det(1, 0.5, 0.0, 0.0, 1.0, 1.0);
        let b = det(0, 0.5, 100.0, 0.0, 101.0, 1.0);
        let c = det(0, 0.5, 50.0, 0.0, 51.0, 1.0);
        let d = det(0, 0.7, 200.0, 0.0, 201.0, 1.0);
        let out = merge(&[a, b, c, d], &MergeConfig::default());
        assert_eq!(out, vec![d, c, b, a]);
    }

    fn detection_strategy() -> impl Strategy<Value = Detection> {
        (
            0u32..3,
            0.0f32..=1.0,
            -50.0f32..700.0,
            -50.0f32..500.0,
            1.0f32..300.0,
            1.0f32..300.0,
        )
            .prop_map(|(class_id, score, x, y, w, h)| det(class_id, score, x, y, x + w, y + h))
    }

    fn config_strategy() -> impl Strategy<Value = MergeConfig> {
        (
            prop_oneof![Just(MergeStrategy::Nms), Just(MergeStrategy::GreedyNmm)],
            prop_oneof![Just(MatchMetric::Iou), Just(MatchMetric::Ios)],
            0.0f32..=1.0,
            any::<bool>(),
        )
            .prop_map(
                |(strategy, metric, threshold, class_agnostic)| MergeConfig {
                    strategy,
                    metric,
                    threshold,
                    class_agnostic,
                },
            )
    }

    proptest! {
        #[test]
        fn merge_is_independent_of_input_order(
            (dets, shuffled) in prop::collection::vec(detection_strategy(), 0..40)
                .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
            config in config_strategy(),
        ) {
            let a = merge(&dets, &config);
            let b = merge(&shuffled, &config);
            prop_assert_eq!(&a, &b);
            prop_assert!(a.len() <= dets.len());
            prop_assert!(a.windows(2).all(|w| detection_order(&w[0], &w[1]) != Ordering::Greater));
            if config.strategy == MergeStrategy::Nms {
                prop_assert!(a.iter().all(|d| dets.contains(d)));
            }
        }

        #[test]
        fn merged_boxes_stay_inside_the_frame(
            dets in prop::collection::vec(detection_strategy(), 0..40),
            config in config_strategy(),
        ) {
            let (w, h) = (640, 480);
            let clamped: Vec<Detection> = dets
                .iter()
                .map(|d| Detection { bbox: d.bbox.clamp_to(w, h), ..*d })
                .collect();
            for d in merge(&clamped, &config) {
                prop_assert!(d.bbox.x1 >= 0.0 && d.bbox.y1 >= 0.0);
                prop_assert!(d.bbox.x2 <= w as f32 && d.bbox.y2 <= h as f32);
                prop_assert!(d.bbox.x1 <= d.bbox.x2 && d.bbox.y1 <= d.bbox.y2);
            }
        }
    }
}
