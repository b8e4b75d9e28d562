//! Parsing and validation of one labelled-feedback record from the `labels` topic, with no I/O.
//!
//! A label names the class of a frame, or of a region of it, so that the frame's embedding can
//! be added to the replay buffer ([`crate::learning`]). The frame is either a reference to a
//! frame already processed (topic, partition, offset) or the image itself, inline.
//!
//! The record is a JSON object:
//!
//! ```json
//! {
//!   "label": "forklift",
//!   "frame": {"topic": "frames", "partition": 0, "offset": 1234},
//!   "box": {"x1": 10, "y1": 20, "x2": 110, "y2": 220},
//!   "negative": false,
//!   "camera": "cam-1"
//! }
//! ```
//!
//! - `label` (required): the class name. Trimmed; then non-empty, at most
//!   [`MAX_LABEL_BYTES`] bytes, with no control characters.
//! - exactly one of `frame` (a processed frame: `topic` non-empty, `partition` >= 0,
//!   `offset` >= 0) or `image` (the encoded JPEG/PNG bytes, standard base64 with padding;
//!   non-empty and at most `max_image_bytes` once decoded).
//! - `box` (optional): the region, in frame pixels; all four coordinates finite, `x2 > x1`,
//!   `y2 > y1`, `x1 >= 0`, `y1 >= 0`. Absent: the whole frame. Checked against the frame's
//!   size by [`crop_rect`] once the frame is decoded.
//! - `negative` (optional, default `false`): the region does NOT show this label; it trains
//!   [`NEGATIVE_CLASS`] (see [`Label::class`]).
//! - `camera` (optional): the camera the frame came from.
//!
//! Unknown fields are rejected, so that a misspelt field is an error rather than ignored.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use crate::geometry::{BBox, PixelRect};

/// Longest class name accepted, in bytes (after trimming): class names become head classes,
/// metric labels and file metadata, so they stay short.
pub const MAX_LABEL_BYTES: usize = 128;

/// The class an example of this label trains: the label itself, or NEGATIVE_CLASS for a
/// negative label.
pub const NEGATIVE_CLASS: &str = "none";

/// Where a processed frame is: the record that carried it, so the frame (or its embedding)
/// can be found again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRef {
    /// The frames topic.
    pub topic: String,
    /// Its partition (>= 0).
    pub partition: i32,
    /// Its offset in the partition (>= 0).
    pub offset: i64,
}

/// The frame a label is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelSource {
    /// A frame already processed, by reference.
    Frame(FrameRef),
    /// The encoded image (JPEG/PNG bytes, not yet decoded), given inline.
    Image(Vec<u8>),
}

/// One validated label record.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// The class name, trimmed.
    pub label: String,
    /// The frame the label is about.
    pub source: LabelSource,
    /// The labelled region in frame pixels (well-formed, not yet checked against the frame's
    /// size: see [`crop_rect`]); `None` for the whole frame.
    pub region: Option<BBox>,
    /// True when the region shows NOT this label (it then trains [`NEGATIVE_CLASS`]).
    pub negative: bool,
    /// The camera the frame came from, when the sender said.
    pub camera: Option<String>,
}

impl Label {
    /// The class an example of this label trains: the label itself, or [`NEGATIVE_CLASS`] for
    /// a negative label.
    pub fn class(&self) -> &str {
        if self.negative {
            NEGATIVE_CLASS
        } else {
            &self.label
        }
    }
}

