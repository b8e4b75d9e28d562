//! The label-request sampler (active learning, after Roboflow's sampling strategies): which
//! predictions are worth a person's label, with no I/O.
//!
//! Every prediction (a box, or a frame's classification) is shown to [`Sampler::consider`].
//! Strategies are tried in a fixed order; the first that selects the prediction and has budget
//! left wins (one out of budget lets the next one try):
//!
//! 1. [`Strategy::Uncertain`]: the score is within `epsilon` of `threshold` (optionally only for
//!    some labels): the model is unsure, so a label teaches it the most.
//! 2. [`Strategy::Classes`]: the label is one of the chosen ones (classes the operator cares
//!    about).
//! 3. [`Strategy::Rare`]: the label is rare in the prediction's scope: below `max_share` of the
//!    labels the sampler saw there recently, once the scope has `min_observations` predictions.
//!    Rare classes are the ones a head learns worst from traffic alone.
//! 4. [`Strategy::Random`]: a share of all predictions, decided from the caller's key (a hash of
//!    the prediction's id, [`request_key`]), so that the training set keeps an unbiased sample and
//!    the same stream always samples the same predictions.
//!
//! Each strategy has its own limits per minute and per hour, over sliding windows, so that no
//! strategy can flood the labelling tool or starve the others. Time is the caller's (monotonic
//! milliseconds): the sampler reads no clock and draws no random numbers.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a prediction was requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The score is close to the decision threshold.
    Uncertain,
    /// The label is one of the chosen classes.
    Classes,
    /// The label is rare in the prediction's scope.
    Rare,
    /// A random share of all predictions.
    Random,
}

impl Strategy {
    /// Every strategy, in the order they are tried.
    pub const ALL: [Strategy; 4] = [
        Strategy::Uncertain,
        Strategy::Classes,
        Strategy::Rare,
        Strategy::Random,
    ];

    /// Stable snake_case name: the serde name, a metric label and a configuration key.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Uncertain => "uncertain",
            Strategy::Classes => "classes",
            Strategy::Rare => "rare",
            Strategy::Random => "random",
        }
    }

    /// Position in [`Strategy::ALL`], to index per-strategy state.
    fn index(self) -> usize {
        match self {
            Strategy::Uncertain => 0,
            Strategy::Classes => 1,
            Strategy::Rare => 2,
            Strategy::Random => 3,
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Most requests of one strategy in any 60 s and in any hour (sliding windows); 0 in either
/// turns the strategy off.
///
/// A `limit` table that gives only one of the two takes the other from this type's default
/// (10 per minute, 100 per hour), not from the strategy's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimit {
    /// Most requests in any 60 000 ms.
    pub per_minute: u32,
    /// Most requests in any 3 600 000 ms, at most [`MAX_PER_HOUR`] (the sampler keeps the time
    /// of each request of the last hour).
    pub per_hour: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_minute: 10,
            per_hour: 100,
        }
    }
}

/// Largest `per_hour` accepted by [`SamplerConfig::validate`]: it bounds the timestamps kept
/// per strategy (8 bytes each).
pub const MAX_PER_HOUR: u32 = 1_000_000;

/// Predictions close to the decision threshold. On by default: the classic active-learning
/// signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UncertainConfig {
    pub enabled: bool,
    /// The decision threshold, 0..=1 (default 0.5).
    pub threshold: f32,
    /// A score within this of `threshold` (inclusive) is uncertain, >= 0 (default 0.15).
    pub epsilon: f32,
    /// Only predictions of these labels; empty (default): every label.
    pub classes: Vec<String>,
    /// Default 10 per minute, 100 per hour.
    pub limit: RateLimit,
}

impl Default for UncertainConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: 0.5,
            epsilon: 0.15,
            classes: Vec::new(),
            limit: RateLimit::default(),
        }
    }
}

/// Predictions of chosen labels. Off by default: there is no sensible default list.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassesConfig {
    pub enabled: bool,
    /// The labels; required (non-empty) when `enabled`.
    pub classes: Vec<String>,
    /// Default 10 per minute, 100 per hour.
    pub limit: RateLimit,
}

/// Predictions of labels rare in their scope. On by default: it needs no list, and rare
/// classes are where a head improves most per label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RareConfig {
    pub enabled: bool,
    /// A label below this share of its scope's recent predictions is rare, 0..=1 (default
    /// 0.05).
    pub max_share: f32,
    /// Predictions a scope needs before any of its labels counts as rare (default 200): too
    /// few and every label looks rare or common by chance.
    pub min_observations: u64,
    /// Default 10 per minute, 100 per hour.
    pub limit: RateLimit,
}

impl Default for RareConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_share: 0.05,
            min_observations: 200,
            limit: RateLimit::default(),
        }
    }
}

