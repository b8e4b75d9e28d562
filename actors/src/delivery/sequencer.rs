//! Restores input order per stream: frames complete out of order (tiles run in parallel,
//! frames are retried), but one camera's results must be published in the order its frames
//! arrived. Pure: the sequencer stage wraps it.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// A reorder buffer keyed by stream, releasing items by contiguous sequence number.
#[derive(Debug)]
pub struct Sequencer<S, T> {
    streams: HashMap<S, StreamBuffer<T>>,
}

#[derive(Debug)]
struct StreamBuffer<T> {
    /// The next sequence number to release.
    next: u64,
    /// Completed items waiting for an earlier one.
    waiting: BTreeMap<u64, T>,
}

impl<T> StreamBuffer<T> {
    fn starting_at(next: u64) -> Self {
        Self {
            next,
            waiting: BTreeMap::new(),
        }
    }

    fn release(&mut self, out: &mut Vec<T>) {
        while let Some(item) = self.waiting.remove(&self.next) {
            out.push(item);
            self.next += 1;
        }
    }
}

impl<S: Eq + Hash + Clone, T> Default for Sequencer<S, T> {
    fn default() -> Self {
        Self {
            streams: HashMap::new(),
        }
    }
}

impl<S: Eq + Hash + Clone, T> Sequencer<S, T> {
    /// Whether the sequencer has state for `stream`.
    pub fn knows(&self, stream: &S) -> bool {
        self.streams.contains_key(stream)
    }

    /// Starts `stream` at sequence number `next` (everything below is known to be done). A
    /// stream completed without being opened starts at 0.
    pub fn open(&mut self, stream: &S, next: u64) {
        self.streams
            .entry(stream.clone())
            .or_insert_with(|| StreamBuffer::starting_at(next));
    }

    /// Adds a completed item and appends to `out` every item that is now releasable, in
    /// order. An item below the stream's next number was released already (a retried frame
    /// finished twice) and is dropped.
    pub fn complete(&mut self, stream: &S, seq: u64, item: T, out: &mut Vec<T>) {
        let buffer = self
            .streams
            .entry(stream.clone())
            .or_insert_with(|| StreamBuffer::starting_at(0));
        if seq < buffer.next {
            return;
        }
        buffer.waiting.insert(seq, item);
        buffer.release(out);
    }

    /// Forgets every stream `keep` rejects (their partitions were revoked) and returns the
    /// items they held, so the caller can let them go.
    pub fn retain(&mut self, mut keep: impl FnMut(&S) -> bool) -> Vec<T> {
        let gone: Vec<S> = self.streams.keys().filter(|s| !keep(s)).cloned().collect();
        gone.iter()
            .filter_map(|s| self.streams.remove(s))
            .flat_map(|buffer| buffer.waiting.into_values())
            .collect()
    }

    /// Items held back waiting for an earlier sequence number, over all streams.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.streams.values().map(|b| b.waiting.len()).sum()
    }

    /// Streams with state.
    #[cfg(test)]
    pub fn streams(&self) -> usize {
        self.streams.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn releases_in_sequence_order() {
        let mut s: Sequencer<&str, u64> = Sequencer::default();
        let mut out = Vec::new();
        s.complete(&"p0", 2, 2, &mut out);
        s.complete(&"p0", 1, 1, &mut out);
        assert!(out.is_empty());
        assert_eq!(s.waiting(), 2);
        s.complete(&"p0", 0, 0, &mut out);
        assert_eq!(out, vec![0, 1, 2]);
        s.complete(&"p1", 0, 10, &mut out);
        assert_eq!(out, vec![0, 1, 2, 10]);
        assert_eq!(s.waiting(), 0);
    }

    #[test]
    fn an_opened_stream_resumes_where_it_is_told() {
        let mut s: Sequencer<u8, u64> = Sequencer::default();
        let mut out = Vec::new();
        s.open(&0, 5);
        s.complete(&0, 3, 3, &mut out);
        assert!(out.is_empty(), "below the start: released before");
        s.complete(&0, 6, 6, &mut out);
        s.complete(&0, 5, 5, &mut out);
        assert_eq!(out, vec![5, 6]);
        s.open(&0, 0);
        s.complete(&0, 7, 7, &mut out);
        assert_eq!(out, vec![5, 6, 7], "opening a known stream changes nothing");
    }

    #[test]
    fn retain_drops_streams_and_hands_back_their_items() {
        let mut s: Sequencer<u8, u64> = Sequencer::default();
        let mut out = Vec::new();
        s.complete(&1, 1, 11, &mut out);
        s.complete(&1, 2, 12, &mut out);
        s.complete(&2, 1, 21, &mut out);
        let mut dropped = s.retain(|stream| *stream != 1);
        dropped.sort_unstable();
        assert_eq!(dropped, vec![11, 12]);
        assert!(!s.knows(&1));
        assert_eq!(s.streams(), 1);
        assert_eq!(s.waiting(), 1);
    }

    proptest! {
        /// Whatever the completion order, and with duplicates, every stream releases each of
        /// its sequence numbers exactly once, in order.
        #[test]
        fn releases_every_stream_in_order_exactly_once(
            lengths in prop::collection::vec(0u64..30, 1..4),
            shuffle in prop::collection::vec(any::<prop::sample::Index>(), 0..200),
            duplicates in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
        ) {
            let mut events: Vec<(usize, u64)> = lengths
                .iter()
                .enumerate()
                .flat_map(|(stream, &n)| (0..n).map(move |seq| (stream, seq)))
                .collect();
            if events.is_empty() {
                return Ok(());
            }
            for (i, index) in shuffle.iter().enumerate() {
                let j = index.index(events.len());
                let i = i % events.len();
                events.swap(i, j);
            }
            let extra: Vec<(usize, u64)> = duplicates.iter().map(|d| events[d.index(events.len())]).collect();
            events.extend(extra);
            let mut sequencer: Sequencer<usize, (usize, u64)> = Sequencer::default();
            let mut out = Vec::new();
            for (stream, seq) in events {
                sequencer.complete(&stream, seq, (stream, seq), &mut out);
            }
            for (stream, &n) in lengths.iter().enumerate() {
                let released: Vec<u64> = out.iter().filter(|(s, _)| *s == stream).map(|(_, q)| *q).collect();
                prop_assert_eq!(released, (0..n).collect::<Vec<_>>());
            }
            prop_assert_eq!(sequencer.waiting(), 0);
        }
    }
}