/// Why a label record was refused. All variants are the sender's fault (not retryable).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LabelError {
    /// Not JSON, or not the expected shape (a missing, unknown or mistyped field).
    #[error(
        "label record is malformed: {0}; expected a JSON object with `label` and one of `frame` or `image` (optional: `box`, `negative`, `camera`)"
    )]
    Json(String),
    /// `label` is empty or only whitespace.
    #[error("label `label` is empty; expected a class name")]
    EmptyLabel,
    /// `label` is longer than [`MAX_LABEL_BYTES`].
    #[error("label `label` is {len} bytes long; expected at most {max} bytes")]
    LabelTooLong {
        /// Length of the trimmed label, in bytes.
        len: usize,
        /// The limit, [`MAX_LABEL_BYTES`].
        max: usize,
    },
    /// `label` contains a control character (a newline, tab, escape, ...).
    #[error("label `label` contains a control character; expected printable text")]
    LabelControlCharacter,
    /// Both `frame` and `image` are given.
    #[error("label has both `frame` and `image`; give exactly one")]
    BothSources,
    /// Neither `frame` nor `image` is given.
    #[error("label has neither `frame` nor `image`; give exactly one")]
    NoSource,
    /// `frame.topic` is empty.
    #[error("label `frame.topic` is empty; expected the frames topic name")]
    EmptyTopic,
    /// `frame.partition` is negative.
    #[error("label `frame.partition` is {0}; expected a partition >= 0")]
    NegativePartition(i32),
    /// `frame.offset` is negative.
    #[error("label `frame.offset` is {0}; expected an offset >= 0")]
    NegativeOffset(i64),
    /// `image` is not standard base64 with padding.
    #[error("label `image` is not valid base64 ({0}); expected standard base64 with padding")]
    Base64(String),
    /// `image` decodes to no bytes.
    #[error("label `image` is empty; expected the encoded JPEG or PNG bytes")]
    EmptyImage,
    /// `image` decodes to more than `max_image_bytes`.
    #[error("label `image` is {len} bytes once decoded; expected at most {max} bytes")]
    ImageTooLarge {
        /// Decoded size in bytes.
        len: usize,
        /// The caller's limit.
        max: usize,
    },
    /// `box` is not a well-formed region.
    #[error(
        "label `box` ({}, {})-({}, {}) is invalid: {reason}",
        region.x1, region.y1, region.x2, region.y2
    )]
    InvalidBox {
        /// The box as given.
        region: BBox,
        /// What is wrong and what is expected.
        reason: &'static str,
    },
    /// `box` lies outside the decoded frame by more than one pixel.
    #[error(
        "label `box` ({}, {})-({}, {}) lies outside the {width}x{height} frame; expected a box inside the frame",
        region.x1, region.y1, region.x2, region.y2
    )]
    BoxOutside {
        /// The box as given.
        region: BBox,
        /// Width of the decoded frame.
        width: u32,
        /// Height of the decoded frame.
        height: u32,
    },
}

impl LabelError {
    /// Every value [`LabelError::kind`] returns.
    pub const KINDS: [&'static str; 2] = ["label_malformed", "label_box_outside"];

    /// Stable snake_case name: the DLQ header `tessera-error-kind` and a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BoxOutside { .. } => "label_box_outside",
            Self::Json(_)
            | Self::EmptyLabel
            | Self::LabelTooLong { .. }
            | Self::LabelControlCharacter
            | Self::BothSources
            | Self::NoSource
            | Self::EmptyTopic
            | Self::NegativePartition(_)
            | Self::NegativeOffset(_)
            | Self::Base64(_)
            | Self::EmptyImage
            | Self::ImageTooLarge { .. }
            | Self::InvalidBox { .. } => "label_malformed",
        }
    }
}

/// The record as it is on the wire, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLabel {
    label: String,
    #[serde(default)]
    frame: Option<RawFrame>,
    /// Base64 of the encoded image.
    #[serde(default)]
    image: Option<String>,
    #[serde(default, rename = "box")]
    region: Option<RawBox>,
    #[serde(default)]
    negative: bool,
    #[serde(default)]
    camera: Option<String>,
}

/// `frame` as it is on the wire.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFrame {
    topic: String,
    partition: i32,
    offset: i64,
}

/// `box` as it is on the wire (a separate type from [`BBox`] to reject unknown fields).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBox {
    x1: f32,
    y1: f32,
    x2: f32,
    y2: f32,
}

/// Parses and validates one label record (see the module documentation for the format);
/// an inline image may decode to at most `max_image_bytes` bytes.
pub fn parse_label(bytes: &[u8], max_image_bytes: usize) -> Result<Label, LabelError> {
    let raw: RawLabel =
        serde_json::from_slice(bytes).map_err(|e| LabelError::Json(e.to_string()))?;
    let label = validate_label_text(&raw.label)?;
    let source = match (raw.frame, raw.image) {
        (Some(_), Some(_)) => return Err(LabelError::BothSources),
        (None, None) => return Err(LabelError::NoSource),
        (Some(frame), None) => LabelSource::Frame(validate_frame(frame)?),
        (None, Some(image)) => LabelSource::Image(decode_inline_image(&image, max_image_bytes)?),
    };
    let region = match raw.region {
        Some(b) => {
            let region = BBox::new(b.x1, b.y1, b.x2, b.y2);
            validate_region(&region)?;
            Some(region)
        }
        None => None,
    };
    Ok(Label {
        label,
        source,
        region,
        negative: raw.negative,
        camera: raw.camera,
    })
}

