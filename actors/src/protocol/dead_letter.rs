//! The dead-letter kinds: the single source of the `tessera-error-kind` header values, the
//! `kind` label of the dead-letter counter and the README's table.

use std::fmt;

use tessera_models::ModelError;
use tessera_operators::decode::DecodeError;

use super::failure::ErrorDomain;

/// Why a frame went to the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterKind {
    /// The record has no key (the key must be the camera id).
    MissingKey,
    /// The record key is not valid UTF-8.
    InvalidKey,
    /// A tessera header is malformed.
    InvalidHeader,
    /// The payload has no bytes.
    EmptyPayload,
    /// The payload exceeds `limits.max_bytes`.
    PayloadTooLarge,
    /// Not JPEG, PNG, WebP or BMP.
    UnsupportedFormat,
    /// The image header announces an image larger than the limits.
    DimensionsTooLarge,
    /// Decoding would allocate more than `limits.max_alloc_bytes`.
    AllocationLimit,
    /// Truncated or malformed image data.
    CorruptImage,
    /// ONNX Runtime failed on the frame's tiles.
    Inference,
    /// A tensor did not match the model (a tessera bug).
    ShapeMismatch,
    /// The frame failed every attempt (`flow.max_attempts`).
    ProcessingFailed,
    /// A label record that is not valid (JSON, fields, label text, inline image encoding).
    LabelMalformed,
    /// A label's frame cannot be read (retention expired, no such topic, partition or offset).
    LabelFrameMissing,
    /// A label's box lies outside its frame.
    LabelBoxOutside,
    /// A label's frame or inline image is not a decodable image.
    LabelImageInvalid,
}

impl DeadLetterKind {
    /// Every kind, in the README table's order.
    pub const ALL: [DeadLetterKind; 16] = [
        DeadLetterKind::MissingKey,
        DeadLetterKind::InvalidKey,
        DeadLetterKind::InvalidHeader,
        DeadLetterKind::EmptyPayload,
        DeadLetterKind::PayloadTooLarge,
        DeadLetterKind::UnsupportedFormat,
        DeadLetterKind::DimensionsTooLarge,
        DeadLetterKind::AllocationLimit,
        DeadLetterKind::CorruptImage,
        DeadLetterKind::Inference,
        DeadLetterKind::ShapeMismatch,
        DeadLetterKind::ProcessingFailed,
        DeadLetterKind::LabelMalformed,
        DeadLetterKind::LabelFrameMissing,
        DeadLetterKind::LabelBoxOutside,
        DeadLetterKind::LabelImageInvalid,
    ];

    /// Stable snake_case name: the `tessera-error-kind` header and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterKind::MissingKey => "missing_key",
            DeadLetterKind::InvalidKey => "invalid_key",
            DeadLetterKind::InvalidHeader => "invalid_header",
            DeadLetterKind::EmptyPayload => "empty_payload",
            DeadLetterKind::PayloadTooLarge => "payload_too_large",
            DeadLetterKind::UnsupportedFormat => "unsupported_format",
            DeadLetterKind::DimensionsTooLarge => "dimensions_too_large",
            DeadLetterKind::AllocationLimit => "allocation_limit",
            DeadLetterKind::CorruptImage => "corrupt_image",
            DeadLetterKind::Inference => "inference",
            DeadLetterKind::ShapeMismatch => "shape_mismatch",
            DeadLetterKind::ProcessingFailed => "processing_failed",
            DeadLetterKind::LabelMalformed => "label_malformed",
            DeadLetterKind::LabelFrameMissing => "label_frame_missing",
            DeadLetterKind::LabelBoxOutside => "label_box_outside",
            DeadLetterKind::LabelImageInvalid => "label_image_invalid",
        }
    }

    /// The kind named `name` (the inverse of [`DeadLetterKind::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// Whose fault it is: the input's for the record and image kinds, an external system's
    /// for a failed model run, tessera's own otherwise.
    pub fn domain(self) -> ErrorDomain {
        match self {
            DeadLetterKind::Inference => ErrorDomain::External,
            DeadLetterKind::ShapeMismatch | DeadLetterKind::ProcessingFailed => {
                ErrorDomain::Internal
            }
            _ => ErrorDomain::User,
        }
    }

    /// The kind of a frame the decoder rejected.
    pub fn of_decode(error: &DecodeError) -> Self {
        match error {
            DecodeError::EmptyPayload => DeadLetterKind::EmptyPayload,
            DecodeError::PayloadTooLarge { .. } => DeadLetterKind::PayloadTooLarge,
            DecodeError::UnsupportedFormat(_) => DeadLetterKind::UnsupportedFormat,
            DecodeError::DimensionsTooLarge { .. } => DeadLetterKind::DimensionsTooLarge,
            DecodeError::LimitExceeded(_) => DeadLetterKind::AllocationLimit,
            DecodeError::Corrupt(_) => DeadLetterKind::CorruptImage,
        }
    }

    /// The kind of a frame whose model run failed for good (`None`: the error is not about
    /// one frame, such as a model that cannot load).
    pub fn of_model(error: &ModelError) -> Option<Self> {
        match error {
            ModelError::Inference { .. } => Some(DeadLetterKind::Inference),
            ModelError::Shape(_) | ModelError::Tensor(_) | ModelError::Preprocess { .. } => {
                Some(DeadLetterKind::ShapeMismatch)
            }
            _ => None,
        }
    }
}

/// A frame that cannot be processed: it goes to the dead-letter topic with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub kind: DeadLetterKind,
    pub message: String,
}

impl Rejection {
    pub fn new(kind: DeadLetterKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for DeadLetterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        for kind in DeadLetterKind::ALL {
            assert_eq!(DeadLetterKind::parse(kind.as_str()), Some(kind));
        }
        let mut names: Vec<&str> = DeadLetterKind::ALL.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DeadLetterKind::ALL.len());
    }

    #[test]
    fn the_decoder_and_model_kinds_agree_with_their_crates() {
        // The operators and models crates name their errors too (their own tests and the fuzz
        // targets use those names): both must stay the same strings.
        let decode = [
            DecodeError::EmptyPayload,
            DecodeError::PayloadTooLarge { len: 2, max: 1 },
            DecodeError::UnsupportedFormat("gif".into()),
            DecodeError::DimensionsTooLarge {
                width: 2,
                height: 2,
                max_width: 1,
                max_height: 1,
            },
            DecodeError::LimitExceeded("x".into()),
            DecodeError::Corrupt("x".into()),
        ];
        for error in &decode {
            assert_eq!(DeadLetterKind::of_decode(error).as_str(), error.kind());
        }
        assert_eq!(DecodeError::KINDS.len(), decode.len());
        for error in [ModelError::inference("x"), ModelError::Shape("x".into())] {
            let kind = DeadLetterKind::of_model(&error).expect("a frame kind");
            assert_eq!(kind.as_str(), error.kind());
        }
        assert_eq!(
            DeadLetterKind::of_model(&ModelError::InvalidConfig("x".into())),
            None
        );
    }

    #[test]
    fn bad_input_is_the_users_domain() {
        assert_eq!(DeadLetterKind::CorruptImage.domain(), ErrorDomain::User);
        assert_eq!(DeadLetterKind::Inference.domain(), ErrorDomain::External);
        assert_eq!(
            DeadLetterKind::ProcessingFailed.domain(),
            ErrorDomain::Internal
        );
    }
}
