//! What travels between the stages: the frame and its keys, every message type, the outcome
//! of a frame, the dead-letter kinds, the stage identifiers, failure classification and header
//! names. The bottom layer: it imports no other module of this crate but the configuration.

pub mod ack;
pub mod clock;
pub mod dead_letter;
pub mod failure;
pub mod frame;
pub mod headers;
pub mod key;
pub mod messages;
pub mod outcome;
pub mod request;
pub mod result;
pub mod stage;
pub mod tensor;

pub use ack::{AckHandle, Acknowledge, Settlement};
pub use clock::Clock;
pub use dead_letter::{DeadLetterKind, Rejection};
pub use failure::{ErrorDomain, RetryHint, StageFailure};
pub use frame::{Frame, FrameMeta, now_ms};
pub use key::{FrameKey, PartitionId, PartitionProgress, StreamId};
pub use outcome::Outcome;
pub use stage::StageId;
