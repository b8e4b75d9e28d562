//! The label request published per sampled prediction (label-requests topic, `"schema": 1`).
//!
//! Documented in the README ("Data contract"). It carries what a labelling tool needs: where
//! the frame is, the box, the current prediction and why it was asked for, and `answer`: the
//! label record to send back on the labels topic once `label` (and, for a box the detector
//! got wrong, `negative: true`) is added.

use serde::{Deserialize, Serialize};
use tessera_operators::sampling::Strategy;

use super::result::{BoxOut, ImageSize, Source};

/// The schema version written into every request.
pub const REQUEST_SCHEMA_VERSION: u32 = 1;

/// One label request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelRequest {
    pub schema: u32,
    /// Stable id: `<topic>/<partition>/<offset>/box/<index>`, or `.../frame` for a
    /// classification of the whole frame.
    pub id: String,
    /// Why it was asked for: `uncertain`, `classes`, `rare` or `random`.
    pub strategy: Strategy,
    pub camera: String,
    /// The scope whose head a label of it trains.
    pub scope: String,
    /// The frame's record in Kafka.
    pub frame: Source,
    pub frame_id: String,
    pub capture_ms: Option<i64>,
    pub image: ImageSize,
    /// The box in frame pixels; absent for a whole-frame classification.
    #[serde(rename = "box")]
    pub bbox: Option<BoxOut>,
    /// What tessera predicts now.
    pub prediction: Prediction,
    /// The label record to answer with: add `label` (and `negative` where it applies).
    pub answer: Answer,
    /// When the request was made, ms since the Unix epoch.
    pub requested_ms: i64,
}

/// The current prediction of a requested box or frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub label: String,
    pub score: f32,
    /// `head` (a head's class), `detector` (a detection the second stage did not classify) or
    /// `model` (the model's own classification).
    pub source: String,
    /// The head's version and scope, when a head predicted it.
    pub head_version: Option<u64>,
    pub head_scope: Option<String>,
    /// For a box: what the detector said of it.
    pub detector: Option<DetectorGuess>,
}

/// The detector's label and score of a box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorGuess {
    pub label: String,
    pub score: f32,
}

/// A label record without its label (the labels topic's format).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub frame: AnswerFrame,
    #[serde(rename = "box", skip_serializing_if = "Option::is_none")]
    pub bbox: Option<BoxOut>,
    pub camera: String,
}

/// A frame reference as a label record gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerFrame {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}
