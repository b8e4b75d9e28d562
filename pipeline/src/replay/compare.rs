//! Holding a run's results against a golden, frame by frame (matched by camera and frame id).
//!
//! The rule for what is compared: everything in a result document but what cannot repeat
//! from run to run, which is left out by rule: `timestamps` and `latency_ms` (clocks) and
//! `source` (where the broker put the frame). Boxes match within an IoU tolerance, scores and
//! probabilities within a score tolerance; every other field must be identical. A frame that
//! was dead-lettered is compared by its error kind.

use std::collections::BTreeMap;
use std::fmt;

use tessera_actors::FrameResult;
use tessera_actors::protocol::result::{BoxOut, ClassificationOut, DetectionOut, FrameStatus};
use tessera_operators::geometry::BBox;

/// How far a box or a score may move and still match.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Least IoU between a golden box and this run's.
    pub iou: f32,
    /// Largest difference of a score or probability.
    pub score: f32,
}

impl Default for Tolerance {
    fn default() -> Self {
        Self {
            iou: 0.9,
            score: 0.05,
        }
    }
}

impl std::str::FromStr for Tolerance {
    type Err = String;

    /// `iou=0.9,score=0.05`; either may be left out (its default stays).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut tolerance = Tolerance::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected NAME=VALUE (iou=0.9,score=0.05)"))?;
            let value: f32 = value
                .trim()
                .parse()
                .map_err(|_| format!("`{part}`: {value:?} is not a number"))?;
            match name.trim() {
                "iou" if (0.0..=1.0).contains(&value) => tolerance.iou = value,
                "score" if (0.0..=1.0).contains(&value) => tolerance.score = value,
                "iou" | "score" => return Err(format!("`{part}`: must lie in 0..=1")),
                other => return Err(format!("unknown tolerance `{other}` (iou, score)")),
            }
        }
        Ok(tolerance)
    }
}

/// A frame's outcome: its result document, or the kind of error it was dead-lettered with.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameOutcome {
    Result(Box<FrameResult>),
    DeadLetter { kind: String },
}

/// Frames are matched by camera and frame id.
pub type FrameKey = (String, String);

/// What differs in one frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Difference {
    /// A field other than detections and classifications: its name, golden, now.
    Field(&'static str, String, String),
    MissingDetection(DetectionOut),
    ExtraDetection(DetectionOut),
    BoxMoved {
        golden: DetectionOut,
        now: DetectionOut,
        iou: f32,
    },
    ScoreChanged {
        golden: DetectionOut,
        now: DetectionOut,
    },
    HeadChanged {
        golden: DetectionOut,
        now: DetectionOut,
    },
    MissingClass(ClassificationOut),
    ExtraClass(ClassificationOut),
    ClassScoreChanged {
        golden: ClassificationOut,
        now: ClassificationOut,
    },
}

/// The comparison of a run with its golden.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Comparison {
    pub compared: usize,
    pub identical: usize,
    /// Frames of both whose outcomes differ, with what differs.
    pub differing: BTreeMap<FrameKey, Vec<Difference>>,
    /// In the golden, not in this run.
    pub missing_frames: Vec<FrameKey>,
    /// In this run, not in the golden.
    pub extra_frames: Vec<FrameKey>,
}

impl Comparison {
    pub fn matches(&self) -> bool {
        self.differing.is_empty() && self.missing_frames.is_empty() && self.extra_frames.is_empty()
    }

    /// Counts of each kind of difference, for the summary.
    fn tally(&self) -> BTreeMap<&'static str, usize> {
        let mut tally = BTreeMap::new();
        for difference in self.differing.values().flatten() {
            let name = match difference {
                Difference::Field(..) => "changed fields",
                Difference::MissingDetection(_) => "missing detections",
                Difference::ExtraDetection(_) => "extra detections",
                Difference::BoxMoved { .. } => "moved boxes",
                Difference::ScoreChanged { .. } => "changed scores",
                Difference::HeadChanged { .. } => "changed head answers",
                Difference::MissingClass(_) => "missing classes",
                Difference::ExtraClass(_) => "extra classes",
                Difference::ClassScoreChanged { .. } => "changed class scores",
            };
            *tally.entry(name).or_default() += 1;
        }
        tally
    }

    /// One line: frames compared, identical, differing, missing, extra, and the differences.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{} frame(s) compared: {} identical, {} differ; {} missing, {} extra",
            self.compared,
            self.identical,
            self.differing.len(),
            self.missing_frames.len(),
            self.extra_frames.len()
        );
        let tally = self.tally();
        if !tally.is_empty() {
            let parts: Vec<String> = tally.iter().map(|(k, v)| format!("{v} {k}")).collect();
            line.push_str(&format!(" ({})", parts.join(", ")));
        }
        line
    }
}

