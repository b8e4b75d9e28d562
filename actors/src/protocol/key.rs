//! The identity of a frame: its partition, the assignment (stream) it was consumed in, and
//! its position there.

use std::sync::Arc;

/// One input partition. Offset watermarks are kept per partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    pub topic: Arc<str>,
    pub partition: i32,
}

/// One assignment of a partition to this consumer: the unit of ordering. Sequence numbers
/// are contiguous within a stream; a new assignment starts a new stream at 0.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    pub partition: PartitionId,
    /// Bumped on every (re)assignment of the partition, never reused within a process.
    pub generation: u64,
}

/// Identity of one frame in flight: its partition, the assignment generation in which it
/// was consumed, and its position in that partition's stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FrameKey {
    pub partition: PartitionId,
    /// Bumped on every (re)assignment of the partition, so sequences of an old assignment
    /// never mix with a new one.
    pub generation: u64,
    /// Contiguous per (partition, generation): the sequencer releases results in this order.
    pub seq: u64,
    pub offset: i64,
}

impl FrameKey {
    /// The stream (partition assignment) the frame belongs to.
    pub fn stream(&self) -> StreamId {
        StreamId {
            partition: self.partition.clone(),
            generation: self.generation,
        }
    }
}

/// One assigned partition's progress (the ledger's view, for the status endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProgress {
    pub partition: PartitionId,
    pub generation: u64,
    /// Frames consumed and not yet acknowledged.
    pub in_flight: usize,
    /// Offset of the oldest frame in flight.
    pub oldest_in_flight: Option<i64>,
    /// The offset tessera may commit (everything below it is acknowledged).
    pub committable: Option<i64>,
}
