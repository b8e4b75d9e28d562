//! What becomes of one frame: a result document or a dead letter.

use std::sync::Arc;

use super::dead_letter::Rejection;
use super::frame::FrameMeta;
use super::result::{FrameResult, FrameStatus, ModelRef};

/// What becomes of one frame.
#[derive(Debug)]
pub enum Outcome {
    /// A result document for the results topic.
    Result {
        meta: Arc<FrameMeta>,
        result: Box<FrameResult>,
        /// The decoded frame, for the second stage to crop its boxes from (no second decode);
        /// `None` without a second stage, and once the second stage took it.
        decoded: Option<Arc<image::RgbImage>>,
    },
    /// The original record, for the dead-letter topic, with the reason.
    DeadLetter {
        meta: Arc<FrameMeta>,
        payload: Arc<[u8]>,
        rejection: Rejection,
    },
}

impl Outcome {
    pub fn meta(&self) -> &Arc<FrameMeta> {
        match self {
            Self::Result { meta, .. } | Self::DeadLetter { meta, .. } => meta,
        }
    }

    /// The result of a frame that was not processed (`status: skipped`).
    pub fn skipped(meta: Arc<FrameMeta>, model: ModelRef) -> Self {
        Self::Result {
            result: Box::new(FrameResult::skipped(&meta, model)),
            meta,
            decoded: None,
        }
    }

    /// Whether this is a result of a frame the lag policy skipped.
    pub fn is_skipped(&self) -> bool {
        matches!(self, Self::Result { result, .. } if result.status == FrameStatus::Skipped)
    }
}