/// The trimmed class name, if it is non-empty, short enough and printable.
fn validate_label_text(text: &str) -> Result<String, LabelError> {
    let label = text.trim();
    if label.is_empty() {
        return Err(LabelError::EmptyLabel);
    }
    if label.len() > MAX_LABEL_BYTES {
        return Err(LabelError::LabelTooLong {
            len: label.len(),
            max: MAX_LABEL_BYTES,
        });
    }
    if label.chars().any(char::is_control) {
        return Err(LabelError::LabelControlCharacter);
    }
    Ok(label.to_owned())
}

fn validate_frame(frame: RawFrame) -> Result<FrameRef, LabelError> {
    if frame.topic.is_empty() {
        return Err(LabelError::EmptyTopic);
    }
    if frame.partition < 0 {
        return Err(LabelError::NegativePartition(frame.partition));
    }
    if frame.offset < 0 {
        return Err(LabelError::NegativeOffset(frame.offset));
    }
    Ok(FrameRef {
        topic: frame.topic,
        partition: frame.partition,
        offset: frame.offset,
    })
}

/// The decoded bytes of an inline image: strict standard base64 (padding required, no
/// whitespace), non-empty, at most `max_bytes`.
fn decode_inline_image(encoded: &str, max_bytes: usize) -> Result<Vec<u8>, LabelError> {
    let image = STANDARD
        .decode(encoded)
        .map_err(|e| LabelError::Base64(e.to_string()))?;
    if image.is_empty() {
        return Err(LabelError::EmptyImage);
    }
    if image.len() > max_bytes {
        return Err(LabelError::ImageTooLarge {
            len: image.len(),
            max: max_bytes,
        });
    }
    Ok(image)
}

/// Checks that a region is well-formed: finite, non-empty, not left of or above the frame.
fn validate_region(region: &BBox) -> Result<(), LabelError> {
    let invalid = |reason| {
        Err(LabelError::InvalidBox {
            region: *region,
            reason,
        })
    };
    let BBox { x1, y1, x2, y2 } = *region;
    if ![x1, y1, x2, y2].iter().all(|v| v.is_finite()) {
        return invalid("expected four finite numbers");
    }
    if x2 <= x1 || y2 <= y1 {
        return invalid("expected x2 > x1 and y2 > y1");
    }
    if x1 < 0.0 || y1 < 0.0 {
        return invalid("expected x1 >= 0 and y1 >= 0");
    }
    Ok(())
}

/// How far (in pixels) a region may extend past the frame's right or bottom edge and still be
/// accepted (then clamped): senders round boxes, and a frame's size may differ by a pixel.
const EDGE_TOLERANCE: f64 = 1.0;