impl fmt::Display for Comparison {
    /// The readable diff: `-` is the golden's, `+` this run's, `~` a change.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for ((camera, frame), differences) in &self.differing {
            writeln!(f, "frame {camera} / {frame}:")?;
            for difference in differences {
                writeln!(f, "  {difference}")?;
            }
        }
        for (camera, frame) in &self.missing_frames {
            writeln!(
                f,
                "frame {camera} / {frame}: missing (in the golden, not in this run)"
            )?;
        }
        for (camera, frame) in &self.extra_frames {
            writeln!(
                f,
                "frame {camera} / {frame}: extra (in this run, not in the golden)"
            )?;
        }
        write!(f, "{}", self.summary())
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Field(name, golden, now) => write!(f, "~ {name}: {golden} -> {now}"),
            Difference::MissingDetection(d) => write!(f, "- detection {}", detection(d)),
            Difference::ExtraDetection(d) => write!(f, "+ detection {}", detection(d)),
            Difference::BoxMoved { golden, now, iou } => write!(
                f,
                "~ box of {} {:.3}: {} -> {} (IoU {iou:.3})",
                golden.label,
                golden.score,
                box_text(&golden.bbox),
                box_text(&now.bbox)
            ),
            Difference::ScoreChanged { golden, now } => write!(
                f,
                "~ score of {} {}: {:.3} -> {:.3} (off by {:.3})",
                golden.label,
                box_text(&golden.bbox),
                golden.score,
                now.score,
                (golden.score - now.score).abs()
            ),
            Difference::HeadChanged { golden, now } => write!(
                f,
                "~ head answer on {} {}: {} -> {}",
                golden.label,
                box_text(&golden.bbox),
                head_text(golden),
                head_text(now)
            ),
            Difference::MissingClass(c) => write!(f, "- class {} {:.3}", c.label, c.score),
            Difference::ExtraClass(c) => write!(f, "+ class {} {:.3}", c.label, c.score),
            Difference::ClassScoreChanged { golden, now } => write!(
                f,
                "~ class {}: {:.3} -> {:.3}",
                golden.label, golden.score, now.score
            ),
        }
    }
}

fn detection(d: &DetectionOut) -> String {
    format!("{} {:.3} {}", d.label, d.score, box_text(&d.bbox))
}

fn box_text(b: &BoxOut) -> String {
    format!("[{:.1}, {:.1}, {:.1}, {:.1}]", b.x1, b.y1, b.x2, b.y2)
}

fn head_text(d: &DetectionOut) -> String {
    match &d.head {
        None => "none".into(),
        Some(h) => format!(
            "{} {:.3} (v{} {}{})",
            h.label,
            h.score,
            h.version,
            h.scope,
            if h.rejected { ", rejected" } else { "" }
        ),
    }
}

/// Compares every frame of `golden` with `run`.
pub fn compare(
    golden: &BTreeMap<FrameKey, FrameOutcome>,
    run: &BTreeMap<FrameKey, FrameOutcome>,
    tolerance: Tolerance,
) -> Comparison {
    let mut comparison = Comparison::default();
    for (key, expected) in golden {
        let Some(actual) = run.get(key) else {
            comparison.missing_frames.push(key.clone());
            continue;
        };
        comparison.compared += 1;
        let differences = compare_frame(expected, actual, tolerance);
        if differences.is_empty() {
            comparison.identical += 1;
        } else {
            comparison.differing.insert(key.clone(), differences);
        }
    }
    comparison.extra_frames = run
        .keys()
        .filter(|key| !golden.contains_key(*key))
        .cloned()
        .collect();
    comparison
}

