//! Which adapter reads a model: a model's declared outputs (names, element types, shapes) are
//! matched against each adapter's layout. Used when a model loads (the manifest's choice must
//! fit, or the error says why) and by `tessera models inspect` (which adapter fits an unknown
//! model, with what settings). Optional value statistics from one probe run break the ties
//! shapes cannot (raw or decoded YOLO rows, pixel or normalised boxes, logits or probabilities).

use std::collections::BTreeMap;
use std::fmt;

use crate::adapters::{Activation, AdapterKind, BoxEncoding, Role, yolox};

/// The element type of an output, as far as adapters care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Element {
    /// `f32` (or another float type).
    Float,
    /// An integer type (class ids and counts of NMS outputs).
    Integer,
    /// Anything else (strings, maps, sequences).
    Other,
}

/// One output of a graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputInfo {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub element: Element,
    /// Dimensions, -1 for dynamic ones; empty for non-tensors.
    pub shape: Vec<i64>,
}

impl OutputInfo {
    /// The shape as `[N, 3549, 85]`, `N` for dynamic dimensions.
    pub fn shape_string(&self) -> String {
        let dims: Vec<String> = self
            .shape
            .iter()
            .map(|&d| if d < 0 { "N".into() } else { d.to_string() })
            .collect();
        format!("[{}]", dims.join(", "))
    }

    fn describe(&self) -> String {
        format!("`{}` {}", self.name, self.shape_string())
    }

    /// Dimension `i` when it is static.
    fn dim(&self, i: usize) -> Option<usize> {
        self.shape
            .get(i)
            .and_then(|&d| usize::try_from(d).ok())
            .filter(|_| self.shape[i] >= 0)
    }
}

/// Values observed in one output of a probe run: the overall range and the range of each of the
/// first columns of the last dimension.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ValueStats {
    /// Smallest finite value.
    pub min: f32,
    /// Largest finite value.
    pub max: f32,
    /// `(min, max)` of each of the first (up to 5) columns of the last dimension.
    pub columns: Vec<(f32, f32)>,
    /// Share of the finite values within `[-0.25, 1.25]` (normalised coordinates, give or take
    /// boxes reaching past the edges).
    pub unit_fraction: f32,
}

impl ValueStats {
    /// Statistics of a tensor of `shape` holding `values`; `None` when no value is finite.
    pub fn of(shape: &[usize], values: &[f32]) -> Option<Self> {
        let range = |it: &mut dyn Iterator<Item = f32>| {
            it.filter(|v| v.is_finite())
                .fold(None, |acc: Option<(f32, f32)>, v| {
                    Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
                })
        };
        let (min, max) = range(&mut values.iter().copied())?;
        let last = shape.last().copied().unwrap_or(0);
        let columns = if shape.len() >= 2 && last > 0 {
            (0..last.min(5))
                .filter_map(|c| range(&mut values.iter().skip(c).step_by(last).copied()))
                .collect()
        } else {
            Vec::new()
        };
        let finite = values.iter().filter(|v| v.is_finite()).count();
        let unit = values
            .iter()
            .filter(|v| (-0.25..=1.25).contains(*v))
            .count();
        Some(Self {
            min,
            max,
            columns,
            unit_fraction: unit as f32 / finite.max(1) as f32,
        })
    }

    fn is_probability(&self) -> bool {
        self.min >= 0.0 && self.max <= 1.0
    }
}

/// An adapter that fits a model, with the outputs it reads and the settings the shapes and
/// values suggest.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    /// The adapter.
    pub adapter: AdapterKind,
    /// The output tensor of each role, in role order.
    pub tensors: Vec<(Role, String)>,
    /// Classes implied by the shapes (score columns), when static.
    pub num_classes: Option<usize>,
    /// Suggested box encoding (detectors).
    pub encoding: BoxEncoding,
    /// Suggested score activation.
    pub activation: Activation,
    /// Suggested background class (a score column that wins every row of a blank image).
    pub background_class: Option<u32>,
    /// What the suggestion rests on and what the user should check.
    pub notes: Vec<String>,
    /// Preference among fitting adapters (higher first).
    preference: i32,
}