/// Checks the region against the decoded frame size and returns the pixel rectangle to crop
/// (rounded outwards, clamped to the frame); a region that lies (by more than 1 pixel) outside
/// the frame is an error; None region => the whole frame.
///
/// The region is first checked as [`parse_label`] does (an ill-formed one is
/// [`LabelError::InvalidBox`]); a region outside the frame, or one that covers no whole pixel
/// of it once clamped, is [`LabelError::BoxOutside`].
pub fn crop_rect(region: Option<&BBox>, width: u32, height: u32) -> Result<PixelRect, LabelError> {
    let Some(region) = region else {
        return Ok(PixelRect::new(0, 0, width, height));
    };
    validate_region(region)?;
    let outside = || LabelError::BoxOutside {
        region: *region,
        width,
        height,
    };
    let (w, h) = (f64::from(width), f64::from(height));
    if f64::from(region.x2) > w + EDGE_TOLERANCE || f64::from(region.y2) > h + EDGE_TOLERANCE {
        return Err(outside());
    }
    // Outwards: the rectangle covers every pixel the region touches. All four values lie in
    // [0, w] or [0, h] after clamping, so the casts are exact.
    let x = f64::from(region.x1).floor().clamp(0.0, w) as u32;
    let y = f64::from(region.y1).floor().clamp(0.0, h) as u32;
    let x_end = f64::from(region.x2).ceil().clamp(0.0, w) as u32;
    let y_end = f64::from(region.y2).ceil().clamp(0.0, h) as u32;
    if x_end <= x || y_end <= y {
        return Err(outside());
    }
    Ok(PixelRect::new(x, y, x_end - x, y_end - y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 1024;

    fn parse(json: &str) -> Result<Label, LabelError> {
        parse_label(json.as_bytes(), MAX)
    }

    /// Asserts the record is refused as malformed, and returns the error for further checks.
    fn malformed(json: &str) -> LabelError {
        let err = parse(json).expect_err("should be refused");
        assert_eq!(err.kind(), "label_malformed", "{err}");
        err
    }

    const FRAME: &str = r#""frame": {"topic": "frames", "partition": 0, "offset": 1234}"#;

    #[test]
    fn a_frame_reference_with_a_box() {
        let json = r#"{
            "label": "  forklift ",
            "frame": {"topic": "frames", "partition": 2, "offset": 1234},
            "box": {"x1": 10, "y1": 20.5, "x2": 110, "y2": 220},
            "negative": false,
            "camera": "cam-1"
        }"#;
        let label = parse(json).expect("valid");
        assert_eq!(
            label,
            Label {
                label: "forklift".into(),
                source: LabelSource::Frame(FrameRef {
                    topic: "frames".into(),
                    partition: 2,
                    offset: 1234,
                }),
                region: Some(BBox::new(10.0, 20.5, 110.0, 220.0)),
                negative: false,
                camera: Some("cam-1".into()),
            }
        );
        assert_eq!(label.class(), "forklift");
    }

    #[test]
    fn an_inline_image_with_defaults() {
        // base64 of [0xFF, 0xD8, 0xFF, 0xE0, 0x00]
        let label = parse(r#"{"label": "dog", "image": "/9j/4AA="}"#).expect("valid");
        assert_eq!(
            label.source,
            LabelSource::Image(vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00])
        );
        assert_eq!(label.region, None);
        assert!(!label.negative);
        assert_eq!(label.camera, None);
        // Exactly at the limit is accepted.
        assert!(parse_label(br#"{"label": "dog", "image": "/9j/4AA="}"#, 5).is_ok());
    }

    #[test]
    fn bad_json_is_malformed() {
        assert!(matches!(malformed("{\"label\": "), LabelError::Json(_)));
        assert!(matches!(malformed("not json"), LabelError::Json(_)));
        assert!(matches!(malformed("[]"), LabelError::Json(_)));
        // Wrong types.
        let err = malformed(&format!(r#"{{"label": 7, {FRAME}}}"#));
        assert!(matches!(err, LabelError::Json(_)));
        let err =
            malformed(r#"{"label": "a", "frame": {"topic": "f", "partition": 0, "offset": 1.5}}"#);
        assert!(matches!(err, LabelError::Json(_)));
    }

    #[test]
    fn a_missing_label_is_malformed() {
        let err = malformed(&format!("{{{FRAME}}}"));
        assert!(err.to_string().contains("missing field `label`"), "{err}");
    }

    #[test]
    fn an_empty_or_bad_label_text_is_malformed() {
        assert_eq!(
            malformed(&format!(r#"{{"label": "", {FRAME}}}"#)),
            LabelError::EmptyLabel
        );
        assert_eq!(
            malformed(&format!(r#"{{"label": " \t ", {FRAME}}}"#)),
            LabelError::EmptyLabel
        );
        assert_eq!(
            malformed(&format!(r#"{{"label": "fork\nlift", {FRAME}}}"#)),
            LabelError::LabelControlCharacter
        );
        let long = "a".repeat(MAX_LABEL_BYTES + 1);
        assert_eq!(
            malformed(&format!(r#"{{"label": "{long}", {FRAME}}}"#)),
            LabelError::LabelTooLong {
                len: MAX_LABEL_BYTES + 1,
                max: MAX_LABEL_BYTES
            }
        );
        // At the limit (after trimming) is accepted.
        let at_limit = "a".repeat(MAX_LABEL_BYTES);
        let label = parse(&format!(r#"{{"label": " {at_limit} ", {FRAME}}}"#)).expect("valid");
        assert_eq!(label.label, at_limit);
    }

    #[test]
    fn both_or_neither_source_is_malformed() {
        let err = malformed(&format!(
            r#"{{"label": "a", {FRAME}, "image": "/9j/4AA="}}"#
        ));
        assert_eq!(err, LabelError::BothSources);
        assert_eq!(
            err.to_string(),
            "label has both `frame` and `image`; give exactly one"
        );
        assert_eq!(malformed(r#"{"label": "a"}"#), LabelError::NoSource);
        assert_eq!(
            malformed(r#"{"label": "a", "frame": null, "image": null}"#),
            LabelError::NoSource
        );
    }

    #[test]
    fn a_bad_frame_reference_is_malformed() {
        let frame = |topic: &str, partition: i64, offset: i64| {
            format!(
                r#"{{"label": "a", "frame": {{"topic": "{topic}", "partition": {partition}, "offset": {offset}}}}}"#
            )
        };
        assert_eq!(
            malformed(&frame("frames", 0, -1)),
            LabelError::NegativeOffset(-1)
        );
        assert_eq!(
            malformed(&frame("frames", -3, 0)),
            LabelError::NegativePartition(-3)
        );
        assert_eq!(malformed(&frame("", 0, 0)), LabelError::EmptyTopic);
        assert!(matches!(
            malformed(&frame("frames", 1 << 31, 0)),
            LabelError::Json(_)
        ));
        assert!(parse(&frame("frames", 0, 0)).is_ok());
    }

    #[test]
    fn unknown_fields_are_malformed() {
        let err = malformed(&format!(r#"{{"label": "a", {FRAME}, "negativ": true}}"#));
        assert!(err.to_string().contains("unknown field `negativ`"), "{err}");
        let err = malformed(
            r#"{"label": "a", "frame": {"topic": "f", "partition": 0, "offset": 0, "key": 1}}"#,
        );
        assert!(err.to_string().contains("unknown field `key`"), "{err}");
        let err = malformed(&format!(
            r#"{{"label": "a", {FRAME}, "box": {{"x1": 0, "y1": 0, "x2": 1, "y2": 1, "w": 1}}}}"#
        ));
        assert!(err.to_string().contains("unknown field `w`"), "{err}");
    }

    #[test]
    fn bad_base64_is_malformed() {
        for image in ["not base64!", "/9j/4AA", "/9j/ 4AA=", "-_8="] {
            let err = malformed(&format!(r#"{{"label": "a", "image": "{image}"}}"#));
            assert!(matches!(err, LabelError::Base64(_)), "{image}: {err}");
        }
        assert_eq!(
            malformed(r#"{"label": "a", "image": ""}"#),
            LabelError::EmptyImage
        );
    }

    #[test]
    fn an_image_over_the_limit_is_malformed() {
        let err = parse_label(br#"{"label": "a", "image": "/9j/4AA="}"#, 4).expect_err("too large");
        assert_eq!(err, LabelError::ImageTooLarge { len: 5, max: 4 });
        assert_eq!(err.kind(), "label_malformed");
    }

    #[test]
    fn bad_box_numbers_are_malformed() {
        let with_box = |b: &str| format!(r#"{{"label": "a", {FRAME}, "box": {b}}}"#);
        let inverted = malformed(&with_box(r#"{"x1": 110, "y1": 20, "x2": 10, "y2": 220}"#));
        assert!(
            matches!(inverted, LabelError::InvalidBox { .. }),
            "{inverted}"
        );
        let flat = malformed(&with_box(r#"{"x1": 10, "y1": 20, "x2": 110, "y2": 20}"#));
        assert!(matches!(flat, LabelError::InvalidBox { .. }), "{flat}");
        let negative = malformed(&with_box(r#"{"x1": -1, "y1": 20, "x2": 110, "y2": 220}"#));
        assert!(
            matches!(negative, LabelError::InvalidBox { .. }),
            "{negative}"
        );
        // JSON has no NaN or infinity literal; a number beyond f32 becomes infinite.
        let huge = malformed(&with_box(r#"{"x1": 0, "y1": 0, "x2": 1e39, "y2": 1}"#));
        assert!(matches!(huge, LabelError::InvalidBox { .. }), "{huge}");
        assert!(matches!(
            malformed(&with_box(r#"{"x1": NaN, "y1": 0, "x2": 1, "y2": 1}"#)),
            LabelError::Json(_)
        ));
        assert!(matches!(
            malformed(&with_box(r#"{"x1": 0, "y1": 0, "x2": 1}"#)),
            LabelError::Json(_)
        ));
    }

    #[test]
    fn a_nan_box_is_malformed() {
        for region in [
            BBox::new(f32::NAN, 0.0, 10.0, 10.0),
            BBox::new(0.0, 0.0, 10.0, f32::NAN),
            BBox::new(0.0, 0.0, f32::INFINITY, 10.0),
        ] {
            let err = validate_region(&region).expect_err("not finite");
            assert_eq!(err.kind(), "label_malformed");
            let err = crop_rect(Some(&region), 100, 100).expect_err("not finite");
            assert!(matches!(err, LabelError::InvalidBox { .. }), "{err}");
        }
    }

    #[test]
    fn a_negative_label_trains_the_negative_class() {
        let label = parse(&format!(
            r#"{{"label": "forklift", {FRAME}, "negative": true}}"#
        ))
        .expect("valid");
        assert!(label.negative);
        assert_eq!(label.label, "forklift");
        assert_eq!(label.class(), NEGATIVE_CLASS);
        let positive = Label {
            negative: false,
            ..label
        };
        assert_eq!(positive.class(), "forklift");
    }

    #[test]
    fn crop_inside_the_frame() {
        let rect = crop_rect(Some(&BBox::new(10.0, 20.0, 110.0, 220.0)), 640, 480).expect("inside");
        assert_eq!(rect, PixelRect::new(10, 20, 100, 200));
        // Fractional edges round outwards.
        let rect = crop_rect(Some(&BBox::new(10.2, 20.7, 109.1, 219.9)), 640, 480).expect("inside");
        assert_eq!(rect, PixelRect::new(10, 20, 100, 200));
    }

    #[test]
    fn crop_at_the_edge_rounds_outwards_and_clamps() {
        let rect = crop_rect(Some(&BBox::new(600.5, 400.2, 640.0, 480.0)), 640, 480).expect("edge");
        assert_eq!(rect, PixelRect::new(600, 400, 40, 80));
        // Up to one pixel past the edge is clamped, not refused.
        let rect = crop_rect(Some(&BBox::new(600.0, 400.0, 641.0, 480.6)), 640, 480).expect("edge");
        assert_eq!(rect, PixelRect::new(600, 400, 40, 80));
        assert!(rect.fits_in(640, 480));
    }

    #[test]
    fn crop_partly_outside_is_refused() {
        let region = BBox::new(600.0, 400.0, 641.5, 470.0);
        let err = crop_rect(Some(&region), 640, 480).expect_err("outside");
        assert_eq!(err.kind(), "label_box_outside");
        assert_eq!(
            err,
            LabelError::BoxOutside {
                region,
                width: 640,
                height: 480
            }
        );
        assert!(err.to_string().contains("640x480 frame"), "{err}");
        let err =
            crop_rect(Some(&BBox::new(0.0, 400.0, 10.0, 482.0)), 640, 480).expect_err("outside");
        assert_eq!(err.kind(), "label_box_outside");
    }

    #[test]
    fn crop_fully_outside_is_refused() {
        for region in [
            BBox::new(700.0, 10.0, 800.0, 50.0),
            BBox::new(10.0, 500.0, 50.0, 600.0),
            // Within the tolerance, but covers no pixel of the frame.
            BBox::new(640.0, 10.0, 640.5, 50.0),
        ] {
            let err = crop_rect(Some(&region), 640, 480).expect_err("outside");
            assert_eq!(err.kind(), "label_box_outside", "{region:?}");
        }
    }

    #[test]
    fn no_region_crops_the_whole_frame() {
        assert_eq!(
            crop_rect(None, 640, 480),
            Ok(PixelRect::new(0, 0, 640, 480))
        );
    }

    #[test]
    fn kinds_are_listed() {
        let malformed = LabelError::NoSource.kind();
        let outside = LabelError::BoxOutside {
            region: BBox::new(0.0, 0.0, 1.0, 1.0),
            width: 0,
            height: 0,
        }
        .kind();
        assert_eq!(LabelError::KINDS, [malformed, outside]);
    }

    proptest! {
        #[test]
        fn a_box_inside_the_frame_crops_to_a_rect_inside_that_contains_it(
            width in 1u32..5000,
            height in 1u32..5000,
            fx in (0.0f64..1.0, 0.0f64..=1.0),
            fy in (0.0f64..1.0, 0.0f64..=1.0),
        ) {
            let (w, h) = (f64::from(width), f64::from(height));
            let x1 = (fx.0 * w) as f32;
            let y1 = (fy.0 * h) as f32;
            let x2 = ((f64::from(x1) + fx.1 * (w - f64::from(x1))) as f32).min(width as f32);
            let y2 = ((f64::from(y1) + fy.1 * (h - f64::from(y1))) as f32).min(height as f32);
            prop_assume!(x2 > x1 && y2 > y1);
            let region = BBox::new(x1, y1, x2, y2);
            let rect = crop_rect(Some(&region), width, height).expect("a box inside the frame");
            prop_assert!(rect.fits_in(width, height), "{rect:?} in {width}x{height}");
            let covered = rect.to_bbox();
            prop_assert!(
                covered.x1 <= x1 && covered.y1 <= y1 && covered.x2 >= x2 && covered.y2 >= y2,
                "{rect:?} does not contain {region:?}"
            );
        }
    }
}
