//! Output adapters: turn a model's raw output tensor into detections or classifications.
//!
//! Adapters are pure functions over `&[f32]` for one batch item; they never panic on a tensor of
//! the wrong length (they read only the complete rows present).

use serde::{Deserialize, Serialize};

pub mod classifier;
pub mod yolov8;
pub mod yolox;

/// Which adapter decodes a model's output (manifest `[output] adapter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterKind {
    /// YOLOX: `rows x (5 + classes)`, raw grid offsets over strides 8, 16, 32 (decode in post).
    Yolox,
    /// Ultralytics YOLOv8/v11: `(4 + classes) x anchors`, channel-major, boxes already in pixels.
    Yolov8,
    /// Image classifier: one logit (or probability) per class.
    Classifier,
}

impl AdapterKind {
    /// The snake_case name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Yolox => "yolox",
            Self::Yolov8 => "yolov8",
            Self::Classifier => "classifier",
        }
    }
}

/// True when `score` reaches `threshold`; false for a NaN score or threshold.
pub(crate) fn passes(score: f32, threshold: f32) -> bool {
    score >= threshold
}