/// Why an adapter does not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misfit {
    /// The adapter.
    pub adapter: AdapterKind,
    /// The reason, naming the outputs.
    pub reason: String,
}

/// No adapter fits: every adapter with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoAdapterFits(pub Vec<Misfit>);

impl fmt::Display for NoAdapterFits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no output adapter fits this model's outputs; tried:")?;
        for m in &self.0 {
            write!(f, "\n  - {}: {}", m.adapter.as_str(), m.reason)?;
        }
        Ok(())
    }
}

impl std::error::Error for NoAdapterFits {}

/// What an adapter needs, for error messages.
pub fn layout(kind: AdapterKind) -> &'static str {
    match kind {
        AdapterKind::Yolox => {
            "one output [N, rows, 5 + classes] with one row per cell of the stride 8, 16 and 32 grids"
        }
        AdapterKind::Yolov8 => "one output [N, 4 + classes, anchors], fewer channels than anchors",
        AdapterKind::Yolov5 => "one output [N, rows, 5 + classes], more rows than columns",
        AdapterKind::BoxesScores => "two outputs, boxes [N, rows, 4] and scores [N, rows, classes]",
        AdapterKind::Detr => "two outputs, boxes [N, queries, 4] and logits [N, queries, classes]",
        AdapterKind::NmsOutputs => {
            "outputs boxes [N, K, 4], scores [N, K], classes [N, K] and optionally a count [N]"
        }
        AdapterKind::Classifier => "one output [N, classes]",
    }
}