/// What differs between two outcomes of one frame (empty: they match).
pub fn compare_frame(
    golden: &FrameOutcome,
    now: &FrameOutcome,
    tolerance: Tolerance,
) -> Vec<Difference> {
    let (golden, now) = match (golden, now) {
        (FrameOutcome::Result(golden), FrameOutcome::Result(now)) => (golden, now),
        (FrameOutcome::DeadLetter { kind: a }, FrameOutcome::DeadLetter { kind: b }) => {
            return if a == b {
                Vec::new()
            } else {
                vec![Difference::Field("dead-letter kind", a.clone(), b.clone())]
            };
        }
        (golden, now) => {
            return vec![Difference::Field(
                "outcome",
                outcome_name(golden),
                outcome_name(now),
            )];
        }
    };
    let mut differences = Vec::new();
    let mut field = |name: &'static str, a: String, b: String| {
        if a != b {
            differences.push(Difference::Field(name, a, b));
        }
    };
    field("schema", golden.schema.to_string(), now.schema.to_string());
    field("status", status(golden.status), status(now.status));
    field(
        "image",
        format!("{}x{}", golden.image.width, golden.image.height),
        format!("{}x{}", now.image.width, now.image.height),
    );
    field(
        "model",
        format!("{} {}", golden.model.name, golden.model.version),
        format!("{} {}", now.model.name, now.model.version),
    );
    field(
        "head_version",
        version_text(golden.head_version),
        version_text(now.head_version),
    );
    field(
        "head_scope",
        golden.head_scope.clone().unwrap_or_else(|| "none".into()),
        now.head_scope.clone().unwrap_or_else(|| "none".into()),
    );
    field(
        "tile_count",
        golden.tile_count.to_string(),
        now.tile_count.to_string(),
    );
    compare_detections(
        &golden.detections,
        &now.detections,
        tolerance,
        &mut differences,
    );
    compare_classes(
        &golden.classifications,
        &now.classifications,
        tolerance,
        &mut differences,
    );
    differences
}

/// A status as the result document spells it.
fn status(status: FrameStatus) -> String {
    match status {
        FrameStatus::Ok => "ok".into(),
        FrameStatus::Skipped => "skipped".into(),
    }
}

fn outcome_name(outcome: &FrameOutcome) -> String {
    match outcome {
        FrameOutcome::Result(_) => "result".into(),
        FrameOutcome::DeadLetter { kind } => format!("dead-lettered ({kind})"),
    }
}

fn version_text(version: Option<u64>) -> String {
    version.map_or_else(|| "none".into(), |v| format!("v{v}"))
}

/// Pairs each golden detection with this run's detection of the same class that overlaps it
/// most (greedily, best-overlapping pairs first), then reports what is left over and what
/// moved or changed.
fn compare_detections(
    golden: &[DetectionOut],
    now: &[DetectionOut],
    tolerance: Tolerance,
    differences: &mut Vec<Difference>,
) {
    let mut candidates: Vec<(f32, usize, usize)> = Vec::new();
    for (g, a) in golden.iter().enumerate() {
        for (n, b) in now.iter().enumerate() {
            let overlap = iou(&a.bbox, &b.bbox);
            if a.class_id == b.class_id && a.label == b.label && overlap > 0.0 {
                candidates.push((overlap, g, n));
            }
        }
    }
    candidates.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    let mut golden_taken = vec![false; golden.len()];
    let mut now_taken = vec![false; now.len()];
    let mut pairs = Vec::new();
    for (overlap, g, n) in candidates {
        if !golden_taken[g] && !now_taken[n] {
            golden_taken[g] = true;
            now_taken[n] = true;
            pairs.push((overlap, g, n));
        }
    }
    pairs.sort_by_key(|&(_, g, _)| g);
    for (overlap, g, n) in pairs {
        let (a, b) = (&golden[g], &now[n]);
        if overlap < tolerance.iou {
            differences.push(Difference::BoxMoved {
                golden: a.clone(),
                now: b.clone(),
                iou: overlap,
            });
        } else if (a.score - b.score).abs() > tolerance.score {
            differences.push(Difference::ScoreChanged {
                golden: a.clone(),
                now: b.clone(),
            });
        }
        if !same_head(a, b, tolerance) {
            differences.push(Difference::HeadChanged {
                golden: a.clone(),
                now: b.clone(),
            });
        }
    }
    for (g, taken) in golden_taken.iter().enumerate() {
        if !taken {
            differences.push(Difference::MissingDetection(golden[g].clone()));
        }
    }
    for (n, taken) in now_taken.iter().enumerate() {
        if !taken {
            differences.push(Difference::ExtraDetection(now[n].clone()));
        }
    }
}

