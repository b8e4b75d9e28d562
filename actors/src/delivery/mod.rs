//! Delivery bookkeeping: the ledger of frames in flight (with the acknowledgement handles it
//! gives each frame), per-partition offset watermarks, and the per-stream sequencer. Plain
//! data structures: no actors and no Kafka client, so every invariant is property-tested.

pub mod ledger;
pub mod sequencer;
pub mod watermark;

pub use ledger::{Committable, Ledger};
pub use sequencer::Sequencer;
