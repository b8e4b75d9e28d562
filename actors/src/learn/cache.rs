//! Recent frames' and boxes' embeddings, so that a label for a frame (or a detected box)
//! just processed is joined without reading the frame back from Kafka and running the
//! backbone again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tessera_operators::PixelRect;

/// Where a frame lies in Kafka.
pub type FrameAddress = (Arc<str>, i32, i64);

/// What is embedded: a frame, and the pixels of it (`None`: the whole frame) as
/// `tessera_operators::labels::crop_rect` computes them from a box, so that a label naming a
/// result's box finds the crop's embedding.
pub type EmbeddingKey = (FrameAddress, Option<PixelRect>);

/// A cached embedding, and the camera the frame came from (which decides the label's scope).
#[derive(Debug, Clone)]
pub struct Cached {
    pub camera: Arc<str>,
    pub embedding: Arc<[f32]>,
}

/// A bounded map from frame address and region to its embedding; the oldest entry leaves
/// first.
#[derive(Debug)]
pub struct EmbeddingCache {
    capacity: usize,
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<EmbeddingKey, Cached>,
    order: VecDeque<EmbeddingKey>,
}

impl EmbeddingCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(Entries::default()),
        }
    }

    pub fn insert(&self, address: EmbeddingKey, embedding: Cached) {
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

    pub fn get(&self, address: &EmbeddingKey) -> Option<Cached> {
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

    fn address(offset: i64) -> EmbeddingKey {
        ((Arc::from("frames"), 0, offset), None)
    }

    fn cached(value: f32) -> Cached {
        Cached {
            camera: Arc::from("cam"),
            embedding: Arc::from([value]),
        }
    }

    #[test]
    fn the_oldest_entries_leave_first() {
        let cache = EmbeddingCache::new(2);
        for offset in 0..3 {
            cache.insert(address(offset), cached(offset as f32));
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&address(0)).is_none());
        let value = |offset| cache.get(&address(offset)).map(|c| c.embedding.to_vec());
        assert_eq!(value(2), Some(vec![2.0]));
        // Replacing an entry does not count twice.
        cache.insert(address(2), cached(5.0));
        cache.insert(address(3), cached(3.0));
        assert_eq!(cache.len(), 2);
        let value = |offset| cache.get(&address(offset)).map(|c| c.embedding.to_vec());
        assert_eq!(value(2), Some(vec![5.0]));
        // A box of a frame is another entry than the whole frame.
        let boxed = (address(3).0, Some(PixelRect::new(1, 2, 3, 4)));
        assert!(cache.get(&boxed).is_none());
        assert!(EmbeddingCache::new(0).is_empty());
    }
}
