//! The acknowledgement handle that travels with each frame (Vector's finalizer pattern):
//! whichever stage finishes a frame settles it through the handle; nobody imports the
//! source. What a settlement does (store the offset, dispatch the frame again) is up to the
//! [`Acknowledge`] behind the handle: the delivery ledger.

use std::fmt;
use std::sync::Arc;

use super::key::FrameKey;

/// What became of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Kafka acknowledged the frame's output (result or dead letter): its offset may be stored.
    Delivered,
    /// A stage failed while holding the frame: dispatch it again (attempts are bounded).
    Retry,
}

/// Receives settlements (the delivery ledger).
pub trait Acknowledge: Send + Sync + fmt::Debug {
    fn settle(&self, key: &FrameKey, settlement: Settlement);
}

/// A frame's acknowledgement handle. Cloning is cheap; settling more than once is harmless
/// (the ledger ignores a second delivery and retries of settled frames).
#[derive(Clone)]
pub struct AckHandle {
    key: FrameKey,
    to: Arc<dyn Acknowledge>,
}

impl AckHandle {
    pub fn new(key: FrameKey, to: Arc<dyn Acknowledge>) -> Self {
        Self { key, to }
    }

    /// A handle that settles nowhere (frames outside a pipeline: tests, one-off runs).
    pub fn detached(key: FrameKey) -> Self {
        Self::new(key, Arc::new(Nowhere))
    }

    pub fn key(&self) -> &FrameKey {
        &self.key
    }

    /// The frame's output was acknowledged by Kafka.
    pub fn delivered(&self) {
        self.to.settle(&self.key, Settlement::Delivered);
    }

    /// The frame must be dispatched again.
    pub fn retry(&self) {
        self.to.settle(&self.key, Settlement::Retry);
    }
}

impl fmt::Debug for AckHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckHandle").field("key", &self.key).finish()
    }
}

#[derive(Debug)]
struct Nowhere;

impl Acknowledge for Nowhere {
    fn settle(&self, _key: &FrameKey, _settlement: Settlement) {}
}
