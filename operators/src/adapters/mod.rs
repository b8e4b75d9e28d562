//! Output adapters: turn a model's raw output tensors into detections or classifications.
//!
//! Adapters are pure functions over `&[f32]` for one batch item; they never panic on a tensor of
//! the wrong length (they read only the complete rows present).

use serde::{Deserialize, Serialize};

pub mod boxes;
pub mod boxes_scores;
pub mod classifier;
pub mod detr;
pub mod fit;
pub mod nms_outputs;
pub mod yolov5;
pub mod yolov8;
pub mod yolox;

pub use boxes::{Activation, BoxEncoding, BoxFormat, DetectionParams};

/// Which adapter decodes a model's output (manifest `[output] adapter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterKind {
    /// YOLOX: `rows x (5 + classes)`, raw grid offsets over strides 8, 16, 32 (decode in post).
    Yolox,
    /// Ultralytics YOLOv8/v11: `(4 + classes) x anchors`, channel-major, boxes already in pixels.
    Yolov8,
    /// YOLOv5/YOLOv7: `rows x (5 + classes)`, decoded boxes with objectness.
    Yolov5,
    /// Separate boxes `[N, 4]` and class scores `[N, classes]` (SSD, RetinaNet, face detectors).
    BoxesScores,
    /// DETR family: normalised centre boxes and class logits per query, no NMS.
    Detr,
    /// Models ending in NMS: boxes, scores, classes and an optional count.
    NmsOutputs,
    /// Image classifier: one logit (or probability) per class.
    Classifier,
}

/// The part an output tensor plays for an adapter (manifest `[output]` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The single output of one-tensor adapters (`name`).
    Output,
    /// Boxes (`boxes`).
    Boxes,
    /// Class scores or logits (`scores`).
    Scores,
    /// Class ids of NMS outputs (`classes`).
    Classes,
    /// Number of valid NMS rows (`count`, optional).
    Count,
}

impl Role {
    /// The manifest key naming this role's tensor.
    pub fn key(self) -> &'static str {
        match self {
            Self::Output => "name",
            Self::Boxes => "boxes",
            Self::Scores => "scores",
            Self::Classes => "classes",
            Self::Count => "count",
        }
    }
}

impl AdapterKind {
    /// Every adapter, in the order `models inspect` tries them.
    pub const ALL: [AdapterKind; 7] = [
        Self::NmsOutputs,
        Self::Detr,
        Self::BoxesScores,
        Self::Yolox,
        Self::Yolov5,
        Self::Yolov8,
        Self::Classifier,
    ];

    /// The snake_case name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Yolox => "yolox",
            Self::Yolov8 => "yolov8",
            Self::Yolov5 => "yolov5",
            Self::BoxesScores => "boxes_scores",
            Self::Detr => "detr",
            Self::NmsOutputs => "nms_outputs",
            Self::Classifier => "classifier",
        }
    }

    /// The output tensors this adapter reads, required ones first.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Self::Yolox | Self::Yolov8 | Self::Yolov5 | Self::Classifier => &[Role::Output],
            Self::BoxesScores | Self::Detr => &[Role::Boxes, Role::Scores],
            Self::NmsOutputs => &[Role::Boxes, Role::Scores, Role::Classes, Role::Count],
        }
    }

    /// Whether the adapter can read the model without a tensor for `role`.
    pub fn role_is_optional(self, role: Role) -> bool {
        self == Self::NmsOutputs && role == Role::Count
    }

    /// True for adapters that output detections.
    pub fn is_detector(self) -> bool {
        self != Self::Classifier
    }

    /// True for the adapters whose box encoding, activation and background class the manifest
    /// can set (the formats fixed by their family, YOLOX and YOLOv8, cannot).
    pub fn is_configurable(self) -> bool {
        matches!(
            self,
            Self::Yolov5 | Self::BoxesScores | Self::Detr | Self::NmsOutputs
        )
    }

    /// How boxes are written unless the manifest says otherwise.
    pub fn default_encoding(self) -> BoxEncoding {
        match self {
            Self::Detr => detr::DEFAULT_ENCODING,
            Self::Yolov5 | Self::Yolox | Self::Yolov8 => yolov5::DEFAULT_ENCODING,
            Self::BoxesScores | Self::NmsOutputs | Self::Classifier => BoxEncoding {
                format: BoxFormat::Xyxy,
                normalized: false,
            },
        }
    }

    /// The score activation unless the manifest says otherwise.
    pub fn default_activation(self) -> Activation {
        match self {
            Self::Detr => detr::DEFAULT_ACTIVATION,
            _ => Activation::None,
        }
    }

    /// Whether the model's output is already free of duplicates (no per-tile NMS needed)
    /// unless the manifest says otherwise.
    pub fn default_nms_applied(self) -> bool {
        matches!(self, Self::Detr | Self::NmsOutputs)
    }
}

/// True when `score` reaches `threshold`; false for a NaN score or threshold.
pub(crate) fn passes(score: f32, threshold: f32) -> bool {
    score >= threshold
}