/// Checks that `assigned` (a tensor per role of `kind`) fits the adapter, with `num_classes`
/// from the label file when known and the model's input size. Returns the classes the shapes
/// imply, or the failing role's position and the reason.
pub fn check(
    kind: AdapterKind,
    assigned: &[(Role, &OutputInfo)],
    num_classes: Option<usize>,
    input_width: u32,
    input_height: u32,
) -> Result<Option<usize>, (usize, String)> {
    let mut implied = num_classes;
    let mut classes_dim =
        |o: &OutputInfo, i: usize, extra: usize, what: &str| match (o.dim(i), implied) {
            (Some(d), _) if d <= extra => Err(format!(
                "{} has {d} {what}, fewer than {} (at least one class)",
                o.describe(),
                extra + 1
            )),
            (Some(d), Some(n)) if d != n + extra => Err(format!(
                "{} has {d} {what}, expected {} for {n} classes (the label file)",
                o.describe(),
                n + extra
            )),
            (Some(d), None) => {
                implied = Some(d - extra);
                Ok(())
            }
            _ => Ok(()),
        };
    let mut rows: Option<(usize, String)> = None;
    for (position, &(role, o)) in assigned.iter().enumerate() {
        let fail = |reason: String| (position, reason);
        let want_rank = |rank: usize, form: &str| -> Result<(), (usize, String)> {
            if o.element != Element::Float && !matches!(role, Role::Classes | Role::Count) {
                return Err((position, format!("{} is not a float tensor", o.describe())));
            }
            if o.element == Element::Other {
                return Err((
                    position,
                    format!("{} is not a numeric tensor", o.describe()),
                ));
            }
            if o.shape.len() != rank {
                return Err((position, format!("{} is not {form}", o.describe())));
            }
            Ok(())
        };
        // Rows (or queries, or kept boxes) must agree between the outputs of one adapter.
        let mut same_rows = |i: usize| -> Result<(), (usize, String)> {
            if let Some(d) = o.dim(i) {
                match &rows {
                    Some((r, other)) if *r != d => {
                        return Err((
                            position,
                            format!("{} has {d} rows but {other} has {r}", o.describe()),
                        ));
                    }
                    Some(_) => {}
                    None => rows = Some((d, o.describe())),
                }
            }
            Ok(())
        };
        match (kind, role) {
            (AdapterKind::Classifier, _) => {
                want_rank(2, "[N, classes]")?;
                classes_dim(o, 1, 0, "classes").map_err(fail)?;
            }
            (AdapterKind::Yolox, _) => {
                want_rank(3, "[N, rows, 5 + classes]")?;
                let expected = yolox::num_rows(input_width, input_height);
                if o.dim(1).is_some_and(|r| r != expected) {
                    return Err(fail(format!(
                        "{} has {} rows, YOLOX needs {expected} for a {input_width}x{input_height} input",
                        o.describe(),
                        o.shape[1]
                    )));
                }
                classes_dim(o, 2, 5, "columns").map_err(fail)?;
            }
            (AdapterKind::Yolov5, _) => {
                want_rank(3, "[N, rows, 5 + classes]")?;
                if let (Some(r), Some(c)) = (o.dim(1), o.dim(2))
                    && r <= c
                {
                    return Err(fail(format!(
                        "{} has fewer rows than columns (channel-major: yolov8?)",
                        o.describe()
                    )));
                }
                classes_dim(o, 2, 5, "columns").map_err(fail)?;
            }
            (AdapterKind::Yolov8, _) => {
                want_rank(3, "[N, 4 + classes, anchors]")?;
                if let (Some(c), Some(a)) = (o.dim(1), o.dim(2))
                    && c >= a
                {
                    return Err(fail(format!(
                        "{} has more channels than anchors (rows-major: yolov5 or yolox?)",
                        o.describe()
                    )));
                }
                classes_dim(o, 1, 4, "channels").map_err(fail)?;
            }
            (_, Role::Boxes) => {
                want_rank(3, "[N, rows, 4]")?;
                if o.dim(2).is_some_and(|d| d != 4) {
                    return Err(fail(format!("{} is not [N, rows, 4]", o.describe())));
                }
                same_rows(1)?;
            }
            (AdapterKind::NmsOutputs, Role::Scores | Role::Classes) => {
                want_rank(2, "[N, K]")?;
                same_rows(1)?;
            }
            (_, Role::Scores) => {
                want_rank(3, "[N, rows, classes]")?;
                same_rows(1)?;
                classes_dim(o, 2, 0, "classes").map_err(fail)?;
            }
            (_, Role::Count) => {
                let ok = o.element != Element::Other
                    && (o.shape.len() == 1 || (o.shape.len() == 2 && o.dim(1) == Some(1)));
                if !ok {
                    return Err(fail(format!(
                        "{} is not a count [N] or [N, 1]",
                        o.describe()
                    )));
                }
            }
            (_, Role::Classes | Role::Output) => {
                return Err(fail(format!(
                    "{} cannot be the {} of {}",
                    o.describe(),
                    role.key(),
                    kind.as_str()
                )));
            }
        }
    }
    Ok(implied)
}

/// Outputs assigned to an adapter's roles, in role order.
pub type Assignment<'a> = [(Role, &'a OutputInfo)];

/// How well an output's name suits a role (name hints break ties between assignments).
fn name_hint(role: Role, name: &str) -> i32 {
    let name = name.to_ascii_lowercase();
    let hints: &[&str] = match role {
        Role::Output => return 0,
        Role::Boxes => &["box", "bbox", "loc", "coord"],
        Role::Scores => &["score", "conf", "logit", "prob", "cls"],
        Role::Classes => &["class", "label", "cls"],
        Role::Count => &["num", "count", "valid"],
    };
    i32::from(hints.iter().any(|h| name.contains(h)))
}

