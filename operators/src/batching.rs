//! Dynamic batching: items (tiles) are pushed one at a time; a batch is released when it is
//! full, or when its first item has waited `max_delay`. Pure: the caller passes the time, so
//! the policy is tested without clocks.

use std::time::{Duration, Instant};

/// Groups items into batches of at most `capacity`.
#[derive(Debug)]
pub struct Batcher<T> {
    capacity: usize,
    max_delay: Duration,
    open: Vec<T>,
    /// When the open batch received its first item.
    opened_at: Option<Instant>,
}

impl<T> Batcher<T> {
    /// A batcher releasing batches of `capacity` items (at least 1), or fewer once the first
    /// has waited `max_delay`.
    pub fn new(capacity: usize, max_delay: Duration) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            max_delay,
            open: Vec::with_capacity(capacity),
            opened_at: None,
        }
    }

    /// Items in the open batch; the next pushed item takes this slot.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Adds an item at `now`; returns the batch if this item filled it.
    pub fn push(&mut self, item: T, now: Instant) -> Option<Vec<T>> {
        if self.open.is_empty() {
            self.opened_at = Some(now);
        }
        self.open.push(item);
        (self.open.len() >= self.capacity).then(|| self.take())
    }

    /// When the open batch is due (`None` while it is empty).
    pub fn deadline(&self) -> Option<Instant> {
        self.opened_at.map(|at| at + self.max_delay)
    }

    /// The open batch, if its deadline has passed at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<T>> {
        match self.deadline() {
            Some(deadline) if now >= deadline => Some(self.take()),
            _ => None,
        }
    }

    /// The open batch now, if it has items (the caller is stopping).
    pub fn flush(&mut self) -> Option<Vec<T>> {
        (!self.open.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Vec<T> {
        self.opened_at = None;
        std::mem::replace(&mut self.open, Vec::with_capacity(self.capacity))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_full_batch_leaves_at_once_a_partial_one_at_its_deadline() {
        let start = Instant::now();
        let mut batcher = Batcher::new(3, Duration::from_millis(10));
        assert_eq!(batcher.deadline(), None);
        assert_eq!(batcher.push(1, start), None);
        assert_eq!(batcher.push(2, start + Duration::from_millis(4)), None);
        assert_eq!(batcher.deadline(), Some(start + Duration::from_millis(10)));
        assert_eq!(batcher.poll(start + Duration::from_millis(9)), None);
        assert_eq!(
            batcher.poll(start + Duration::from_millis(10)),
            Some(vec![1, 2])
        );
        assert_eq!(batcher.deadline(), None);
        let later = start + Duration::from_millis(20);
        batcher.push(3, later);
        batcher.push(4, later);
        assert_eq!(batcher.push(5, later), Some(vec![3, 4, 5]));
        assert_eq!(batcher.flush(), None);
        batcher.push(6, later);
        assert_eq!(batcher.flush(), Some(vec![6]));
    }

    #[test]
    fn a_one_slot_batcher_never_waits() {
        let mut batcher = Batcher::new(0, Duration::from_secs(60));
        assert_eq!(batcher.capacity(), 1);
        assert_eq!(batcher.push("a", Instant::now()), Some(vec!["a"]));
        assert_eq!(batcher.deadline(), None);
    }

    proptest! {
        /// Whatever the arrivals and polls: every item leaves exactly once, in order; no
        /// batch exceeds the capacity; a batch released by a push is full; a batch released by
        /// a poll has waited its delay; and nothing waits past its deadline at a poll.
        #[test]
        fn batches_keep_every_item_in_order_within_capacity_and_deadline(
            capacity in 1usize..9,
            delay_ms in 0u64..50,
            steps in prop::collection::vec((any::<bool>(), 0u64..20), 0..200),
        ) {
            let start = Instant::now();
            let delay = Duration::from_millis(delay_ms);
            let mut batcher = Batcher::new(capacity, delay);
            let mut now = start;
            let mut next = 0u32;
            let mut released: Vec<u32> = Vec::new();
            for (push, advance) in steps {
                now += Duration::from_millis(advance);
                if push {
                    if let Some(batch) = batcher.push(next, now) {
                        prop_assert_eq!(batch.len(), capacity);
                        released.extend(batch);
                    }
                    next += 1;
                } else {
                    let deadline = batcher.deadline();
                    match batcher.poll(now) {
                        Some(batch) => {
                            prop_assert!(!batch.is_empty() && batch.len() <= capacity);
                            prop_assert!(deadline.is_some_and(|d| now >= d));
                            released.extend(batch);
                        }
                        None => prop_assert!(deadline.is_none_or(|d| now < d)),
                    }
                }
                prop_assert!(batcher.len() < capacity);
            }
            released.extend(batcher.flush().unwrap_or_default());
            prop_assert_eq!(released, (0..next).collect::<Vec<_>>());
        }
    }
}
