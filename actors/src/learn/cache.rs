//! Recent frames' embeddings, so that a label for a frame just processed is joined without
//! reading the frame back from Kafka and running the backbone again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Where a frame lies in Kafka.
pub type FrameAddress = (Arc<str>, i32, i64);

/// A bounded map from frame address to its whole-frame embedding; the oldest entry leaves
/// first.
#[derive(Debug)]
pub struct EmbeddingCache {
    capacity: usize,
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<FrameAddress, Arc<[f32]>>,
    order: VecDeque<FrameAddress>,
}

impl EmbeddingCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(Entries::default()),
        }
    }

    pub fn insert(&self, address: FrameAddress, embedding: Arc<[f32]>) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.lock();
        if entries.map.insert(address.clone(), embedding).is_none() {
            entries.order.push_back(address);
        }
        while entries.order.len() > self.capacity {
            if let Some(oldest) = entries.order.pop_front() {
                entries.map.remove(&oldest);
            }
        }
    }

    pub fn get(&self, address: &FrameAddress) -> Option<Arc<[f32]>> {
        self.lock().map.get(address).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(offset: i64) -> FrameAddress {
        (Arc::from("frames"), 0, offset)
    }

    #[test]
    fn the_oldest_entries_leave_first() {
        let cache = EmbeddingCache::new(2);
        for offset in 0..3 {
            cache.insert(address(offset), Arc::from([offset as f32]));
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&address(0)).is_none());
        assert_eq!(cache.get(&address(2)).as_deref(), Some(&[2.0][..]));
        // Replacing an entry does not count twice.
        cache.insert(address(2), Arc::from([5.0]));
        cache.insert(address(3), Arc::from([3.0]));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&address(2)).as_deref(), Some(&[5.0][..]));
        assert!(EmbeddingCache::new(0).is_empty());
    }
}