/// A random share of predictions. On by default, with a small share and budget: an unbiased
/// sample keeps the labelled set representative of the traffic, which the other strategies
/// skew on purpose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RandomConfig {
    pub enabled: bool,
    /// The share of predictions selected, 0..=1 (default 0.01).
    pub share: f64,
    /// Default 2 per minute, 20 per hour.
    pub limit: RateLimit,
}

impl Default for RandomConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            share: 0.01,
            limit: RateLimit {
                per_minute: 2,
                per_hour: 20,
            },
        }
    }
}

/// Every strategy's settings (the `label_requests` section, less its transport keys).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplerConfig {
    pub uncertain: UncertainConfig,
    pub classes: ClassesConfig,
    pub rare: RareConfig,
    pub random: RandomConfig,
}

/// An invalid sampler setting, named by its full configuration key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}` {message}")]
pub struct SamplingError {
    /// The key, e.g. `label_requests.uncertain.epsilon`.
    pub key: &'static str,
    /// What is wrong and what is expected.
    pub message: String,
}

impl SamplingError {
    fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

impl SamplerConfig {
    /// Checks the settings: thresholds and shares finite and within 0..=1, `epsilon` finite
    /// and not negative, no empty label in a class list, a non-empty list when
    /// `classes.enabled`, every `per_hour` at most [`MAX_PER_HOUR`].
    pub fn validate(&self) -> Result<(), SamplingError> {
        unit(
            "label_requests.uncertain.threshold",
            self.uncertain.threshold.into(),
        )?;
        let epsilon = self.uncertain.epsilon;
        if !(epsilon.is_finite() && epsilon >= 0.0) {
            return Err(SamplingError::new(
                "label_requests.uncertain.epsilon",
                format!("is {epsilon}; expected a finite number >= 0"),
            ));
        }
        labels("label_requests.uncertain.classes", &self.uncertain.classes)?;
        labels("label_requests.classes.classes", &self.classes.classes)?;
        if self.classes.enabled && self.classes.classes.is_empty() {
            return Err(SamplingError::new(
                "label_requests.classes.classes",
                "is empty; expected at least one label while `label_requests.classes.enabled` is true",
            ));
        }
        unit("label_requests.rare.max_share", self.rare.max_share.into())?;
        unit("label_requests.random.share", self.random.share)?;
        for (key, limit) in [
            (
                "label_requests.uncertain.limit.per_hour",
                &self.uncertain.limit,
            ),
            ("label_requests.classes.limit.per_hour", &self.classes.limit),
            ("label_requests.rare.limit.per_hour", &self.rare.limit),
            ("label_requests.random.limit.per_hour", &self.random.limit),
        ] {
            if limit.per_hour > MAX_PER_HOUR {
                return Err(SamplingError::new(
                    key,
                    format!("is {}; expected at most {MAX_PER_HOUR}", limit.per_hour),
                ));
            }
        }
        Ok(())
    }

    /// The strategy's rate limit.
    fn limit(&self, strategy: Strategy) -> &RateLimit {
        match strategy {
            Strategy::Uncertain => &self.uncertain.limit,
            Strategy::Classes => &self.classes.limit,
            Strategy::Rare => &self.rare.limit,
            Strategy::Random => &self.random.limit,
        }
    }

    /// Whether the strategy can grant at all: enabled, with both limits above 0.
    fn is_on(&self, strategy: Strategy) -> bool {
        let enabled = match strategy {
            Strategy::Uncertain => self.uncertain.enabled,
            Strategy::Classes => self.classes.enabled,
            Strategy::Rare => self.rare.enabled,
            Strategy::Random => self.random.enabled,
        };
        let limit = self.limit(strategy);
        enabled && limit.per_minute > 0 && limit.per_hour > 0
    }
}

fn unit(key: &'static str, value: f64) -> Result<(), SamplingError> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(SamplingError::new(
            key,
            format!("is {value}; expected a number within 0..=1"),
        ))
    }
}

fn labels(key: &'static str, classes: &[String]) -> Result<(), SamplingError> {
    if classes.iter().any(|c| c.trim().is_empty()) {
        return Err(SamplingError::new(
            key,
            "contains an empty label; expected class names",
        ));
    }
    Ok(())
}

/// A prediction shown to the sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate<'a> {
    /// The scope of the camera (see `crate::scopes`): rarity is counted per scope, because what
    /// is rare at a gate is common on a road.
    pub scope: &'a str,
    /// The predicted label.
    pub label: &'a str,
    /// The prediction's score.
    pub score: f32,
    /// A stable hash of the prediction's identity ([`request_key`]): decides `random`.
    pub key: u64,
}

/// Labels whose counts are tracked per scope; further new labels are not tracked (never rare),
/// so that a model with unbounded label text cannot grow the sampler.
pub const MAX_LABELS_PER_SCOPE: usize = 256;

/// Scopes whose labels are counted; further scopes are not tracked (nothing is rare there).
pub const MAX_SCOPES: usize = 1024;

