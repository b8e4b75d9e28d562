//! Per-partition contiguous offset watermark.
//!
//! Frames finish out of order, but a Kafka offset may only be stored once every earlier
//! frame of its partition is done: otherwise a crash would skip the unfinished ones.

use std::collections::BTreeSet;

/// Tracks the offsets of one partition that are consumed but not yet acknowledged.
#[derive(Debug, Default)]
pub struct OffsetWatermark {
    /// Offsets consumed and not yet acknowledged.
    pending: BTreeSet<i64>,
    /// Highest offset acknowledged so far (None before the first acknowledgement).
    highest_done: Option<i64>,
}

impl OffsetWatermark {
    /// Records that `offset` was consumed and is now in flight.
    pub fn consumed(&mut self, offset: i64) {
        self.pending.insert(offset);
    }

    /// Records that `offset`'s output was acknowledged.
    pub fn acknowledged(&mut self, offset: i64) {
        self.pending.remove(&offset);
        self.highest_done = Some(self.highest_done.map_or(offset, |h| h.max(offset)));
    }

    /// The offset to store (Kafka semantics: the next offset to read), if any progress is safe:
    /// everything below it is done.
    pub fn committable(&self) -> Option<i64> {
        match self.pending.first() {
            // Everything consumed below the lowest pending offset is done.
            Some(&lowest_pending) => self.highest_done.map(|_| lowest_pending),
            None => self.highest_done.map(|h| h + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_to_commit_before_any_ack() {
        let mut w = OffsetWatermark::default();
        w.consumed(10);
        assert_eq!(w.committable(), None);
    }

    #[test]
    fn out_of_order_acks_hold_the_watermark() {
        let mut w = OffsetWatermark::default();
        for o in 10..15 {
            w.consumed(o);
        }
        w.acknowledged(12);
        w.acknowledged(11);
        // 10 is still pending: nothing at or above it may be stored.
        assert_eq!(w.committable(), Some(10));
        w.acknowledged(10);
        assert_eq!(w.committable(), Some(13));
        w.acknowledged(14);
        assert_eq!(w.committable(), Some(13));
        w.acknowledged(13);
        assert_eq!(w.committable(), Some(15));
    }

    #[test]
    fn gaps_in_offsets_are_fine() {
        // Compacted topics and transaction markers leave gaps between offsets.
        let mut w = OffsetWatermark::default();
        w.consumed(3);
        w.consumed(7);
        w.acknowledged(7);
        assert_eq!(w.committable(), Some(3));
        w.acknowledged(3);
        assert_eq!(w.committable(), Some(8));
    }
}