/// The second stage's answers agree: the same label, class, version, scope and verdict, and
/// a score within the tolerance.
fn same_head(a: &DetectionOut, b: &DetectionOut, tolerance: Tolerance) -> bool {
    match (&a.head, &b.head) {
        (None, None) => true,
        (Some(x), Some(y)) => {
            x.label == y.label
                && x.class_id == y.class_id
                && x.version == y.version
                && x.scope == y.scope
                && x.rejected == y.rejected
                && (x.score - y.score).abs() <= tolerance.score
        }
        _ => false,
    }
}

fn compare_classes(
    golden: &[ClassificationOut],
    now: &[ClassificationOut],
    tolerance: Tolerance,
    differences: &mut Vec<Difference>,
) {
    for a in golden {
        match now
            .iter()
            .find(|b| b.class_id == a.class_id && b.label == a.label)
        {
            None => differences.push(Difference::MissingClass(a.clone())),
            Some(b) if (a.score - b.score).abs() > tolerance.score => {
                differences.push(Difference::ClassScoreChanged {
                    golden: a.clone(),
                    now: b.clone(),
                });
            }
            Some(_) => {}
        }
    }
    for b in now {
        if !golden
            .iter()
            .any(|a| a.class_id == b.class_id && a.label == b.label)
        {
            differences.push(Difference::ExtraClass(b.clone()));
        }
    }
}

fn iou(a: &BoxOut, b: &BoxOut) -> f32 {
    let bbox = |r: &BoxOut| BBox::new(r.x1, r.y1, r.x2, r.y2);
    bbox(a).iou(&bbox(b))
}

#[cfg(test)]
mod tests {
    use tessera_actors::protocol::result::{
        HeadLabel, ImageSize, Latencies, ModelRef, Source, Timestamps,
    };

    use super::*;

    fn det(label: &str, class_id: u32, score: f32, bbox: [f32; 4]) -> DetectionOut {
        DetectionOut {
            label: label.into(),
            class_id,
            score,
            bbox: BoxOut {
                x1: bbox[0],
                y1: bbox[1],
                x2: bbox[2],
                y2: bbox[3],
            },
            head: None,
        }
    }

    fn result(detections: Vec<DetectionOut>) -> FrameResult {
        FrameResult {
            schema: 1,
            camera: "cam".into(),
            source: Source {
                topic: "frames".into(),
                partition: 0,
                offset: 7,
            },
            frame_id: "f".into(),
            timestamps: Timestamps {
                capture_ms: Some(1),
                kafka_ms: Some(2),
                received_ms: 3,
                completed_ms: 4,
            },
            image: ImageSize {
                width: 640,
                height: 480,
            },
            model: ModelRef {
                name: "m".into(),
                version: "1".into(),
            },
            head_version: None,
            head_scope: None,
            tile_count: 4,
            gate: None,
            status: FrameStatus::Ok,
            detections,
            classifications: vec![ClassificationOut {
                label: "dog".into(),
                class_id: 3,
                score: 0.7,
            }],
            latency_ms: Latencies::default(),
        }
    }

    fn outcome(result: FrameResult) -> FrameOutcome {
        FrameOutcome::Result(Box::new(result))
    }

    fn golden() -> FrameResult {
        result(vec![
            det("dog", 16, 0.88, [10.0, 10.0, 110.0, 210.0]),
            det("bicycle", 1, 0.92, [200.0, 50.0, 400.0, 300.0]),
        ])
    }

    #[test]
    fn clocks_and_transport_are_left_out_and_small_moves_are_tolerated() {
        let mut now = golden();
        now.timestamps.received_ms = 99;
        now.latency_ms.total = 123.0;
        now.source.offset = 1000;
        now.detections[0].score = 0.86;
        now.detections[1].bbox.x2 = 402.0;
        now.detections.reverse();
        let differences = compare_frame(&outcome(golden()), &outcome(now), Tolerance::default());
        assert!(differences.is_empty(), "{differences:?}");
    }