/// The scope total at which all its counts are halved: `2 * max(min_observations, 1000)`.
/// Halving makes old traffic weigh less and less, so rarity follows the recent mix; starting at
/// 1000 at least keeps enough counts after halving for shares of a few percent to mean
/// something.
fn decay_at(min_observations: u64) -> u64 {
    min_observations.max(1000).saturating_mul(2)
}

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

/// Decides which predictions to request, within each strategy's limits. Deterministic: the
/// same configuration, times and candidates give the same decisions.
///
/// Memory is bounded: per strategy, the times of at most `per_hour` requests; for rarity, at
/// most [`MAX_SCOPES`] x [`MAX_LABELS_PER_SCOPE`] counters (plus the scope and label text).
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplerConfig,
    /// Times of the requests granted within the last hour, oldest first, per strategy (in
    /// [`Strategy::ALL`] order).
    recent: [VecDeque<i64>; 4],
    /// Requests granted per strategy since creation.
    granted: [u64; 4],
    /// The latest time seen: an earlier `now_ms` is taken as this, so the windows stay ordered.
    latest_ms: Option<i64>,
    /// Label counts per scope, for rarity.
    scopes: BTreeMap<String, ScopeCounts>,
}

/// What a scope's traffic looked like recently.
#[derive(Debug, Clone, Default)]
struct ScopeCounts {
    /// Candidates seen, ever (not decayed, saturating): the `min_observations` gate.
    seen: u64,
    /// Decayed count per tracked label (no zero counts).
    counts: BTreeMap<String, u64>,
    /// Sum of `counts`.
    total: u64,
}

impl ScopeCounts {
    /// Counts one candidate of `label`, halving every count when the total reaches `decay_at`.
    fn observe(&mut self, label: &str, decay_at: u64) {
        self.seen = self.seen.saturating_add(1);
        if let Some(count) = self.counts.get_mut(label) {
            *count += 1;
        } else if self.counts.len() < MAX_LABELS_PER_SCOPE {
            self.counts.insert(label.to_owned(), 1);
        } else {
            return;
        }
        self.total += 1;
        if self.total >= decay_at {
            self.counts.retain(|_, count| {
                *count /= 2;
                *count > 0
            });
            self.total = self.counts.values().sum();
        }
    }

    /// Whether `label` is below `max_share` of the scope's counts, once the scope has seen
    /// `min_observations` candidates; an untracked label is not rare.
    fn is_rare(&self, label: &str, max_share: f32, min_observations: u64) -> bool {
        let Some(&count) = self.counts.get(label) else {
            return false;
        };
        self.seen >= min_observations && (count as f64) < f64::from(max_share) * self.total as f64
    }
}

impl Sampler {
    /// A sampler with no history. The configuration is used as given: check it with
    /// [`SamplerConfig::validate`] first (a NaN threshold, say, simply never selects).
    pub fn new(config: SamplerConfig) -> Self {
        Self {
            config,
            recent: Default::default(),
            granted: [0; 4],
            latest_ms: None,
            scopes: BTreeMap::new(),
        }
    }

    /// Observes the candidate (rarity counts, when `rare` is on) and decides: `Some(strategy)`
    /// if a label should be requested. `now_ms` is monotonic milliseconds supplied by the
    /// caller; a time earlier than one already seen counts as that one.
    pub fn consider(&mut self, now_ms: i64, candidate: &Candidate<'_>) -> Option<Strategy> {
        let now = self.latest_ms.map_or(now_ms, |latest| latest.max(now_ms));
        self.latest_ms = Some(now);
        let rare = self.observe(candidate);
        for strategy in Strategy::ALL {
            if self.config.is_on(strategy)
                && self.selects(strategy, candidate, rare)
                && self.take_budget(strategy, now)
            {
                self.granted[strategy.index()] += 1;
                return Some(strategy);
            }
        }
        None
    }

    /// Requests granted per strategy since creation (for tests and metrics).
    pub fn granted(&self, strategy: Strategy) -> u64 {
        self.granted[strategy.index()]
    }

    /// Whether `strategy`'s selector wants the candidate (budget aside).
    fn selects(&self, strategy: Strategy, candidate: &Candidate<'_>, rare: bool) -> bool {
        let config = &self.config;
        let listed = |classes: &[String]| classes.iter().any(|c| c == candidate.label);
        match strategy {
            Strategy::Uncertain => {
                let uncertain = &config.uncertain;
                // In f64, so that a score exactly `epsilon` away (as written in f32) counts.
                let distance = (f64::from(candidate.score) - f64::from(uncertain.threshold)).abs();
                (uncertain.classes.is_empty() || listed(&uncertain.classes))
                    && distance <= f64::from(uncertain.epsilon)
            }
            Strategy::Classes => listed(&config.classes.classes),
            Strategy::Rare => rare,
            Strategy::Random => unit_interval(candidate.key) < config.random.share,
        }
    }

