//! Restores input order per partition: frames complete out of order (tiles run in parallel),
//! but one camera's results must be published in the order its frames arrived.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// A reorder buffer keyed by stream (partition and generation), releasing items by
/// contiguous sequence number starting at 0.
#[derive(Debug)]
pub struct Reorder<S, T> {
    streams: HashMap<S, StreamBuffer<T>>,
}

#[derive(Debug)]
struct StreamBuffer<T> {
    /// The next sequence number to release.
    next: u64,
    /// Completed items waiting for an earlier one.
    waiting: BTreeMap<u64, T>,
}

impl<T> Default for StreamBuffer<T> {
    fn default() -> Self {
        Self {
            next: 0,
            waiting: BTreeMap::new(),
        }
    }
}

impl<T> StreamBuffer<T> {
    fn release(&mut self, out: &mut Vec<T>) {
        while let Some(item) = self.waiting.remove(&self.next) {
            out.push(item);
            self.next += 1;
        }
    }
}

impl<S: Eq + Hash + Clone, T> Default for Reorder<S, T> {
    fn default() -> Self {
        Self {
            streams: HashMap::new(),
        }
    }
}

impl<S: Eq + Hash + Clone, T> Reorder<S, T> {
    /// Adds a completed item and appends to `out` every item that is now releasable, in order.
    pub fn complete(&mut self, stream: &S, seq: u64, item: T, out: &mut Vec<T>) {
        let buffer = self.streams.entry(stream.clone()).or_default();
        if seq < buffer.next {
            // Already released: a re-dispatched frame finished twice.
            return;
        }
        buffer.waiting.insert(seq, item);
        buffer.release(out);
    }

    /// Moves a stream's next sequence number forward to `next` (never back): everything below
    /// it is known to be done. Used after a restart lost the buffer's state.
    pub fn resume(&mut self, stream: &S, next: u64, out: &mut Vec<T>) {
        let buffer = self.streams.entry(stream.clone()).or_default();
        if next > buffer.next {
            buffer.next = next;
            buffer.waiting = buffer.waiting.split_off(&next);
        }
        buffer.release(out);
    }

    /// Forgets a stream (its partition was revoked); returns how many items were still waiting.
    pub fn drop_stream(&mut self, stream: &S) -> usize {
        self.streams
            .remove(stream)
            .map_or(0, |buffer| buffer.waiting.len())
    }

    /// Items held back waiting for an earlier sequence number, over all streams.
    pub fn waiting(&self) -> usize {
        self.streams.values().map(|b| b.waiting.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_in_sequence_order() {
        let mut r: Reorder<&str, u64> = Reorder::default();
        let mut out = Vec::new();
        r.complete(&"p0", 2, 2, &mut out);
        r.complete(&"p0", 1, 1, &mut out);
        assert!(out.is_empty());
        assert_eq!(r.waiting(), 2);
        r.complete(&"p0", 0, 0, &mut out);
        assert_eq!(out, vec![0, 1, 2]);
        r.complete(&"p1", 0, 10, &mut out);
        assert_eq!(out, vec![0, 1, 2, 10]);
        assert_eq!(r.waiting(), 0);
    }

    #[test]
    fn duplicates_are_dropped_and_resume_moves_forward() {
        let mut r: Reorder<u8, u64> = Reorder::default();
        let mut out = Vec::new();
        r.complete(&0, 0, 100, &mut out);
        r.complete(&0, 0, 101, &mut out);
        assert_eq!(out, vec![100]);
        // A fresh buffer (after a restart) waits for seq 0 until told where to resume.
        let mut fresh: Reorder<u8, u64> = Reorder::default();
        out.clear();
        fresh.complete(&0, 5, 5, &mut out);
        fresh.complete(&0, 3, 3, &mut out);
        assert!(out.is_empty());
        fresh.resume(&0, 5, &mut out);
        assert_eq!(out, vec![5]);
        fresh.resume(&0, 2, &mut out);
        fresh.complete(&0, 3, 3, &mut out);
        assert_eq!(out, vec![5], "resume never moves back");
    }

    #[test]
    fn streams_are_independent() {
        let mut r: Reorder<u8, u64> = Reorder::default();
        let mut out = Vec::new();
        r.complete(&1, 1, 11, &mut out);
        r.complete(&2, 0, 20, &mut out);
        assert_eq!(out, vec![20]);
        assert_eq!(r.drop_stream(&1), 1);
    }
}
