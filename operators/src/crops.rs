//! The second stage's pure parts: which detected boxes are cropped and classified again by a
//! head, and what the head's answer makes of a box.
//!
//! A detection pipeline can classify its boxes a second time: each selected box is cropped
//! from the decoded frame, embedded by a classifier backbone and passed through the head of
//! the camera's scope. The head may confirm the detector's label, relabel the box, or reject
//! it (its class is a background or negative class).

use serde::{Deserialize, Serialize};

/// Which boxes the second stage classifies.
#[derive(Debug, Clone, PartialEq)]
pub struct CropSelection {
    /// Boxes the detector scored at least this.
    pub min_score: f32,
    /// Detector labels classified; empty: every label.
    pub classes: Vec<String>,
    /// Most boxes per frame (the best scored first); bounds the second stage's cost.
    pub max_crops: usize,
}

impl CropSelection {
    /// Indices of the boxes to classify, best score first (ties in input order), at most
    /// `max_crops`. `boxes` gives each box's detector label and score.
    pub fn select<'a>(&self, boxes: impl IntoIterator<Item = (&'a str, f32)>) -> Vec<usize> {
        let mut chosen: Vec<(usize, f32)> = boxes
            .into_iter()
            .enumerate()
            .filter(|(_, (label, score))| {
                *score >= self.min_score
                    && (self.classes.is_empty() || self.classes.iter().any(|c| c == label))
            })
            .map(|(index, (_, score))| (index, score))
            .collect();
        // Stable: equal scores keep their input order.
        chosen.sort_by(|a, b| b.1.total_cmp(&a.1));
        chosen.truncate(self.max_crops);
        chosen.into_iter().map(|(index, _)| index).collect()
    }
}

/// What the head made of a box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The head agrees with the detector's label.
    Kept,
    /// The head names another class.
    Relabelled,
    /// The head's class is a rejecting one: the box is not what the detector says.
    Rejected,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Kept => "kept",
            Verdict::Relabelled => "relabelled",
            Verdict::Rejected => "rejected",
        }
    }
}

/// The verdict on a box the detector labelled `detector` and the head `head`; `reject` lists
/// the classes that reject a box (compared exactly, like every class name).
pub fn verdict(detector: &str, head: &str, reject: &[String]) -> Verdict {
    if reject.iter().any(|r| r == head) {
        Verdict::Rejected
    } else if head == detector {
        Verdict::Kept
    } else {
        Verdict::Relabelled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn selection(min_score: f32, classes: &[&str], max_crops: usize) -> CropSelection {
        CropSelection {
            min_score,
            classes: classes.iter().map(|c| (*c).to_owned()).collect(),
            max_crops,
        }
    }

    #[test]
    fn boxes_are_chosen_by_score_class_and_count() {
        let boxes = [
            ("car", 0.4),
            ("person", 0.9),
            ("car", 0.8),
            ("car", 0.2),
            ("truck", 0.8),
        ];
        assert_eq!(selection(0.3, &[], 10).select(boxes), vec![1, 2, 4, 0]);
        assert_eq!(
            selection(0.3, &["car", "truck"], 10).select(boxes),
            vec![2, 4, 0]
        );
        assert_eq!(selection(0.3, &[], 2).select(boxes), vec![1, 2]);
        assert!(selection(0.95, &[], 10).select(boxes).is_empty());
        assert!(selection(0.0, &[], 0).select(boxes).is_empty());
    }

    #[test]
    fn verdicts() {
        let reject = vec!["none".to_owned(), "background".to_owned()];
        assert_eq!(verdict("car", "car", &reject), Verdict::Kept);
        assert_eq!(verdict("car", "van", &reject), Verdict::Relabelled);
        assert_eq!(verdict("car", "none", &reject), Verdict::Rejected);
        assert_eq!(verdict("car", "Background", &reject), Verdict::Relabelled);
        assert_eq!(verdict("none", "none", &[]), Verdict::Kept);
    }

    proptest! {
        #[test]
        fn the_selection_is_bounded_sorted_and_filtered(
            scores in proptest::collection::vec(0.0f32..1.0, 0..40),
            min_score in 0.0f32..1.0,
            max_crops in 0usize..12,
        ) {
            let boxes: Vec<(&str, f32)> = scores
                .iter()
                .enumerate()
                .map(|(i, s)| (if i % 2 == 0 { "a" } else { "b" }, *s))
                .collect();
            let chosen = selection(min_score, &["a"], max_crops).select(boxes.iter().copied());
            let eligible = boxes.iter().filter(|(l, s)| *l == "a" && *s >= min_score).count();
            prop_assert_eq!(chosen.len(), eligible.min(max_crops));
            for pair in chosen.windows(2) {
                prop_assert!(boxes[pair[0]].1 >= boxes[pair[1]].1);
            }
            for &index in &chosen {
                prop_assert!(boxes[index].0 == "a" && boxes[index].1 >= min_score);
            }
            // Nothing left out scores above the worst chosen box.
            if let Some(&worst) = chosen.last() && chosen.len() == max_crops {
                let worst = boxes[worst].1;
                let better_left_out = boxes.iter().enumerate().any(|(i, (l, s))| {
                    *l == "a" && *s > worst && !chosen.contains(&i)
                });
                prop_assert!(!better_left_out);
            }
        }
    }
}
