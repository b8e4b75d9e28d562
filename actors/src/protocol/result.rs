//! The result document published per frame (results topic, `"schema": 1`).
//!
//! Documented in the README ("Data contract"). Additive changes keep the schema number;
//! renaming or removing a field bumps it.

use serde::{Deserialize, Serialize};

use super::frame::{FrameMeta, now_ms};

/// The schema version written into every result.
pub const RESULT_SCHEMA_VERSION: u32 = 1;

/// One frame's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameResult {
    /// Schema version of this document.
    pub schema: u32,
    /// Camera id: the input record's key (UTF-8).
    pub camera: String,
    /// Where the frame came from.
    pub source: Source,
    /// The `tessera-frame-id` header, else `topic/partition/offset`.
    pub frame_id: String,
    /// Timestamps in milliseconds since the Unix epoch.
    pub timestamps: Timestamps,
    /// Decoded image size (after EXIF orientation), in pixels.
    pub image: ImageSize,
    /// The model that produced the result.
    pub model: ModelRef,
    /// Version of the head that served the frame (the head live for its camera when the frame
    /// was consumed): it produced `classifications`, or the second stage's `head` of each
    /// detection; `null` when no head is live and they come from the model itself.
    pub head_version: Option<u64>,
    /// Scope of that head: `global`, or the camera's group. Absent when no head served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_scope: Option<String>,
    /// Number of tiles of the frame (including the full-frame pass); all of them ran through
    /// the model unless `gate` says some reused an earlier frame's result.
    pub tile_count: usize,
    /// What the change gate did with this frame's tiles; absent when the gate is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateReport>,
    /// `ok`, or `skipped` when the lag policy dropped the frame unprocessed.
    pub status: FrameStatus,
    /// Detections in frame pixels, merged across tiles, best first.
    pub detections: Vec<DetectionOut>,
    /// Classifications, best first.
    pub classifications: Vec<ClassificationOut>,
    /// Per-stage latencies in milliseconds.
    pub latency_ms: Latencies,
}

impl FrameResult {
    /// The result of a frame that was not processed (`status: skipped`); also the base that
    /// a processed frame's result fills in.
    pub fn skipped(meta: &FrameMeta, model: ModelRef) -> Self {
        Self {
            schema: RESULT_SCHEMA_VERSION,
            camera: meta.camera(),
            source: Source {
                topic: meta.key.partition.topic.to_string(),
                partition: meta.key.partition.partition,
                offset: meta.key.offset,
            },
            frame_id: meta.frame_id(),
            timestamps: Timestamps {
                capture_ms: meta.capture_ms(),
                kafka_ms: meta.kafka_timestamp_ms,
                received_ms: meta.received_ms,
                completed_ms: now_ms(),
            },
            image: ImageSize {
                width: 0,
                height: 0,
            },
            model,
            head_version: None,
            head_scope: None,
            tile_count: 0,
            gate: None,
            status: FrameStatus::Skipped,
            detections: Vec::new(),
            classifications: Vec::new(),
            latency_ms: Latencies {
                total: meta.received_at.elapsed().as_secs_f64() * 1000.0,
                ..Latencies::default()
            },
        }
    }
}

/// What the change gate did with a frame's tiles.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    /// Tiles run through the model for this frame.
    pub inferred: usize,
    /// Tiles whose result was reused from an earlier frame of the camera (unchanged).
    pub reused: usize,
    /// Whether the frame was a full refresh (every tile ran by rule: the first frame of a
    /// camera, its refresh period, a rebalance, a new head).
    pub refresh: bool,
    /// How far the gate's settings were relaxed because of sustained lag: 0 (not at all) to 1
    /// (the `gate.relaxed_` bounds).
    pub relaxation: f32,
}

/// Kafka coordinates of the input record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Timestamps of a frame's life, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamps {
    /// Capture time: the `tessera-ts` header, else the Kafka timestamp.
    pub capture_ms: Option<i64>,
    /// The Kafka record timestamp.
    pub kafka_ms: Option<i64>,
    /// When tessera consumed the record.
    pub received_ms: i64,
    /// When tessera finished the result (just before producing it).
    pub completed_ms: i64,
}

/// Image width and height in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSize {
    pub width: u32,
    pub height: u32,
}

/// Model name and version from its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRef {
    pub name: String,
    pub version: String,
}

/// Result status of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameStatus {
    Ok,
    Skipped,
}

/// One detection in frame pixels: the detector's label, class and score, and the second
/// stage's verdict when it classified the box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionOut {
    pub label: String,
    pub class_id: u32,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: BoxOut,
    /// The head's answer on the box's crop (second stage); absent when the box was not
    /// classified (second stage off, no head live, or the box not selected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<HeadLabel>,
}

/// What the second stage's head says of a detected box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadLabel {
    /// The head's class for the crop.
    pub label: String,
    /// Its index among the head's classes.
    pub class_id: u32,
    /// The head's probability of that class.
    pub score: f32,
    /// The head's version and scope.
    pub version: u64,
    pub scope: String,
    /// True when the head's class is a rejecting one (`second_stage.reject_labels`: a
    /// background or negative label): the box is not what the detector says.
    pub rejected: bool,
}

/// Axis-aligned box, corners in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoxOut {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

/// One classification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationOut {
    pub label: String,
    pub class_id: u32,
    pub score: f32,
}

/// Stage latencies in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    /// Decoding the image.
    pub decode: f64,
    /// Cutting tiles and preprocessing them into model tensors.
    pub preprocess: f64,
    /// Sum of the model run times of this frame's tile batches.
    pub inference: f64,
    /// Mapping and merging the tile results.
    pub merge: f64,
    /// Cropping, embedding and classifying the detected boxes (second stage; 0 when off).
    #[serde(default)]
    pub second_stage: f64,
    /// From consumption to the result being complete (queueing included).
    pub total: f64,
}
