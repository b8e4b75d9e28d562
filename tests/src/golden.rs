//! The independent goldens (`tests/golden/`, made by `scripts/reference/`) and how tessera's
//! output is held against them, the same way for the synchronous recognizer and for results
//! that went through the whole actor pipeline.
//!
//! Detections match both ways: every golden detection at score >= [`CONFIDENT`] has a tessera
//! detection of its class with IoU >= [`MIN_IOU`] and a score within [`SCORE_TOLERANCE`]; and
//! every tessera detection at score >= [`CONFIDENT`] has such a golden detection (any score).
//! Classifications: the top five classes, as a set. The shared MobileNetV2 is int8-quantised and
//! chaotic in its input: +-1 on the decoded pixels (what two JPEG decoders or resizers differ
//! by) moves its probabilities by up to 0.2 and can reorder its top five (measured with the
//! reference script), but leaves the set of the top five classes as it is.

use serde::Deserialize;

use crate::workspace_root;

/// Detections at or above this score must match both ways.
pub const CONFIDENT: f32 = 0.5;
/// Least IoU of a matching box.
pub const MIN_IOU: f32 = 0.9;
/// Largest score (or probability) difference of a match.
pub const SCORE_TOLERANCE: f32 = 0.05;

#[derive(Debug, Clone, Deserialize)]
pub struct GoldenDetection {
    pub class_id: u32,
    pub label: String,
    pub score: f32,
    /// x1, y1, x2, y2 in image pixels.
    pub bbox: [f32; 4],
}

/// `yolox_nano_dog_full_frame.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct DetectionGolden {
    pub detections: Vec<GoldenDetection>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GoldenClass {
    pub class_id: u32,
    pub label: String,
    pub probability: f32,
}

/// `mobilenetv2_dog.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClassificationGolden {
    pub top5: Vec<GoldenClass>,
}

/// A golden file of `tests/golden/`.
pub fn load<T: serde::de::DeserializeOwned>(name: &str) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(workspace_root().join("tests/golden").join(name))?;
    Ok(serde_json::from_str(&text)?)
}

/// One detection as tessera reported it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Found {
    pub class_id: u32,
    pub score: f32,
    pub bbox: [f32; 4],
}

impl From<&tessera_operators::detection::Detection> for Found {
    fn from(d: &tessera_operators::detection::Detection) -> Self {
        Self {
            class_id: d.class_id,
            score: d.score,
            bbox: [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2],
        }
    }
}

impl From<&tessera_actors::protocol::result::DetectionOut> for Found {
    fn from(d: &tessera_actors::protocol::result::DetectionOut) -> Self {
        Self {
            class_id: d.class_id,
            score: d.score,
            bbox: [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2],
        }
    }
}

fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: [f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

fn matches(class_id: u32, score: f32, bbox: [f32; 4], other: (u32, f32, [f32; 4])) -> bool {
    other.0 == class_id
        && iou(bbox, other.2) >= MIN_IOU
        && (score - other.1).abs() <= SCORE_TOLERANCE
}

/// What does not match, both ways (empty: all good).
pub fn detection_mismatches(golden: &DetectionGolden, found: &[Found]) -> Vec<String> {
    let mut problems = Vec::new();
    for g in golden.detections.iter().filter(|g| g.score >= CONFIDENT) {
        let matched = found
            .iter()
            .any(|f| matches(g.class_id, g.score, g.bbox, (f.class_id, f.score, f.bbox)));
        if !matched {
            let nearest = found
                .iter()
                .filter(|f| f.class_id == g.class_id)
                .max_by(|a, b| iou(a.bbox, g.bbox).total_cmp(&iou(b.bbox, g.bbox)));
            problems.push(format!(
                "golden {} {:.3} {:?} has no match (nearest: {nearest:?})",
                g.label, g.score, g.bbox
            ));
        }
    }
    for f in found.iter().filter(|f| f.score >= CONFIDENT) {
        let matched = golden
            .detections
            .iter()
            .any(|g| matches(f.class_id, f.score, f.bbox, (g.class_id, g.score, g.bbox)));
        if !matched {
            problems.push(format!(
                "tessera found {f:?}, which the golden does not have"
            ));
        }
    }
    problems
}

/// What does not match in the top five classes, taken as a set (empty: all good). `found` is
/// tessera's classifications, best first.
pub fn top5_mismatches(golden: &ClassificationGolden, found: &[u32]) -> Vec<String> {
    let n = golden.top5.len();
    if found.len() < n {
        return vec![format!(
            "tessera gave {} classes, the golden {n}",
            found.len()
        )];
    }
    let ours = &found[..n];
    let mut problems: Vec<String> = golden
        .top5
        .iter()
        .filter(|g| !ours.contains(&g.class_id))
        .map(|g| {
            format!(
                "golden {} ({}) is not in tessera's top {n}: {ours:?}",
                g.label, g.class_id
            )
        })
        .collect();
    problems.extend(
        ours.iter()
            .filter(|c| !golden.top5.iter().any(|g| g.class_id == **c))
            .map(|c| format!("tessera's class {c} is not in the golden's top {n}")),
    );
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden() -> DetectionGolden {
        let d = |class_id, score, bbox| GoldenDetection {
            class_id,
            label: format!("class {class_id}"),
            score,
            bbox,
        };
        DetectionGolden {
            detections: vec![
                d(16, 0.85, [100.0, 100.0, 200.0, 300.0]),
                d(7, 0.30, [400.0, 50.0, 600.0, 150.0]),
            ],
        }
    }

    #[test]
    fn a_faithful_result_matches() {
        let found = [
            Found {
                class_id: 16,
                score: 0.83,
                bbox: [101.0, 100.0, 200.0, 301.0],
            },
            Found {
                class_id: 7,
                score: 0.31,
                bbox: [400.0, 50.0, 600.0, 150.0],
            },
        ];
        assert!(detection_mismatches(&golden(), &found).is_empty());
    }

    #[test]
    fn off_scores_boxes_misses_and_extras_fail() {
        let good = Found {
            class_id: 16,
            score: 0.85,
            bbox: [100.0, 100.0, 200.0, 300.0],
        };
        let off_score = Found {
            score: 0.70,
            ..good
        };
        let off_box = Found {
            bbox: [130.0, 100.0, 230.0, 300.0],
            ..good
        };
        let extra = Found {
            class_id: 2,
            score: 0.6,
            bbox: [0.0, 0.0, 10.0, 10.0],
        };
        assert_eq!(detection_mismatches(&golden(), &[off_score]).len(), 2);
        assert_eq!(detection_mismatches(&golden(), &[off_box]).len(), 2);
        assert_eq!(detection_mismatches(&golden(), &[]).len(), 1);
        assert_eq!(detection_mismatches(&golden(), &[good, extra]).len(), 1);
        // A weak extra is not held against tessera; the golden's weak one may match it.
        let weak = Found {
            score: 0.3,
            ..extra
        };
        assert!(detection_mismatches(&golden(), &[good, weak]).is_empty());
    }

    #[test]
    fn top5_as_a_set() {
        let class = |class_id| GoldenClass {
            class_id,
            label: format!("class {class_id}"),
            probability: 0.1,
        };
        let golden = ClassificationGolden {
            top5: (1..=5).map(class).collect(),
        };
        assert!(top5_mismatches(&golden, &[5, 3, 1, 2, 4, 9]).is_empty());
        assert_eq!(top5_mismatches(&golden, &[1, 2, 3, 4, 9, 5]).len(), 2);
        assert_eq!(top5_mismatches(&golden, &[1, 2, 3]).len(), 1);
    }
}