    #[test]
    fn every_kind_of_change_is_reported_precisely() {
        let mut now = golden();
        now.tile_count = 5;
        now.head_version = Some(3);
        now.detections[0].score = 0.70;
        now.detections[1].bbox.x1 = 300.0;
        now.detections
            .push(det("cat", 15, 0.4, [0.0, 0.0, 5.0, 5.0]));
        now.classifications.clear();
        let differences = compare_frame(&outcome(golden()), &outcome(now), Tolerance::default());
        let text: Vec<String> = differences.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "~ head_version: none -> v3",
                "~ tile_count: 4 -> 5",
                "~ score of dog [10.0, 10.0, 110.0, 210.0]: 0.880 -> 0.700 (off by 0.180)",
                "~ box of bicycle 0.920: [200.0, 50.0, 400.0, 300.0] -> [300.0, 50.0, 400.0, 300.0] (IoU 0.500)",
                "+ detection cat 0.400 [0.0, 0.0, 5.0, 5.0]",
                "- class dog 0.700",
            ]
        );
    }

    #[test]
    fn a_lost_detection_and_a_changed_head_answer_are_differences() {
        let mut with_head = golden();
        with_head.detections[0].head = Some(HeadLabel {
            label: "rex".into(),
            class_id: 0,
            score: 0.9,
            version: 2,
            scope: "global".into(),
            rejected: false,
        });
        let mut now = with_head.clone();
        now.detections.remove(1);
        if let Some(head) = now.detections[0].head.as_mut() {
            head.version = 3;
        }
        let differences = compare_frame(&outcome(with_head), &outcome(now), Tolerance::default());
        assert!(
            matches!(differences[0], Difference::HeadChanged { .. }),
            "{differences:?}"
        );
        assert!(matches!(&differences[1], Difference::MissingDetection(d) if d.label == "bicycle"));
        assert_eq!(differences.len(), 2);
    }

    #[test]
    fn frames_are_matched_by_camera_and_id_and_outcomes_by_kind() {
        let key = |c: &str, f: &str| (c.to_owned(), f.to_owned());
        let golden_run: BTreeMap<FrameKey, FrameOutcome> = [
            (key("a", "1"), outcome(golden())),
            (key("a", "2"), outcome(golden())),
            (
                key("b", "1"),
                FrameOutcome::DeadLetter {
                    kind: "corrupt_image".into(),
                },
            ),
        ]
        .into();
        let run: BTreeMap<FrameKey, FrameOutcome> = [
            (key("a", "1"), outcome(golden())),
            (key("b", "1"), outcome(golden())),
            (key("c", "9"), outcome(golden())),
        ]
        .into();
        let comparison = compare(&golden_run, &run, Tolerance::default());
        assert!(!comparison.matches());
        assert_eq!(comparison.compared, 2);
        assert_eq!(comparison.identical, 1);
        assert_eq!(comparison.missing_frames, [key("a", "2")]);
        assert_eq!(comparison.extra_frames, [key("c", "9")]);
        let text = comparison.to_string();
        assert!(
            text.contains("~ outcome: dead-lettered (corrupt_image) -> result"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "2 frame(s) compared: 1 identical, 1 differ; 1 missing, 1 extra (1 changed fields)"
            ),
            "{text}"
        );
        assert!(compare(&golden_run, &golden_run, Tolerance::default()).matches());
    }

    #[test]
    fn tolerances_parse_with_defaults_and_clear_errors() {
        assert_eq!("".parse::<Tolerance>(), Ok(Tolerance::default()));
        assert_eq!(
            "iou=0.5, score=0.1".parse::<Tolerance>(),
            Ok(Tolerance {
                iou: 0.5,
                score: 0.1
            })
        );
        assert_eq!("score=0".parse::<Tolerance>().map(|t| t.iou), Ok(0.9));
        assert!(
            "iou=2"
                .parse::<Tolerance>()
                .expect_err("rejected")
                .contains("0..=1")
        );
        assert!(
            "px=3"
                .parse::<Tolerance>()
                .expect_err("rejected")
                .contains("unknown tolerance")
        );
        assert!(
            "iou"
                .parse::<Tolerance>()
                .expect_err("rejected")
                .contains("NAME=VALUE")
        );
    }
}
