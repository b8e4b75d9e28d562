//! The pure parts of learning on the job: the replay buffer of labelled embeddings (bounded,
//! balanced per class), the deterministic validation split, the validation of a head's
//! predictions, and the promotion decision. Training itself is in `tessera_models::head`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A labelled embedding, identified by where its label came from (for example
/// `labels/0/1234`: the labels topic, partition and offset), so that re-reading a label is
/// idempotent and its validation split is the same on every replica and after a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledExample {
    pub id: String,
    pub label: String,
    pub embedding: Vec<f32>,
}

/// True for the examples held out for validation: a stable hash of the id, so the split never
/// changes for an example, on any replica, in any process.
pub fn is_held_out(id: &str, percent: u8) -> bool {
    fnv1a(id.as_bytes()) % 100 < u64::from(percent.min(100))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Limits of the [`ReplayBuffer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayLimits {
    /// Examples kept per class; beyond it a class keeps a uniform sample of what it saw.
    pub per_class: usize,
    /// Classes kept; labels of further classes are refused.
    pub classes: usize,
}

/// Why an example was not added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("the replay buffer holds {0} classes, its limit; label `{1}` is a new class")]
    TooManyClasses(usize, String),
    #[error("the embedding has {got} values, the buffer holds {want}-d embeddings")]
    Dimension { got: usize, want: usize },
    #[error("the label is empty")]
    EmptyLabel,
}

/// What [`ReplayBuffer::add`] did with an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Stored (its class had room, or it won the reservoir draw).
    Kept,
    /// Its id was already in the buffer (a label read twice): nothing changed.
    Duplicate,
    /// The class was full and the draw kept the older examples.
    Sampled,
}

/// The labelled examples training draws from: at most `per_class` per class, each class a
/// uniform sample (reservoir sampling) of every example it saw, so a class labelled often
/// cannot crowd out the others, and old classes stay when new ones arrive. Deterministic:
/// the draws come from a seeded generator.
#[derive(Debug, Clone)]
pub struct ReplayBuffer {
    limits: ReplayLimits,
    /// Embedding size, fixed by the first example.
    dim: Option<usize>,
    classes: BTreeMap<String, ClassSamples>,
    rng: u64,
}

#[derive(Debug, Clone, Default)]
struct ClassSamples {
    examples: Vec<LabelledExample>,
    /// Examples of this class ever offered (the reservoir's denominator).
    seen: u64,
}

impl ReplayBuffer {
    pub fn new(limits: ReplayLimits) -> Self {
        Self {
            limits,
            dim: None,
            classes: BTreeMap::new(),
            rng: 0x0005_eed0_f7e5_5e7a,
        }
    }

    /// Adds an example (see [`Added`]).
    pub fn add(&mut self, example: LabelledExample) -> Result<Added, ReplayError> {
        if example.label.trim().is_empty() {
            return Err(ReplayError::EmptyLabel);
        }
        let want = *self.dim.get_or_insert(example.embedding.len());
        if example.embedding.len() != want || want == 0 {
            return Err(ReplayError::Dimension {
                got: example.embedding.len(),
                want,
            });
        }
        if !self.classes.contains_key(&example.label) && self.classes.len() >= self.limits.classes {
            return Err(ReplayError::TooManyClasses(
                self.classes.len(),
                example.label,
            ));
        }
        if self
            .classes
            .get(&example.label)
            .is_some_and(|c| c.examples.iter().any(|e| e.id == example.id))
        {
            return Ok(Added::Duplicate);
        }
        let draw = self.next_u64();
        let per_class = self.limits.per_class.max(1);
        let class = self.classes.entry(example.label.clone()).or_default();
        class.seen += 1;
        if class.examples.len() < per_class {
            class.examples.push(example);
            return Ok(Added::Kept);
        }
        let slot = draw % class.seen;
        match class.examples.get_mut(slot as usize) {
            Some(kept) => {
                *kept = example;
                Ok(Added::Kept)
            }
            None => Ok(Added::Sampled),
        }
    }

    /// Class names, sorted (a head's class order for a buffer that only grew).
    pub fn class_names(&self) -> Vec<String> {
        self.classes.keys().cloned().collect()
    }

    /// Examples held, per class.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.classes
            .iter()
            .map(|(name, c)| (name.clone(), c.examples.len()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.classes.values().map(|c| c.examples.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every example, class by class.
    pub fn examples(&self) -> impl Iterator<Item = &LabelledExample> {
        self.classes.values().flat_map(|c| c.examples.iter())
    }

    /// Bytes the examples hold (embeddings, ids and labels): bounded by
    /// `classes x per_class x (4 x dim + id and label)`.
    pub fn memory_bytes(&self) -> usize {
        self.examples()
            .map(|e| {
                e.embedding.len() * std::mem::size_of::<f32>()
                    + e.id.len()
                    + e.label.len()
                    + std::mem::size_of::<LabelledExample>()
            })
            .sum()
    }

    /// The most bytes the buffer can hold for embeddings of `dim` values (ids and labels of
    /// up to `text` bytes each).
    pub fn memory_bound(&self, dim: usize, text: usize) -> usize {
        self.limits.classes
            * self.limits.per_class
            * (dim * std::mem::size_of::<f32>() + 2 * text + std::mem::size_of::<LabelledExample>())
    }

    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Validation of a head on a held-out split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// Held-out examples.
    pub examples: usize,
    /// Share of them classified correctly.
    pub accuracy: f32,
    /// Recall of each class (by name) that has held-out examples.
    pub recall: BTreeMap<String, f32>,
}

/// Scores predicted class names against the true ones (index by index).
pub fn validate<'a>(
    predicted: impl IntoIterator<Item = &'a str>,
    truth: impl IntoIterator<Item = &'a str>,
) -> Validation {
    let mut per_class: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let (mut examples, mut correct) = (0usize, 0usize);
    for (p, t) in predicted.into_iter().zip(truth) {
        examples += 1;
        let hit = p == t;
        correct += usize::from(hit);
        let entry = per_class.entry(t.to_owned()).or_default();
        entry.0 += usize::from(hit);
        entry.1 += 1;
    }
    Validation {
        examples,
        accuracy: ratio(correct, examples),
        recall: per_class
            .into_iter()
            .map(|(class, (hit, total))| (class, ratio(hit, total)))
            .collect(),
    }
}

fn ratio(part: usize, whole: usize) -> f32 {
    if whole == 0 {
        0.0
    } else {
        part as f32 / whole as f32
    }
}

/// When a newly trained head may replace the live one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PromotionPolicy {
    /// The candidate may be this much less accurate than the live head on the same split.
    pub tolerance: f32,
    /// The candidate's accuracy must reach this, whatever the live head's.
    pub floor: f32,
    /// No class's recall may fall by more than this against the live head's.
    pub max_recall_drop: f32,
    /// No class's recall may be below this.
    pub min_class_recall: f32,
    /// Held-out examples needed to decide at all.
    pub min_validation_examples: usize,
}

impl Default for PromotionPolicy {
    fn default() -> Self {
        Self {
            tolerance: 0.01,
            floor: 0.6,
            max_recall_drop: 0.25,
            min_class_recall: 0.3,
            min_validation_examples: 4,
        }
    }
}

/// The outcome of a promotion decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Promote,
    Reject(String),
}

/// Decides whether `candidate` replaces the live head, both validated on the same split
/// (`live` is `None` before the first head).
pub fn decide(
    candidate: &Validation,
    live: Option<&Validation>,
    policy: &PromotionPolicy,
) -> Decision {
    if candidate.examples < policy.min_validation_examples {
        return Decision::Reject(format!(
            "{} held-out examples, {} needed to validate",
            candidate.examples, policy.min_validation_examples
        ));
    }
    if candidate.accuracy < policy.floor {
        return Decision::Reject(format!(
            "validation accuracy {:.3} is below the floor {:.3}",
            candidate.accuracy, policy.floor
        ));
    }
    if let Some(live) = live
        && candidate.accuracy < live.accuracy - policy.tolerance
    {
        return Decision::Reject(format!(
            "validation accuracy {:.3} is below the live head's {:.3} minus the tolerance {:.3}",
            candidate.accuracy, live.accuracy, policy.tolerance
        ));
    }
    for (class, &recall) in &candidate.recall {
        if recall < policy.min_class_recall {
            return Decision::Reject(format!(
                "recall of `{class}` collapsed to {recall:.3} (minimum {:.3})",
                policy.min_class_recall
            ));
        }
        if let Some(&before) = live.and_then(|l| l.recall.get(class))
            && recall < before - policy.max_recall_drop
        {
            return Decision::Reject(format!(
                "recall of `{class}` fell from {before:.3} to {recall:.3} (at most {:.3} allowed)",
                policy.max_recall_drop
            ));
        }
    }
    Decision::Promote
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn example(id: &str, label: &str) -> LabelledExample {
        LabelledExample {
            id: id.into(),
            label: label.into(),
            embedding: vec![1.0, 2.0],
        }
    }

    #[test]
    fn the_split_is_stable_and_near_its_share() {
        let held: usize = (0..10_000)
            .filter(|i| is_held_out(&format!("labels/0/{i}"), 20))
            .count();
        assert!((1_700..2_300).contains(&held), "{held}");
        assert_eq!(is_held_out("labels/0/7", 20), is_held_out("labels/0/7", 20));
        assert!(!is_held_out("x", 0));
        assert!(is_held_out("x", 100));
    }

    #[test]
    fn a_label_read_twice_is_kept_once() {
        let mut buffer = ReplayBuffer::new(ReplayLimits {
            per_class: 10,
            classes: 10,
        });
        assert_eq!(buffer.add(example("a", "dog")), Ok(Added::Kept));
        assert_eq!(buffer.add(example("a", "dog")), Ok(Added::Duplicate));
        assert_eq!(buffer.len(), 1);
    }

    #[test]
    fn bad_examples_are_refused() {
        let mut buffer = ReplayBuffer::new(ReplayLimits {
            per_class: 10,
            classes: 1,
        });
        assert_eq!(buffer.add(example("a", " ")), Err(ReplayError::EmptyLabel));
        assert_eq!(buffer.add(example("a", "dog")), Ok(Added::Kept));
        let mut wide = example("b", "dog");
        wide.embedding.push(3.0);
        assert_eq!(
            buffer.add(wide),
            Err(ReplayError::Dimension { got: 3, want: 2 })
        );
        assert!(matches!(
            buffer.add(example("c", "cat")),
            Err(ReplayError::TooManyClasses(1, _))
        ));
    }

    proptest! {
        #[test]
        fn the_buffer_is_bounded_and_keeps_every_class(
            labels in proptest::collection::vec(0u8..6, 1..400),
            per_class in 1usize..20,
        ) {
            let limits = ReplayLimits { per_class, classes: 6 };
            let mut buffer = ReplayBuffer::new(limits);
            for (i, label) in labels.iter().enumerate() {
                buffer.add(example(&i.to_string(), &format!("c{label}"))).ok();
            }
            let distinct: std::collections::BTreeSet<_> = labels.iter().collect();
            let counts = buffer.counts();
            prop_assert_eq!(counts.len(), distinct.len());
            for (label, count) in counts {
                let offered = labels.iter().filter(|l| format!("c{l}") == label).count();
                prop_assert_eq!(count, offered.min(per_class));
            }
            prop_assert!(buffer.memory_bytes() <= buffer.memory_bound(2, 4));
        }
    }

    fn validation(accuracy: f32, recall: &[(&str, f32)]) -> Validation {
        Validation {
            examples: 100,
            accuracy,
            recall: recall.iter().map(|(c, r)| (c.to_string(), *r)).collect(),
        }
    }

    #[test]
    fn validate_counts_accuracy_and_recall() {
        let v = validate(["a", "a", "b", "b"], ["a", "b", "b", "b"]);
        assert_eq!(v.examples, 4);
        assert_eq!(v.accuracy, 0.75);
        assert_eq!(v.recall["a"], 1.0);
        assert!((v.recall["b"] - 2.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn promotion_follows_the_policy() {
        let policy = PromotionPolicy::default();
        let live = validation(0.9, &[("a", 0.9), ("b", 0.9)]);
        let better = validation(0.95, &[("a", 0.95), ("b", 0.9), ("c", 0.99)]);
        assert_eq!(decide(&better, Some(&live), &policy), Decision::Promote);
        assert_eq!(decide(&better, None, &policy), Decision::Promote);
        // Within the tolerance.
        let same = validation(0.895, &[("a", 0.9), ("b", 0.89)]);
        assert_eq!(decide(&same, Some(&live), &policy), Decision::Promote);
        let worse = validation(0.85, &[("a", 0.9), ("b", 0.8)]);
        assert!(
            matches!(decide(&worse, Some(&live), &policy), Decision::Reject(r) if r.contains("live head"))
        );
        let random = validation(0.3, &[("a", 0.3), ("b", 0.3)]);
        assert!(
            matches!(decide(&random, None, &policy), Decision::Reject(r) if r.contains("floor"))
        );
        let collapsed = validation(0.95, &[("a", 1.0), ("b", 0.5)]);
        assert!(
            matches!(decide(&collapsed, Some(&live), &policy), Decision::Reject(r) if r.contains("`b` fell"))
        );
        let few = Validation {
            examples: 2,
            ..better.clone()
        };
        assert!(
            matches!(decide(&few, None, &policy), Decision::Reject(r) if r.contains("held-out"))
        );
    }
}