    /// Counts the candidate's label in its scope; whether the label is rare there.
    fn observe(&mut self, candidate: &Candidate<'_>) -> bool {
        if !self.config.is_on(Strategy::Rare) {
            return false;
        }
        let rare = &self.config.rare;
        let decay_at = decay_at(rare.min_observations);
        if !self.scopes.contains_key(candidate.scope) && self.scopes.len() >= MAX_SCOPES {
            return false;
        }
        let counts = match self.scopes.get_mut(candidate.scope) {
            Some(counts) => counts,
            None => self.scopes.entry(candidate.scope.to_owned()).or_default(),
        };
        counts.observe(candidate.label, decay_at);
        counts.is_rare(candidate.label, rare.max_share, rare.min_observations)
    }

    /// Takes one request of `strategy`'s budget at `now`, if both windows have room.
    fn take_budget(&mut self, strategy: Strategy, now: i64) -> bool {
        let RateLimit {
            per_minute,
            per_hour,
        } = *self.config.limit(strategy);
        let recent = &mut self.recent[strategy.index()];
        // A request at `t` counts in the windows (now - 1 h, now] and (now - 60 s, now].
        let hour_ago = now.saturating_sub(HOUR_MS);
        while recent.front().is_some_and(|&t| t <= hour_ago) {
            recent.pop_front();
        }
        if recent.len() >= per_hour as usize {
            return false;
        }
        let minute_ago = now.saturating_sub(MINUTE_MS);
        let last_minute = recent
            .iter()
            .rev()
            .take(per_minute as usize)
            .take_while(|&&t| t > minute_ago)
            .count();
        if last_minute >= per_minute as usize {
            return false;
        }
        recent.push_back(now);
        true
    }
}