/// Tries `kind` on `outputs`: every assignment of outputs to the adapter's roles is checked and
/// the best-named one kept. `stats` holds probe values by output name (may be empty).
pub fn fit(
    kind: AdapterKind,
    outputs: &[OutputInfo],
    stats: &BTreeMap<String, ValueStats>,
    input_width: u32,
    input_height: u32,
) -> Result<Fit, Misfit> {
    let roles = kind.roles();
    let required = roles.iter().filter(|r| !kind.role_is_optional(**r)).count();
    let misfit = |reason: String| Misfit {
        adapter: kind,
        reason: format!("needs {}: {reason}", layout(kind)),
    };
    if outputs.len() < required {
        return Err(misfit(format!(
            "the model has {} output{}",
            outputs.len(),
            if outputs.len() == 1 { "" } else { "s" }
        )));
    }
    let mut best: Option<(i32, Box<Assignment>, Option<usize>)> = None;
    let mut closest: Option<(usize, String)> = None;
    let mut assignment: Vec<(Role, &OutputInfo)> = Vec::new();
    let mut used = vec![false; outputs.len()];
    search(
        kind,
        roles,
        outputs,
        &mut used,
        &mut assignment,
        &mut |assigned| match check(kind, assigned, None, input_width, input_height) {
            Ok(classes) => {
                let score: i32 = assigned
                    .iter()
                    .map(|(r, o)| name_hint(*r, &o.name))
                    .sum::<i32>()
                    + assigned
                        .iter()
                        .filter(|(r, o)| *r == Role::Classes && o.element == Element::Integer)
                        .count() as i32
                    + assigned.len() as i32;
                if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
                    best = Some((score, assigned.into(), classes));
                }
            }
            Err((position, reason)) => {
                if closest.as_ref().is_none_or(|(p, _)| position > *p) {
                    closest = Some((position, reason));
                }
            }
        },
    );
    let Some((_, assigned, num_classes)) = best else {
        return Err(misfit(closest.map_or_else(String::new, |(_, r)| r)));
    };
    Ok(suggest(kind, &assigned, num_classes, stats))
}

