//! Recognition results: detections (class, score, box) and classifications (class, score).

use serde::{Deserialize, Serialize};

use crate::geometry::BBox;

/// One detected object.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Index into the model's label list.
    pub class_id: u32,
    /// Confidence in `[0, 1]`.
    pub score: f32,
    /// Box in model-input pixels (adapter output) or frame pixels (after mapping back).
    pub bbox: BBox,
}

/// One image-level class score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    /// Index into the model's label list.
    pub class_id: u32,
    /// Probability (after softmax) or raw score.
    pub score: f32,
}