/// A stable 64-bit key of a prediction's identity, e.g. from topic, partition, offset and box
/// index: FNV-1a 64 over the parts, each followed by a 0xFF byte (which UTF-8 text never
/// contains) so that `["ab", "c"]` and `["a", "bc"]` differ.
pub fn request_key(parts: &[&[u8]]) -> u64 {
    parts
        .iter()
        .flat_map(|part| part.iter().chain(std::iter::once(&0xFF)))
        .fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// `key` mixed by splitmix64 (FNV alone has weak low bits), its top 53 bits as a fraction in
/// [0, 1).
fn unit_interval(key: u64) -> f64 {
    let mut z = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    // Not the prelude's glob: its `Strategy` trait would clash with ours.
    use proptest::prelude::{any, prop_assert, prop_assert_eq, prop_oneof, proptest};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const NO_LIMIT: RateLimit = RateLimit {
        per_minute: MAX_PER_HOUR,
        per_hour: MAX_PER_HOUR,
    };

    /// Only `strategy` enabled, with its default settings.
    fn only(strategy: Strategy) -> SamplerConfig {
        let mut config = SamplerConfig::default();
        config.uncertain.enabled = strategy == Strategy::Uncertain;
        config.classes.enabled = strategy == Strategy::Classes;
        config.classes.classes = vec!["forklift".into()];
        config.rare.enabled = strategy == Strategy::Rare;
        config.random.enabled = strategy == Strategy::Random;
        config
    }

    fn candidate(label: &str, score: f32, key: u64) -> Candidate<'_> {
        Candidate {
            scope: "global",
            label,
            score,
            key,
        }
    }

    fn in_scope<'a>(scope: &'a str, label: &'a str, key: u64) -> Candidate<'a> {
        Candidate {
            scope,
            label,
            score: 0.99,
            key,
        }
    }

    #[test]
    fn strategies_have_stable_names() -> TestResult {
        let names: Vec<_> = Strategy::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["uncertain", "classes", "rare", "random"]);
        for strategy in Strategy::ALL {
            assert_eq!(serde_json::to_string(&strategy)?, format!("\"{strategy}\""));
            assert_eq!(Strategy::ALL[strategy.index()], strategy);
        }
        assert_eq!(
            serde_json::from_str::<Strategy>("\"rare\"")?,
            Strategy::Rare
        );
        Ok(())
    }

    #[test]
    fn uncertain_predictions_are_requested_and_confident_ones_are_not() {
        let mut config = only(Strategy::Uncertain);
        config.uncertain.limit = NO_LIMIT;
        let mut sampler = Sampler::new(config);
        for (score, wanted) in [
            (0.5, true),
            (0.36, true),
            (0.64, true),
            (0.35, true),
            (0.65, true),
            (0.34, false),
            (0.66, false),
            (0.95, false),
            (0.05, false),
            (f32::NAN, false),
            (f32::INFINITY, false),
        ] {
            let decision = sampler.consider(0, &candidate("car", score, 1));
            let expected = wanted.then_some(Strategy::Uncertain);
            assert_eq!(decision, expected, "score {score}");
        }
        assert_eq!(sampler.granted(Strategy::Uncertain), 5);
    }

    #[test]
    fn uncertain_can_be_limited_to_some_classes() {
        let mut config = only(Strategy::Uncertain);
        config.uncertain.classes = vec!["dog".into()];
        let mut sampler = Sampler::new(config);
        assert_eq!(sampler.consider(0, &candidate("car", 0.5, 1)), None);
        assert_eq!(
            sampler.consider(0, &candidate("dog", 0.5, 1)),
            Some(Strategy::Uncertain)
        );
    }

    #[test]
    fn chosen_classes_are_requested() {
        let mut sampler = Sampler::new(only(Strategy::Classes));
        assert_eq!(
            sampler.consider(0, &candidate("forklift", 0.99, 1)),
            Some(Strategy::Classes)
        );
        assert_eq!(sampler.consider(0, &candidate("car", 0.99, 1)), None);
        assert_eq!(sampler.consider(0, &candidate("Forklift", 0.99, 1)), None);
    }

    #[test]
    fn the_minute_limit_holds_and_frees_after_60_seconds() {
        let mut config = only(Strategy::Uncertain);
        config.uncertain.limit = RateLimit {
            per_minute: 3,
            per_hour: 1000,
        };
        let mut sampler = Sampler::new(config);
        // 100 uncertain candidates within one minute (0 .. 59 400 ms): exactly 3 granted.
        let granted: Vec<i64> = (0..100)
            .map(|i| i * 600)
            .filter(|&t| sampler.consider(t, &candidate("car", 0.5, 0)).is_some())
            .collect();
        assert_eq!(granted, [0, 600, 1200]);
        // At 59 999 ms the first request is still in the window; at 60 000 ms it is not.
        assert_eq!(sampler.consider(59_999, &candidate("car", 0.5, 0)), None);
        assert_eq!(
            sampler.consider(60_000, &candidate("car", 0.5, 0)),
            Some(Strategy::Uncertain)
        );
        assert_eq!(sampler.consider(60_000, &candidate("car", 0.5, 0)), None);
        assert_eq!(
            sampler.consider(60_600, &candidate("car", 0.5, 0)),
            Some(Strategy::Uncertain)
        );
        assert_eq!(sampler.granted(Strategy::Uncertain), 5);
    }

    #[test]
    fn the_hour_limit_caps_across_minutes() {
        let mut config = only(Strategy::Uncertain);
        config.uncertain.limit = RateLimit {
            per_minute: 3,
            per_hour: 5,
        };
        let mut sampler = Sampler::new(config);
        let granted_in_minute = |sampler: &mut Sampler, start: i64| {
            (0..100)
                .filter(|i| {
                    let t = start + i * 100;
                    sampler.consider(t, &candidate("car", 0.5, 0)).is_some()
                })
                .count()
        };
        assert_eq!(granted_in_minute(&mut sampler, 0), 3);
        // The next minute has room for 3, the hour for 2 only.
        assert_eq!(granted_in_minute(&mut sampler, 60_000), 2);
        assert_eq!(granted_in_minute(&mut sampler, 120_000), 0);
        assert_eq!(granted_in_minute(&mut sampler, 3_000_000), 0);
        // An hour after the first requests they no longer count.
        assert_eq!(granted_in_minute(&mut sampler, 3_600_000), 3);
        assert_eq!(sampler.granted(Strategy::Uncertain), 8);
    }

    #[test]
    fn time_going_backwards_does_not_reopen_the_windows() {
        let mut config = only(Strategy::Uncertain);
        config.uncertain.limit = RateLimit {
            per_minute: 1,
            per_hour: 10,
        };
        let mut sampler = Sampler::new(config);
        assert!(
            sampler
                .consider(100_000, &candidate("car", 0.5, 0))
                .is_some()
        );
        assert_eq!(sampler.consider(0, &candidate("car", 0.5, 0)), None);
        assert_eq!(sampler.consider(159_999, &candidate("car", 0.5, 0)), None);
        assert!(
            sampler
                .consider(160_000, &candidate("car", 0.5, 0))
                .is_some()
        );
        // Extreme times do not overflow.
        assert!(
            Sampler::new(only(Strategy::Uncertain))
                .consider(i64::MIN, &candidate("car", 0.5, 0))
                .is_some()
        );
    }

    #[test]
    fn a_strategy_out_of_budget_falls_through_to_the_next() {
        let mut config = SamplerConfig::default();
        config.uncertain.limit.per_minute = 1;
        config.rare.enabled = false;
        config.random.share = 1.0;
        config.random.limit.per_minute = 1;
        let mut sampler = Sampler::new(config);
        let c = candidate("car", 0.5, 7);
        assert_eq!(sampler.consider(0, &c), Some(Strategy::Uncertain));
        assert_eq!(sampler.consider(1, &c), Some(Strategy::Random));
        assert_eq!(sampler.consider(2, &c), None);
        // A confident candidate is not uncertain: random takes it when it has budget.
        assert_eq!(
            sampler.consider(60_001, &candidate("car", 0.99, 7)),
            Some(Strategy::Random)
        );
        assert_eq!(sampler.granted(Strategy::Uncertain), 1);
        assert_eq!(sampler.granted(Strategy::Random), 2);
        assert_eq!(sampler.granted(Strategy::Classes), 0);
    }

    #[test]
    fn the_first_strategy_that_selects_wins() {
        let mut config = SamplerConfig::default();
        config.classes.enabled = true;
        config.classes.classes = vec!["dog".into()];
        config.random.share = 1.0;
        let mut sampler = Sampler::new(config);
        assert_eq!(
            sampler.consider(0, &candidate("dog", 0.5, 1)),
            Some(Strategy::Uncertain)
        );
        assert_eq!(
            sampler.consider(0, &candidate("dog", 0.9, 1)),
            Some(Strategy::Classes)
        );
        assert_eq!(
            sampler.consider(0, &candidate("car", 0.9, 1)),
            Some(Strategy::Random)
        );
    }

    /// Feeds `n` candidates to `scope`: `dog` every 50th (2 %), else `car`; returns the
    /// labels requested, and by which strategy.
    fn feed(sampler: &mut Sampler, scope: &str, n: u64) -> Vec<(u64, &'static str, Strategy)> {
        (0..n)
            .filter_map(|i| {
                let label = if i % 50 == 49 { "dog" } else { "car" };
                sampler
                    .consider(0, &in_scope(scope, label, i))
                    .map(|s| (i, label, s))
            })
            .collect()
    }

    #[test]
    fn a_rare_label_is_requested_and_a_common_one_is_not() {
        let mut config = only(Strategy::Rare);
        config.rare.limit = NO_LIMIT;
        let mut sampler = Sampler::new(config);
        let requested = feed(&mut sampler, "lot", 1000);
        // Every dog once the scope has seen 200 candidates, no car, all by `rare`.
        let expected: Vec<_> = (0..1000)
            .filter(|i| i % 50 == 49 && *i >= 199)
            .map(|i| (i, "dog", Strategy::Rare))
            .collect();
        assert_eq!(requested, expected);
        assert_eq!(sampler.granted(Strategy::Rare), 17);
    }

    #[test]
    fn scopes_count_separately() {
        let mut config = only(Strategy::Rare);
        config.rare.limit = NO_LIMIT;
        let mut sampler = Sampler::new(config);
        assert_eq!(feed(&mut sampler, "lot", 1000).len(), 17);
        // A new scope has seen nothing yet: its dogs wait for its own 200 candidates.
        assert!(feed(&mut sampler, "gate", 199).is_empty());
        // In a scope where dogs are half the traffic they are not rare.
        let dock: Vec<_> = (0..1000u64)
            .filter(|&i| {
                let label = if i % 2 == 0 { "dog" } else { "car" };
                sampler.consider(0, &in_scope("dock", label, i)).is_some()
            })
            .collect();
        assert!(dock.is_empty(), "{dock:?}");
        // ... and that did not change the lot's counts.
        assert!(sampler.consider(0, &in_scope("lot", "dog", 0)).is_some());
    }

    #[test]
    fn rarity_follows_recent_traffic() {
        let mut config = only(Strategy::Rare);
        config.rare.limit = NO_LIMIT;
        let mut sampler = Sampler::new(config);
        for i in 0..1990 {
            sampler.consider(0, &in_scope("lot", "car", i));
        }
        // The traffic turns to dogs. Without decay, 1990 cars would stay above 5 % for
        // 36 000 dogs; halving at every 2000 counts makes cars rare well within 10 000.
        let mut first_rare_car = None;
        for i in 0..10_000 {
            sampler.consider(0, &in_scope("lot", "dog", i));
            if i % 100 == 0 && sampler.consider(0, &in_scope("lot", "car", i)).is_some() {
                first_rare_car = Some(i);
                break;
            }
        }
        assert!(first_rare_car.is_some());
        let cars = sampler
            .scopes
            .get("lot")
            .and_then(|s| s.counts.get("car").copied());
        assert!(cars.is_some_and(|c| c < 100), "{cars:?}");
    }

    #[test]
    fn rarity_memory_is_bounded() {
        let mut config = only(Strategy::Rare);
        config.rare.limit = NO_LIMIT;
        config.rare.min_observations = 0;
        let mut sampler = Sampler::new(config);
        for i in 0..2000u64 {
            let label = format!("label-{}", i % 300);
            sampler.consider(0, &in_scope("lot", &label, i));
        }
        let lot = sampler.scopes.get("lot");
        assert_eq!(lot.map(|s| s.counts.len()), Some(MAX_LABELS_PER_SCOPE));
        assert_eq!(lot.map(|s| s.seen), Some(2000));
        // An untracked label is never rare, however rare it is.
        assert_eq!(sampler.consider(0, &in_scope("lot", "label-299", 0)), None);
        assert_eq!(sampler.consider(0, &in_scope("lot", "new", 0)), None);

        for i in 0..(MAX_SCOPES as u64 + 10) {
            sampler.consider(0, &in_scope(&format!("scope-{i}"), "car", i));
        }
        assert_eq!(sampler.scopes.len(), MAX_SCOPES);
    }

    #[test]
    fn rarity_is_not_counted_while_rare_is_off() {
        let mut sampler = Sampler::new(only(Strategy::Uncertain));
        feed(&mut sampler, "lot", 500);
        assert!(sampler.scopes.is_empty());
    }

    #[test]
    fn the_random_share_is_close_to_the_setting_and_reproducible() {
        let mut config = only(Strategy::Random);
        config.random.share = 0.1;
        config.random.limit = NO_LIMIT;
        let run = |config: &SamplerConfig| {
            let mut sampler = Sampler::new(config.clone());
            (0..10_000u64)
                .filter(|&i| {
                    let key = request_key(&[b"frames", &i.to_le_bytes(), b"box", b"0"]);
                    sampler.consider(0, &candidate("car", 0.99, key)).is_some()
                })
                .collect::<Vec<u64>>()
        };
        let first = run(&config);
        assert!((900..=1100).contains(&first.len()), "{}", first.len());
        assert_eq!(first, run(&config));
        config.random.share = 0.0;
        assert!(run(&config).is_empty());
        config.random.share = 1.0;
        assert_eq!(run(&config).len(), 10_000);
        // Sequential raw keys (no FNV) are spread as well.
        let mut sampler = Sampler::new(SamplerConfig {
            random: RandomConfig {
                share: 0.1,
                limit: NO_LIMIT,
                ..RandomConfig::default()
            },
            ..only(Strategy::Random)
        });
        let raw = (0..10_000u64)
            .filter(|&k| sampler.consider(0, &candidate("car", 0.99, k)).is_some())
            .count();
        assert!((900..=1100).contains(&raw), "{raw}");
    }

    #[test]
    fn disabled_strategies_never_grant() {
        let mut config = SamplerConfig::default();
        config.uncertain.enabled = false;
        config.rare.enabled = false;
        config.random.enabled = false;
        config.random.share = 1.0;
        // Classes is off by default even with a list.
        config.classes.classes = vec!["car".into()];
        let mut sampler = Sampler::new(config);
        for i in 0..1000 {
            let c = candidate("car", 0.5, i as u64);
            assert_eq!(sampler.consider(i * 1000, &c), None);
        }
        for strategy in Strategy::ALL {
            assert_eq!(sampler.granted(strategy), 0);
        }
    }

    #[test]
    fn a_zero_limit_turns_a_strategy_off() {
        for limit in [
            RateLimit {
                per_minute: 0,
                per_hour: 100,
            },
            RateLimit {
                per_minute: 10,
                per_hour: 0,
            },
        ] {
            let mut config = only(Strategy::Uncertain);
            config.uncertain.limit = limit;
            let mut sampler = Sampler::new(config);
            assert_eq!(sampler.consider(0, &candidate("car", 0.5, 0)), None);
        }
    }

    #[test]
    fn request_keys_are_stable_and_separate_parts() {
        let key = request_key(&[b"frames", b"0", b"1234"]);
        assert_eq!(key, request_key(&[b"frames", b"0", b"1234"]));
        assert_ne!(request_key(&[b"ab", b"c"]), request_key(&[b"a", b"bc"]));
        assert_ne!(request_key(&[]), request_key(&[b""]));
        assert_ne!(key, request_key(&[b"frames", b"0", b"1235"]));
        // FNV-1a 64 of the empty input is its offset basis.
        assert_eq!(request_key(&[]), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn defaults_are_valid_and_documented() {
        let config = SamplerConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert!(config.uncertain.enabled && config.rare.enabled && config.random.enabled);
        assert!(!config.classes.enabled);
        assert_eq!(
            (config.uncertain.threshold, config.uncertain.epsilon),
            (0.5, 0.15)
        );
        assert_eq!(
            (config.rare.max_share, config.rare.min_observations),
            (0.05, 200)
        );
        assert_eq!(config.random.share, 0.01);
        assert_eq!(
            config.random.limit,
            RateLimit {
                per_minute: 2,
                per_hour: 20
            }
        );
        assert_eq!(config.uncertain.limit, RateLimit::default());
    }

    #[test]
    fn config_deserializes_with_defaults_and_refuses_unknown_keys() -> TestResult {
        let config: SamplerConfig = serde_json::from_str(
            r#"{"uncertain": {"epsilon": 0.1}, "random": {"limit": {"per_minute": 5}}}"#,
        )?;
        assert_eq!(config.uncertain.epsilon, 0.1);
        assert_eq!(config.uncertain.threshold, 0.5);
        assert_eq!(config.random.limit.per_minute, 5);
        assert_eq!(config.random.share, 0.01);
        assert!(
            serde_json::from_str::<SamplerConfig>(r#"{"uncertain": {"epsilom": 0.1}}"#).is_err()
        );
        assert!(serde_json::from_str::<SamplerConfig>(r#"{"sometimes": {}}"#).is_err());
        Ok(())
    }

    #[test]
    fn invalid_settings_name_their_key() {
        let error = |edit: fn(&mut SamplerConfig)| {
            let mut config = SamplerConfig::default();
            edit(&mut config);
            config.validate().err()
        };
        let key = |edit| error(edit).map(|e| e.key);
        assert_eq!(
            key(|c| c.uncertain.epsilon = -0.1),
            Some("label_requests.uncertain.epsilon")
        );
        assert_eq!(
            key(|c| c.uncertain.epsilon = f32::INFINITY),
            Some("label_requests.uncertain.epsilon")
        );
        assert_eq!(
            key(|c| c.uncertain.threshold = 1.5),
            Some("label_requests.uncertain.threshold")
        );
        assert_eq!(
            key(|c| c.uncertain.threshold = f32::NAN),
            Some("label_requests.uncertain.threshold")
        );
        assert_eq!(
            key(|c| c.uncertain.classes = vec![" ".into()]),
            Some("label_requests.uncertain.classes")
        );
        assert_eq!(
            key(|c| c.classes.enabled = true),
            Some("label_requests.classes.classes")
        );
        assert_eq!(
            key(|c| c.rare.max_share = -0.01),
            Some("label_requests.rare.max_share")
        );
        assert_eq!(
            key(|c| c.random.share = 1.01),
            Some("label_requests.random.share")
        );
        assert_eq!(
            key(|c| c.rare.limit.per_hour = MAX_PER_HOUR + 1),
            Some("label_requests.rare.limit.per_hour")
        );
        // Limits of 0 (off) and edge values are fine.
        assert_eq!(
            key(|c| {
                c.uncertain.limit.per_minute = 0;
                c.uncertain.epsilon = 0.0;
                c.random.share = 1.0;
                c.rare.max_share = 0.0;
                c.random.limit.per_hour = MAX_PER_HOUR;
            }),
            None
        );
        let message = error(|c| c.uncertain.epsilon = -0.5).map(|e| e.to_string());
        assert_eq!(
            message.as_deref(),
            Some("`label_requests.uncertain.epsilon` is -0.5; expected a finite number >= 0")
        );
        let message = error(|c| c.classes.enabled = true).map(|e| e.to_string());
        assert!(message.is_some_and(|m| m.contains("`label_requests.classes.enabled`")),);
    }

    proptest! {
        #[test]
        fn no_window_holds_more_than_the_limits(
            steps in proptest::collection::vec(
                (prop_oneof![0i64..50, 0i64..40_000], 0.0f32..1.0, 0u8..4, any::<u64>()),
                1..400,
            ),
            limits in proptest::collection::vec((1u32..6, 1u32..20), 4),
        ) {
            let limit = |i: usize| RateLimit { per_minute: limits[i].0, per_hour: limits[i].1 };
            let mut config = SamplerConfig::default();
            config.uncertain.epsilon = 0.3;
            config.uncertain.limit = limit(0);
            config.classes.enabled = true;
            config.classes.classes = vec!["l0".into()];
            config.classes.limit = limit(1);
            config.rare.min_observations = 20;
            config.rare.max_share = 0.3;
            config.rare.limit = limit(2);
            config.random.share = 0.5;
            config.random.limit = limit(3);
            let mut sampler = Sampler::new(config);
            let mut now = 0;
            let mut granted: [Vec<i64>; 4] = Default::default();
            for (step, score, label, key) in steps {
                now += step;
                let label = format!("l{label}");
                let c = Candidate { scope: "lot", label: &label, score, key };
                if let Some(strategy) = sampler.consider(now, &c) {
                    granted[strategy.index()].push(now);
                }
            }
            for strategy in Strategy::ALL {
                let times = &granted[strategy.index()];
                let RateLimit { per_minute, per_hour } = limit(strategy.index());
                prop_assert_eq!(sampler.granted(strategy), times.len() as u64);
                // The fullest window of each length starts at a request.
                for &start in times {
                    let within = |length: i64| {
                        times.iter().filter(|&&t| t >= start && t < start + length).count()
                    };
                    prop_assert!(within(MINUTE_MS) <= per_minute as usize, "{strategy}");
                    prop_assert!(within(HOUR_MS) <= per_hour as usize, "{strategy}");
                }
            }
        }
    }
}