/// Calls `visit` with every injective assignment of `outputs` to `roles` (optional roles may
/// stay unassigned).
fn search<'a>(
    kind: AdapterKind,
    roles: &[Role],
    outputs: &'a [OutputInfo],
    used: &mut [bool],
    assignment: &mut Vec<(Role, &'a OutputInfo)>,
    visit: &mut dyn FnMut(&Assignment<'a>),
) {
    let Some((&role, rest)) = roles.split_first() else {
        visit(assignment);
        return;
    };
    for i in 0..outputs.len() {
        if used[i] {
            continue;
        }
        used[i] = true;
        assignment.push((role, &outputs[i]));
        search(kind, rest, outputs, used, assignment, visit);
        assignment.pop();
        used[i] = false;
    }
    if kind.role_is_optional(role) {
        search(kind, rest, outputs, used, assignment, visit);
    }
}

/// Settings and preference of a fitting assignment, from its shapes and probe values.
fn suggest(
    kind: AdapterKind,
    assigned: &[(Role, &OutputInfo)],
    num_classes: Option<usize>,
    stats: &BTreeMap<String, ValueStats>,
) -> Fit {
    let tensor = |role: Role| assigned.iter().find(|(r, _)| *r == role).map(|(_, o)| *o);
    let stats_of = |role: Role| tensor(role).and_then(|o| stats.get(&o.name));
    let mut encoding = kind.default_encoding();
    let mut activation = kind.default_activation();
    let mut background_class = None;
    let mut notes = Vec::new();
    let mut preference = match kind {
        AdapterKind::NmsOutputs => 100,
        AdapterKind::BoxesScores => 75,
        AdapterKind::Yolox => 60,
        AdapterKind::Yolov8 => 55,
        AdapterKind::Yolov5 => 50,
        AdapterKind::Detr => 50,
        AdapterKind::Classifier => 10,
    };
    // Dense outputs (every anchor's box): mostly within [0, 1] means normalised, even when some
    // boxes of a grey image reach far past the edges. Padded NMS outputs are mostly zeros: there
    // any value beyond 1.5 means pixels.
    let dense_boxes_normalized =
        |s: &ValueStats| -> Option<bool> { (s.max > 0.0).then_some(s.unit_fraction >= 0.9) };
    let sparse_boxes_normalized = |s: &ValueStats| -> Option<bool> {
        if s.max > 1.5 {
            Some(false)
        } else if s.max > 0.0 {
            Some(true)
        } else {
            None
        }
    };
    match kind {
        AdapterKind::Yolox | AdapterKind::Yolov5 => {
            // Raw YOLOX rows hold grid offsets and log sizes; decoded rows hold pixel boxes.
            let decoded = stats_of(Role::Output).and_then(|s| {
                let (x, w, h) = (s.columns.first()?, s.columns.get(2)?, s.columns.get(3)?);
                Some(w.0 >= 0.0 && h.0 >= 0.0 && x.1 > 8.0)
            });
            match (kind, decoded) {
                (AdapterKind::Yolox, Some(true)) => {
                    preference = 40;
                    notes.push("the probe run's boxes look decoded already (yolov5 layout)".into());
                }
                (AdapterKind::Yolov5, Some(true)) => {
                    notes.push("the probe run's rows hold decoded pixel boxes".into());
                }
                (AdapterKind::Yolox, Some(false)) => {
                    notes.push(
                        "the probe run's rows hold raw grid offsets (YOLOX decodes them)".into(),
                    );
                }
                _ => {}
            }
            if kind == AdapterKind::Yolov5
                && let Some(s) = stats_of(Role::Output)
            {
                if s.columns
                    .get(4)
                    .is_some_and(|(lo, hi)| *lo < 0.0 || *hi > 1.0)
                {
                    activation = Activation::Sigmoid;
                    notes
                        .push("objectness outside [0, 1]: raw logits, activation = sigmoid".into());
                }
                if s.columns.first().is_some_and(|(_, hi)| *hi <= 1.5) {
                    encoding.normalized = true;
                    notes.push("box centres within [0, 1]: normalised".into());
                }
            }
        }
        AdapterKind::BoxesScores | AdapterKind::Detr => {
            let queries = tensor(Role::Boxes).and_then(|o| o.dim(1));
            let names_say_detr = assigned.iter().any(|(_, o)| {
                ["logit", "pred_"]
                    .iter()
                    .any(|h| o.name.to_ascii_lowercase().contains(h))
            });
            let scores = stats_of(Role::Scores);
            let logits = scores.map(|s| !s.is_probability());
            let mut likeness = 0;
            if names_say_detr {
                likeness += 2;
            }
            if queries.is_some_and(|q| q <= 1000) {
                likeness += 1;
            }
            match logits {
                Some(true) => likeness += 2,
                // DETR exports end in logits; probabilities point to decoded SSD-style outputs.
                Some(false) => likeness -= 1,
                None => {}
            }
            if let Some(normalized) = stats_of(Role::Boxes).and_then(dense_boxes_normalized) {
                encoding.normalized = normalized;
                notes.push(format!(
                    "the probe run's boxes are {}",
                    if normalized {
                        "mostly within [0, 1]: normalised"
                    } else {
                        "mostly beyond 1: pixels"
                    }
                ));
                if normalized {
                    likeness += 1;
                }
            }
            match logits {
                Some(true) => {
                    activation = Activation::Sigmoid;
                    notes.push(
                        "scores outside [0, 1]: logits; sigmoid suggested (softmax if the classes are exclusive, as in SSD or the original DETR)"
                            .into(),
                    );
                }
                Some(false) => {
                    activation = Activation::None;
                    notes.push("scores within [0, 1]: probabilities".into());
                    // On a blank grey image nothing is there: a column scoring at least 0.5 on
                    // every row is the background class (SSD, face detectors).
                    if scores.is_some_and(|s| s.columns.len() >= 2 && s.columns[0].0 >= 0.5) {
                        background_class = Some(0);
                        notes.push(
                            "score column 0 wins every row of the grey probe image: background_class = 0"
                                .into(),
                        );
                    }
                }
                None => {}
            }
            if kind == AdapterKind::Detr {
                preference += 10 * likeness;
            }
            notes.push(format!(
                "box_format `{}` is the family's usual one: check it against the model's documentation",
                encoding.format.as_str()
            ));
        }
        AdapterKind::NmsOutputs => {
            if let Some(normalized) = stats_of(Role::Boxes).and_then(sparse_boxes_normalized) {
                encoding.normalized = normalized;
            } else {
                notes.push("no box in the probe run: check boxes_normalized".into());
            }
            if tensor(Role::Count).is_none() {
                notes.push("no count output: every row with a passing score is read".into());
            }
            notes.push(format!(
                "box_format `{}` assumed (TensorFlow exports use `yxyx`)",
                encoding.format.as_str()
            ));
        }
        AdapterKind::Yolov8 | AdapterKind::Classifier => {}
    }
    Fit {
        adapter: kind,
        tensors: assigned.iter().map(|(r, o)| (*r, o.name.clone())).collect(),
        num_classes,
        encoding,
        activation,
        background_class,
        notes,
        preference,
    }
}

/// Every adapter that fits, best first, or why none does.
pub fn propose(
    outputs: &[OutputInfo],
    stats: &BTreeMap<String, ValueStats>,
    input_width: u32,
    input_height: u32,
) -> Result<Vec<Fit>, NoAdapterFits> {
    let mut fits = Vec::new();
    let mut misfits = Vec::new();
    for kind in AdapterKind::ALL {
        match fit(kind, outputs, stats, input_width, input_height) {
            Ok(f) => fits.push(f),
            Err(m) => misfits.push(m),
        }
    }
    if fits.is_empty() {
        return Err(NoAdapterFits(misfits));
    }
    // Stable: equal preferences keep the order of `AdapterKind::ALL`.
    fits.sort_by_key(|f| std::cmp::Reverse(f.preference));
    // A one-tensor reading of a tensor the best fit reads with others (YOLOX taking the scores
    // of a boxes-and-scores model for rows) is no alternative worth naming.
    let best: Vec<String> = fits[0].tensors.iter().map(|(_, n)| n.clone()).collect();
    let mut first = true;
    fits.retain(|f| {
        let keep = first
            || f.tensors.len() >= best.len()
            || !f.tensors.iter().all(|(_, n)| best.contains(n));
        first = false;
        keep
    });
    Ok(fits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(name: &str, element: Element, shape: &[i64]) -> OutputInfo {
        OutputInfo {
            name: name.into(),
            element,
            shape: shape.to_vec(),
        }
    }

    fn float(name: &str, shape: &[i64]) -> OutputInfo {
        out(name, Element::Float, shape)
    }

    fn kinds(fits: &[Fit]) -> Vec<AdapterKind> {
        fits.iter().map(|f| f.adapter).collect()
    }

    fn no_stats() -> BTreeMap<String, ValueStats> {
        BTreeMap::new()
    }

    #[test]
    fn single_output_detectors_are_told_apart_by_shape() -> Result<(), NoAdapterFits> {
        // YOLOX-Nano at 416: 3549 rows of 85. YOLOv5 also fits; YOLOX's exact row count wins.
        let fits = propose(&[float("output", &[1, 3549, 85])], &no_stats(), 416, 416)?;
        assert_eq!(kinds(&fits), vec![AdapterKind::Yolox, AdapterKind::Yolov5]);
        assert_eq!(fits[0].num_classes, Some(80));
        // YOLOv5 at 640: three anchors per cell, 25200 rows.
        let fits = propose(&[float("output0", &[1, 25200, 85])], &no_stats(), 640, 640)?;
        assert_eq!(kinds(&fits), vec![AdapterKind::Yolov5]);
        // YOLOv8 at 640: channel-major.
        let fits = propose(&[float("output0", &[1, 84, 8400])], &no_stats(), 640, 640)?;
        assert_eq!(kinds(&fits), vec![AdapterKind::Yolov8]);
        assert_eq!(fits[0].num_classes, Some(80));
        // A classifier with a dynamic batch.
        let fits = propose(&[float("logits", &[-1, 1000])], &no_stats(), 224, 224)?;
        assert_eq!(kinds(&fits), vec![AdapterKind::Classifier]);
        Ok(())
    }

    #[test]
    fn decoded_yolo_rows_prefer_yolov5() -> Result<(), NoAdapterFits> {
        let outputs = [float("output", &[1, 3549, 85])];
        let mut stats = BTreeMap::new();
        stats.insert(
            "output".to_string(),
            ValueStats {
                min: 0.0,
                max: 400.0,
                columns: vec![
                    (2.0, 410.0),
                    (3.0, 412.0),
                    (5.0, 300.0),
                    (4.0, 200.0),
                    (0.0, 0.3),
                ],
                unit_fraction: 0.2,
            },
        );
        let fits = propose(&outputs, &stats, 416, 416)?;
        assert_eq!(kinds(&fits), vec![AdapterKind::Yolov5, AdapterKind::Yolox]);
        // Raw rows (log sizes can be negative) keep YOLOX first.
        if let Some(s) = stats.get_mut("output") {
            s.columns[2] = (-2.0, 1.0);
        }
        let fits = propose(&outputs, &stats, 416, 416)?;
        assert_eq!(fits[0].adapter, AdapterKind::Yolox);
        Ok(())
    }

    #[test]
    fn boxes_and_scores_are_matched_whatever_their_order() -> Result<(), NoAdapterFits> {
        // UltraFace-style: scores first, 4420 anchors, 2 classes (background, face).
        let outputs = [
            float("scores", &[1, 4420, 2]),
            float("boxes", &[1, 4420, 4]),
        ];
        let fits = propose(&outputs, &no_stats(), 320, 240)?;
        assert_eq!(
            kinds(&fits),
            vec![AdapterKind::BoxesScores, AdapterKind::Detr]
        );
        assert_eq!(
            fits[0].tensors,
            vec![
                (Role::Boxes, "boxes".into()),
                (Role::Scores, "scores".into())
            ]
        );
        assert_eq!(fits[0].num_classes, Some(2));
        assert_eq!(fits[0].background_class, None, "no probe values");
        // A probe where column 0 wins every row: the background.
        let mut stats = BTreeMap::new();
        stats.insert(
            "scores".to_string(),
            ValueStats {
                min: 0.0,
                max: 1.0,
                columns: vec![(0.62, 1.0), (0.0, 0.38)],
                unit_fraction: 1.0,
            },
        );
        let fits = propose(&outputs, &stats, 320, 240)?;
        assert_eq!(fits[0].background_class, Some(0));
        // 80 score columns also read as YOLO rows of 75 classes: not named as an alternative
        // to the reading of both outputs.
        let outputs = [
            float("boxes", &[1, 3549, 4]),
            float("scores", &[1, 3549, 80]),
        ];
        let fits = propose(&outputs, &no_stats(), 416, 416)?;
        assert_eq!(
            kinds(&fits),
            vec![AdapterKind::BoxesScores, AdapterKind::Detr]
        );
        Ok(())
    }

    #[test]
    fn detr_outputs_are_recognised_by_names_and_values() -> Result<(), NoAdapterFits> {
        let outputs = [
            float("logits", &[1, 100, 92]),
            float("pred_boxes", &[1, 100, 4]),
        ];
        let fits = propose(&outputs, &no_stats(), 800, 800)?;
        assert_eq!(fits[0].adapter, AdapterKind::Detr);
        assert_eq!(fits[0].encoding, AdapterKind::Detr.default_encoding());
        // Neutral names, but 300 queries, logits and normalised boxes in the probe run.
        let outputs = [float("out_a", &[1, 300, 4]), float("out_b", &[1, 300, 80])];
        let mut stats = BTreeMap::new();
        stats.insert(
            "out_a".into(),
            ValueStats {
                min: 0.0,
                max: 0.98,
                columns: vec![],
                unit_fraction: 1.0,
            },
        );
        stats.insert(
            "out_b".into(),
            ValueStats {
                min: -9.0,
                max: 1.2,
                columns: vec![],
                unit_fraction: 0.1,
            },
        );
        let fits = propose(&outputs, &stats, 640, 640)?;
        assert_eq!(fits[0].adapter, AdapterKind::Detr);
        assert_eq!(fits[0].activation, Activation::Sigmoid);
        assert_eq!(fits[0].tensors[0], (Role::Boxes, "out_a".into()));
        Ok(())
    }

    #[test]
    fn nms_outputs_with_and_without_a_count() -> Result<(), NoAdapterFits> {
        let outputs = [
            out("num_dets", Element::Integer, &[1, 1]),
            float("det_boxes", &[1, 100, 4]),
            float("det_scores", &[1, 100]),
            out("det_classes", Element::Integer, &[1, 100]),
        ];
        let fits = propose(&outputs, &no_stats(), 640, 640)?;
        assert_eq!(fits[0].adapter, AdapterKind::NmsOutputs);
        assert_eq!(
            fits[0].tensors,
            vec![
                (Role::Boxes, "det_boxes".into()),
                (Role::Scores, "det_scores".into()),
                (Role::Classes, "det_classes".into()),
                (Role::Count, "num_dets".into()),
            ]
        );
        // TensorFlow-style float classes, told apart from scores by name only.
        let outputs = [
            float("detection_boxes", &[1, 100, 4]),
            float("detection_classes", &[1, 100]),
            float("detection_scores", &[1, 100]),
        ];
        let fits = propose(&outputs, &no_stats(), 300, 300)?;
        assert_eq!(fits[0].adapter, AdapterKind::NmsOutputs);
        assert_eq!(
            fits[0].tensors[1],
            (Role::Scores, "detection_scores".into())
        );
        assert_eq!(
            fits[0].tensors[2],
            (Role::Classes, "detection_classes".into())
        );
        assert_eq!(fits[0].tensors.len(), 3);
        Ok(())
    }

    #[test]
    fn an_unknown_layout_lists_every_adapter_and_why() {
        let err = propose(
            &[float("features", &[1, 256, 20, 20])],
            &no_stats(),
            640,
            640,
        )
        .expect_err("a feature map fits no adapter");
        assert_eq!(err.0.len(), AdapterKind::ALL.len());
        let text = err.to_string();
        for kind in AdapterKind::ALL {
            assert!(
                text.contains(&format!("- {}: needs", kind.as_str())),
                "{text}"
            );
        }
        assert!(
            text.contains("`features` [1, 256, 20, 20] is not [N, classes]"),
            "{text}"
        );
        assert!(text.contains("boxes_scores: needs two outputs"), "{text}");
        assert!(text.contains("the model has 1 output"), "{text}");
    }

    #[test]
    fn check_holds_shapes_to_the_label_count() {
        let o = float("output", &[1, 3549, 85]);
        assert_eq!(
            check(
                AdapterKind::Yolox,
                &[(Role::Output, &o)],
                Some(80),
                416,
                416
            ),
            Ok(Some(80))
        );
        let err = check(
            AdapterKind::Yolox,
            &[(Role::Output, &o)],
            Some(79),
            416,
            416,
        )
        .expect_err("84 columns expected");
        assert!(err.1.contains("expected 84 for 79 classes"), "{}", err.1);
        let err = check(
            AdapterKind::Yolox,
            &[(Role::Output, &o)],
            Some(80),
            640,
            640,
        )
        .expect_err("8400 rows at 640");
        assert!(err.1.contains("YOLOX needs 8400"), "{}", err.1);
        let boxes = float("boxes", &[1, 10, 4]);
        let scores = float("scores", &[1, 12, 3]);
        let err = check(
            AdapterKind::BoxesScores,
            &[(Role::Boxes, &boxes), (Role::Scores, &scores)],
            Some(3),
            64,
            64,
        )
        .expect_err("rows differ");
        assert_eq!(err.0, 1);
        assert!(
            err.1.contains("has 12 rows but `boxes` [1, 10, 4] has 10"),
            "{}",
            err.1
        );
        let ints = out("scores", Element::Integer, &[1, 10, 3]);
        assert!(
            check(
                AdapterKind::BoxesScores,
                &[(Role::Boxes, &boxes), (Role::Scores, &ints)],
                None,
                64,
                64
            )
            .is_err()
        );
    }

    #[test]
    fn value_stats_by_column() {
        let s = ValueStats::of(&[2, 3], &[1.0, -2.0, 5.0, 3.0, f32::NAN, 0.0]).expect("finite");
        assert_eq!((s.min, s.max), (-2.0, 5.0));
        assert_eq!(s.columns, vec![(1.0, 3.0), (-2.0, -2.0), (0.0, 5.0)]);
        assert_eq!(s.unit_fraction, 0.4, "1 and 0 of 5 finite values");
        assert_eq!(ValueStats::of(&[2], &[f32::NAN, f32::INFINITY]), None);
    }
}
